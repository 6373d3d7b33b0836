"""
The Lua scripts of the Redis session store: each runs atomically in Redis,
so a check (the epoch, the bounds, continuity) and the write it guards
cannot be separated by another owner's write.

Keys of one session (``D`` = the hex of its key, ``tokenKey(token)`` in ``_resume``,
never the token; the braces keep both keys in one Redis Cluster slot):

- ``txhb:{D}:meta``: a hash: ``epoch`` (bumped by each takeover), ``base``
  (the number of the oldest server→client message still kept), ``sent``
  (how many server→client messages were numbered), ``bytes`` (their size
  kept), ``received`` (how many client→server messages are durable);
- ``txhb:{D}:out``: a list, the server→client messages ``base`` .. ``sent - 1``.

Both expire together after the resume window (milliseconds), refreshed by
every write.  A script that finds ``meta`` gone answers ``EXPIRED``; one
run with an epoch that is not the session's answers ``FENCED`` and changes
nothing.  Errors are answered as ``CODE text`` (a code Redis passes on
as it is).  Claims publish the new epoch on ``txhb:{D}:owner`` so that the
previous owner can close its connection.
"""

#: KEYS meta, out; ARGV ttl_ms -> epoch (1), or error EXISTS
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('EXISTS the session exists') end
redis.call('HSET', KEYS[1], 'epoch', 1, 'base', 0, 'sent', 0, 'bytes', 0, 'received', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

#: KEYS meta, out; ARGV ttl_ms, clientReceived, channel ->
#: {epoch, received, message...} (what to replay, oldest first), or error EXPIRED / GAP
CLAIM = """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'base', 'sent')
if not meta[1] then return redis.error_reply('EXPIRED no such session (expired or never made)') end
local base, sent, got = tonumber(meta[2]), tonumber(meta[3]), tonumber(ARGV[2])
if got < base or got > sent then return redis.error_reply('GAP continuity cannot be proven') end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
if got > base then  -- (LRANGE 0 -1 would be the whole list)
  local freed = 0
  for _, m in ipairs(redis.call('LRANGE', KEYS[2], 0, got - base - 1)) do freed = freed + string.len(m) end
  redis.call('LTRIM', KEYS[2], got - base, -1)
  redis.call('HSET', KEYS[1], 'base', got)
  redis.call('HINCRBY', KEYS[1], 'bytes', 0 - freed)  -- (-freed of 0 is -0, which HINCRBY refuses)
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[3], epoch)
local answer = {epoch, tonumber(redis.call('HGET', KEYS[1], 'received'))}
for _, m in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do answer[#answer + 1] = m end
return answer
"""

#: KEYS meta, out; ARGV ttl_ms, epoch, maxMessages, maxBytes, message ->
#: the message's number, or error EXPIRED / FENCED / FULL
APPEND = """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'base', 'sent', 'bytes')
if not meta[1] then return redis.error_reply('EXPIRED no such session (expired or never made)') end
if meta[1] ~= ARGV[2] then return redis.error_reply('FENCED another owner took the session over') end
local size = string.len(ARGV[5])
if tonumber(meta[3]) - tonumber(meta[2]) >= tonumber(ARGV[3]) or tonumber(meta[4]) + size > tonumber(ARGV[4]) then
  return redis.error_reply('FULL the replay buffer is full')
end
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('HINCRBY', KEYS[1], 'bytes', size)
local number = redis.call('HINCRBY', KEYS[1], 'sent', 1) - 1
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return number
"""

#: KEYS meta, out; ARGV ttl_ms, epoch, clientReceived (server→client acked), received (client→server durable) ->
#: 1, or error EXPIRED / FENCED / GAP
ACK = """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'base', 'sent', 'received')
if not meta[1] then return redis.error_reply('EXPIRED no such session (expired or never made)') end
if meta[1] ~= ARGV[2] then return redis.error_reply('FENCED another owner took the session over') end
local base, sent, acked = tonumber(meta[2]), tonumber(meta[3]), tonumber(ARGV[3])
if acked > sent or tonumber(ARGV[4]) < tonumber(meta[4]) then
  return redis.error_reply('GAP continuity cannot be proven')
end
if acked > base then
  local freed = 0
  for _, m in ipairs(redis.call('LRANGE', KEYS[2], 0, acked - base - 1)) do freed = freed + string.len(m) end
  redis.call('LTRIM', KEYS[2], acked - base, -1)
  redis.call('HINCRBY', KEYS[1], 'bytes', 0 - freed)
  redis.call('HSET', KEYS[1], 'base', acked)
end
redis.call('HSET', KEYS[1], 'received', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
"""
