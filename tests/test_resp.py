"""The Redis store's RESP2 client (txheartbeat/stores/_resp.py): replies split anywhere, in order, errors, pushes, a lost connection."""

from typing import Any, List

import pytest
from twisted.internet.testing import StringTransport

from txheartbeat import StoreUnavailable
from txheartbeat.stores._resp import ProtocolViolation, ReplyError, RespProtocol, encode, parse

REPLIES = (
    b"+OK\r\n:42\r\n$5\r\nhe\r\no\r\n$-1\r\n*3\r\n:1\r\n$0\r\n\r\n*1\r\n-ERR x\r\n-FENCED another owner\r\n*-1\r\n"
)
EXPECTED = [b"OK", 42, b"he\r\no", None, [1, b"", [ReplyError]], ReplyError, None]


def connected() -> RespProtocol:
    protocol = RespProtocol()
    protocol.makeConnection(StringTransport())
    return protocol


def outcome(d: Any) -> Any:
    result: List[Any] = []
    d.addBoth(result.append)
    return result[0] if result else "pending"


def shape(value: Any) -> Any:
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, ReplyError):
        return ReplyError
    return value


def test_encode_is_an_array_of_bulk_strings() -> None:
    """Every word goes as a bulk string (bytes, text and numbers alike)."""
    assert encode(["SET", b"k\r\n", 7]) == b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$1\r\n7\r\n"


@pytest.mark.parametrize("split", range(1, len(REPLIES)))
def test_replies_split_at_any_byte_answer_in_order(split: int) -> None:
    """Whatever the reads, each command gets its own reply, in order; an error reply fails only its own command."""
    protocol = connected()
    calls = [protocol.call("X") for _ in EXPECTED]
    protocol.dataReceived(REPLIES[:split])
    protocol.dataReceived(REPLIES[split:])
    got = []
    for d in calls:
        value = outcome(d)
        got.append(ReplyError if hasattr(value, "check") and value.check(ReplyError) else shape(value))
    assert got == EXPECTED


def test_an_error_reply_has_its_code() -> None:
    """The first word of an error reply is its code (the store's refusals: FENCED, EXPIRED, GAP, FULL)."""
    protocol = connected()
    d = protocol.call("EVALSHA")
    protocol.dataReceived(b"-FENCED another owner took the session over\r\n")
    failure = outcome(d)
    assert failure.value.code == "FENCED"


def test_pushes_go_to_the_handler_not_to_a_command() -> None:
    """A pub/sub message in between replies goes to onPush; the command still gets its reply."""
    protocol = connected()
    pushes: List[Any] = []
    protocol.onPush = pushes.append
    d = protocol.call("PING")
    protocol.dataReceived(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$7\r\nowner x\r\n+PONG\r\n")
    assert pushes == [[b"message", b"ch", b"owner x"]] and outcome(d) == b"PONG"


def test_a_lost_connection_fails_every_waiting_command_and_later_ones_at_once() -> None:
    """Nothing hangs: waiting commands fail with StoreUnavailable when the connection goes, and so do new ones."""
    protocol = connected()
    waiting = [protocol.call("X"), protocol.call("Y")]
    protocol.connectionLost(None)
    assert all(outcome(d).check(StoreUnavailable) for d in waiting)
    assert outcome(protocol.call("Z")).check(StoreUnavailable)


def test_garbage_is_refused() -> None:
    """A reply of an unknown type is a protocol violation (the connection is aborted and made again)."""
    with pytest.raises(ProtocolViolation):
        parse(b"?what\r\n", 0)
    protocol = connected()
    d = protocol.call("X")
    protocol.dataReceived(b"?what\r\n")
    assert protocol.transport.disconnected  # (StringTransport.abortConnection)
    protocol.connectionLost(None)  # (what the abort brings)
    assert outcome(d).check(StoreUnavailable)


def test_redis_that_does_not_answer_is_dropped_after_the_timeout_but_a_stalled_process_is_not_blamed() -> None:
    """No reply within the timeout: the connection is aborted (waiting commands then fail); a check that itself ran late (this process stalled) gives Redis a fresh timeout instead."""
    from twisted.internet.task import Clock

    clock = Clock()
    protocol = connected()
    protocol.clock, protocol.timeout = clock, 5.0
    d = protocol.call("X")
    clock.advance(4.9)
    assert not protocol.transport.disconnected and outcome(d) == "pending"
    clock.advance(0.2)  # overdue: one more short look (replies may wait unread in the socket)
    assert not protocol.transport.disconnected
    clock.advance(0.3)  # nothing came meanwhile
    assert protocol.transport.disconnected  # (aborted: connectionLost fails what waits)

    stalled = connected()
    stalled.clock, stalled.timeout = clock, 5.0
    d = stalled.call("Y")
    clock.advance(30)  # one jump: the reactor did not run for 30 s (SIGSTOP)
    assert not stalled.transport.disconnected
    stalled.dataReceived(b"+OK\r\n")  # the answer was waiting in the socket
    assert outcome(d) == b"OK" and clock.getDelayedCalls() == []
