"""Outbound backpressure on loopback: bufferedAmount, whenDrained() and maxBuffered, on both ends."""

import socket
from typing import Any, List

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer
from twisted.internet import reactor as _reactor

from txheartbeat import HeartbeatServerFactory, HeartbeatServerProtocol, NotConnected, SendQueueFull, connect

from .test_integration import Waiter

CHUNK = b"x" * 65536


class Sink(HeartbeatServerProtocol):
    """A server that can stop reading its socket, and counts what it got."""

    instances: List["Sink"] = []

    def onOpen(self):
        self.got = 0
        Sink.instances.append(self)

    def onMessage(self, payload, isBinary):
        self.got += len(payload)


def smallBuffers(transport: Any) -> None:
    sock = transport.getHandle()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)


def sinkServer():
    """A Sink server (no heartbeat, no message size limit) whose accepted sockets have small receive buffers."""
    Sink.instances = []
    server = HeartbeatServerFactory(pingInterval=None)
    server.protocol = Sink
    server.setProtocolOptions(maxMessagePayloadSize=0)
    return listenSmall(server)


def listenSmall(factory):
    port = _reactor.listenTCP(0, factory, interface="127.0.0.1")
    port.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # inherited by accepted sockets
    return port


async def sleep(seconds: float) -> None:
    d: defer.Deferred = defer.Deferred()
    _reactor.callLater(seconds, d.callback, None)
    await d


@pytest_twisted.ensureDeferred
async def test_client_buffered_amount_max_buffered_and_when_drained():
    """A client sending to a server that stopped reading sees bufferedAmount grow, is refused past maxBuffered, and whenDrained() fires once the server reads again."""
    port = sinkServer()
    h = Waiter()
    try:
        await connect(f"ws://127.0.0.1:{port.getHost().port}/", h, maxBuffered=1_000_000, pingInterval=None)
        smallBuffers(h.protocol.transport)
        (peer,) = Sink.instances
        peer.transport.pauseProducing()  # the server stops reading: its window closes
        sent = 0
        with pytest.raises(SendQueueFull):
            for _ in range(200):  # 13 MB at most
                h.send(CHUNK)
                sent += len(CHUNK)
                await sleep(0)
        assert 0 < h.bufferedAmount <= 1_000_000 + len(CHUNK)
        drained = h.whenDrained(lowWater=100_000)
        await sleep(0.1)
        assert not drained.called
        peer.transport.resumeProducing()
        await drained.addTimeout(10, _reactor)
        assert h.bufferedAmount <= 100_000
        await h.whenDrained()
        for _ in range(100):
            if peer.got >= sent:
                break
            await sleep(0.05)
        assert peer.got == sent
    finally:
        h.close()
        await h.whenClosed()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_when_drained_fails_when_the_connection_is_lost():
    """A whenDrained() waiter fails with NotConnected if the connection drops before the buffer drains; not open: fires at once."""
    port = sinkServer()
    h = Waiter()
    try:
        assert h.whenDrained().called  # not connected: nothing buffered
        await connect(f"ws://127.0.0.1:{port.getHost().port}/", h, pingInterval=None, initialDelay=30)
        smallBuffers(h.protocol.transport)
        (peer,) = Sink.instances
        peer.transport.pauseProducing()
        for _ in range(150):
            h.send(CHUNK)
            await sleep(0)
        assert h.bufferedAmount > 0
        failures: List[Any] = []
        h.whenDrained().addErrback(failures.append)
        peer.transport.abortConnection()
        await h.next("onClose")
        assert failures and failures[0].check(NotConnected)
    finally:
        h.close()
        await h.whenClosed()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_server_protocol_buffered_amount_and_max_buffered():
    """A server connection to a client that stopped reading is refused past maxBuffered and drains once the client reads again."""
    Sink.instances = []
    server = HeartbeatServerFactory(pingInterval=None, maxBuffered=500_000)
    server.protocol = Sink
    port = listenSmall(server)
    opened: defer.Deferred = defer.Deferred()
    got: List[int] = [0]

    class Client(WebSocketClientProtocol):
        def onOpen(self):
            smallBuffers(self.transport)
            opened.callback(self)

        def onMessage(self, payload, isBinary):
            got[0] += len(payload)

    factory = WebSocketClientFactory(f"ws://127.0.0.1:{port.getHost().port}/")
    factory.protocol = Client
    factory.setProtocolOptions(maxMessagePayloadSize=0)
    connector = _reactor.connectTCP("127.0.0.1", port.getHost().port, factory)
    try:
        client = await opened.addTimeout(5, _reactor)
        (peer,) = Sink.instances
        client.transport.pauseProducing()
        sent = 0
        with pytest.raises(SendQueueFull):
            for _ in range(200):
                peer.sendMessage(CHUNK, isBinary=True)
                sent += len(CHUNK)
                await sleep(0)
        assert 0 < peer.bufferedAmount <= 500_000 + len(CHUNK)
        drained = peer.whenDrained()
        client.transport.resumeProducing()
        await drained.addTimeout(10, _reactor)
        for _ in range(100):
            if got[0] >= sent:
                break
            await sleep(0.05)
        assert got[0] == sent
    finally:
        connector.disconnect()
        await port.stopListening()
