"""
The Lua scripts of the Redis session store: each runs atomically in Redis,
so a check (the epoch, the bounds, continuity) and the write it guards
cannot be separated by another owner's write.

Keys of one session (``D`` = the hex of its key, ``tokenKey(token)`` in ``_resume``,
never the token; the braces keep the keys in one Redis Cluster slot):

- ``txhb:{D}:meta``: a hash: ``epoch`` (bumped by each takeover), ``base``
  (the number of the oldest server→client message still kept), ``sent``
  (how many server→client messages were numbered), ``bytes`` (their size
  kept), ``received`` (how many client→server messages are durably
  received: the count acknowledged to the client), ``seen`` (how many the
  application may have been given: delivery runs at most this far ahead of
  ``received``, so a new owner flags ``received + 1 .. seen`` as possibly
  delivered before);
- ``txhb:{D}:out``: a list, the server→client messages ``base`` .. ``sent - 1``;
- ``txhb:{D}:in``: a list, messages sent to the session from anywhere
  (:data:`PUSH`) that its owner has not numbered yet (:data:`TAKE`).

Every script gets the three keys in that order.  Stored messages start
with one byte, ``t`` (text) or ``b`` (binary); sizes count the payload
only.  The keys expire together after the resume window (milliseconds),
refreshed by every write of the owner.  A script that finds ``meta`` gone
answers ``EXPIRED``; one run with an epoch that is not the session's
answers ``FENCED`` and changes nothing.  Errors are answered as ``CODE
text`` (a code Redis passes on as it is).  Claims publish ``owner D epoch``
and pushes ``inbox D`` on the store's channel.
"""

#: KEYS meta, out, in; ARGV ttl_ms -> epoch (1), or error EXISTS
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('EXISTS the session exists') end
redis.call('HSET', KEYS[1], 'epoch', 1, 'base', 0, 'sent', 0, 'bytes', 0, 'received', 0, 'seen', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

# Drop the messages base .. upto - 1 (the client has them); meta is the HMGET of epoch, base.
_TRIM = """
local function trim(base, upto)
  if upto > base then  -- (LRANGE 0 -1 would be the whole list)
    local freed = 0
    for _, m in ipairs(redis.call('LRANGE', KEYS[2], 0, upto - base - 1)) do freed = freed + string.len(m) - 1 end
    redis.call('LTRIM', KEYS[2], upto - base, -1)
    redis.call('HSET', KEYS[1], 'base', upto)
    redis.call('HINCRBY', KEYS[1], 'bytes', 0 - freed)  -- (-freed of 0 is -0, which HINCRBY refuses)
  end
end
local function refresh(ttl)
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
"""

#: KEYS meta, out, in; ARGV ttl_ms, clientReceived, channel, D ->
#: {epoch, received, seen, waiting in the inbox, message...} (what to replay, oldest first),
#: or error EXPIRED / GAP (nothing changed)
CLAIM = (
    _TRIM
    + """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'base', 'sent', 'received', 'seen')
if not meta[1] then return redis.error_reply('EXPIRED no such session (expired or never made)') end
local base, sent, got = tonumber(meta[2]), tonumber(meta[3]), tonumber(ARGV[2])
if got < base or got > sent then return redis.error_reply('GAP continuity cannot be proven') end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
trim(base, got)
refresh(ARGV[1])
redis.call('PUBLISH', ARGV[3], 'owner ' .. ARGV[4] .. ' ' .. epoch)
local answer = {epoch, tonumber(meta[4]), tonumber(meta[5]), redis.call('LLEN', KEYS[3])}
for _, m in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do answer[#answer + 1] = m end
return answer
"""
)

#: KEYS meta, out, in; ARGV ttl_ms, epoch, maxMessages, maxBytes, message ->
#: the message's number, or error EXPIRED / FENCED / FULL
APPEND = """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'base', 'sent', 'bytes')
if not meta[1] then return redis.error_reply('EXPIRED no such session (expired or never made)') end
if meta[1] ~= ARGV[2] then return redis.error_reply('FENCED another owner took the session over') end
local size = string.len(ARGV[5]) - 1
if tonumber(meta[3]) - tonumber(meta[2]) >= tonumber(ARGV[3]) or tonumber(meta[4]) + size > tonumber(ARGV[4]) then
  return redis.error_reply('FULL the replay buffer is full')
end
redis.call('RPUSH', KEYS[2], ARGV[5])
redis.call('HINCRBY', KEYS[1], 'bytes', size)
local number = redis.call('HINCRBY', KEYS[1], 'sent', 1) - 1
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[1])
return number
"""

#: KEYS meta, out, in; ARGV ttl_ms, epoch, clientReceived (server→client acknowledged),
#: received (client→server durable), seen (client→server possibly delivered) ->
#: 1, or error EXPIRED / FENCED / GAP
RECORD = (
    _TRIM
    + """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'base', 'sent', 'received', 'seen')
if not meta[1] then return redis.error_reply('EXPIRED no such session (expired or never made)') end
if meta[1] ~= ARGV[2] then return redis.error_reply('FENCED another owner took the session over') end
local base, sent, acked = tonumber(meta[2]), tonumber(meta[3]), tonumber(ARGV[3])
local received, seen = tonumber(ARGV[4]), tonumber(ARGV[5])
if acked > sent or received < tonumber(meta[4]) or seen < received then
  return redis.error_reply('GAP continuity cannot be proven')
end
trim(base, acked)
redis.call('HSET', KEYS[1], 'received', received, 'seen', math.max(seen, tonumber(meta[5])))
refresh(ARGV[1])
return 1
"""
)

#: KEYS meta, out, in; ARGV epoch -> 1 (the session is gone), or error EXPIRED / FENCED
END = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return redis.error_reply('EXPIRED no such session (expired or never made)') end
if epoch ~= ARGV[1] then return redis.error_reply('FENCED another owner took the session over') end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return 1
"""

#: KEYS meta, out, in; ARGV maxMessages, maxBytes, message, channel, D ->
#: how many wait in the inbox, or error EXPIRED / FULL.  Anyone may push (no epoch):
#: the owner numbers the message (:data:`TAKE`), or the next one after a takeover.
PUSH = """
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then return redis.error_reply('EXPIRED no such session (expired or never made)') end
local meta = redis.call('HMGET', KEYS[1], 'base', 'sent', 'bytes')
local waiting, size, bytes = redis.call('LLEN', KEYS[3]), string.len(ARGV[3]) - 1, tonumber(meta[3])
for _, m in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do bytes = bytes + string.len(m) - 1 end
if tonumber(meta[2]) - tonumber(meta[1]) + waiting >= tonumber(ARGV[1]) or bytes + size > tonumber(ARGV[2]) then
  return redis.error_reply('FULL the session holds as much as it may (its client is slow or away)')
end
local n = redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ttl)
redis.call('PUBLISH', ARGV[4], 'inbox ' .. ARGV[5])
return n
"""

#: KEYS meta, out, in; ARGV ttl_ms, epoch, maxMessages, maxBytes ->
#: {number of the first, how many still wait, message...}: the inbox's messages that
#: fit, numbered in order (moved to ``out``), or error EXPIRED / FENCED
TAKE = """
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'base', 'sent', 'bytes')
if not meta[1] then return redis.error_reply('EXPIRED no such session (expired or never made)') end
if meta[1] ~= ARGV[2] then return redis.error_reply('FENCED another owner took the session over') end
local kept, bytes, sent = tonumber(meta[3]) - tonumber(meta[2]), tonumber(meta[4]), tonumber(meta[3])
local answer = {sent, 0}
while kept < tonumber(ARGV[3]) do
  local m = redis.call('LINDEX', KEYS[3], 0)
  if not m or bytes + string.len(m) - 1 > tonumber(ARGV[4]) then break end
  redis.call('LPOP', KEYS[3])
  redis.call('RPUSH', KEYS[2], m)
  kept, bytes = kept + 1, bytes + string.len(m) - 1
  answer[#answer + 1] = m
end
answer[2] = redis.call('LLEN', KEYS[3])
if #answer > 2 then
  redis.call('HSET', KEYS[1], 'sent', sent + #answer - 2, 'bytes', bytes)
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  redis.call('PEXPIRE', KEYS[2], ARGV[1])
  redis.call('PEXPIRE', KEYS[3], ARGV[1])
end
return answer
"""

#: KEYS meta, out, in; ARGV ttl_ms, epoch -> 1, or error EXPIRED / FENCED: the owner keeps the
#: session another window (it is on a connection, and may write nothing for long)
TOUCH = (
    _TRIM
    + """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then return redis.error_reply('EXPIRED no such session (expired or never made)') end
if epoch ~= ARGV[2] then return redis.error_reply('FENCED another owner took the session over') end
refresh(ARGV[1])
return 1
"""
)

#: every script, by name (loaded on each connection)
SCRIPTS = {
    "CREATE": CREATE,
    "CLAIM": CLAIM,
    "APPEND": APPEND,
    "RECORD": RECORD,
    "END": END,
    "PUSH": PUSH,
    "TAKE": TAKE,
    "TOUCH": TOUCH,
}
