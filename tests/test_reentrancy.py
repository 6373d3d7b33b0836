"""
Re-entrancy, cancellation and stale-event cases found by an adversarial review of the lifecycle
(each failed before its fix), and the re-entrant probes that held up, kept as regression tests.
"""

from typing import Any, List

import pytest
from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import globalLogPublisher
from zope.interface import implementer

from txheartbeat import HeartbeatClientFactory, NotConnected, connect
from txheartbeat.testing import MemoryReactor, RecordingHandler

URL = "ws://127.0.0.1:9000/"


def clientCalls(r):
    return [
        c for c in r.getDelayedCalls() if not isinstance(getattr(c.func, "__self__", None), WebSocketServerProtocol)
    ]


@pytest.fixture
def logged():
    events: List[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def bugs(events):
    return [e for e in events if "bug" in str(e.get("log_format"))]


def failures(events):
    return [e for e in events if "log_failure" in e]


# 1. Cancelling connect()'s Deferred inside onGiveUp ------------------------------------


def test_cancel_connect_deferred_inside_on_give_up():
    """Cancelling connect()'s Deferred from onGiveUp neither raises out of the reactor nor stops whenClosed() from firing."""
    r = MemoryReactor()
    box: List[Any] = []

    class H(RecordingHandler):
        def onGiveUp(self):
            box[0].cancel()

    h = H(r)
    f = HeartbeatClientFactory(URL, h, reactor=r, maxRetries=0, jitter=0)
    d = f.connect()
    box.append(d)
    results: List[Any] = []
    d.addErrback(results.append)
    closed: List[Any] = []
    f.whenClosed().addCallback(closed.append)
    r.refuse()
    assert f.state == "gaveup"
    assert closed == [None]


# 2. Cancelling connect()'s Deferred inside onOpen -----------------------------------------


def test_cancel_connect_deferred_inside_on_open():
    """Cancelling connect()'s Deferred from onOpen is a final close; other whenOpen() waiters still fire."""
    r = MemoryReactor()
    box: List[Any] = []

    class H(RecordingHandler):
        def onOpen(self):
            super().onOpen()
            box[0].cancel()

    h = H(r)
    f = HeartbeatClientFactory(URL, h, reactor=r, jitter=0)
    d = f.connect()
    box.append(d)
    d.addErrback(lambda f: None)
    other: List[Any] = []
    f.whenOpen().addBoth(other.append)
    r.accept()  # (AlreadyCalledError escaped out of the handshake before the fix)
    assert other, "whenOpen() waiter after the connect() Deferred never fired"
    r.advance(10)
    assert f.state == "closed"
    assert clientCalls(r) == []


# 3. retryPolicy that raises or returns a bad value ------------------------------------------


@pytest.mark.parametrize("policy", [lambda n: 1 / 0, lambda n: None])
def test_bad_retry_policy_does_not_strand_the_client(policy, logged):
    """A retryPolicy that raises (or returns None) is logged and never leaves the client in 'waiting' with no timer."""
    r = MemoryReactor()
    h = RecordingHandler(r)
    f = HeartbeatClientFactory(URL, h, reactor=r, retryPolicy=policy)
    f.connect().addErrback(lambda f: None)
    try:
        r.refuse()
    except Exception:
        pass  # the reactor would log it
    # whatever it decides, it must not sit in 'waiting' with nothing scheduled
    assert not (f.state == "waiting" and f._callID is None), (f.state, h.names())


# 4. connect() raising synchronously while the client keeps running -------------------------


@implementer(IStreamClientEndpoint)
class RaisingEndpoint:
    def __init__(self):
        self.calls = 0

    def connect(self, factory):
        self.calls += 1
        raise OSError("endpoint exploded synchronously")


def test_connect_that_raises_leaves_no_running_client():
    """If connect() raises, the client is not left running in the background (no timer, no further attempts)."""
    r = MemoryReactor()
    h = RecordingHandler(r)
    ep = RaisingEndpoint()
    f = HeartbeatClientFactory(URL, h, reactor=r, endpoint=ep, openTimeout=2, jitter=0)
    try:
        f.connect().addErrback(lambda f: None)
    except OSError:
        # the caller is told it failed and gets no Deferred to cancel: then nothing may keep running
        for _ in range(30):  # a real reactor logs what a timer raises and goes on
            try:
                r.advance(1)
            except OSError:
                pass
        assert (ep.calls, f.state, clientCalls(r)) == (1, "idle", []), (ep.calls, f.state, h.names()[:6])
        return
    # the other acceptable design: a failed attempt, reported at once like an errback from the endpoint
    assert h.names()[:1] == ["onError"] and isinstance(h.events[0][2], OSError)
    h.close()
    assert clientCalls(r) == []


# 5. A stale factory restarted after its handler moved on ------------------------------------


def test_restarting_a_stale_factory_cannot_steal_a_handler():
    """After the handler was given to a new factory, restarting the old one is refused: one handler, one live connection."""
    r = MemoryReactor()
    h = RecordingHandler(r)
    f1 = HeartbeatClientFactory(URL, h, reactor=r, maxRetries=0, jitter=0)
    f1.connect().addErrback(lambda f: None)
    r.refuse()
    assert f1.state == "gaveup"
    connect(URL, h, reactor=r, jitter=0)  # the documented way to start again
    f2 = h.factory
    r.accept()
    try:
        f1.connect().addErrback(lambda f: None)  # an old reference: e.g. a service or a saved connector
    except (RuntimeError, ValueError):
        return  # refused: fine
    if r.pending:
        r.accept()
    live = [link for link in r.links if link.connected]
    h.close()
    r.advance(10)
    assert len(live) <= 1, f"{len(live)} live connections for one handler; after h.close(): f1={f1.state} f2={f2.state}"


def test_stale_connector_restarts_old_factory_behind_handlers_back():
    """The classic resetDelay(); connector.connect() on an old factory whose handler moved on must not run two clients."""
    r = MemoryReactor()
    h = RecordingHandler(r)
    f1 = HeartbeatClientFactory(URL, h, reactor=r, maxRetries=0, jitter=0)
    connector = r.connectTCP("127.0.0.1", 9000, f1)
    r.refuse()
    assert f1.state == "gaveup"
    connect(URL, h, reactor=r, jitter=0)
    r.accept()
    f1.resetDelay()
    try:
        connector.connect()
    except (RuntimeError, ValueError):
        return
    if r.pending:
        r.accept()
    h.close()
    r.advance(10)
    assert f1.finished, f"old factory still {f1.state} after handler.close()"


# 6. Cancelling a whenClosed()/whenOpen() waiter from inside a hook -----------------------


@pytest.mark.parametrize("which", ["whenClosed", "whenOpen"])
def test_cancelling_a_waiter_inside_on_give_up_cancels_it(which):
    """Cancelling a pending whenClosed()/whenOpen() Deferred inside onGiveUp cancels it (no ValueError out of cancel())."""
    r = MemoryReactor()
    raised: List[Any] = []
    box: List[Any] = []

    class H(RecordingHandler):
        def onGiveUp(self):
            try:
                box[0].cancel()
            except Exception as e:
                raised.append(e)

    h = H(r)
    f = HeartbeatClientFactory(URL, h, reactor=r, maxRetries=0, jitter=0)
    f.connect().addErrback(lambda f: None)
    d = getattr(f, which)()
    box.append(d)
    got: List[Any] = []
    d.addBoth(got.append)
    r.refuse()
    assert raised == [], raised
    assert len(got) == 1 and getattr(got[0], "check", lambda *a: False)(CancelledError), got


# 7. whenClosed() fires before the last hook of the run ----------------------------------------


def test_when_closed_fires_after_on_close_when_closed_from_on_error():
    """close() inside onError for a dead peer: whenClosed() fires after that connection's onClose, not before."""
    from twisted.internet.defer import Deferred as D  # noqa: F401

    r = MemoryReactor()
    order: List[str] = []

    class H(RecordingHandler):
        def onError(self, failure):
            order.append("onError")
            self.close()

        def onClose(self, wasClean, code, reason):
            order.append("onClose")

    h = H(r)
    f = HeartbeatClientFactory(URL, h, reactor=r, pingInterval=1, pongTimeout=1, jitter=0)
    f.connect()
    f.whenClosed().addCallback(lambda _: order.append("whenClosed"))
    link = r.accept()
    link.blackhole()
    r.advance(2)
    assert order == ["onError", "onClose", "whenClosed"], order


# 8. Messages queued survive a "final" close that is not handler.close() -----------------------


class Rec(WebSocketServerProtocol):
    got: List[bytes] = []

    def onMessage(self, payload, isBinary):
        Rec.got.append(payload)


@pytest.mark.parametrize("how", ["cancel", "stopTrying", "factory.close"])
def test_final_close_other_than_handler_close_does_not_send_old_queue_later(how):
    """A final close by cancel / stopTrying() / factory.close() does not deliver messages queued before it on a later connect()."""
    from txheartbeat.testing import echoServerFactory

    Rec.got = []
    r = MemoryReactor()
    h = RecordingHandler(r)
    f = HeartbeatClientFactory(URL, h, reactor=r, jitter=0)
    d = f.connect()
    d.addErrback(lambda f: None)
    h.send("written before the close")
    {"cancel": d.cancel, "stopTrying": f.stopTrying, "factory.close": f.close}[how]()
    assert f.state == "closed"
    f.connect()
    r.accept(echoServerFactory(Rec))
    r.flush()
    assert Rec.got == [], f"sent after a final {how}: {Rec.got}; queue was neither returned nor dropped"
    h.close()


# 9. A late endpoint connection from a cancelled attempt is adopted as the current one -----------


@implementer(IStreamClientEndpoint)
class ManualEndpoint:
    """An endpoint whose connections complete when the test says so (cancelling its Deferred does not stop them)."""

    def __init__(self, reactor):
        self.reactor = reactor
        self.attempts: List[Any] = []

    def connect(self, factory):
        d: Deferred[Any] = Deferred()
        self.attempts.append((factory, d))
        return d

    def complete(self, i):
        from twisted.internet.address import IPv4Address
        from twisted.internet.error import NoProtocol
        from twisted.internet.testing import StringTransport

        factory, d = self.attempts[i]
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 9000))
        if proto is None:
            if not d.called:
                d.errback(NoProtocol())
            return None
        proto.makeConnection(StringTransport())
        if not d.called:
            d.callback(proto)
        return proto


def test_late_connection_of_cancelled_endpoint_attempt_is_not_adopted(logged):
    """A connection from an attempt that the open timeout cancelled is refused; the table never logs a bug."""
    r = MemoryReactor()
    h = RecordingHandler(r)
    ep = ManualEndpoint(r)
    f = HeartbeatClientFactory(URL, h, reactor=r, endpoint=ep, openTimeout=2, retryPolicy=lambda n: 1.0)
    f.connect().addErrback(lambda f: None)
    r.advance(2)  # attempt 1 times out (its Deferred is cancelled)
    r.advance(1)  # attempt 2 starts
    assert len(ep.attempts) == 2 and f.state == "connecting"
    stale = ep.complete(0)  # attempt 1's TCP connect completes late
    ep.complete(1)
    assert stale is None, f"stale connection adopted: state {f.state}"
    assert bugs(logged) == []


# Probes that held up (kept as passing tests) ------------------------------------------------


@pytest.mark.parametrize(
    "hook", ["onError", "onClose", "onReconnect", "onGiveUp", "onOpen", "onHeartbeat", "onMessage"]
)
@pytest.mark.parametrize("action", ["close", "close+connect(new factory)", "close+factory.connect()"])
def test_held_reentrant_close_and_restart_from_every_hook(hook, action, logged):
    """close() / close()+restart from every hook: one live connection at most, no bug log, no timer left after a final close."""
    r = MemoryReactor()
    done: List[int] = []

    class H(RecordingHandler):
        def _record(self, name, *args):
            super()._record(name, *args)
            if name == hook and not done:
                done.append(1)
                self.close()
                if action == "close+connect(new factory)" and self.factory.finished:
                    connect(URL, self, reactor=r, jitter=0, maxRetries=0).addErrback(lambda f: None)
                elif action == "close+factory.connect()" and self.factory.finished:
                    self.factory.connect().addErrback(lambda f: None)

    h = H(r)
    f = HeartbeatClientFactory(URL, h, reactor=r, jitter=0, maxRetries=1, pingInterval=1, pongTimeout=1)
    f.connect().addErrback(lambda f: None)
    link = r.accept()
    try:
        h.send("hello")
    except NotConnected:
        pass  # onOpen closed it
    r.flush()
    r.advance(1.5)  # a heartbeat answered
    link.reset()  # onError? no: onClose, onReconnect
    r.advance(1)
    for _ in range(3):
        if r.pending:
            r.refuse()
        r.advance(5)
    assert len([x for x in r.links if x.connected]) <= 1
    h.close()
    r.advance(10)
    for x in list(r.links):
        x.reset()
    assert h.factory.finished and f.finished
    assert clientCalls(r) == []
    assert bugs(logged) == []


def test_held_close_inside_prepare_and_between_addresses(logged):
    """close() from inside prepare, and close() between two resolved addresses, end cleanly."""
    r = MemoryReactor()
    h = RecordingHandler(r)
    f = HeartbeatClientFactory(URL, h, reactor=r, prepare=lambda n: h.close() or "ws://127.0.0.1:9000/x")
    f.connect().addErrback(lambda f: None)
    assert f.state == "closed" and r.pending == [] and clientCalls(r) == []
    r2 = MemoryReactor()
    r2.hosts["dual.test"] = ["::1", "127.0.0.1"]
    h2 = RecordingHandler(r2)
    connect("ws://dual.test:9000/", h2, reactor=r2).addErrback(lambda f: None)
    r2.refuse()
    assert len(r2.pending) == 1
    h2.close()
    assert r2.pending == [] and h2.factory.state == "closed" and clientCalls(r2) == []
    assert bugs(logged) == []


def test_held_late_prepare_after_close_and_after_open_timeout(logged):
    """A prepare Deferred that fires after close() or after the open timeout is ignored."""
    r = MemoryReactor()
    h = RecordingHandler(r)
    ds: List[Deferred] = []

    def prepare(n):
        d: Deferred[Any] = Deferred(lambda d: None)  # a canceller that does nothing
        ds.append(d)
        return d

    f = HeartbeatClientFactory(URL, h, reactor=r, prepare=prepare, openTimeout=2, jitter=0)
    f.connect().addErrback(lambda f: None)
    r.advance(2)  # open timeout in prepare
    r.advance(1)  # second attempt's prepare
    h.close()
    assert r.pending == [] and f.state == "closed"
    assert bugs(logged) == []
