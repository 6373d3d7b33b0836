"""
Credentials stay out of the log at every level, Autobahn's debug included.

Autobahn's protocols log through ``txaio`` loggers that are no-ops above the
global txaio level; ``txaio.set_global_log_level("debug")`` turns their
``debug`` on, and they emit into ``twisted.logger.globalLogPublisher``.  The
factories' ``logOctets`` and ``logFrames`` add hex dumps of every write and
read and every frame: the most Autobahn can be made to log.
"""

import base64
from typing import Any, Dict, Iterator, List

import pytest
import pytest_twisted
import txaio
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.logger import formatEvent, globalLogPublisher

from txheartbeat import HeartbeatClientFactory, HeartbeatHandler, HeartbeatServerFactory, HeartbeatServerProtocol

USER, PASSWORD = "alice", "s3cret"
TOKEN = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode("ascii")
AUTHORIZATION = f"Basic {TOKEN}"
SECRETS = [PASSWORD, f"{USER}:{PASSWORD}", TOKEN, AUTHORIZATION]
# logOctets dumps raw bytes as hex.
SECRETS += [secret.encode().hex() for secret in SECRETS]


@pytest.fixture
def debugLog() -> Iterator[List[Dict[str, Any]]]:
    """Every log event while Autobahn logs at debug level; the txaio level is restored afterwards."""
    events: List[Dict[str, Any]] = []
    level = txaio.get_global_log_level()
    globalLogPublisher.addObserver(events.append)
    txaio.set_global_log_level("debug")
    try:
        yield events
    finally:
        txaio.set_global_log_level(level)
        globalLogPublisher.removeObserver(events.append)


def leaks(events: List[Dict[str, Any]]) -> List[str]:
    """The text of every event whose text or repr contains any form of the credentials."""
    found = []
    for event in events:
        text = formatEvent(event)
        if any(secret in f"{text}\n{event!r}" for secret in SECRETS):
            found.append(text)
    return found


def logged(events: List[Dict[str, Any]], fragment: str) -> bool:
    """Whether any event's text contains ``fragment`` (proof that Autobahn's debug output is captured)."""
    return any(fragment in formatEvent(event) for event in events)


class EchoServer(HeartbeatServerProtocol):
    requests: List[Any] = []

    def onConnect(self, request):
        EchoServer.requests.append(request)
        return super().onConnect(request)

    def onMessage(self, payload, isBinary):
        self.sendMessage(payload, isBinary)


def listenEcho():
    """An echo server on 127.0.0.1, dumping octets and frames; txheartbeat's, whose own log is redacted."""
    EchoServer.requests = []
    factory = HeartbeatServerFactory(pingInterval=None)
    factory.protocol = EchoServer
    factory.logOctets = factory.logFrames = True
    return _reactor.listenTCP(0, factory, interface="127.0.0.1")


class Echoed(HeartbeatHandler):
    def __init__(self) -> None:
        super().__init__()
        self.received: defer.Deferred = defer.Deferred()

    def onMessage(self, payload, isBinary):
        self.received.callback(payload)


@pytest_twisted.ensureDeferred
async def test_client_url_credentials_not_logged(debugLog):
    """URL user info sent as Basic auth appears in no log event, even with Autobahn at debug level dumping octets."""
    port = listenEcho()
    portNumber = port.getHost().port
    handler = Echoed()
    factory = HeartbeatClientFactory(f"ws://{USER}:{PASSWORD}@127.0.0.1:{portNumber}/", handler, pingInterval=None)
    factory.logOctets = factory.logFrames = True
    try:
        await factory.connect()
        handler.send("hello")
        assert await handler.received.addTimeout(10, _reactor) == b"hello"
    finally:
        handler.close()
        await handler.whenClosed()
        await port.stopListening()
    # The credentials did reach the server, and Autobahn's debug output was captured.
    assert EchoServer.requests[0].headers["authorization"] == AUTHORIZATION
    assert logged(debugLog, "sent HTTP request")
    assert logged(debugLog, f"TX Octets to tcp4:127.0.0.1:{portNumber}")  # the client's own dumps
    assert leaks(debugLog) == []


class QuietClient(WebSocketClientProtocol):
    """Autobahn's own client; its logger stays at info, so only the server's debug output is examined."""

    log = txaio.make_logger(level="info")

    def onOpen(self):
        self.sendMessage(b"hello")

    def onMessage(self, payload, isBinary):
        self.sendClose(1000)

    def onClose(self, wasClean, code, reason):
        self.factory.closed.callback(wasClean)


@pytest_twisted.ensureDeferred
async def test_server_does_not_log_client_authorization(debugLog):
    """A client's Authorization header appears in none of the server's debug log events, yet onConnect sees it."""
    port = listenEcho()
    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port.getHost().port}/", headers={"Authorization": AUTHORIZATION})
    factory.protocol = QuietClient
    factory.closed = defer.Deferred()
    try:
        connectWS(factory)
        assert await factory.closed.addTimeout(10, _reactor) is True
    finally:
        await port.stopListening()
    assert EchoServer.requests[0].headers["authorization"] == AUTHORIZATION
    assert logged(debugLog, "received HTTP request")
    assert logged(debugLog, "RX Octets")  # octet dumps are back once the connection is open
    assert leaks(debugLog) == []
