"""Unit tests for the heartbeat-aware server on the in-memory reactor."""

from contextlib import contextmanager
from typing import Iterator, List

import pytest
from autobahn.websocket.types import ConnectionRequest
from twisted.logger import globalLogPublisher

from txheartbeat import HeartbeatClientFactory, HeartbeatServerFactory, HeartbeatServerProtocol, HeartbeatTimeout
from txheartbeat._protocol import redactHeaders
from txheartbeat.testing import RecordingHandler

from .conftest import URL


class AppServer(HeartbeatServerProtocol):
    messages: List[bytes] = []
    dead: List[float] = []

    def onMessage(self, payload, isBinary):
        AppServer.messages.append(payload)
        self.sendMessage(b"echo:" + payload, isBinary)

    def onPeerDead(self, failure):
        assert isinstance(failure.value, HeartbeatTimeout)
        AppServer.dead.append(self.clock.seconds())


@pytest.fixture
def server():
    AppServer.messages = []
    AppServer.dead = []

    def make(**options):
        factory = HeartbeatServerFactory(**options)
        factory.protocol = AppServer
        return factory

    return make


def client(reactor, handler, **options):
    options.setdefault("jitter", 0.0)
    factory = HeartbeatClientFactory(URL, handler, reactor=reactor, **options)
    factory.connect()
    return factory


def test_seed_heartbeat_answered_not_forwarded(reactor, handler, server):
    """The seed's default 'heartbeat' text is answered with 'heartbeat' and never reaches onMessage."""
    client(reactor, handler, pingInterval=15, pongTimeout=10, pingMessage="heartbeat")
    factory = server()
    reactor.accept(factory)
    handler.send("hello")
    reactor.advance(15)
    assert AppServer.messages == [b"hello"]
    assert handler.events[-1][1:] == ("onMessage", b"heartbeat", False)
    assert len(factory.clients) == 1
    handler.close()
    reactor.advance(5)
    assert factory.clients == set()
    assert reactor.getDelayedCalls() == []


def test_custom_heartbeat_request_and_callable_reply(reactor, handler, server):
    """Request and reply are configurable; a callable reply sees the request."""
    client(reactor, handler, pingInterval=1, pongTimeout=1, pingMessage="ping")
    reactor.accept(server(heartbeatMessage=lambda p, b: p.startswith(b"pi"), heartbeatReply=lambda p, b: b"pong:" + p))
    reactor.advance(1)
    assert handler.events[-1][1:] == ("onMessage", b"pong:ping", True)
    assert AppServer.messages == []
    handler.close()
    reactor.advance(5)


def test_heartbeat_matching_off(reactor, handler, server):
    """heartbeatMessage=None passes every message to onMessage."""
    client(reactor, handler, pingInterval=None)
    reactor.accept(server(heartbeatMessage=None))
    handler.send("heartbeat")
    reactor.advance(0)
    assert AppServer.messages == [b"heartbeat"]
    handler.close()
    reactor.advance(5)


def test_silent_client_pinged_then_reaped(reactor, handler, server):
    """An idle client gets a ping at pingInterval; one that sends nothing is reaped at pingInterval + pongTimeout."""
    client(reactor, handler, pingInterval=None, initialDelay=100, maxDelay=100)
    factory = server(pingInterval=5, pongTimeout=3)
    link = reactor.accept(factory)
    reactor.advance(5)  # answered by Autobahn's automatic pong
    assert AppServer.dead == []
    link.blackhole(toServer=True, toClient=False)
    reactor.advance(7.75)  # last traffic at 5: dead at 5 + 5 + 3
    assert AppServer.dead == []
    reactor.advance(0.25)
    assert AppServer.dead == [13.0]
    assert link.serverTransport.closeRequest is True
    assert factory.deadClients == 1 and factory.clients == set()
    handler.close()
    assert reactor.getDelayedCalls() == []


def test_request_leave_obeyed(reactor, server):
    """A client that closes on the agreed message leaves cleanly and the server's timer is cancelled."""

    class Obedient(RecordingHandler):
        def onMessage(self, payload, isBinary):
            super().onMessage(payload, isBinary)
            if payload == b"close":
                self.close()

    h = Obedient(reactor)
    client(reactor, h, pingInterval=None)
    link = reactor.accept(server(pingInterval=None))
    link.server.requestLeave()
    reactor.advance(0)
    assert h.names() == ["onOpen", "onMessage", "onClose"]
    assert h.events[-1][2:4] == (True, 1000)
    assert h.factory.state == "closed"
    assert reactor.getDelayedCalls() == []


def test_request_leave_enforced(reactor, handler, server):
    """A client that ignores the agreed message is closed by the server after leaveTimeout."""
    client(reactor, handler, pingInterval=None, initialDelay=100, maxDelay=100)
    link = reactor.accept(server(pingInterval=None, leaveTimeout=3))
    link.server.requestLeave()
    reactor.advance(2.999)
    assert "onClose" not in handler.names()
    reactor.advance(0.001)
    assert handler.events[-2][:5] == (3.0, "onClose", True, 1000, "asked to leave")
    handler.close()
    assert reactor.getDelayedCalls() == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pingInterval": 0},
        {"pongTimeout": -1},
        {"heartbeatMessage": 3},
        {"heartbeatReply": None},
        {"autoPingInterval": 1},
        {"bogus": 1},
    ],
)
def test_server_bad_options(kwargs):
    """Bad server options raise ValueError at construction."""
    with pytest.raises(ValueError):
        HeartbeatServerFactory(**kwargs)


def test_server_unknown_option_is_named_with_the_close_match():
    """An unknown server option raises ValueError naming it and suggesting the closest one (ours or Autobahn's)."""
    with pytest.raises(
        ValueError, match=r"^unknown option for HeartbeatServerFactory: pingIntervall \(did you mean pingInterval\?\)"
    ):
        HeartbeatServerFactory(pingIntervall=5)
    with pytest.raises(ValueError, match=r"maxConection \(did you mean maxConnections"):
        HeartbeatServerFactory(maxConection=5)


def test_server_url_that_is_not_a_str_says_so():
    """A server URL that is neither a str nor None raises TypeError saying what it must be."""
    with pytest.raises(TypeError, match=r"^the URL must be a str or None such as 'ws://127\.0\.0\.1:9000/', not int"):
        HeartbeatServerFactory(9000)  # type: ignore[arg-type]


@contextmanager
def loggedFailures() -> Iterator[List[object]]:
    """Collect the failures logged (by anyone) inside the block."""
    failures: List[object] = []

    def observe(event):
        if "log_failure" in event:
            failures.append(event["log_failure"])

    globalLogPublisher.addObserver(observe)
    try:
        yield failures
    finally:
        globalLogPublisher.removeObserver(observe)


def test_heartbeat_while_closing_dropped(reactor, handler, server):
    """A client heartbeat that crosses the server's close frame is dropped, not answered and not forwarded."""
    client(reactor, handler, pingInterval=None, initialDelay=100, maxDelay=100)
    link = reactor.accept(server(pingInterval=None))
    link.server.closeGracefully(1000, "bye")
    handler.send("heartbeat")  # the client has not seen the close frame yet
    closeFrame = link.serverTransport.value()
    sentBefore = link.bytesToClient
    with loggedFailures() as failures:
        reactor.flush()  # Autobahn delivers data messages in STATE_CLOSING too
    assert failures == []
    assert link.bytesToClient - sentBefore == len(closeFrame)
    assert AppServer.messages == []
    assert handler.events[1:] == [(0.0, "onClose", True, 1000, "bye"), (0.0, "onReconnect", 1, 100.0)]
    handler.close()
    assert reactor.getDelayedCalls() == []


def test_heartbeat_after_leave_timed_out_dropped(reactor, handler, server):
    """A heartbeat sent as requestLeave() times out meets a closing server and is dropped silently."""
    client(reactor, handler, pingInterval=3, pongTimeout=10, pingMessage="heartbeat", initialDelay=100, maxDelay=100)
    factory = server(pingInterval=None, leaveTimeout=3)
    link = reactor.accept(factory)
    link.server.requestLeave()
    with loggedFailures() as failures:
        reactor.advance(3)  # the client's heartbeat and the server's close go out at the same instant
    assert failures == []
    assert handler.stats.heartbeatsSent == 1
    assert AppServer.messages == []
    # The close frame is the only answer the heartbeat gets: no "heartbeat" message follows it.
    assert handler.events == [
        (0.0, "onOpen"),
        (0.0, "onMessage", b"close", False),
        (3.0, "onHeartbeat", 0.0),
        (3.0, "onClose", True, 1000, "asked to leave"),
        (3.0, "onReconnect", 1, 100.0),
    ]
    assert factory.clients == set()
    handler.close()
    assert reactor.getDelayedCalls() == []


@pytest.mark.parametrize(
    "value, redacted",
    [
        (
            b"GET / HTTP/1.1\r\nAuthorization: Basic abc\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nAuthorization: <redacted>\r\nHost: h\r\n\r\n",
        ),
        (
            "GET /\nproxy-AUTHORIZATION:Basic abc\n folded\nHost: h\n",
            "GET /\nproxy-AUTHORIZATION: <redacted>\nHost: h\n",
        ),
        ("X-Authorization-Hint: none\r\n", "X-Authorization-Hint: none\r\n"),
        ({"authorization": "Basic abc", "host": "h"}, {"authorization": "<redacted>", "host": "h"}),
        ({"Proxy-Authorization": "Basic abc"}, {"Proxy-Authorization": "<redacted>"}),
        (42, 42),
    ],
    ids=["raw request", "any case, folded", "look-alike name", "header dict", "dict, any case", "anything else"],
)
def test_redact_headers(value, redacted):
    """Secret header values are replaced in raw requests (any case, folded lines too) and header dicts, nothing else."""
    assert redactHeaders(value) == redacted


def test_redact_connection_request():
    """A ConnectionRequest is redacted as a copy; the one onConnect gets keeps its credentials."""
    request = ConnectionRequest("peer", {"authorization": "Basic YWxpY2U6czNjcmV0"}, "h", "/", {}, 13, None, [], [])
    redacted = redactHeaders(request)
    assert redacted.headers == {"authorization": "<redacted>"}
    assert "YWxpY2U6czNjcmV0" not in str(redacted)
    assert request.headers == {"authorization": "Basic YWxpY2U6czNjcmV0"}
