"""Loopback integration tests: the real reactor, real sockets on 127.0.0.1, port 0."""

from typing import Any, Dict, List

import pytest
import pytest_twisted
from twisted.internet import defer, protocol
from twisted.internet import reactor as _reactor

from txheartbeat import GaveUp, HandshakeError, HeartbeatHandler, HeartbeatTimeout, OpenTimeout, connect
from txheartbeat.testing import EchoServerProtocol, echoServerFactory


class Timeline:
    """Events with reactor times, and Deferreds that fire at the next event of a kind."""

    def __init__(self) -> None:
        self.events: List[tuple] = []
        self._waiting: Dict[str, List[defer.Deferred]] = {}

    def event(self, name: str, *args: Any) -> None:
        self.events.append((_reactor.seconds(), name, *args))
        for d in self._waiting.pop(name, []):
            d.callback(args)

    def next(self, name: str, timeout: float = 10.0) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self._waiting.setdefault(name, []).append(d)
        return d.addTimeout(timeout, _reactor)


class Waiter(HeartbeatHandler, Timeline):
    """A handler that records events with wall-clock times and lets a test wait for one."""

    def __init__(self) -> None:
        HeartbeatHandler.__init__(self)
        Timeline.__init__(self)

    _event = Timeline.event

    def names(self) -> List[str]:
        return [e[1] for e in self.events]

    def onOpen(self):
        self._event("onOpen")

    def onMessage(self, payload, isBinary):
        self._event("onMessage", payload)

    def onClose(self, wasClean, code, reason):
        self._event("onClose", wasClean, code)

    def onError(self, failure):
        self._event("onError", failure.value)

    def onReconnect(self, attempt, delay):
        self._event("onReconnect", attempt, delay)

    def onGiveUp(self):
        self._event("onGiveUp")

    def onHeartbeat(self, roundTrip):
        self._event("onHeartbeat", roundTrip)


def listen(factory: protocol.Factory, port: int = 0):
    return _reactor.listenTCP(port, factory, interface="127.0.0.1")


def url(port) -> str:
    return f"ws://127.0.0.1:{port.getHost().port}/"


class RawFactory(protocol.Factory):
    """A plain TCP server whose protocol does whatever the test says."""

    def __init__(self, onData=None, onConnect=None) -> None:
        self.onData = onData
        self.onConnect = onConnect
        self.connections: List[protocol.Protocol] = []

    def buildProtocol(self, addr):
        factory = self

        class Raw(protocol.Protocol):
            def connectionMade(self):
                factory.connections.append(self)
                if factory.onConnect:
                    factory.onConnect(self)

            def dataReceived(self, data):
                if factory.onData:
                    factory.onData(self, data)

        return Raw()


@pytest_twisted.ensureDeferred
async def test_echo_over_loopback():
    """A message sent before the connection opens is delivered and echoed over a real socket."""
    port = listen(echoServerFactory())
    h = Waiter()
    try:
        h.send("queued before open")
        opened = connect(url(port), h)
        assert await opened is h
        (payload,) = await h.next("onMessage")
        assert payload == b"queued before open"
        h.send(b"\x00binary")
        (payload,) = await h.next("onMessage")
        assert payload == b"\x00binary"
    finally:
        h.close()
        await h.whenClosed()
        await port.stopListening()
    assert h.names() == ["onOpen", "onMessage", "onMessage", "onClose"]
    assert h.events[-1][2:] == (True, 1000)


class StallingServer(EchoServerProtocol):
    """Echoes until told to stall, then stops reading and answering; TCP stays open."""

    instances: List["StallingServer"] = []

    def onOpen(self):
        StallingServer.instances.append(self)

    def stall(self):
        self.transport.pauseProducing()


@pytest_twisted.ensureDeferred
async def test_silent_peer_detected_within_bound():
    """A peer that stops reading and answering is detected no earlier than ping+pong and well before Autobahn's whole-second timers would."""
    StallingServer.instances = []
    port = listen(echoServerFactory(StallingServer))
    h = Waiter()
    try:
        await connect(url(port), h, pingInterval=0.2, pongTimeout=0.2, initialDelay=5)
        protocol_ = h.protocol
        StallingServer.instances[0].stall()
        last = protocol_.heartbeat.lastTraffic
        (error,) = await h.next("onError")
        detected = _reactor.seconds()
        assert isinstance(error, HeartbeatTimeout)
        assert detected - last >= 0.4
        assert detected - last < 1.4  # generous: shared machine
        await h.next("onReconnect")
        assert h.names()[-3:] == ["onError", "onClose", "onReconnect"]
    finally:
        h.close()
        await h.whenClosed()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_server_restart_reconnects():
    """When the server goes away and comes back on the same port, the client reconnects and delivers queued messages."""
    server = echoServerFactory()
    port = listen(server)
    number = port.getHost().port
    h = Waiter()
    try:
        await connect(url(port), h, initialDelay=0.05, maxDelay=0.2, minUptime=0)
        await port.stopListening()
        h.protocol.transport.loseConnection()  # the server process "dies"
        await h.next("onClose")
        h.send("after restart")
        port = listen(server, number)
        await h.next("onOpen")
        (payload,) = await h.next("onMessage")
        assert payload == b"after restart"
        assert h.stats.opens == 2
    finally:
        h.close()
        await h.whenClosed()
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_accept_then_close_backs_off_and_gives_up():
    """A server that accepts TCP then closes is reported as a handshake error each time, with growing delays, until maxRetries."""
    raw = RawFactory(onConnect=lambda p: p.transport.loseConnection())
    port = listen(raw)
    h = Waiter()
    try:
        d = connect(url(port), h, initialDelay=0.02, factor=2, jitter=0, maxRetries=3)
        with pytest.raises(GaveUp):
            await d
    finally:
        await port.stopListening()
    errors = [e[2] for e in h.events if e[1] == "onError"]
    assert len(errors) == 4 and all(isinstance(e, HandshakeError) for e in errors)
    delays = [e[3] for e in h.events if e[1] == "onReconnect"]
    assert delays == [0.02, 0.04, 0.08]
    assert h.names()[-1] == "onGiveUp"


@pytest_twisted.ensureDeferred
async def test_http_503_on_upgrade():
    """An HTTP 503 answer to the upgrade is reported with its status and retried."""

    def answer(p, data):
        p.transport.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        p.transport.loseConnection()

    port = listen(RawFactory(onData=answer))
    h = Waiter()
    try:
        with pytest.raises(GaveUp):
            await connect(url(port), h, initialDelay=0.02, maxRetries=1)
    finally:
        await port.stopListening()
    errors = [e[2] for e in h.events if e[1] == "onError"]
    assert [e.status for e in errors] == [503, 503]


@pytest_twisted.ensureDeferred
async def test_upgrade_never_answered():
    """An upgrade request that is never answered ends in OpenTimeout after openTimeout."""
    raw = RawFactory()
    port = listen(raw)
    h = Waiter()
    try:
        start = _reactor.seconds()
        with pytest.raises(GaveUp):
            await connect(url(port), h, openTimeout=0.3, maxRetries=0)
        assert _reactor.seconds() - start >= 0.3
    finally:
        await port.stopListening()
        for p in raw.connections:
            p.transport.abortConnection()
    (error,) = [e[2] for e in h.events if e[1] == "onError"]
    assert isinstance(error, OpenTimeout) and error.phase == "opening handshake"


@pytest_twisted.ensureDeferred
async def test_refused_port():
    """A refused TCP connect is reported and, with maxRetries=0, ends in onGiveUp."""
    port = listen(RawFactory())
    address = url(port)
    await port.stopListening()
    h = Waiter()
    with pytest.raises(GaveUp):
        await connect(address, h, maxRetries=0)
    from twisted.internet.error import ConnectionRefusedError

    assert isinstance(h.events[0][2], ConnectionRefusedError)
    assert h.names() == ["onError", "onGiveUp"]
