"""Retry decisions and server hints on the in-memory reactor: steady probes while refused, backoff for costly failures, fatal answers, 1012/1013 and Retry-After."""

from typing import Any, List

import pytest
from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure

from txheartbeat import ConnectionClosed, HandshakeError, HeartbeatClientFactory, HeartbeatHandler, connect
from txheartbeat._retry import ReconnectPolicy, RetryContext, restartWindow
from txheartbeat.testing import MemoryReactor, RecordingHandler, echoServerFactory

from .conftest import URL
from .test_hostile import rawFactory


def delays(handler: RecordingHandler) -> List[float]:
    return [e[3] for e in handler.events if e[1] == "onReconnect"]


def test_refused_attempts_probe_at_a_steady_jittered_pace(reactor, handler):
    """While nothing listens, the first retry draws a phase in [0, probeInterval], the next come every probeInterval ± 5 %, never backing off."""
    connect(URL, handler, reactor=reactor, maxDelay=30).addErrback(lambda f: None)
    for _ in range(60):
        reactor.refuse()
        reactor.advance(handler.factory.delay)
    first, *rest = delays(handler)
    assert 0 <= first <= 1.7
    assert len(rest) == 59 and all(1.7 * 0.95 <= d <= 1.7 * 1.05 for d in rest)
    assert max(rest) - min(rest) > 0.05  # jittered, so that clients never lock into step
    handler.close()


def test_phases_of_many_clients_spread_evenly(reactor):
    """The first retries of 2,000 clients refused at once cover [0, probeInterval] evenly: every 0.1 s slot holds between half and twice its share.

    With 2,000 uniform draws over 17 slots, a slot outside those bounds has a probability below 1e-8 per run (binomial tails:
    at most 58 in a slot, 5.4e-9; more than 235, 2e-22), so this test fails only when the phases are not uniform. (With 200
    clients, as before, a slot above twice its share happened in 1.3 % of runs, and did in CI.)
    """
    firsts = []
    for _ in range(2000):
        h = RecordingHandler(reactor)
        connect(URL, h, reactor=reactor).addErrback(lambda f: None)
        reactor.refuse()
        firsts.append(h.factory.delay)
        h.close()
    assert all(0 <= d <= 1.7 for d in firsts)
    slots = [sum(1 for d in firsts if k * 0.1 <= d < (k + 1) * 0.1) for k in range(17)]
    share = len(firsts) / 17
    assert share / 2 < min(slots) and max(slots) <= 2 * share, slots


def test_refused_with_probing_off_backs_off(reactor, handler):
    """probeInterval=None treats a refusal like any failure: exponential backoff."""
    connect(URL, handler, reactor=reactor, probeInterval=None, jitter=0, initialDelay=1, maxDelay=8).addErrback(
        lambda f: None
    )
    for _ in range(5):
        reactor.refuse()
        reactor.advance(handler.factory.delay)
    assert delays(handler) == [1.0, 2.0, 4.0, 8.0, 8.0]
    handler.close()


def test_costly_failures_back_off_exponentially_between_refusals(reactor, handler):
    """HTTP 500s back off 1, 2, 4 s; a refusal in between is probed at the steady pace and does not reset the step."""
    connect(URL, handler, reactor=reactor, jitter=0, initialDelay=1, maxDelay=30).addErrback(lambda f: None)
    for answer in ("500", "500", "refuse", "500"):
        if answer == "refuse":
            reactor.refuse()
        else:
            reactor.accept(rawFactory(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"))
        reactor.advance(handler.factory.delay)
    assert delays(handler) == [1.0, 2.0, 1.7, 4.0]
    handler.close()


def test_flapping_server_backs_off_until_min_uptime(reactor, handler):
    """A server that accepts and drops at once sees one attempt per growing backoff step, as in 0.1."""
    connect(URL, handler, reactor=reactor, jitter=0, initialDelay=1, maxDelay=30, minUptime=5).addErrback(
        lambda f: None
    )
    for _ in range(4):
        reactor.accept().reset()
        reactor.advance(handler.factory.delay)
    assert delays(handler) == [1.0, 2.0, 4.0, 8.0]
    handler.close()


@pytest.mark.parametrize("status", [401, 403, 404])
def test_fatal_statuses_give_up_with_the_reason(reactor, handler, status):
    """HTTP 401/403/404 on the upgrade give up at once: onGiveUp(reason), connect() fails with the HandshakeError."""
    failures: List[Any] = []
    connect(URL, handler, reactor=reactor).addErrback(failures.append)
    reactor.accept(rawFactory(f"HTTP/1.1 {status} No\r\nContent-Length: 0\r\n\r\n".encode()))
    assert handler.names() == ["onError", "onGiveUp"]
    ((hook, reason),) = handler.reasons
    assert isinstance(reason, HandshakeError) and reason.status == status
    assert failures[0].check(HandshakeError) and handler.factory.state == "gaveup"
    assert reactor.getDelayedCalls() == []


class Closer(WebSocketServerProtocol):
    code, reason = 1000, ""

    def onOpen(self):
        # Autobahn's public sendClose() only sends 1000 and 3000-4999: servers use the frame-level call.
        self.sendCloseFrame(self.code, self.reason.encode(), isReply=False)


def closing(code: int, reason: str):
    return echoServerFactory(type("C", (Closer,), {"code": code, "reason": reason}))


def test_policy_violation_close_gives_up(reactor, handler):
    """A server that closes with 1008 (policy violation) is not retried: onGiveUp carries ConnectionClosed(1008)."""
    connect(URL, handler, reactor=reactor).addErrback(lambda f: None)
    reactor.accept(closing(1008, "banned"))
    reactor.flush()
    assert handler.names() == ["onOpen", "onClose", "onGiveUp"]
    ((_, reason),) = handler.reasons
    assert isinstance(reason, ConnectionClosed) and (reason.code, reason.reason) == (1008, "banned")


def test_custom_should_retry(reactor, handler):
    """shouldRetry decides: here a 503 is not retried, while the default would."""
    connect(URL, handler, reactor=reactor, shouldRetry=lambda f: not f.check(HandshakeError)).addErrback(lambda f: None)
    reactor.accept(rawFactory(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"))
    assert handler.names() == ["onError", "onGiveUp"]


@pytest.mark.parametrize("reason,window", [("service restart; retry-window=3", 3.0), ("going down", 5.0)])
def test_service_restart_spreads_the_reconnect_over_the_window(reactor, reason, window):
    """Close 1012 reconnects after a uniformly random delay within the announced window (restartWindow if none), not at once."""
    got = []
    for _ in range(40):
        h = RecordingHandler(reactor)
        connect(URL, h, reactor=reactor, minUptime=0).addErrback(lambda f: None)
        reactor.accept(closing(1012, reason))
        reactor.flush()
        got.append(h.factory.delay)
        assert isinstance(h.reasons[0][1], ConnectionClosed) and h.reasons[0][1].code == 1012
        h.close()
    assert all(0 <= d <= window for d in got) and max(got) > window / 2 and min(got) < window / 2


def test_try_again_later_backs_off(reactor, handler):
    """Close 1013 (try again later) backs off like an overload: the delays grow."""
    connect(URL, handler, reactor=reactor, jitter=0, minUptime=5).addErrback(lambda f: None)
    for _ in range(3):
        reactor.accept(closing(1013, "busy"))
        reactor.flush()
        reactor.advance(handler.factory.delay)
    assert delays(handler) == [1.0, 2.0, 4.0]
    handler.close()


@pytest.mark.parametrize("status", [503, 429])
def test_retry_after_is_honoured_and_bounded(reactor, handler, status):
    """An HTTP 503 or 429 with Retry-After waits that long (plus at most 10 %), never above maxDelay."""
    connect(URL, handler, reactor=reactor, maxDelay=30).addErrback(lambda f: None)
    reactor.accept(rawFactory(f"HTTP/1.1 {status} Busy\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n".encode()))
    error = handler.events[0][2]
    assert isinstance(error, HandshakeError) and error.retryAfter == 7.0
    assert 7.0 <= handler.factory.delay <= 7.7
    reactor.advance(handler.factory.delay)
    reactor.accept(rawFactory(f"HTTP/1.1 {status} Busy\r\nRetry-After: 3600\r\nContent-Length: 0\r\n\r\n".encode()))
    assert 27.0 <= handler.factory.delay <= 30.0  # clamped to maxDelay, then spread (never in step)
    handler.close()


def test_old_style_hooks_without_reason_still_work(reactor):
    """A 0.1 handler whose onReconnect takes (attempt, delay) and onGiveUp takes nothing keeps being called."""
    calls: List[Any] = []

    class Old(HeartbeatHandler):
        def onReconnect(self, attempt, delay):
            calls.append(("onReconnect", attempt))

        def onGiveUp(self):
            calls.append(("onGiveUp",))

    h = Old()
    connect(URL, h, reactor=reactor, maxRetries=1).addErrback(lambda f: None)
    reactor.refuse()
    reactor.advance(h.factory.delay)
    reactor.refuse()
    assert calls == [("onReconnect", 1), ("onGiveUp",)]


def test_policy_is_pure_with_injected_random():
    """ReconnectPolicy is a pure function of its context and random source."""
    policy = ReconnectPolicy(lambda n: 2.0**n, probeInterval=1.5, restartWindow=4.0, maxDelay=10.0, random=lambda: 0.5)
    refused = RetryContext(1, Failure(ConnectionRefusedError()), None, refusals=1)
    assert policy(refused, 0) == 0.75  # the phase: half of probeInterval with random() == 0.5
    again = RetryContext(2, Failure(ConnectionRefusedError()), None, refusals=2)
    assert policy(again, 0) == 1.5
    closed = RetryContext(1, Failure(ConnectionClosed(1012, "retry-window=2", True)), 3.0)
    assert policy(closed, 1) == 1.0
    assert policy(RetryContext(3, Failure(HandshakeError("x", 500)), None), 3) == 8.0
    assert restartWindow("restart; retry-window=2.5") == 2.5 and restartWindow("bye") is None


def test_bad_options(reactor):
    """probeInterval, restartWindow and shouldRetry are checked at construction."""
    for options in ({"probeInterval": 0}, {"restartWindow": -1}, {"shouldRetry": 3}):
        with pytest.raises(ValueError):
            HeartbeatClientFactory(URL, HeartbeatHandler(), reactor=MemoryReactor(), **options)
