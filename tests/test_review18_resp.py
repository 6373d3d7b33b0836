"""Review of issue 18: the RESP2 client's parser fed replies split at every byte, and a large bulk string in chunks."""

from __future__ import annotations

from typing import Any, List

from twisted.internet.defer import Deferred

from txheartbeat.stores._resp import ReplyError, RespProtocol


class _Transport:
    def __init__(self) -> None:
        self.written: List[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abortConnection(self) -> None:  # pragma: no cover - a failure of the test
        raise AssertionError("aborted a valid stream")


def _protocol() -> RespProtocol:
    protocol = RespProtocol()
    protocol.makeConnection(_Transport())
    return protocol


REPLIES = (
    b"*6\r\n:3\r\n:1\r\n:2\r\n:0\r\n$5\r\nt\r\nab\r\n$0\r\n\r\n"  # a CLAIM: a payload holding CRLF, an empty one
    + b"-FENCED another owner took the session over\r\n"
    + b"$-1\r\n"
    + b"*2\r\n*-1\r\n*1\r\n+OK\r\n"
    + b":-5\r\n"
)
EXPECTED = [[3, 1, 2, 0, b"t\r\nab", b""], "FENCED", None, [None, [b"OK"]], -5]


def _collect(protocol: RespProtocol, n: int) -> List[Any]:
    got: List[Any] = []
    for _ in range(n):
        d: Deferred[Any] = protocol.call("X")
        d.addCallbacks(got.append, lambda f: got.append(f.value.code if f.check(ReplyError) else f))
    return got


def test_replies_split_at_every_byte_are_parsed_the_same() -> None:
    for cut in range(1, len(REPLIES)):
        protocol = _protocol()
        got = _collect(protocol, len(EXPECTED))
        protocol.dataReceived(REPLIES[:cut])
        protocol.dataReceived(REPLIES[cut:])
        assert got == EXPECTED, cut
    protocol = _protocol()
    got = _collect(protocol, len(EXPECTED))
    for i in range(len(REPLIES)):
        protocol.dataReceived(REPLIES[i : i + 1])
    assert got == EXPECTED


def test_a_large_bulk_string_in_chunks() -> None:
    payload = bytes(range(256)) * 8192  # 2 MiB
    reply = b"$%d\r\n%s\r\n" % (len(payload), payload)
    protocol = _protocol()
    got = _collect(protocol, 1)
    for at in range(0, len(reply), 65536):
        protocol.dataReceived(reply[at : at + 65536])
    assert got == [payload] and protocol._buffer == b""


def test_connection_lost_fails_every_waiting_command() -> None:
    from twisted.internet.error import ConnectionLost
    from twisted.python.failure import Failure

    from txheartbeat import StoreUnavailable

    protocol = _protocol()
    failed: List[Any] = []
    for _ in range(3):
        protocol.call("X").addErrback(lambda f: failed.append(f.check(StoreUnavailable)))
    protocol.dataReceived(b"*2\r\n:1\r\n")  # half a reply, then the connection goes
    protocol.connectionLost(Failure(ConnectionLost()))
    assert failed == [StoreUnavailable] * 3
    assert protocol.call("X").addErrback(lambda f: f.check(StoreUnavailable)).result is StoreUnavailable
