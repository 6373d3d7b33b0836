"""Unit tests for the reconnecting client on the in-memory reactor (exact timing)."""

from typing import List

import pytest
from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.error import ConnectionRefusedError, DNSLookupError
from twisted.logger import globalLogPublisher

from txheartbeat import (
    GaveUp,
    HandshakeError,
    HeartbeatClientFactory,
    HeartbeatHandler,
    HeartbeatTimeout,
    NotConnected,
    OpenTimeout,
    SendQueueFull,
    connect,
)
from txheartbeat.testing import RecordingHandler, echoServerFactory

from .conftest import URL


class RecordingServer(WebSocketServerProtocol):
    """Echo server that remembers what it received."""

    received: List[bytes] = []

    def onMessage(self, payload, isBinary):
        RecordingServer.received.append(payload)
        self.sendMessage(payload, isBinary)


class SilentServer(WebSocketServerProtocol):
    """Accepts the upgrade, then never sends anything (not even pongs)."""

    def onPing(self, payload):
        pass

    def onMessage(self, payload, isBinary):
        pass


def recordingFactory():
    RecordingServer.received = []
    return echoServerFactory(RecordingServer)


def quiet(reactor):
    assert reactor.getDelayedCalls() == []


def finish(reactor, handler):
    handler.close()
    reactor.advance(10)
    assert handler.factory.state == "closed"
    quiet(reactor)


# Opening -------------------------------------------------------------------


def test_connect_fires_with_handler_at_open(reactor, handler):
    """connect() fires with the handler when the first connection opens, after onOpen."""
    results = []
    connect(URL, handler, reactor=reactor).addCallback(results.append)
    assert results == []
    reactor.accept()
    assert results == [handler]
    assert handler.names() == ["onOpen"]
    assert handler.isOpen and handler.protocol is not None
    finish(reactor, handler)


def test_autobahn_autoping_off_and_timers_on_injected_clock(reactor, handler, make):
    """Autobahn's own keepalive is off and every timer lives on the injected reactor."""
    factory = make(pingInterval=15, pongTimeout=10)
    link = reactor.accept()
    assert link.client.autoPingInterval == 0
    assert [c.getTime() for c in reactor.getDelayedCalls()] == [15.0]
    assert factory._batched_timer._clock is reactor
    finish(reactor, handler)


# Heartbeat ------------------------------------------------------------------


def test_ping_frames_at_exact_instants_with_rtt(reactor, handler, make):
    """With the default pingMessage=None, RFC 6455 pings go out every idle pingInterval and the round trip is kept."""
    make(pingInterval=15, pongTimeout=10)
    reactor.accept()
    reactor.advance(14.999)
    assert handler.stats.heartbeatsSent == 0
    reactor.advance(0.001)
    assert handler.stats.heartbeatsSent == 1
    assert handler.events[-1] == (15.0, "onHeartbeat", 0.0)
    reactor.advance(15)
    assert handler.stats.heartbeatsSent == 2
    assert handler.stats.latency == 0.0
    assert "onClose" not in handler.names()
    finish(reactor, handler)


def test_application_heartbeat_text(reactor, handler, make):
    """pingMessage='heartbeat' sends the seed's text heartbeat and any reply counts as the pong."""
    make(pingInterval=15, pongTimeout=10, pingMessage="heartbeat")
    reactor.accept(recordingFactory())
    reactor.advance(15)
    assert RecordingServer.received == [b"heartbeat"]
    assert handler.events[-2:] == [(15.0, "onHeartbeat", 0.0), (15.0, "onMessage", b"heartbeat", False)]
    reactor.advance(15)
    assert RecordingServer.received == [b"heartbeat", b"heartbeat"]
    finish(reactor, handler)


def test_application_heartbeat_callable_and_bytes(reactor, handler, make):
    """A callable pingMessage is called for each heartbeat; bytes go out as a binary message."""
    n = iter(range(100))
    make(pingInterval=1, pongTimeout=1, pingMessage=lambda: f"hb-{next(n)}".encode())
    reactor.accept(recordingFactory())
    reactor.advance(2)
    assert RecordingServer.received == [b"hb-0", b"hb-1"]
    assert handler.events[-1][1:] == ("onMessage", b"hb-1", True)
    finish(reactor, handler)


def test_inbound_traffic_means_no_heartbeat(reactor, handler, make):
    """A server that talks at least every pingInterval never gets a heartbeat."""
    make(pingInterval=15, pongTimeout=10)
    link = reactor.accept()
    for _ in range(10):
        reactor.advance(14)
        link.server.sendMessage(b"tick")
    reactor.flush()
    assert handler.stats.heartbeatsSent == 0
    assert handler.stats.messagesReceived == 10
    finish(reactor, handler)


def test_heartbeat_off(reactor, handler, make):
    """pingInterval=None runs no heartbeat timer at all."""
    make(pingInterval=None)
    reactor.accept()
    quiet(reactor)
    finish(reactor, handler)


def test_dead_peer_detected_exactly_and_aborted(reactor, handler, make):
    """A silent peer is declared dead exactly pingInterval + pongTimeout after its last byte: onError, onClose(1006), onReconnect."""
    make(pingInterval=15, pongTimeout=10)
    link = reactor.accept(echoServerFactory(SilentServer))
    reactor.advance(24.999)
    assert handler.names() == ["onOpen"]
    reactor.advance(0.001)
    assert link.clientTransport.closeRequest is True  # aborted, no close handshake
    assert handler.names() == ["onOpen", "onError", "onClose", "onReconnect"]
    t, _, error = handler.events[1]
    assert t == 25.0 and isinstance(error, HeartbeatTimeout) and error.idle == 25.0
    assert handler.events[2][:4] == (25.0, "onClose", False, 1006)
    assert handler.events[3] == (25.0, "onReconnect", 1, 1.0)
    assert handler.stats.deadPeers == 1
    finish(reactor, handler)


def test_blackholed_link_detected(reactor, handler, make):
    """A link that swallows traffic both ways (half-open TCP) is detected at the bound after the last inbound byte."""
    make(pingInterval=0.5, pongTimeout=0.5)
    link = reactor.accept()
    reactor.advance(0.5)  # one answered heartbeat at 0.5
    link.blackhole()
    reactor.advance(2)
    errors = [e for e in handler.events if e[1] == "onError"]
    assert errors[0][0] == 1.5
    finish(reactor, handler)


# Reconnect -------------------------------------------------------------------


def test_backoff_sequence_on_refused(reactor, handler, make):
    """With probeInterval=None, refused attempts back off 1, 2, 4, 8 s (jitter off), each reported through onError."""
    make(initialDelay=1, maxDelay=8, factor=2, probeInterval=None)
    for _ in range(5):
        reactor.refuse()
        reactor.advance(reactor.getDelayedCalls()[0].getTime() - reactor.seconds() if reactor.pending == [] else 0)
    reconnects = [e[2:] for e in handler.events if e[1] == "onReconnect"]
    assert reconnects == [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0)]
    errors = [e[2] for e in handler.events if e[1] == "onError"]
    assert all(isinstance(e, ConnectionRefusedError) for e in errors) and len(errors) == 5
    assert reactor.seconds() == 1 + 2 + 4 + 8 + 8
    finish(reactor, handler)


def test_jittered_delays_within_bounds(reactor, handler):
    """With jitter each delay lies within ±jitter of the exponential value and never above maxDelay."""
    factory = HeartbeatClientFactory(URL, handler, reactor=reactor, jitter=0.5, initialDelay=1, maxDelay=5)
    factory.connect().addErrback(lambda f: f.trap(NotConnected))
    for _ in range(8):
        reactor.refuse(DNSLookupError("nowhere"))
        reactor.advance(10)
    delays = [e[3] for e in handler.events if e[1] == "onReconnect"]
    assert 0 <= delays[0] <= 1  # the first retry is spread over [0, initialDelay]
    bases = [2, 4, 5, 5, 5, 5, 5]
    assert all(0.5 * b <= d <= min(5, 1.5 * b) for d, b in zip(delays[1:], bases, strict=True))
    assert isinstance(handler.events[0][2], DNSLookupError)
    finish(reactor, handler)


def test_min_uptime_gates_backoff_reset(reactor, handler, make):
    """The backoff resets only after a connection stayed open minUptime seconds, so accept-then-close is not hammered."""
    make(initialDelay=1, maxDelay=30, minUptime=5)
    for _ in range(3):
        reactor.accept().closeFromServer()
        reactor.advance(reactor.getDelayedCalls()[0].getTime() - reactor.seconds())
    link = reactor.accept()
    reactor.advance(5)
    link.closeFromServer()
    delays = [e[3] for e in handler.events if e[1] == "onReconnect"]
    assert delays == [1.0, 2.0, 4.0, 1.0]
    finish(reactor, handler)


def test_max_retries_gives_up(reactor, handler):
    """maxRetries=2 gives up after the third failure: onGiveUp, connect() fails with GaveUp, no timer left."""
    results = []
    connect(URL, handler, reactor=reactor, maxRetries=2, jitter=0).addErrback(results.append)
    for _ in range(2):
        reactor.refuse()
        reactor.advance(5)
    reactor.refuse()
    assert handler.names()[-2:] == ["onError", "onGiveUp"]
    assert handler.names().count("onReconnect") == 2
    assert results[0].check(GaveUp) and results[0].value.attempts == 3
    assert handler.factory.state == "gaveup"
    quiet(reactor)
    done = []
    handler.whenClosed().addCallback(done.append)
    assert done == [None]


def test_max_retries_zero(reactor, handler, make):
    """maxRetries=0 never retries: the first failure gives up."""
    make(maxRetries=0)
    reactor.refuse()
    assert handler.names() == ["onError", "onGiveUp"]
    quiet(reactor)


def test_http_503_reported_with_status(reactor, handler, make):
    """An HTTP error on the upgrade is reported as HandshakeError with the status, then retried."""

    class Busy(WebSocketServerProtocol):
        def onConnect(self, request):
            from autobahn.websocket.types import ConnectionDeny

            raise ConnectionDeny(503, "Service Unavailable")

    make()
    reactor.accept(echoServerFactory(Busy))
    error = handler.events[0][2]
    assert isinstance(error, HandshakeError) and error.status == 503
    assert handler.names() == ["onError", "onReconnect"]
    finish(reactor, handler)


def test_open_timeout_tcp_connect(reactor, handler, make):
    """A TCP connect that never completes fails with OpenTimeout after exactly openTimeout."""
    make(openTimeout=3)
    reactor.advance(2.999)
    assert handler.events == []
    reactor.advance(0.001)
    error = handler.events[0][2]
    assert isinstance(error, OpenTimeout) and error.phase == "TCP connect"
    assert handler.events[0][0] == 3.0
    assert reactor.pending == []
    finish(reactor, handler)


def test_open_timeout_handshake(reactor, handler, make):
    """An upgrade that is never answered fails with OpenTimeout (opening handshake) and the TCP is aborted."""
    make(openTimeout=3)
    link = reactor.accept(greet=False)
    link.blackhole()
    reactor.advance(2.999)
    assert handler.events == []
    reactor.advance(0.001)
    assert link.clientTransport.closeRequest is True
    assert handler.names() == ["onError", "onReconnect"]
    error = handler.events[0][2]
    assert isinstance(error, OpenTimeout) and error.phase == "opening handshake"
    finish(reactor, handler)


def test_second_connect_refused(reactor, handler, make):
    """Never two live connections: a second connect on the same factory is stopped at once."""
    factory = make()
    reactor.accept()
    from autobahn.twisted.websocket import connectWS

    connectWS(factory)
    assert reactor.pending == []
    assert len(reactor.links) == 1
    finish(reactor, handler)


def test_second_connect_refused_while_waiting(reactor, handler, make):
    """A second connect while a retry is pending is stopped, so the retry cannot make a second connection."""
    factory = make()
    reactor.refuse()
    from autobahn.twisted.websocket import connectWS

    connectWS(factory)
    assert reactor.pending == [] and factory.state == "waiting"
    reactor.advance(factory.delay)
    assert len(reactor.pending) == 1
    reactor.accept()
    assert len(reactor.links) == 1
    finish(reactor, handler)


# close() ---------------------------------------------------------------------


def test_close_when_open_is_clean_and_final(reactor, handler, make):
    """close() on an open connection does a 1000 close handshake and nothing reconnects."""
    make()
    reactor.accept()
    assert handler.close() == []
    reactor.advance(0)
    assert handler.names() == ["onOpen", "onClose"]
    assert handler.events[-1][2:4] == (True, 1000)
    reactor.advance(100)
    assert reactor.pending == []
    quiet(reactor)


@pytest.mark.parametrize("code, reason", [(1001, None), (2999, None), (5000, None), (1000, "x" * 124)])
def test_close_rejects_bad_code_or_reason_before_acting(reactor, handler, make, code, reason):
    """close() with a code or reason RFC 6455 forbids raises ValueError and leaves the client running."""
    make()
    link = reactor.accept()
    with pytest.raises(ValueError):
        handler.close(code, reason)
    assert handler.isOpen
    handler.close(4000, "custom")
    reactor.advance(0)
    assert (link.server.remoteCloseCode, link.server.remoteCloseReason) == (4000, "custom")
    assert handler.events[-1][2] is True
    quiet(reactor)


def test_close_aborts_when_peer_ignores_close(reactor, handler, make):
    """If the peer never answers the close handshake the TCP is aborted after closeTimeout."""
    make(closeTimeout=2)
    link = reactor.accept()
    link.blackhole()
    handler.close()
    reactor.advance(1.999)
    assert handler.names() == ["onOpen"]
    reactor.advance(0.001)
    assert link.clientTransport.closeRequest is True
    assert handler.events[-1][:4] == (2.0, "onClose", False, 1006)
    quiet(reactor)


def test_peer_close_without_tcp_drop_is_bounded(reactor, handler, make):
    """When the server starts a close and then never drops TCP, the client aborts after closeTimeout and reconnects."""
    make(closeTimeout=2)
    link = reactor.accept(echoServerFactory(closeHandshakeTimeout=0))
    link.blackhole(toServer=True, toClient=False)  # our close reply never arrives, so the server never drops TCP
    link.server.sendClose(1000, "bye")
    reactor.advance(1.75)
    assert "onClose" not in handler.names()
    reactor.advance(0.25)
    assert link.clientTransport.closeRequest is True
    assert handler.events[-2][:2] == (2.0, "onClose")
    assert handler.names()[-1] == "onReconnect"
    finish(reactor, handler)


def test_close_while_waiting_cancels_retry(reactor, handler, make):
    """close() during the retry delay cancels the reconnect (the seed's bug)."""
    results = []
    make()
    d = handler.factory.whenOpen()
    d.addErrback(results.append)
    reactor.refuse()
    assert handler.factory.state == "waiting"
    handler.close()
    quiet(reactor)
    reactor.advance(60)
    assert reactor.pending == []
    assert results[0].check(NotConnected)
    assert handler.factory.state == "closed"


def test_close_while_tcp_connecting(reactor, handler, make):
    """close() during the TCP connect stops the attempt, reports no error, and does not retry."""
    make()
    handler.close()
    assert reactor.pending == []
    assert handler.events == []
    assert handler.factory.state == "closed"
    quiet(reactor)


def test_close_while_handshaking(reactor, handler, make):
    """close() during the opening handshake aborts it and does not retry."""
    make()
    link = reactor.accept(greet=False)
    handler.close()
    reactor.advance(10)
    assert link.clientTransport.closeRequest is True
    assert handler.events == []
    assert handler.factory.state == "closed"
    quiet(reactor)


def test_reset_delay_does_not_undo_close(reactor, handler, make):
    """Unlike Twisted's, resetDelay() after close() does not revive reconnecting."""
    factory = make()
    reactor.refuse()
    handler.close()
    factory.resetDelay()
    factory.retry()
    quiet(reactor)
    assert factory.state == "closed"


def test_close_from_inside_on_close(reactor, handler, make):
    """Calling close() from inside onClose stops the reconnect that would follow."""

    class Closer(RecordingHandler):
        def onClose(self, wasClean, code, reason):
            super().onClose(wasClean, code, reason)
            self.close()

    h = Closer(reactor)
    HeartbeatClientFactory(URL, h, reactor=reactor).connect()
    reactor.accept().reset()
    assert h.names() == ["onOpen", "onClose"]
    assert h.factory.state == "closed"
    quiet(reactor)


# Send queue ------------------------------------------------------------------


def test_queue_flushed_in_order_after_on_open(reactor, make):
    """Messages sent while not open are flushed in order right after onOpen, which can send first."""

    class Auth(RecordingHandler):
        def onOpen(self):
            self.send("auth")

    h = Auth(reactor)
    HeartbeatClientFactory(URL, h, reactor=reactor).connect()
    h.send("one")
    h.send(b"two")
    assert h.queued == ["one", b"two"]
    reactor.accept(recordingFactory())
    assert RecordingServer.received == [b"auth", b"one", b"two"]
    assert h.queued == []
    assert h.stats.messagesSent == 3
    finish(reactor, h)


def test_queue_bounded(reactor, handler, make):
    """A full send queue raises SendQueueFull; nothing is dropped silently."""
    make(sendQueueSize=2)
    handler.send("a")
    handler.send("b")
    with pytest.raises(SendQueueFull):
        handler.send("c")
    assert handler.close() == ["a", "b"]
    quiet(reactor)


def test_queue_disabled(reactor, handler, make):
    """sendQueueSize=0 makes send() while not open raise NotConnected."""
    make(sendQueueSize=0)
    with pytest.raises(NotConnected):
        handler.send("a")
    finish(reactor, handler)


def test_close_hands_back_queue_and_send_after_close_raises(reactor, handler, make):
    """close() returns what is still queued; send() afterwards raises NotConnected."""
    make()
    reactor.refuse()
    handler.send("x")
    assert handler.close() == ["x"]
    with pytest.raises(NotConnected):
        handler.send("y")
    quiet(reactor)


@pytest.mark.parametrize("bad", [1, None, ["a"], bytearray(b"a")])
def test_send_type_checked(handler, bad):
    """send() accepts only str and bytes."""
    with pytest.raises(TypeError):
        handler.send(bad)


# Hooks -----------------------------------------------------------------------


def test_hook_exceptions_are_logged_and_isolated(reactor):
    """An exception in a hook is logged and never breaks the flush, the heartbeat or the reconnect."""

    class Broken(RecordingHandler):
        def onOpen(self):
            super().onOpen()
            raise RuntimeError("boom in onOpen")

        def onClose(self, *args):
            super().onClose(*args)
            raise RuntimeError("boom in onClose")

    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        h = Broken(reactor)
        HeartbeatClientFactory(URL, h, reactor=reactor, pingInterval=1, pongTimeout=1, jitter=0).connect()
        h.send("queued")
        reactor.accept(recordingFactory())
        assert RecordingServer.received == [b"queued"]
        reactor.advance(1)
        assert h.stats.heartbeatsSent == 1
        reactor.links[0].reset()
        assert h.names()[-1] == "onReconnect"
    finally:
        globalLogPublisher.removeObserver(logged.append)
    failures = [e for e in logged if e.get("log_failure") is not None]
    assert {e["hook"] for e in failures} == {"onOpen", "onClose"}
    finish(reactor, h)


def test_hook_order_over_several_connections(reactor, handler, make):
    """Each connection runs onOpen, onMessage…, onClose, then onReconnect, across reconnects."""
    make()
    for i in range(3):
        link = reactor.accept()
        handler.send(f"m{i}")
        reactor.advance(0)
        link.reset()
        reactor.advance(10)
    assert handler.names() == ["onOpen", "onMessage", "onClose", "onReconnect"] * 3
    finish(reactor, handler)


# Construction and security ---------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pingInterval": 0},
        {"pingInterval": -1},
        {"pongTimeout": 0},
        {"openTimeout": 0},
        {"maxRetries": -1},
        {"sendQueueSize": -1},
        {"minUptime": -1},
        {"pingMessage": 42},
        {"jitter": 2},
        {"autoPingInterval": 5},
        {"openHandshakeTimeout": 5},
        {"notAnOption": 1},
    ],
)
def test_bad_options_raise_value_error(reactor, kwargs):
    """Bad or conflicting options raise ValueError at construction, naming what to change."""
    with pytest.raises(ValueError):
        HeartbeatClientFactory(URL, RecordingHandler(), reactor=reactor, **kwargs)


@pytest.mark.parametrize("url", ["http://example.com/", "ws://", "ws://host:99999/", "ws://host/#frag", "nonsense"])
def test_bad_urls(reactor, url):
    """Malformed or non-WebSocket URLs raise ValueError at construction."""
    with pytest.raises(ValueError):
        HeartbeatClientFactory(url, RecordingHandler(), reactor=reactor)


@pytest.mark.parametrize("url", [None, b"ws://127.0.0.1:9000/", 9000])
def test_url_that_is_not_a_str_says_so(reactor, url):
    """connect() with a URL that is not a str raises TypeError saying the URL must be a str (not Autobahn's bytes-like error)."""
    with pytest.raises(TypeError, match=r"^the URL must be a str such as 'ws://127\.0\.0\.1:9000/', not "):
        connect(url, RecordingHandler(), reactor=reactor)


@pytest.mark.parametrize(
    "option, said",
    [
        ("pingIntervall", "pingIntervall (did you mean pingInterval"),
        ("maxMesagePayloadSize", "maxMesagePayloadSize (did you mean maxMessagePayloadSize"),  # Autobahn's
        ("frobnicate", "frobnicate. "),
    ],
)
def test_unknown_option_is_named_with_the_close_match(reactor, option, said):
    """An unknown option raises ValueError naming it and suggesting the closest of ours and Autobahn's, before anything starts."""
    with pytest.raises(ValueError, match="^unknown option for HeartbeatClientFactory: ") as raised:
        connect(URL, RecordingHandler(), reactor=reactor, **{option: 5})
    assert said in str(raised.value)
    assert reactor.pending == [] and reactor.getDelayedCalls() == []


def test_gave_up_says_where_and_why_without_secrets(reactor, handler):
    """GaveUp carries the redacted URL and the last failure, and its message names both (never the password or query)."""
    failures = []
    url = "ws://alice:s3cret@127.0.0.1:9000/feed?token=t0ken"
    connect(url, handler, reactor=reactor, maxRetries=1, jitter=0).addErrback(failures.append)
    reactor.refuse()
    reactor.advance(5)
    reactor.refuse(DNSLookupError("no such name"))
    (failure,) = failures
    error = failure.value
    assert isinstance(error, GaveUp) and error.attempts == 2
    assert error.url == "ws://127.0.0.1:9000/feed"
    assert error.reason.check(DNSLookupError) and handler.reasons[-1] == ("onGiveUp", error.reason.value)
    assert str(error) == (
        "gave up on ws://127.0.0.1:9000/feed after 2 failed attempt(s) in a row; "
        "the last: DNSLookupError: DNS lookup failed: no such name."
    )
    assert "s3cret" not in str(error) and "t0ken" not in str(error)
    quiet(reactor)


def test_gave_up_keeps_its_0_1_constructor():
    """GaveUp(attempts) still works as in 0.1: .attempts, no URL or reason, the old message."""
    error = GaveUp(3)
    assert (error.attempts, error.url, error.reason) == (3, None, None)
    assert str(error) == "gave up after 3 failed attempt(s) in a row"


class ForgetsSuper(HeartbeatHandler):
    """A subclass whose __init__ does not call super().__init__()."""

    def __init__(self, name):
        self.name = name
        self.got = []

    def onMessage(self, payload, isBinary):
        self.got.append(payload)


class CallsSuper(HeartbeatHandler):
    """The same, calling super().__init__() first."""

    def __init__(self, name):
        super().__init__()
        self.name = name
        self.got = []

    onMessage = ForgetsSuper.onMessage


@pytest.mark.parametrize("kind", [ForgetsSuper, CallsSuper])
def test_handler_subclass_works_with_or_without_super_init(reactor, kind):
    """A handler subclass works whether its __init__ calls super().__init__() or not: queue, connect, send, stats, close; two instances share nothing."""
    first, second = kind("first"), kind("second")
    first.send("queued")
    assert first.queued == ["queued"] and second.queued == []
    assert first.factory is None and first.stats.messagesSent == 0
    connect(URL, first, reactor=reactor, pingInterval=None)
    reactor.accept()
    first.send("direct")
    reactor.flush()
    assert first.got == [b"queued", b"direct"]
    assert (first.stats.opens, first.stats.messagesSent, first.stats.messagesReceived) == (1, 2, 2)
    assert (second.stats.opens, second.stats.messagesSent) == (0, 0)
    first.close()
    reactor.advance(10)
    assert first.factory.state == "closed"
    quiet(reactor)


def test_handler_type_and_single_owner(reactor):
    """The handler must be a HeartbeatHandler and belongs to one factory only."""
    with pytest.raises(TypeError):
        HeartbeatClientFactory(URL, object(), reactor=reactor)  # type: ignore[arg-type]
    h = RecordingHandler()
    HeartbeatClientFactory(URL, h, reactor=reactor)
    with pytest.raises(ValueError):
        HeartbeatClientFactory(URL, h, reactor=reactor)


def test_url_credentials_become_basic_auth_and_never_logged(reactor, handler):
    """User info in the URL becomes an Authorization header and appears in no log line."""
    logged = []
    globalLogPublisher.addObserver(logged.append)
    try:
        factory = HeartbeatClientFactory(
            "ws://alice:s3cr3t@127.0.0.1:9000/x?token=t0k", handler, reactor=reactor, jitter=0
        )
        factory.connect()
        reactor.refuse()
        reactor.advance(factory.delay)
        reactor.accept()
        handler.send("PAYLOAD-SECRET")
        reactor.advance(0)
        reactor.links[0].reset()
    finally:
        globalLogPublisher.removeObserver(logged.append)
    from twisted.logger import formatEvent

    text = "\n".join(formatEvent(e) for e in logged)
    assert "s3cr3t" not in text and "t0k" not in text and "PAYLOAD-SECRET" not in text
    assert factory.headers["Authorization"] == "Basic YWxpY2U6czNjcjN0"
    assert factory.safeURL == "ws://127.0.0.1:9000/x"
    finish(reactor, handler)


def test_wss_verifies_certificates_by_default(reactor, handler):
    """wss:// connects through connectSSL with verifying options for the URL's host."""
    from twisted.internet._sslverify import ClientTLSOptions

    from txheartbeat._tls import ResumingClientTLS

    reactor.hosts["example.test"] = ["192.0.2.1"]
    connect("wss://example.test/", handler, reactor=reactor).addErrback(lambda f: f.trap(NotConnected))
    host, port, _, ctx, _, _ = reactor.sslClients[0]
    assert (host, port) == ("192.0.2.1", 443)
    assert isinstance(ctx, ResumingClientTLS)  # (the factory's own sessions, around the shared options)
    assert isinstance(ctx.creator, ClientTLSOptions)
    assert ctx.creator._hostname == "example.test"
    handler.close()
    quiet(reactor)


def test_exports():
    """The public names are exactly those in __all__."""
    import txheartbeat

    for name in txheartbeat.__all__:
        assert hasattr(txheartbeat, name)
    assert {"HeartbeatHandler", "HeartbeatClientFactory", "HeartbeatClientProtocol", "connect"} <= set(
        txheartbeat.__all__
    )
