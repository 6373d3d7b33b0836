"""Hostile and broken peers: each ends in a clear error through onError, a retry where retrying makes sense, no hang."""

import pytest
import pytest_twisted
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import protocol
from twisted.internet import reactor as _reactor

from txheartbeat import GaveUp, HandshakeError, HeartbeatClientFactory, OpenTimeout, ProtocolError, TLSRequired, connect
from txheartbeat.testing import echoServerFactory

from .test_integration import Waiter
from .tlsserver import selfSigned


class Raw(protocol.Protocol):
    """Answers the first bytes it receives with a fixed response."""

    response = b""

    def dataReceived(self, data):
        if self.response:
            self.transport.write(self.response)
            self.response = b""


def rawFactory(response: bytes) -> protocol.Factory:
    factory = protocol.Factory()
    factory.protocol = type("R", (Raw,), {"response": response})
    return factory


def errors(handler):
    return [e[2] for e in handler.events if e[1] == "onError"]


@pytest.mark.parametrize("status", [200, 301, 401, 404, 500, 503])
def test_http_status_instead_of_upgrade(reactor, handler, make, status):
    """A plain HTTP answer to the upgrade is a HandshakeError carrying the status, followed by a retry (by default not after 401, 403, 404)."""
    make()
    reactor.accept(rawFactory(f"HTTP/1.1 {status} Nope\r\nContent-Length: 0\r\n\r\n".encode()))
    (error,) = errors(handler)
    assert isinstance(error, HandshakeError) and error.status == status
    if status in (401, 403, 404):
        assert handler.names() == ["onError", "onGiveUp"] and handler.reasons == [("onGiveUp", error)]
    else:
        assert handler.names() == ["onError", "onReconnect"]
    handler.close()


def test_wrong_accept_header(reactor, handler, make):
    """A 101 answer with a wrong Sec-WebSocket-Accept is refused: HandshakeError naming the header, then a retry."""
    make()
    reactor.accept(
        rawFactory(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: Ym9ndXM=\r\n\r\n"
        )
    )
    (error,) = errors(handler)
    assert isinstance(error, HandshakeError) and "Sec-WebSocket-Accept" in str(error) and error.status is None
    assert handler.names() == ["onError", "onReconnect"]
    handler.close()


def test_non_websocket_server_that_never_finishes_headers(reactor, handler, make):
    """A server speaking another protocol (no HTTP header end) ends in OpenTimeout, not a hang."""
    make(openTimeout=2)
    link = reactor.accept(rawFactory(b"SSH-2.0-OpenSSH_9.6\r\n"), greet=True)
    reactor.advance(2)
    (error,) = errors(handler)
    assert isinstance(error, OpenTimeout) and error.phase == "opening handshake"
    assert link.clientTransport.closeRequest is True
    handler.close()
    assert reactor.getDelayedCalls() == []


def test_oversized_message_refused(reactor, handler, make):
    """A message above maxMessagePayloadSize fails the connection with ProtocolError 1009 and reconnects."""
    make(maxMessagePayloadSize=1000)
    link = reactor.accept()
    link.server.sendMessage(b"x" * 2000, isBinary=True)
    reactor.advance(5)
    assert "onMessage" not in handler.names()
    error = next(e for e in errors(handler) if isinstance(e, ProtocolError))
    assert error.code == 1009
    assert (
        handler.names()[-3:] in (["onError", "onClose", "onReconnect"], ["onClose", "onReconnect", "onOpen"])
        or "onReconnect" in handler.names()
    )
    handler.close()


def test_invalid_utf8_text_frame(reactor, handler, make):
    """Invalid UTF-8 in a text frame fails the connection with ProtocolError 1007, then a reconnect."""
    make()
    link = reactor.accept()
    link.serverTransport.write(b"\x81\x02\xff\xfe")  # FIN + text, unmasked, 2 bytes of bad UTF-8
    reactor.advance(5)
    assert "onMessage" not in handler.names()
    error = next(e for e in errors(handler) if isinstance(e, ProtocolError))
    assert error.code == 1007
    assert "onReconnect" in handler.names()
    handler.close()


def test_garbage_frames(reactor, handler, make):
    """Bytes that are not WebSocket frames fail the connection with ProtocolError and a reconnect."""
    make()
    link = reactor.accept()
    link.serverTransport.write(b"\x8f\x00" * 4)  # reserved opcode 0xF
    reactor.advance(5)
    assert any(isinstance(e, ProtocolError) for e in errors(handler))
    assert "onReconnect" in handler.names()
    handler.close()


def test_ping_flood_answered_without_breaking(reactor, handler, make):
    """A burst of 5,000 pings is answered and the connection stays open and usable."""
    make(pingInterval=1, pongTimeout=1)
    link = reactor.accept()
    for i in range(5000):
        link.server.sendPing(str(i).encode())
    reactor.flush()
    handler.send("still here")
    reactor.advance(0.5)
    assert handler.isOpen and errors(handler) == []
    assert handler.events[-1][2:] == (b"still here", False)
    assert link.bytesToServer > 5000 * 6  # pongs went back
    handler.close()
    reactor.advance(5)


# TLS on loopback ---------------------------------------------------------------


@pytest.fixture
def tlsServer():
    certificate = selfSigned("localhost")
    port = _reactor.listenSSL(0, echoServerFactory(), certificate.options(), interface="127.0.0.1")
    yield port.getHost().port, certificate
    port.stopListening()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_tls_untrusted_or_wrong_name_never_connects(tlsServer, host):
    """A self-signed certificate (and one for another name) fails verification with a clear TLS error; the client never opens."""
    number, _ = tlsServer
    h = Waiter()
    with pytest.raises(GaveUp):
        await connect(f"wss://{host}:{number}/", h, maxRetries=0)
    assert "onOpen" not in h.names()
    (error,) = errors(h)
    untrusted = isinstance(error, SSL.Error) and "certificate verify failed" in str(error)
    if host == "localhost":
        assert untrusted
    else:  # the certificate names localhost, not this address (Twisted before 23 checks the chain first)
        assert (isinstance(error, VerificationError) and "Mismatch" in repr(error)) or untrusted


@pytest_twisted.ensureDeferred
async def test_tls_with_trusted_root_connects(tlsServer):
    """The same server is reachable when its certificate is trusted explicitly (so the failures above are verification)."""
    from twisted.internet import ssl

    number, certificate = tlsServer
    h = Waiter()
    options = ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate.loadPEM(certificate.dumpPEM()))
    await connect(f"wss://localhost:{number}/", h, contextFactory=options, maxRetries=0)
    h.send("over tls")
    (payload,) = await h.next("onMessage")
    assert payload == b"over tls"
    h.close()
    await h.whenClosed()


@pytest_twisted.ensureDeferred
async def test_connect_tcp_with_wss_factory_refuses_plain_text(tlsServer):
    """reactor.connectTCP with a wss:// factory sends nothing in plain text: TLSRequired, then onGiveUp, no retry."""
    number, _ = tlsServer
    h = Waiter()
    factory = HeartbeatClientFactory(f"wss://localhost:{number}/", h)
    failed = factory.whenOpen()
    _reactor.connectTCP("127.0.0.1", number, factory)
    with pytest.raises(TLSRequired):
        await failed
    assert h.names() == ["onError", "onGiveUp"]
    assert isinstance(errors(h)[0], TLSRequired)
