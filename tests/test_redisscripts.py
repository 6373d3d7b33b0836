"""
The Redis store's Lua scripts (txheartbeat/stores/_redisscripts.py) run in
a real redis-server: fencing by epoch, continuity (never a partial replay),
bounds, and the TTL refreshed by every write.
"""

from typing import Iterator, List

import pytest

from tests.redisserver import Client, RedisServer, ReplyError
from txheartbeat.stores import _redisscripts as scripts

META, OUT, CHANNEL = "txhb:{d}:meta", "txhb:{d}:out", "txhb:{d}:owner"
TTL = 60000


@pytest.fixture
def client(redis: RedisServer) -> Iterator[Client]:
    """A test client on the fixture's server."""
    client = Client(redis.port)
    yield client
    client.close()


def run(client: Client, script: str, *args: object) -> object:
    return client.call("EVAL", script, 2, META, OUT, *args)


def refused(client: Client, script: str, *args: object) -> str:
    with pytest.raises(ReplyError) as raised:
        run(client, script, *args)
    return str(raised.value).split()[0]  # the code: Redis passes it on as the error's first word


def claim(client: Client, received: int) -> List[object]:
    answer = run(client, scripts.CLAIM, TTL, received, CHANNEL)
    assert isinstance(answer, list)
    return answer


def append(client: Client, epoch: int, message: bytes, maxMessages: int = 100, maxBytes: int = 10000) -> object:
    return run(client, scripts.APPEND, TTL, epoch, maxMessages, maxBytes, message)


def test_createOnce(client: Client) -> None:
    """A session is created at epoch 1 with nothing kept; creating it again is refused."""
    assert run(client, scripts.CREATE, TTL) == 1
    assert client.call("HGET", META, "epoch") == b"1"
    assert refused(client, scripts.CREATE, TTL) == "EXISTS"


def test_appendNumbersInOrder(client: Client) -> None:
    """Appended messages are numbered 0, 1, 2 and kept in order, bytes counted."""
    run(client, scripts.CREATE, TTL)
    assert [append(client, 1, m) for m in (b"a", b"bb", b"\x00\xff")] == [0, 1, 2]
    assert client.call("LRANGE", OUT, 0, -1) == [b"a", b"bb", b"\x00\xff"]
    assert client.call("HMGET", META, "sent", "bytes") == [b"3", b"5"]


def test_claimBumpsEpochFencesTheOldOwnerAndPublishes(redis: RedisServer, client: Client) -> None:
    """A takeover bumps the epoch and publishes it; the previous owner's appends and acks are then refused, changing nothing."""
    run(client, scripts.CREATE, TTL)
    append(client, 1, b"a")
    listener = Client(redis.port)
    try:
        assert listener.call("SUBSCRIBE", CHANNEL) == [b"subscribe", CHANNEL.encode(), 1]
        assert claim(client, 0) == [2, 0, b"a"]
        assert listener._reply() == [b"message", CHANNEL.encode(), b"2"]
    finally:
        listener.close()
    assert refused(client, scripts.APPEND, TTL, 1, 100, 10000, b"late") == "FENCED"
    assert refused(client, scripts.ACK, TTL, 1, 1, 5) == "FENCED"
    assert client.call("LRANGE", OUT, 0, -1) == [b"a"]
    assert client.call("HMGET", META, "base", "received") == [b"0", b"0"]
    assert append(client, 2, b"b") == 1


def test_claimReplaysOnlyWhatTheClientLacks(client: Client) -> None:
    """Claiming with the client's received count drops what it has and returns the rest, oldest first."""
    run(client, scripts.CREATE, TTL)
    for m in (b"a", b"b", b"c"):
        append(client, 1, m)
    assert claim(client, 2) == [2, 0, b"c"]
    assert client.call("HMGET", META, "base", "bytes") == [b"2", b"1"]


def test_neverAPartialReplay(client: Client) -> None:
    """A client that lacks messages no longer kept, or claims more than was sent, is refused (GAP); the epoch is unchanged."""
    run(client, scripts.CREATE, TTL)
    for m in (b"a", b"b", b"c"):
        append(client, 1, m)
    run(client, scripts.ACK, TTL, 1, 2, 0)
    assert refused(client, scripts.CLAIM, TTL, 1, CHANNEL) == "GAP"
    assert refused(client, scripts.CLAIM, TTL, 4, CHANNEL) == "GAP"
    assert client.call("HGET", META, "epoch") == b"1"
    assert claim(client, 2) == [2, 0, b"c"]


def test_expiredSessions(client: Client) -> None:
    """Once the keys are gone every script answers EXPIRED (nothing is recreated by a late write)."""
    for script, args in (
        (scripts.CLAIM, (TTL, 0, CHANNEL)),
        (scripts.APPEND, (TTL, 1, 100, 10000, b"x")),
        (scripts.ACK, (TTL, 1, 0, 0)),
    ):
        assert refused(client, script, *args) == "EXPIRED"
    assert client.call("EXISTS", META, OUT) == 0


def test_boundsByCountAndBytes(client: Client) -> None:
    """Appends beyond maxMessages or maxBytes are refused (FULL) and change nothing; an ack makes room."""
    run(client, scripts.CREATE, TTL)
    append(client, 1, b"aa", 2, 5)
    append(client, 1, b"bb", 2, 5)
    assert refused(client, scripts.APPEND, TTL, 1, 2, 5, b"c") == "FULL"
    run(client, scripts.ACK, TTL, 1, 1, 0)
    assert refused(client, scripts.APPEND, TTL, 1, 2, 5, b"cccc") == "FULL"  # 2 kept + 4 bytes > 5
    assert append(client, 1, b"ccc", 2, 5) == 2  # 2 + 3 bytes, 2 messages: at both bounds
    assert refused(client, scripts.APPEND, TTL, 1, 3, 5, b"d") == "FULL"  # 3 messages allowed, but 6 bytes > 5
    assert refused(client, scripts.APPEND, TTL, 1, 2, 100, b"") == "FULL"  # 2 messages kept
    assert client.call("LRANGE", OUT, 0, -1) == [b"bb", b"ccc"]
    assert client.call("HMGET", META, "base", "sent", "bytes") == [b"1", b"3", b"5"]


def test_ackTrimsAndRecordsReceived(client: Client) -> None:
    """An ack trims what the client has, records the durable received count, and refuses impossible counts (GAP)."""
    run(client, scripts.CREATE, TTL)
    append(client, 1, b"a")
    append(client, 1, b"b")
    assert run(client, scripts.ACK, TTL, 1, 1, 7) == 1
    assert client.call("LRANGE", OUT, 0, -1) == [b"b"]
    assert client.call("HMGET", META, "base", "received") == [b"1", b"7"]
    assert refused(client, scripts.ACK, TTL, 1, 3, 7) == "GAP"  # more acknowledged than sent
    assert refused(client, scripts.ACK, TTL, 1, 1, 6) == "GAP"  # the received count never goes back


def test_writesRefreshTheTTL(client: Client) -> None:
    """Every write sets both keys' time to live to the window."""
    run(client, scripts.CREATE, 5000)
    run(client, scripts.APPEND, 90000, 1, 100, 10000, b"a")
    assert 85000 < int(client.call("PTTL", META)) <= 90000  # type: ignore[call-overload]
    assert 85000 < int(client.call("PTTL", OUT)) <= 90000  # type: ignore[call-overload]


def test_claimWithNothingToDropKeepsEverything(client: Client) -> None:
    """A client that received nothing of what is kept gets it all replayed, and the kept bytes stay counted (found by the machine)."""
    run(client, scripts.CREATE, TTL)
    append(client, 1, b"a")
    append(client, 1, b"")
    assert claim(client, 0) == [2, 0, b"a", b""]
    assert client.call("HMGET", META, "base", "bytes") == [b"0", b"1"]
    run(client, scripts.ACK, TTL, 2, 2, 0)  # dropping an empty message frees 0 bytes (not -0, which HINCRBY refuses)
    assert client.call("HMGET", META, "base", "bytes") == [b"2", b"0"]
