"""
The Redis store's Lua scripts (txheartbeat/stores/_redisscripts.py) run in
a real redis-server: fencing by epoch, continuity (never a partial replay),
bounds, and the TTL refreshed by every write.
"""

from typing import Iterator, List, Optional

import pytest

from tests.redisserver import Client, RedisServer, ReplyError
from txheartbeat.stores import _redisscripts as scripts

META, OUT, IN, CHANNEL, D = "txhb:{d}:meta", "txhb:{d}:out", "txhb:{d}:in", "txhb:events", "d"
TTL = 60000


@pytest.fixture
def client(redis: RedisServer) -> Iterator[Client]:
    """A test client on the fixture's server."""
    client = Client(redis.port)
    yield client
    client.close()


def run(client: Client, script: str, *args: object) -> object:
    return client.call("EVAL", script, 3, META, OUT, IN, *args)


def refused(client: Client, script: str, *args: object) -> str:
    with pytest.raises(ReplyError) as raised:
        run(client, script, *args)
    return str(raised.value).split()[0]  # the code: Redis passes it on as the error's first word


def claim(client: Client, received: int) -> List[object]:
    answer = run(client, scripts.CLAIM, TTL, received, CHANNEL, D)
    assert isinstance(answer, list)
    return answer


def append(client: Client, epoch: int, message: bytes, maxMessages: int = 100, maxBytes: int = 10000) -> object:
    """Append a text message (stored with its kind byte ``t``)."""
    return run(client, scripts.APPEND, TTL, epoch, maxMessages, maxBytes, b"t" + message)


def record(client: Client, epoch: int, acked: int, received: int, seen: Optional[int] = None) -> object:
    return run(client, scripts.RECORD, TTL, epoch, acked, received, received if seen is None else seen)


def kept(client: Client, key: str = OUT) -> List[bytes]:
    """The messages a list holds, without their kind byte."""
    items = client.call("LRANGE", key, 0, -1)
    assert isinstance(items, list)
    return [m[1:] for m in items]


def test_createOnce(client: Client) -> None:
    """A session is created at epoch 1 with nothing kept; creating it again is refused."""
    assert run(client, scripts.CREATE, TTL) == 1
    assert client.call("HMGET", META, "epoch", "received", "seen") == [b"1", b"0", b"0"]
    assert refused(client, scripts.CREATE, TTL) == "EXISTS"


def test_appendNumbersInOrder(client: Client) -> None:
    """Appended messages are numbered 0, 1, 2 and kept in order, payload bytes counted (not the kind byte)."""
    run(client, scripts.CREATE, TTL)
    assert [append(client, 1, m) for m in (b"a", b"bb", b"\x00\xff")] == [0, 1, 2]
    assert kept(client) == [b"a", b"bb", b"\x00\xff"]
    assert client.call("HMGET", META, "sent", "bytes") == [b"3", b"5"]


def test_claimBumpsEpochFencesTheOldOwnerAndPublishes(redis: RedisServer, client: Client) -> None:
    """A takeover bumps the epoch and publishes it; the previous owner's writes are then refused, changing nothing."""
    run(client, scripts.CREATE, TTL)
    append(client, 1, b"a")
    listener = Client(redis.port)
    try:
        assert listener.call("SUBSCRIBE", CHANNEL) == [b"subscribe", CHANNEL.encode(), 1]
        assert claim(client, 0) == [2, 0, 0, 0, b"ta"]
        assert listener._reply() == [b"message", CHANNEL.encode(), b"owner d 2"]
    finally:
        listener.close()
    assert refused(client, scripts.APPEND, TTL, 1, 100, 10000, b"tlate") == "FENCED"
    assert refused(client, scripts.RECORD, TTL, 1, 1, 5, 5) == "FENCED"
    assert refused(client, scripts.TAKE, TTL, 1, 100, 10000) == "FENCED"
    assert refused(client, scripts.END, 1) == "FENCED"
    assert kept(client) == [b"a"]
    assert client.call("HMGET", META, "base", "received") == [b"0", b"0"]
    assert append(client, 2, b"b") == 1


def test_claimReplaysOnlyWhatTheClientLacks(client: Client) -> None:
    """Claiming with the client's received count drops what it has and returns the rest, oldest first."""
    run(client, scripts.CREATE, TTL)
    for m in (b"a", b"b", b"c"):
        append(client, 1, m)
    assert claim(client, 2) == [2, 0, 0, 0, b"tc"]
    assert client.call("HMGET", META, "base", "bytes") == [b"2", b"1"]


def test_claimTellsWhatMayHaveBeenDelivered(client: Client) -> None:
    """The claim answers the durable received count and how far delivery may have gone (seen): the new owner flags the gap."""
    run(client, scripts.CREATE, TTL)
    assert record(client, 1, 0, 3, 35) == 1
    assert claim(client, 0)[:4] == [2, 3, 35, 0]


def test_neverAPartialReplay(client: Client) -> None:
    """A client that lacks messages no longer kept, or claims more than was sent, is refused (GAP); the epoch is unchanged."""
    run(client, scripts.CREATE, TTL)
    for m in (b"a", b"b", b"c"):
        append(client, 1, m)
    record(client, 1, 2, 0)
    assert refused(client, scripts.CLAIM, TTL, 1, CHANNEL, D) == "GAP"
    assert refused(client, scripts.CLAIM, TTL, 4, CHANNEL, D) == "GAP"
    assert client.call("HGET", META, "epoch") == b"1"
    assert claim(client, 2) == [2, 0, 0, 0, b"tc"]


def test_expiredSessions(client: Client) -> None:
    """Once the keys are gone every script answers EXPIRED (nothing is recreated by a late write)."""
    for script, args in (
        (scripts.CLAIM, (TTL, 0, CHANNEL, D)),
        (scripts.APPEND, (TTL, 1, 100, 10000, b"tx")),
        (scripts.RECORD, (TTL, 1, 0, 0, 0)),
        (scripts.END, (1,)),
        (scripts.PUSH, (100, 10000, b"tx", CHANNEL, D)),
        (scripts.TAKE, (TTL, 1, 100, 10000)),
        (scripts.TOUCH, (TTL, 1)),
    ):
        assert refused(client, script, *args) == "EXPIRED"
    assert client.call("EXISTS", META, OUT, IN) == 0


def test_boundsByCountAndBytes(client: Client) -> None:
    """Appends beyond maxMessages or maxBytes are refused (FULL) and change nothing; an ack makes room."""
    run(client, scripts.CREATE, TTL)
    append(client, 1, b"aa", 2, 5)
    append(client, 1, b"bb", 2, 5)
    assert refused(client, scripts.APPEND, TTL, 1, 2, 5, b"tc") == "FULL"
    record(client, 1, 1, 0)
    assert refused(client, scripts.APPEND, TTL, 1, 2, 5, b"tcccc") == "FULL"  # 2 kept + 4 bytes > 5
    assert append(client, 1, b"ccc", 2, 5) == 2  # 2 + 3 bytes, 2 messages: at both bounds
    assert refused(client, scripts.APPEND, TTL, 1, 3, 5, b"td") == "FULL"  # 3 messages allowed, but 6 bytes > 5
    assert refused(client, scripts.APPEND, TTL, 1, 2, 100, b"t") == "FULL"  # 2 messages kept
    assert kept(client) == [b"bb", b"ccc"]
    assert client.call("HMGET", META, "base", "sent", "bytes") == [b"1", b"3", b"5"]


def test_recordTrimsAndKeepsTheCounts(client: Client) -> None:
    """A record trims what the client has, keeps the durable received and seen counts, and refuses impossible ones (GAP)."""
    run(client, scripts.CREATE, TTL)
    append(client, 1, b"a")
    append(client, 1, b"b")
    assert record(client, 1, 1, 7, 40) == 1
    assert kept(client) == [b"b"]
    assert client.call("HMGET", META, "base", "received", "seen") == [b"1", b"7", b"40"]
    assert refused(client, scripts.RECORD, TTL, 1, 3, 7, 40) == "GAP"  # more acknowledged than sent
    assert refused(client, scripts.RECORD, TTL, 1, 1, 6, 40) == "GAP"  # the received count never goes back
    assert refused(client, scripts.RECORD, TTL, 1, 1, 9, 8) == "GAP"  # seen below received
    assert record(client, 1, 1, 8, 8) == 1
    assert client.call("HMGET", META, "received", "seen") == [b"8", b"40"]  # seen never goes back either


def test_writesRefreshTheTTL(client: Client) -> None:
    """Every write of the owner sets the keys' time to live to the window."""
    run(client, scripts.CREATE, 5000)
    run(client, scripts.APPEND, 90000, 1, 100, 10000, b"ta")
    assert 85000 < int(client.call("PTTL", META)) <= 90000  # type: ignore[call-overload]
    assert 85000 < int(client.call("PTTL", OUT)) <= 90000  # type: ignore[call-overload]


def test_claimWithNothingToDropKeepsEverything(client: Client) -> None:
    """A client that received nothing of what is kept gets it all replayed, and the kept bytes stay counted (found by the machine)."""
    run(client, scripts.CREATE, TTL)
    append(client, 1, b"a")
    append(client, 1, b"")
    assert claim(client, 0) == [2, 0, 0, 0, b"ta", b"t"]
    assert client.call("HMGET", META, "base", "bytes") == [b"0", b"1"]
    record(client, 2, 2, 0)  # dropping an empty message frees 0 bytes (not -0, which HINCRBY refuses)
    assert client.call("HMGET", META, "base", "bytes") == [b"2", b"0"]


def test_endRemovesEverything(client: Client) -> None:
    """The owner's end removes the session's keys; a resume is then EXPIRED."""
    run(client, scripts.CREATE, TTL)
    append(client, 1, b"a")
    run(client, scripts.PUSH, 100, 10000, b"tb", CHANNEL, D)
    assert run(client, scripts.END, 1) == 1
    assert client.call("EXISTS", META, OUT, IN) == 0
    assert refused(client, scripts.CLAIM, TTL, 0, CHANNEL, D) == "EXPIRED"


def test_pushFromAnywhereIsNumberedByTheOwnerInOrder(redis: RedisServer, client: Client) -> None:
    """Anyone pushes to a session (announced on the channel); the owner numbers the pushes in order after its own, once."""
    run(client, scripts.CREATE, TTL)
    append(client, 1, b"own")
    listener = Client(redis.port)
    try:
        listener.call("SUBSCRIBE", CHANNEL)
        assert run(client, scripts.PUSH, 100, 10000, b"tx", CHANNEL, D) == 1
        assert run(client, scripts.PUSH, 100, 10000, b"by", CHANNEL, D) == 2
        assert listener._reply() == [b"message", CHANNEL.encode(), b"inbox d"]
    finally:
        listener.close()
    assert claim(client, 0) == [2, 0, 0, 2, b"town"]  # the claim tells the new owner two wait
    assert run(client, scripts.TAKE, TTL, 2, 100, 10000) == [1, 0, b"tx", b"by"]
    assert run(client, scripts.TAKE, TTL, 2, 100, 10000) == [3, 0]  # taken once
    assert kept(client) == [b"own", b"x", b"y"]
    assert client.call("HMGET", META, "sent", "bytes") == [b"3", b"5"]


def test_pushAndTakeKeepTheBounds(client: Client) -> None:
    """A push beyond the session's bounds (kept + waiting) is refused (FULL); take moves only what fits."""
    run(client, scripts.CREATE, TTL)
    append(client, 1, b"aa")
    assert run(client, scripts.PUSH, 3, 6, b"tbb", CHANNEL, D) == 1
    assert refused(client, scripts.PUSH, 3, 6, b"tccc", CHANNEL, D) == "FULL"  # 2 + 2 + 3 bytes > 6
    assert run(client, scripts.PUSH, 3, 6, b"tc", CHANNEL, D) == 2
    assert refused(client, scripts.PUSH, 3, 100, b"td", CHANNEL, D) == "FULL"  # 3 messages
    assert run(client, scripts.TAKE, TTL, 1, 2, 100) == [1, 1, b"tbb"]  # out may hold 2; one still waits
    assert kept(client, IN) == [b"c"]
    record(client, 1, 1, 0)
    assert run(client, scripts.TAKE, TTL, 1, 2, 100) == [2, 0, b"tc"]


def test_touchKeepsTheSessionForAnotherWindow(client: Client) -> None:
    """The owner's touch sets every key's time to live to the window again; another owner's is refused."""
    run(client, scripts.CREATE, 5000)
    run(client, scripts.PUSH, 100, 10000, b"tx", CHANNEL, D)
    assert run(client, scripts.TOUCH, 90000, 1) == 1
    assert 85000 < int(client.call("PTTL", META)) <= 90000  # type: ignore[call-overload]
    assert 85000 < int(client.call("PTTL", IN)) <= 90000  # type: ignore[call-overload]
    assert refused(client, scripts.TOUCH, 90000, 2) == "FENCED"
