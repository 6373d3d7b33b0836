"""
Liveness, backpressure, retry and server-hint edge cases found by an adversarial review of issues 9 and 10
(each failed before its fix).
"""

import copy
from typing import Any, List

import pytest
from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet import protocol as tprotocol
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure

from txheartbeat import (
    ConnectionClosed,
    Heartbeat,
    HeartbeatHandler,
    HeartbeatServerFactory,
    HeartbeatServerProtocol,
    NotConnected,
    SendQueueFull,
    connect,
)
from txheartbeat._retry import restartWindow
from txheartbeat.testing import MemoryReactor, RecordingHandler, echoServerFactory

from .conftest import race

URL = "ws://127.0.0.1:9000/"


class Raw(tprotocol.Protocol):
    response = b""

    def dataReceived(self, data):
        if self.response:
            self.transport.write(self.response)
            self.response = b""


def rawFactory(response: bytes) -> tprotocol.Factory:
    f = tprotocol.Factory()
    f.protocol = type("R", (Raw,), {"response": response})
    return f


class Closer(WebSocketServerProtocol):
    code, reason = 1000, ""

    def onOpen(self):
        self.sendCloseFrame(self.code, self.reason.encode(), isReply=False)


def closing(code, reason):
    return echoServerFactory(type("C", (Closer,), {"code": code, "reason": reason}))


def delays(h):
    return [e[3] for e in h.events if e[1] == "onReconnect"]


# --- 1. Server hints clamped to maxDelay put every client in lockstep ------------------------


def test_default_overloaded_retry_after_with_default_max_delay_is_spread():
    """overloaded() defaults (Retry-After: 30) against clients with default maxDelay (30): the README promises 'plus up to 10 % so that clients do not return in step', yet every client waits exactly 30.0 s."""
    reactor = MemoryReactor()
    server = HeartbeatServerFactory()
    server.overloaded()  # retryAfter=30.0, the default
    got = []
    for _ in range(50):
        h = RecordingHandler(reactor)
        connect(URL, h, reactor=reactor).addErrback(lambda f: None)
        reactor.accept(server)
        reactor.flush()
        got.append(h.factory.delay)
        h.close()
    assert len(set(got)) > 1, f"all {len(got)} clients come back at the same instant: {sorted(set(got))}"


def test_restart_window_longer_than_max_delay_stays_spread():
    """restart(window=120) with the default maxDelay (30): delays are clamped to 30 after drawing in [0, 120], so about 3/4 of the clients reconnect at exactly t=30 s."""
    reactor = MemoryReactor()
    got = []
    for _ in range(100):
        h = RecordingHandler(reactor)
        connect(URL, h, reactor=reactor, minUptime=0).addErrback(lambda f: None)
        reactor.accept(closing(1012, "service restart; retry-window=120"))
        reactor.flush()
        got.append(h.factory.delay)
        h.close()
    atCap = sum(1 for d in got if d == 30.0)
    assert atCap <= 10, f"{atCap} of 100 clients reconnect at exactly 30.0 s (a thundering herd at maxDelay)"


def test_max_delay_below_probe_interval_keeps_probes_jittered():
    """maxDelay=1 with the default probeInterval=1.5 (both accepted): every probe after the first is min(1, 1.5 +- 5 %) == 1.0 exactly: clients of a dead server probe in lockstep."""
    reactor = MemoryReactor()
    h = RecordingHandler(reactor)
    connect(URL, h, reactor=reactor, initialDelay=0.5, maxDelay=1.0).addErrback(lambda f: None)
    for _ in range(10):
        reactor.refuse()
        reactor.advance(h.factory.delay)
    rest = delays(h)[1:]
    h.close()
    assert len(set(rest)) > 1, f"probe delays all identical: {rest}"


# --- 2. A zero/past Retry-After (or a retry-window=0) defeats backoff: a hot reconnect loop ---------


@pytest.mark.parametrize("value", ["0", "-5", "nan", "Thu, 01 Jan 1970 00:00:00 GMT"])
def test_retry_after_zero_or_in_the_past_still_backs_off(value):
    """Five 503 answers with a Retry-After of 0 / negative / NaN / a date in the past: each retry is scheduled 0 s later, forever (no backoff, no floor)."""
    reactor = MemoryReactor()
    h = RecordingHandler(reactor)
    connect(URL, h, reactor=reactor).addErrback(lambda f: None)
    for _ in range(5):
        reactor.accept(rawFactory(f"HTTP/1.1 503 Busy\r\nRetry-After: {value}\r\nContent-Length: 0\r\n\r\n".encode()))
        reactor.advance(h.factory.delay)
    got = delays(h)
    h.close()
    assert sum(got) > 1.0, f"5 overloaded answers in {sum(got)} s: {got}"


# --- 3. _fireReason caches the signature per class, but hooks may be set per instance ---------------


def test_fire_reason_per_instance_hooks_of_different_arity():
    """Two plain HeartbeatHandlers, one with an instance hook (attempt, delay), one with (attempt, delay, reason): whichever arity is cached first for (HeartbeatHandler, 'onReconnect') is used for the other too, which then raises TypeError (logged) and never runs."""
    calls: List[Any] = []
    old, new = HeartbeatHandler(), HeartbeatHandler()
    old.onReconnect = lambda attempt, delay: calls.append(("old", attempt))
    new.onReconnect = lambda attempt, delay, reason: calls.append(("new", attempt, reason.value))
    reason = Failure(ConnectionRefusedError())
    new._fireReason("onReconnect", reason, 1, 0.5)
    old._fireReason("onReconnect", reason, 1, 0.5)
    assert [c[0] for c in calls] == ["new", "old"], calls


def test_fire_reason_cache_survives_instance_hook_replacement():
    """A handler whose onGiveUp is replaced on the instance after a first call (a bound method of another object taking no reason) stops being called."""
    calls: List[Any] = []

    class Watcher:
        def gaveUp(self):
            calls.append("gaveUp")

    h = HeartbeatHandler()
    h._fireReason("onGiveUp", Failure(ConnectionRefusedError()))  # the class default takes reason: cached True
    h.onGiveUp = Watcher().gaveUp
    h._fireReason("onGiveUp", Failure(ConnectionRefusedError()))
    assert calls == ["gaveUp"]


# --- 4. whenDrained / maxBuffered -------------------------------------------------------------------


def openLink(reactor, server=None, **options):
    h = RecordingHandler(reactor)
    connect(URL, h, reactor=reactor, **options).addErrback(lambda f: None)
    link = reactor.accept(server or echoServerFactory())
    reactor.flush()
    assert h.isOpen
    return h, link


def backlog(transport, n):
    """Make userBacklog() see n bytes, as Twisted's FileDescriptor keeps them (dataBuffer/offset/_tempDataLen)."""
    transport.dataBuffer = b"x" * n
    transport.offset = 0
    transport._tempDataLen = 0


def test_when_drained_race_of_two_waiters():
    """defer.race([whenDrained(), whenDrained(100)]): both are ready in the same poll; the winner's callback cancels the loser, then _checkDrain calls back the cancelled Deferred: AlreadyCalledError out of the timer."""
    reactor = MemoryReactor()
    h, link = openLink(reactor)
    backlog(link.clientTransport, 1000)
    results: List[Any] = []
    race([h.whenDrained(), h.whenDrained(100)]).addBoth(results.append)
    backlog(link.clientTransport, 0)
    reactor.advance(0.05)  # raises AlreadyCalledError from _checkDrain
    assert results and not isinstance(results[0], Failure)
    h.close()


def test_when_drained_waiter_cancelling_another_on_connection_loss_keeps_reconnecting():
    """A whenDrained() errback that cancels another waiter (cleanup) makes failDrainWaiters raise AlreadyCalledError inside connectionLost, before factory._protocolLost: the client never reconnects."""
    reactor = MemoryReactor()
    h, link = openLink(reactor, minUptime=0)
    backlog(link.clientTransport, 1000)
    d1, d2 = h.whenDrained(), h.whenDrained(10)
    d1.addErrback(lambda f: d2.cancel())
    d2.addErrback(lambda f: None)
    try:
        link.reset()
    except Exception as e:  # noqa: BLE001 (what the reactor would log)
        print("connectionLost raised", repr(e))
    assert "onReconnect" in h.names(), h.names()
    h.close()


def test_when_drained_after_loss_fails_and_leaves_no_timer():
    """whenDrained() called from a server protocol's onClose (after failDrainWaiters ran) with bytes still in the dead transport's buffer: a Deferred that never fires and a 20 ms poll that runs forever."""
    reactor = MemoryReactor()
    seen: List[Any] = []

    class P(HeartbeatServerProtocol):
        def onClose(self, wasClean, code, reason):
            seen.append(self.whenDrained())

    server = HeartbeatServerFactory(pingInterval=None)
    server.protocol = P
    h, link = openLink(reactor, server=server, pingInterval=None)
    backlog(link.serverTransport, 1000)  # unsent bytes; Twisted's FileDescriptor keeps dataBuffer after connectionLost
    link.reset()  # the connection dies: onClose asks to be told when its last bytes are out
    reactor.advance(10)
    d = seen[-1]
    assert d.called, "whenDrained() after loss never fires"
    d.addErrback(lambda f: f.trap(NotConnected))
    h.close()
    assert reactor.getDelayedCalls() == [], reactor.getDelayedCalls()


def test_max_buffered_does_not_bypass_a_subclass_send_message():
    """A server protocol subclass that overrides sendMessage (metrics, encoding): with maxBuffered set, limitBuffered() puts an instance attribute over it and _sendMessageLimited calls Autobahn's sendMessage directly: the override is silently skipped."""
    reactor = MemoryReactor()
    counted: List[Any] = []

    class Counting(HeartbeatServerProtocol):
        def sendMessage(self, payload, isBinary=False, *args, **kwargs):
            counted.append(payload)
            return super().sendMessage(payload, isBinary, *args, **kwargs)

        def onMessage(self, payload, isBinary):
            self.sendMessage(payload, isBinary)

    server = HeartbeatServerFactory(pingInterval=None, maxBuffered=1_000_000)
    server.protocol = Counting
    h, link = openLink(reactor, server=server)
    h.send(b"hello")
    reactor.flush()
    assert counted == [b"hello"], counted
    h.close()


def test_queue_flush_on_open_respects_max_buffered_without_breaking_open():
    """100 messages of 1 KiB queued during an outage, maxBuffered=16 KiB: Twisted buffers every write of one reactor turn (dataBuffer/_tempDataLen), so the flush after onOpen hits the limit and SendQueueFull escapes _opened: connect()'s Deferred never fires, the rest of the open path (the protocol's onOpen) is skipped and the message being flushed is lost."""
    reactor = MemoryReactor()
    h = RecordingHandler(reactor)
    opened: List[Any] = []
    connect(URL, h, reactor=reactor, maxBuffered=16384).addBoth(opened.append)
    for i in range(100):
        h.send(b"%04d" % i + b"x" * 1020)
    link = reactor.accept(greet=False)
    transport = link.clientTransport
    backlog(transport, 0)
    write = transport.write

    def buffered(data):  # as tcp.Connection.write: kept until the next doWrite
        transport._tempDataLen += len(data)
        write(data)

    transport.write = buffered
    link.pump()
    reactor.flush()
    assert opened and opened[0] is h, f"connect() did not fire; {len(h.queued)} still queued"
    h.close()


def test_request_leave_under_backpressure():
    """requestLeave() on a server connection whose buffer is past maxBuffered: the leave message is refused with SendQueueFull and no fallback close is scheduled (heartbeats bypass the limit, the leave request does not)."""
    reactor = MemoryReactor()
    server = HeartbeatServerFactory(pingInterval=None, maxBuffered=100)
    h, link = openLink(reactor, server=server, pingInterval=None)
    backlog(link.serverTransport, 1000)
    try:
        link.server.requestLeave(timeout=1)
    except SendQueueFull:
        pytest.fail("requestLeave raised SendQueueFull; the client is never asked to leave nor closed")
    h.close()


def test_limit_buffered_checks_its_argument():
    """limitBuffered(-1) / limitBuffered('10') are accepted and only fail (or refuse everything) at the next send."""
    reactor = MemoryReactor()
    h, link = openLink(reactor)
    with pytest.raises(ValueError):
        h.protocol.limitBuffered(-1)
    h.close()


# --- 5. restart(): the hint lives in a reason truncated to 123 bytes --------------------------------


def restartOne(reason, window=2.0):
    reactor = MemoryReactor()
    server = HeartbeatServerFactory(pingInterval=None)
    h, link = openLink(reactor, server=server, pingInterval=None, minUptime=0)
    server.restart(window=window, reason=reason)
    reactor.flush()
    return h


def test_restart_with_a_long_reason_keeps_the_window():
    """restart(window=2, reason=<~115 chars>): '{reason}; retry-window=2' is cut at 123 bytes, the window is lost and the client spreads over its own restartWindow (5 s) instead."""
    h = restartOne(
        "maintenance of the cluster frontends, expected to last a few minutes, see https://status.example.com/incidents/42",
        2.0,
    )
    ((hook, reason),) = h.reasons
    assert isinstance(reason, ConnectionClosed) and reason.code == 1012
    assert restartWindow(reason.reason) == 2.0, reason.reason
    h.close()


def test_restart_with_a_non_ascii_reason_is_a_clean_1012():
    """restart(reason='Wartung für …' of 62 two-byte chars): the reason is cut mid-character, the client's Autobahn fails the connection for invalid UTF-8 (protocol error) instead of seeing close 1012."""
    h = restartOne("ü" * 62)
    ((hook, reason),) = h.reasons
    assert isinstance(reason, ConnectionClosed) and reason.code == 1012, repr(reason)
    h.close()


@pytest.mark.parametrize("window", [0.00001, 1e6])
def test_restart_window_formatting_round_trips(window):
    """restart() writes the window with '{:g}' ('1e-05', '1e+06') but the client's regex only reads digits: it reads 1 s."""
    h = restartOne("service restart", window)
    ((hook, reason),) = h.reasons
    assert restartWindow(reason.reason) == window, reason.reason
    h.close()


def test_restart_truncation_never_shrinks_the_window():
    """A 107-char reason with window=10: '...; retry-window=10' is cut to '...; retry-window=1', so clients come back 10x more concentrated than the server asked."""
    h = restartOne("r" * 107, 10.0)
    ((hook, reason),) = h.reasons
    assert restartWindow(reason.reason) in (None, 10.0), reason.reason[-20:]
    h.close()


# --- 6. Heartbeat: progress callables ------------------------------------------------------------


def test_heartbeat_progress_that_raises_still_declares_the_peer_dead():
    """Heartbeat(progress=...) is public: a progress callable that raises (at the ping: sendPing is never called; at the verdict: after _call=None) leaves the heartbeat stopped with a ping outstanding: the dead peer is never declared dead."""
    clock = Clock()
    sent: List[float] = []
    dead: List[float] = []
    state = {"raise": False, "n": 0}

    def progress():
        state["n"] += 1
        if state["raise"]:
            raise OSError("socket gone")
        return (state["n"], 1)  # always moving with a backlog: extended

    hb = Heartbeat(clock, 1.0, 1.0, lambda: sent.append(clock.seconds()), dead.append, progress=progress)
    hb.start()
    clock.advance(1.0)  # heartbeat, progress sampled
    clock.advance(1.0)  # deadline: extended
    state["raise"] = True
    for _ in range(20):
        try:
            clock.advance(1.0)
        except OSError:
            pass  # a real reactor logs it and carries on
    assert dead, f"never declared dead; running={hb.running}, awaitingAnswer={hb.awaitingAnswer}"


def test_heartbeat_progress_that_raises_at_the_ping_does_not_kill_an_unpinged_peer():
    """progress raising in _idleCheck (before sendPing): no heartbeat goes out, yet the deadline is already armed: the peer is declared dead without ever having been pinged."""
    clock = Clock()
    sent: List[float] = []
    dead: List[float] = []

    def progress():
        raise OSError("EBADF")

    hb = Heartbeat(clock, 1.0, 1.0, lambda: sent.append(clock.seconds()), dead.append, progress=progress)
    hb.start()
    try:
        clock.advance(1.0)
    except OSError:
        pass
    clock.advance(1.0)
    assert sent or not dead, f"declared dead at {clock.seconds()} without a heartbeat sent"


def serverConnection(server):
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    reactor = MemoryReactor()
    server._batched_timer = __import__("txheartbeat._protocol", fromlist=["ExactTimer"]).ExactTimer(reactor)
    server.reactor = reactor
    p = server.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))

    class T(StringTransport):
        def unregisterProducer(self):
            self.producer = None

    t = T(peerAddress=IPv4Address("TCP", "127.0.0.1", 50000))
    p.makeConnection(t)
    return reactor, p, t


REQUEST = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)


def test_overloaded_answers_only_a_complete_request():
    """overloaded(): the first partial chunk of a request (large Authorization/Cookie headers span several segments) already gets the 503 and a close; the rest of the request then arrives on a closed socket (a TCP RST on Linux, which can destroy the 503 and its Retry-After before the client reads them)."""
    server = HeartbeatServerFactory("ws://127.0.0.1:9000")
    server.overloaded(5)
    reactor, p, t = serverConnection(server)
    p.dataReceived(REQUEST[:40])
    assert t.value() == b"" and not t.disconnecting, t.value()[:40]


def test_restart_also_covers_handshakes_in_progress():
    """restart(): a connection in its opening handshake is not in factory.clients; it opens right after restart() returns and is never asked to reconnect (it is cut by the restart instead, without a window)."""
    server = HeartbeatServerFactory("ws://127.0.0.1:9000", pingInterval=None)
    reactor, p, t = serverConnection(server)
    p.dataReceived(REQUEST[:40])
    server.restart(window=2)
    p.dataReceived(REQUEST[40:] + b"\r\n")
    assert not p.isOpen, "opened after restart() and kept open: it will be cut without a 1012 window"


def test_clients_returning_while_restart_waits_are_not_accepted():
    """restart(window=5) waits (up to closeTimeout) for a client that does not finish its close; meanwhile a client that drew a short delay reconnects and is accepted by the server that is about to stop: it will be cut with 1006 and, its uptime below minUptime, back off as for a failure."""
    reactor = MemoryReactor()
    server = HeartbeatServerFactory(pingInterval=None, closeTimeout=2.0)
    slow, slowLink = openLink(reactor, server=server, pingInterval=None)
    fast, fastLink = openLink(reactor, server=server, pingInterval=None)
    slowLink.blackhole(toServer=True, toClient=False)  # its close answer never arrives
    # this client draws 0.5 s of the 5 s window (its own policy: the default one is shared by every client)
    fast.factory._policy = copy.copy(fast.factory._policy)
    fast.factory._policy.random = lambda: 0.1
    done: List[Any] = []
    server.restart(window=5).addBoth(done.append)
    reactor.flush()
    assert fast.names()[-1] == "onReconnect" and fast.factory.delay == 0.5
    reactor.advance(0.5)
    reactor.accept(server)
    reactor.flush()
    assert not done, "restart() still waiting for the slow client"
    assert not fast.isOpen, "the restarting server accepted a new client before it stopped"
    slow.close()
    fast.close()


# --- 8. bufferedAmount under TLS misses Twisted's small-write aggregator (up to 64 KB) ----------------


@pytest.mark.skipif(
    "clock"
    not in __import__("inspect")
    .signature(__import__("twisted.protocols.tls").protocols.tls.TLSMemoryBIOFactory)
    .parameters,
    reason="Twisted before 23.10 encrypts each write at once: it aggregates none to count",
)
def test_buffered_amount_counts_tls_aggregated_writes():
    """Twisted's TLS transport (BufferingTLSTransport) holds writes of one reactor turn in _aggregator._buffer (up to 64 KB) before encrypting: userBacklog (bufferedAmount, maxBuffered, whenDrained, the heartbeat's backlog) does not see them."""
    from twisted.internet.ssl import CertificateOptions
    from twisted.internet.testing import StringTransport

    from txheartbeat._tcpinfo import userBacklog

    clock = Clock()
    app = tprotocol.Protocol()
    factory = TLSMemoryBIOFactory(CertificateOptions(), True, tprotocol.Factory.forProtocol(lambda: app), clock=clock)
    tls = factory.buildProtocol(None)
    tls.makeConnection(StringTransport())
    app.transport.write(b"x" * 30000)
    assert userBacklog(app.transport) >= 30000, userBacklog(app.transport)
