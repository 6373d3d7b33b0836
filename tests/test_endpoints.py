"""Loopback tests of how the client reaches its server: IPv6, names, UNIX sockets, and the Twisted ways of connecting."""

import socket
from typing import Any

import pytest
import pytest_twisted
from autobahn.twisted.websocket import connectWS
from twisted.internet import reactor as _reactor

from txheartbeat import HeartbeatClientFactory, connect
from txheartbeat.testing import echoServerFactory

from .test_integration import Waiter


def _ipv6Loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needsIPv6 = pytest.mark.skipif(not _ipv6Loopback(), reason="no IPv6 loopback (::1) on this machine")


async def echoOnce(handler: Waiter, d: Any) -> bytes:
    await d
    handler.send("ping")
    (payload,) = await handler.next("onMessage")
    handler.close()
    await handler.whenClosed()
    return payload


@needsIPv6
@pytest_twisted.ensureDeferred
async def test_ipv6_literal_url():
    """ws://[::1]:port/ opens over IPv6 and echoes."""
    port = _reactor.listenTCP(0, echoServerFactory(), interface="::1")
    try:
        h = Waiter()
        assert await echoOnce(h, connect(f"ws://[::1]:{port.getHost().port}/", h)) == b"ping"
    finally:
        await port.stopListening()


@needsIPv6
@pytest_twisted.ensureDeferred
async def test_name_resolving_only_to_ipv6_on_a_real_reactor():
    """A name that resolves only to ::1 (a custom resolver installed on the real reactor) connects over IPv6."""
    from twisted.internet.address import IPv6Address
    from twisted.internet.interfaces import IHostnameResolver
    from zope.interface import implementer

    @implementer(IHostnameResolver)
    class V6Only:
        def resolveHostName(self, receiver, hostName, portNumber=0, addressTypes=None, transportSemantics="TCP"):
            receiver.resolutionBegan(None)
            if hostName == "v6only.test":
                receiver.addressResolved(IPv6Address("TCP", "::1", portNumber))
            receiver.resolutionComplete()
            return receiver

    port = _reactor.listenTCP(0, echoServerFactory(), interface="::1")
    old = _reactor.installNameResolver(V6Only())
    try:
        h = Waiter()
        assert await echoOnce(h, connect(f"ws://v6only.test:{port.getHost().port}/", h)) == b"ping"
    finally:
        _reactor.installNameResolver(old)
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_localhost_name_resolved_by_the_reactor():
    """ws://localhost:port/ is resolved by the reactor's resolver and opens."""
    port = _reactor.listenTCP(0, echoServerFactory(), interface="127.0.0.1")
    try:
        h = Waiter()
        assert await echoOnce(h, connect(f"ws://localhost:{port.getHost().port}/", h)) == b"ping"
    finally:
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_unix_socket_endpoint_string(tmp_path):
    """endpoint='unix:path=…' connects through a UNIX socket; the URL still gives path and Host."""
    path = str(tmp_path / "ws.sock")
    port = _reactor.listenUNIX(path, echoServerFactory())
    try:
        h = Waiter()
        d = connect("ws://backend.internal/ws", h, endpoint=f"unix:path={path}:timeout=5")
        assert await echoOnce(h, d) == b"ping"
    finally:
        await port.stopListening()


@pytest.mark.parametrize("how", ["connectTCP", "connectWS"])
@pytest_twisted.ensureDeferred
async def test_twisted_ways_of_connecting_still_work(how):
    """reactor.connectTCP(host, port, factory) and Autobahn's connectWS(factory) open, reconnect with the same connector and close."""
    port = _reactor.listenTCP(0, echoServerFactory(), interface="127.0.0.1")
    number = port.getHost().port
    h = Waiter()
    factory = HeartbeatClientFactory(f"ws://127.0.0.1:{number}/", h, initialDelay=0.05, jitter=0)
    opened = factory.whenOpen()
    if how == "connectTCP":
        _reactor.connectTCP("127.0.0.1", number, factory)
    else:
        connectWS(factory)
    await opened
    h.protocol.transport.abortConnection()  # unplanned loss: the same connector reconnects
    await h.next("onOpen")
    h.close()
    await h.whenClosed()
    await port.stopListening()
    assert h.names().count("onOpen") == 2 and h.stats.attempts == 2
