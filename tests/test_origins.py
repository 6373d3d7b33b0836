"""The server's origin policy, checked with raw opening handshakes on loopback."""

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.logger import formatEvent, globalLogPublisher

from txheartbeat import HeartbeatServerFactory, HeartbeatServerProtocol


class Raw(protocol.Protocol):
    """Sends one raw upgrade request and collects the answer until the server closes."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.data = b""
        self.done: defer.Deferred = defer.Deferred()

    def connectionMade(self):
        self.transport.write(self.request)

    def dataReceived(self, data):
        self.data += data
        if b"\r\n\r\n" in self.data and self.data.startswith(b"HTTP/1.1 101"):
            self.transport.loseConnection()

    def connectionLost(self, reason=None):
        self.done.callback(self.data)


def request(port: int, origin, path: str = "/") -> bytes:
    """A raw WebSocket upgrade request, with that ``Origin`` if any."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@defer.inlineCallbacks
def status(factory, origin):
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        number = port.getHost().port
        raw = Raw(request(number, origin))
        yield protocol.ClientCreator(reactor, lambda: raw).connectTCP("127.0.0.1", number)
        answer = yield raw.done
    finally:
        yield port.stopListening()
    return int(answer.split(b" ", 2)[1]) if answer else None


def server(**options):
    factory = HeartbeatServerFactory(pingInterval=None, **options)
    factory.protocol = HeartbeatServerProtocol
    return factory


CASES = [
    # (allowedOrigins, origin, expected status)
    (None, "https://anywhere.example", 101),
    (None, "null", 101),
    (None, "file://", 101),
    (None, None, 101),
    (["https://app.example"], "https://app.example", 101),
    (["https://app.example"], "https://evil.example", 403),
    (["https://app.example"], "https://app.example:8443", 403),
    (["https://app.example"], "https://app.example.evil.example", 403),
    (["https://app.example"], "null", 403),
    (["https://app.example"], "file://", 403),
    (["https://app.example"], None, 101),
    (["https://*.example:*"], "https://a.example:8443", 101),
    (["https://*.example:*"], "http://a.example", 403),
    (["https://app.example", "null"], "null", 101),
    (["https://app.example", "null"], "file:///home/me/page.html", 101),
    ([], "https://app.example", 403),
]


@pytest.mark.parametrize("allowed, origin, expected", CASES)
@pytest_twisted.inlineCallbacks
def test_origin_policy(allowed, origin, expected):
    """Each origin is allowed or refused with 403 as the policy says; null and file:// are treated alike."""
    got = yield status(server(allowedOrigins=allowed), origin)
    assert got == expected


@pytest_twisted.inlineCallbacks
def test_refused_origin_is_logged_and_never_reaches_on_connect():
    """A refused origin is one log line naming it; the application's onConnect never runs."""
    seen = []

    class App(HeartbeatServerProtocol):
        def onConnect(self, request):
            seen.append(request)

    factory = server(allowedOrigins=["https://app.example"])
    factory.protocol = App
    events = []
    globalLogPublisher.addObserver(events.append)
    try:
        got = yield status(factory, "https://evil.example")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert got == 403 and seen == []
    lines = [formatEvent(e) for e in events if "allowedOrigins" in formatEvent(e)]
    assert lines == ["txheartbeat: upgrade from origin 'https://evil.example' refused (not in allowedOrigins)"]


def test_bad_policies_are_clear_errors():
    """A string instead of a list, empty patterns and Autobahn's own origin options are refused up front."""
    for bad in ("https://app.example", [""], [None]):
        with pytest.raises(ValueError, match="allowedOrigins"):
            HeartbeatServerFactory(allowedOrigins=bad)
    with pytest.raises(ValueError, match="allowNullOrigin is managed by txheartbeat; use allowedOrigins"):
        HeartbeatServerFactory(allowNullOrigin=True)


@pytest_twisted.inlineCallbacks
def test_plain_http_get_is_426_not_a_redirect_or_version_page():
    """A plain GET (no upgrade) gets 426: no Autobahn status page with its version, no open redirect via ?redirect=."""
    port = reactor.listenTCP(0, server(), interface="127.0.0.1")
    try:
        number = port.getHost().port
        raw = Raw(f"GET /?redirect=https%3A%2F%2Fevil.example%2F HTTP/1.1\r\nHost: 127.0.0.1:{number}\r\n\r\n".encode())
        yield protocol.ClientCreator(reactor, lambda: raw).connectTCP("127.0.0.1", number)
        answer = yield raw.done
    finally:
        yield port.stopListening()
    assert answer.startswith(b"HTTP/1.1 426") and b"evil.example" not in answer and b"Autobahn" not in answer
