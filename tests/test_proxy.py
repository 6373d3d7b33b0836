"""Loopback tests of the ``proxy=`` option: ws:// and wss:// through an HTTP CONNECT proxy, and proxies that refuse."""

import pytest
import pytest_twisted
from OpenSSL import SSL
from twisted.internet import ssl
from twisted.internet.interfaces import ISSLTransport

from txheartbeat import GaveUp, HandshakeError, HeartbeatClientFactory, connect
from txheartbeat.testing import echoServerFactory

from .connectproxy import ConnectProxy, MemoryConnectServerFactory
from .test_integration import Waiter, listen
from .tlsserver import TLSEchoServer, selfSigned


def errors(handler):
    return [e[2] for e in handler.events if e[1] == "onError"]


PROXY = {"host": "10.0.0.8", "port": 3128}


# On the memory reactor: exact, no sockets -------------------------------------------


def test_wss_proxy_connects_tcp_then_starts_tls_with_callers_context(reactor, handler):
    """wss:// with proxy= dials the proxy in plain TCP, sends CONNECT, then starts TLS with the connect() context before the upgrade."""
    context = ssl.optionsForClientTLS("example.com")
    factory = HeartbeatClientFactory("wss://example.com/", handler, reactor=reactor, proxy=PROXY)
    factory.connect(context).addErrback(lambda failure: None)
    assert [c[:2] for c in reactor.tcpClients] == [("10.0.0.8", 3128)] and reactor.sslClients == []
    server = MemoryConnectServerFactory(echoServerFactory())
    link = reactor.accept(server)
    assert server.requests == ["CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443"]
    assert link.clientTransport.tlsContextFactory.creator is context  # (wrapped: the client's TLS sessions)
    assert handler.names() == ["onOpen"]
    handler.send("tunnelled")
    reactor.flush()
    assert handler.events[-1][1:] == ("onMessage", b"tunnelled", False)
    handler.close()
    reactor.advance(5)
    assert reactor.getDelayedCalls() == []


@pytest.mark.parametrize("status", [407, 403, 502])
def test_proxy_refusal_is_handshake_error_then_retry(reactor, handler, make, status):
    """A proxy's non-2xx answer to CONNECT is a HandshakeError carrying its status, followed by a retry like any HTTP refusal (403: given up, by default)."""
    make(proxy=PROXY)
    reactor.accept(MemoryConnectServerFactory(refuseWith=status))
    (error,) = errors(handler)
    assert isinstance(error, HandshakeError) and error.status == status
    assert handler.names() == ["onError", "onGiveUp" if status == 403 else "onReconnect"]
    handler.close()
    assert reactor.getDelayedCalls() == []


def test_proxy_garbage_answer_is_handshake_error_without_status(reactor, handler, make):
    """A proxy answer that is not HTTP is a HandshakeError with no status."""
    make(proxy=PROXY)
    reactor.accept(MemoryConnectServerFactory(answer=b"SSH-2.0-OpenSSH_9.6\r\n\r\n"))
    (error,) = errors(handler)
    assert isinstance(error, HandshakeError) and error.status is None
    handler.close()


# Loopback: real sockets, real TLS ---------------------------------------------------


@pytest.fixture
def tlsServer():
    server = TLSEchoServer("localhost")
    yield server
    server.stop()


@pytest.fixture
def plainServer():
    port = listen(echoServerFactory())
    yield port.getHost().port
    port.stopListening()


@pytest.fixture
def proxy():
    p = ConnectProxy()
    yield p
    p.stop()


async def echoOnce(h: Waiter, text: str) -> bytes:
    h.send(text)
    (payload,) = await h.next("onMessage")
    return payload


@pytest_twisted.ensureDeferred
async def test_wss_through_proxy_opens_and_verifies(tlsServer, proxy):
    """wss:// through a CONNECT proxy tunnels TLS end to end: it opens, echoes, and the peer is the trusted server."""
    h = Waiter()
    url = f"wss://localhost:{tlsServer.port}/"
    await connect(url, h, proxy=proxy.option, contextFactory=tlsServer.trustingOptions(), maxRetries=0)
    assert await echoOnce(h, "via proxy") == b"via proxy"
    (request,) = proxy.requests
    assert (request.method, request.target) == ("CONNECT", f"localhost:{tlsServer.port}")
    assert request.headers["host"] == f"localhost:{tlsServer.port}"
    # The first bytes in the tunnel are a TLS handshake record, not the HTTP upgrade.
    assert request.firstBytes[:1] == b"\x16" and b"GET " not in b"".join(request.toTarget)
    transport = h.protocol.transport
    assert ISSLTransport.providedBy(transport)
    assert ssl.Certificate.peerFromTransport(transport).digest() == tlsServer.certificate.digest()
    assert errors(h) == []
    h.close()
    await h.whenClosed()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("trust", ["default", "otherRoot"])
async def test_wss_through_proxy_untrusted_certificate_never_opens(tlsServer, proxy, trust):
    """Through the proxy, a certificate the client does not trust fails TLS verification: an SSL error, never onOpen."""
    h = Waiter()
    if trust == "default":
        contextFactory = None  # txheartbeat's own verifying context for the URL's host
    else:
        other = selfSigned("localhost")
        contextFactory = ssl.optionsForClientTLS("localhost", trustRoot=ssl.Certificate(other.original))
    with pytest.raises(GaveUp):
        await connect(
            f"wss://localhost:{tlsServer.port}/", h, proxy=proxy.option, contextFactory=contextFactory, maxRetries=0
        )
    assert "onOpen" not in h.names()
    (request,) = proxy.requests
    assert request.target == f"localhost:{tlsServer.port}"
    assert request.firstBytes[:1] == b"\x16"  # TLS was attempted inside the tunnel; nothing sent in plain text
    (error,) = errors(h)
    assert isinstance(error, SSL.Error) and "certificate verify failed" in str(error)
    assert h.names() == ["onError", "onGiveUp"]


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("scheme", ["ws", "wss"])
@pytest.mark.parametrize("status", [407, 403])
async def test_proxy_refusal_is_handshake_error_with_status(tlsServer, plainServer, scheme, status):
    """A proxy that refuses the CONNECT (407, 403) is reported as HandshakeError carrying the proxy's status."""
    refusing = ConnectProxy(refuseWith=status)
    try:
        h = Waiter()
        number = tlsServer.port if scheme == "wss" else plainServer
        with pytest.raises(HandshakeError if status == 403 else GaveUp):  # 403: not retried by default
            await connect(f"{scheme}://localhost:{number}/", h, proxy=refusing.option, maxRetries=0)
        (request,) = refusing.requests
        assert request.target == f"localhost:{number}"
        assert request.proxyAuthorization is None  # Autobahn has no way to send proxy credentials
        (error,) = errors(h)
        assert isinstance(error, HandshakeError) and error.status == status
        assert str(status) in str(error)
        assert h.names() == ["onError", "onGiveUp"]
    finally:
        await refusing.stop()


@pytest_twisted.ensureDeferred
async def test_ws_through_proxy_opens(plainServer, proxy):
    """Plain ws:// through a CONNECT proxy opens and echoes, with the upgrade request inside the tunnel."""
    h = Waiter()
    await connect(f"ws://127.0.0.1:{plainServer}/", h, proxy=proxy.option, maxRetries=0)
    assert await echoOnce(h, "plain via proxy") == b"plain via proxy"
    (request,) = proxy.requests
    assert request.target == f"127.0.0.1:{plainServer}"
    assert request.firstBytes.startswith(b"GET / HTTP/1.1\r\n")
    h.close()
    await h.whenClosed()
