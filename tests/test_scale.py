"""
Per-connection memory: what txheartbeat drops from Autobahn's objects, and
the guards that fail loudly if an Autobahn release renames what it relies on.
"""

import sys

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketClientProtocol, WebSocketServerProtocol
from twisted.internet.defer import DeferredList
from twisted.internet.task import deferLater

from txheartbeat import HeartbeatClientFactory, HeartbeatServerFactory, HeartbeatServerProtocol, ProtocolError
from txheartbeat._protocol import STATE_DEFAULTS, HeartbeatMixin
from txheartbeat._server import HeartbeatServerProtocol as ServerProtocol
from txheartbeat._tcpinfo import kernelProgress, outboundProgress, userBacklog
from txheartbeat.testing import MemoryReactor, RecordingHandler

from .conftest import URL, NewGarbage, needsShortcut


def opened(monkeypatch, **clientOptions):
    """Open one client/server pair in memory; return (link, the server's and the client's __dict__ keys before compaction)."""
    seen = {}
    original = HeartbeatMixin.compactAfterOpen

    def spy(self):
        seen[type(self).__mro__[1] if type(self) is not ServerProtocol else ServerProtocol] = set(self.__dict__)
        seen[isinstance(self, WebSocketServerProtocol)] = set(self.__dict__)
        original(self)

    monkeypatch.setattr(HeartbeatMixin, "compactAfterOpen", spy)
    reactor = MemoryReactor()
    server = HeartbeatServerFactory(URL, pingInterval=None, reactor=reactor)
    handler = RecordingHandler(reactor)
    factory = HeartbeatClientFactory(URL, handler, reactor=reactor, pingInterval=None, **clientOptions)
    factory.connect()
    link = reactor.accept(server)
    return link, seen[True], seen[False]


def test_autobahn_still_sets_what_is_dropped_after_open(monkeypatch):
    """Every attribute name txheartbeat drops or shares after the handshake is one this Autobahn still sets: a rename fails here, loudly."""
    link, serverKeys, clientKeys = opened(monkeypatch)
    for keys, cls, protocolClass in (
        (serverKeys, ServerProtocol, WebSocketServerProtocol),
        (clientKeys, type(link.client), WebSocketClientProtocol),
    ):
        assert set(cls.HANDSHAKE_ONLY) <= keys, set(cls.HANDSHAKE_ONLY) - keys
        states = (
            set(STATE_DEFAULTS) - {"serverConnectionDropTimeoutCall"} if cls is ServerProtocol else set(STATE_DEFAULTS)
        )
        assert states <= keys | {"websocket_protocol_in_use"}, states - keys
        assert set(protocolClass.CONFIG_ATTRS) <= set(dir(cls)), "Autobahn's options are not all shared"
        assert "send_queue" in keys and "websocket_extensions_in_use" in keys


@needsShortcut("handshakeMemory", "sendData")
@pytest.mark.parametrize("side", ["server", "client"])
def test_an_open_connection_holds_a_small_dict(monkeypatch, side):
    """After open a connection's own attributes fit the smallest dict that holds them (Autobahn's 88 need 3.3 KB)."""
    link, _, _ = opened(monkeypatch)
    protocol = link.server if side == "server" else link.client
    assert len(protocol.__dict__) <= 20, sorted(protocol.__dict__)
    # (a fresh copy has the smallest table for its entries: 464 bytes on Python 3.11, 640 on 3.10)
    assert sys.getsizeof(protocol.__dict__) <= min(sys.getsizeof(dict(protocol.__dict__)), 700)
    assert "http_headers" not in protocol.__dict__


def test_a_client_factory_holds_only_what_differs():
    """A client factory with default options keeps only its own state: Autobahn's options and ours live on the class."""
    reactor = MemoryReactor()
    factories = [HeartbeatClientFactory(URL, RecordingHandler(reactor), reactor=reactor) for _ in range(2)]
    assert len(factories[1].__dict__) <= 12, sorted(factories[1].__dict__)
    assert factories[1].pingInterval == 15.0 and factories[1].maxMessagePayloadSize == 0


def test_options_still_apply_per_factory_and_never_leak():
    """A factory's own options reach its connections; another factory's defaults are untouched; a protocol class's own option wins, as in Autobahn."""
    reactor = MemoryReactor()
    small = HeartbeatServerFactory(URL, pingInterval=None, reactor=reactor, maxMessagePayloadSize=10)
    plain = HeartbeatServerFactory(URL, pingInterval=None, reactor=reactor)

    class Own(HeartbeatServerProtocol):
        maxMessagePayloadSize = 5

    own = HeartbeatServerFactory(URL, pingInterval=None, reactor=reactor, maxMessagePayloadSize=100)
    own.protocol = Own
    refused = {}
    for name, server in (("small", small), ("plain", plain), ("own", own)):
        handler = RecordingHandler(reactor)
        factory = HeartbeatClientFactory(URL, handler, reactor=reactor, pingInterval=None, maxRetries=0, jitter=0)
        factory.connect().addErrback(lambda f: None)
        link = reactor.accept(server)
        handler.send("x" * 8)  # over 5, under 10
        reactor.flush()
        failure = link.server.failure
        refused[name] = failure.value.code if failure is not None else None
        handler.close()
        reactor.advance(10)
    assert refused == {"small": None, "plain": None, "own": 1009}


def test_client_factory_option_reaches_its_connection():
    """A client factory's own maxMessagePayloadSize applies to its connection while other clients keep the default."""
    reactor = MemoryReactor()
    handlers = {}
    for name, options in (("default", {}), ("small", {"maxMessagePayloadSize": 10})):
        handler = handlers[name] = RecordingHandler(reactor)
        HeartbeatClientFactory(URL, handler, reactor=reactor, pingInterval=None, jitter=0, **options).connect()
        link = reactor.accept()
        link.server.sendMessage(b"y" * 20)
        reactor.flush()
    errors = {n: [e[2] for e in h.events if e[1] == "onError"] for n, h in handlers.items()}
    assert errors["default"] == [] and isinstance(errors["small"][0], ProtocolError)
    assert errors["small"][0].code == 1009


@needsShortcut("sendData")
def test_send_data_shortcut_counts_and_falls_back(monkeypatch):
    """The shortcut writes and counts like Autobahn's; a synchronous send or one while debug logging is on goes through Autobahn's."""
    import txaio

    link, _, _ = opened(monkeypatch)
    server = link.server
    before = server.trafficStats.outgoingOctetsWireLevel
    server.sendMessage(b"abc")
    assert server.trafficStats.outgoingOctetsWireLevel == before + 5
    calls = []
    monkeypatch.setattr(WebSocketServerProtocol, "sendData", lambda self, *a, **k: calls.append(a))
    server.sendMessage(b"abc", sync=True)
    txaio.set_global_log_level("debug")
    try:
        server.sendMessage(b"abc")
    finally:
        txaio.set_global_log_level("info")
    assert len(calls) == 2


@needsShortcut("socketWrites", "sendData")  # (frames reach writeNow only through our sendData)
@pytest_twisted.inlineCallbacks
def test_write_now_relies_on_twisted_attributes_that_exist():
    """writeNow reads Twisted's TCP buffer attributes: on a real connection (both ends) they exist, and a frame sent on an idle connection leaves nothing buffered."""
    from twisted.internet import reactor

    from txheartbeat import HeartbeatHandler, connect

    class Echo(HeartbeatServerProtocol):
        def onMessage(self, payload, isBinary):
            self.sendMessage(payload, isBinary)

    class Waiting(HeartbeatHandler):
        got = None

        def onMessage(self, payload, isBinary):
            self.got = payload

    server = HeartbeatServerFactory(pingInterval=None)
    server.protocol = Echo
    port = reactor.listenTCP(0, server, interface="127.0.0.1")
    handler = Waiting()
    try:
        yield connect(f"ws://127.0.0.1:{port.getHost().port}/", handler, reactor=reactor, pingInterval=None)
        for transport in (handler.protocol.transport, next(iter(server.clients)).transport):
            for name in (
                "connected",
                "disconnecting",
                "_writeDisconnected",
                "_tempDataBuffer",
                "offset",
                "dataBuffer",
                "socket",
                "_tempDataLen",
                "TLS",
            ):
                assert hasattr(transport, name), name
            # The heartbeat's progress probe reads them directly on plain TCP: same answer as the general walk.
            acked, queued = kernelProgress(transport.socket)
            assert outboundProgress(transport) == (acked, queued + userBacklog(transport))
        handler.send("x" * 1000)
        transport = handler.protocol.transport
        assert transport._tempDataBuffer == [] and transport.offset == len(transport.dataBuffer)
        while handler.got is None:
            yield deferLater(reactor, 0.01, lambda: None)
        assert handler.got == b"x" * 1000
    finally:
        handler.close()
        yield handler.whenClosed()
        yield port.stopListening()


def frame(opcode: int, payload: bytes, mask: bytes = b"", first: int = 0x80) -> bytes:
    """A WebSocket frame (payload of at most 125 bytes), masked with ``mask`` if given."""
    from txheartbeat._protocol import xorMask

    return (
        bytes((first | opcode, (0x80 if mask else 0) | len(payload)))
        + mask
        + (xorMask(mask, payload) if mask else payload)
    )


@pytest.fixture
def pinging(monkeypatch):
    """An open in-memory pair with heartbeats on both ends; records Autobahn's frame parsing and every pong."""
    from autobahn.websocket.protocol import WebSocketProtocol

    reactor = MemoryReactor()
    server = HeartbeatServerFactory(URL, pingInterval=5, reactor=reactor)
    handler = RecordingHandler(reactor)
    HeartbeatClientFactory(URL, handler, reactor=reactor, pingInterval=5).connect()
    link = reactor.accept(server)
    parsed, pongs = [], []
    original = WebSocketProtocol.processData
    monkeypatch.setattr(WebSocketProtocol, "processData", lambda self: parsed.append(self) or original(self))
    for end in (link.server, link.client):
        monkeypatch.setattr(end, "onPong", lambda payload, end=end: pongs.append((end, payload)))
    return link, handler, parsed, pongs


MASK = b"\x01\x02\x03\x04"


@needsShortcut("pongFrames")
@pytest.mark.parametrize("length", [0, 1, 8, 12, 125])
def test_a_whole_pong_skips_autobahns_parser_on_both_ends(pinging, length):
    """A read that is exactly one pong (masked towards the server, not towards the client) is answered without Autobahn's parser, payload intact, octets counted."""
    link, _, parsed, pongs = pinging
    payload = bytes(range(length))
    before = link.server.trafficStats.incomingOctetsWireLevel
    link.server.dataReceived(frame(10, payload, MASK))
    link.client.dataReceived(frame(10, payload))
    assert pongs == [(link.server, payload), (link.client, payload)] and parsed == []
    assert link.server.trafficStats.incomingOctetsWireLevel == before + 6 + length


@pytest.mark.parametrize(
    "case",
    ["split", "with a message", "after a partial frame", "unmasked to server", "masked to client", "logFrames", "rsv"],
)
def test_anything_but_a_whole_pong_goes_through_autobahn(pinging, case):
    """Split pongs, pongs sharing a read, partial frames, wrong masking, frame logging and RSV bits: Autobahn's parser decides, as before."""
    link, handler, parsed, pongs = pinging
    server, client = link.server, link.client
    pong = frame(10, b"12345678", MASK)
    if case == "split":
        server.dataReceived(pong[:3])
        server.dataReceived(pong[3:])
        assert pongs == [(server, b"12345678")]
    elif case == "with a message":
        client.dataReceived(frame(10, b"p") + frame(1, b"hello"))
        assert pongs == [(client, b"p")] and handler.received() == [b"hello"]
    elif case == "after a partial frame":
        message = frame(1, b"hello")
        client.dataReceived(message[:2])
        client.dataReceived(message[2:] + frame(10, b"p"))
        assert handler.received() == [b"hello"] and pongs == [(client, b"p")]
    elif case == "unmasked to server":
        server.dataReceived(frame(10, b"p"))
        assert pongs == [] and server.failure is not None  # Autobahn: unmasked client-to-server frame
    elif case == "masked to client":
        client.dataReceived(frame(10, b"p", MASK))
        assert pongs == [] and client.failure is not None
    elif case == "logFrames":
        server.logFrames = True
        server.dataReceived(pong)
        assert pongs == [(server, b"12345678")]
    else:
        server.dataReceived(frame(10, b"p", MASK, first=0x90))
        assert pongs == [] and server.failure is not None  # Autobahn: RSV without an extension
    assert parsed != []


@pytest.mark.parametrize("side", ["server", "client"])
def test_heartbeat_ping_frames_are_autobahns(pinging, monkeypatch, side):
    """The ping frame built for a heartbeat is byte for byte what Autobahn's sendPing writes (with the same mask)."""
    import os
    import random

    link, _, _, _ = pinging
    end, transport = (link.server, link.serverTransport) if side == "server" else (link.client, link.clientTransport)
    monkeypatch.setattr(os, "urandom", lambda n: MASK)
    monkeypatch.setattr(random, "getrandbits", lambda bits: int.from_bytes(MASK, "big"))
    for payload in (b"", b"12345678", bytes(125)):
        transport.clear()
        end._sendPing(payload)
        ours = transport.value()
        transport.clear()
        end.sendPing(payload)
        assert ours == transport.value() != b""


@needsShortcut("socketWrites")
@pytest_twisted.inlineCallbacks
def test_idle_heartbeats_do_not_ask_the_kernel(monkeypatch):
    """On an idle plain-TCP connection whose pongs come back, heartbeats compute the outbound position instead of sampling the kernel; the computed value is the kernel's; any write makes the next heartbeat sample again."""
    from twisted.internet import reactor

    import txheartbeat._tcpinfo as tcpinfo
    from txheartbeat import HeartbeatHandler, connect

    asked = []
    real = tcpinfo.kernelProgress
    monkeypatch.setattr(tcpinfo, "kernelProgress", lambda sock: asked.append(1) or real(sock))
    server = HeartbeatServerFactory(pingInterval=None)
    port = reactor.listenTCP(0, server, interface="127.0.0.1")
    handler = HeartbeatHandler()
    try:
        yield connect(f"ws://127.0.0.1:{port.getHost().port}/", handler, reactor=reactor, pingInterval=0.05)
        while handler.stats.heartbeatsAnswered < 6:
            yield deferLater(reactor, 0.01, lambda: None)
        assert len(asked) == 1  # the first heartbeat only
        protocol = handler.protocol
        computed = protocol._outboundProgress()
        assert len(asked) == 1 and computed == real(protocol.transport.socket)
        handler.send("x")
        protocol._outboundProgress()
        assert len(asked) == 2
    finally:
        handler.close()
        yield handler.whenClosed()
        yield port.stopListening()


@pytest_twisted.inlineCallbacks
def test_a_dead_connection_leaves_no_cyclic_garbage():
    """A connection declared dead is freed by reference counting at both ends: a full GC pass finds none of its protocols (Autobahn's is_closed, fired with the protocol and kept on it, made a cycle)."""

    from twisted.internet import reactor

    from txheartbeat import HeartbeatHandler, connect

    class Silent(HeartbeatServerProtocol):
        def onPing(self, payload):
            pass  # no pong: the client declares the server dead

    server = HeartbeatServerFactory(pingInterval=None)
    server.protocol = Silent
    port = reactor.listenTCP(0, server, interface="127.0.0.1")
    handler = HeartbeatHandler()
    garbage = NewGarbage()
    try:
        url = f"ws://127.0.0.1:{port.getHost().port}/"
        yield connect(url, handler, reactor=reactor, pingInterval=0.05, pongTimeout=0.05, shouldRetry=lambda f: False)
        while handler.stats.deadPeers < 1 or server.clients:
            yield deferLater(reactor, 0.01, lambda: None)
        yield deferLater(reactor, 0.05, lambda: None)
        assert garbage.found(lambda o: isinstance(o, HeartbeatMixin)) == []
        closed = handler.protocol.is_closed if handler.protocol is not None else None
        assert closed is None or closed.called
    finally:
        garbage.close()
        yield port.stopListening()


def test_is_closed_still_fires_with_the_protocol():
    """is_closed: callbacks added before the close get the protocol; asked for after the connection is gone, a fired future with the protocol."""
    reactor = MemoryReactor()
    server = HeartbeatServerFactory(URL, pingInterval=None, reactor=reactor)
    handler = RecordingHandler(reactor)
    HeartbeatClientFactory(URL, handler, reactor=reactor, pingInterval=None, shouldRetry=lambda f: False).connect()
    link = reactor.accept(server)
    before = []
    link.client.is_closed.addCallback(lambda p: before.append(p) or p)
    assert link.client.is_closed is link.client.is_closed  # one future while open
    link.reset()
    after = []
    link.client.is_closed.addCallback(after.append)
    link.server.is_closed.addCallback(after.append)
    assert before == [link.client] and after == [link.client, link.server]


def test_twisted_still_leaves_a_failed_connect_in_a_cycle():
    """releaseFailedClient exists because Twisted's BaseClient points doRead/doWrite at its own doConnect: if that changes, it may go."""
    import inspect

    from twisted.internet import tcp

    source = inspect.getsource(tcp.BaseClient.doConnect)
    assert "self.doWrite = self.doConnect" in source and "self.doRead = self.doConnect" in source


@needsShortcut("failedConnects")
@pytest_twisted.inlineCallbacks
def test_refused_and_abandoned_connects_leave_no_cyclic_garbage():
    """Connects refused (nothing listening) and connects given up on (openTimeout) leave nothing for a full GC pass, and no error is logged."""
    import socket

    from twisted.internet import reactor
    from twisted.logger import globalLogPublisher

    from txheartbeat import HeartbeatHandler

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    refused = closed.getsockname()[1]
    closed.close()
    full = socket.socket()  # a listener that never accepts, its queue filled: further SYNs go unanswered
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    for _ in range(4):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(full.getsockname())
        fillers.append(s)
    errors = []

    def observe(event):
        if event.get("log_failure") is not None:
            errors.append(event)

    garbage = NewGarbage()  # (its full pass first: what earlier tests left is not this test's to log)
    globalLogPublisher.addObserver(observe)
    try:
        handlers = [HeartbeatHandler() for _ in range(10)]
        for i, handler in enumerate(handlers):
            port = refused if i % 2 else full.getsockname()[1]
            factory = HeartbeatClientFactory(
                f"ws://127.0.0.1:{port}/", handler, reactor=reactor, openTimeout=0.3, shouldRetry=lambda f: False
            )
            factory.connect().addErrback(lambda f: None)
        # Every attempt refused or abandoned (openTimeout), and given up on.
        yield DeferredList([h.whenClosed() for h in handlers]).addTimeout(30, reactor)
        yield deferLater(reactor, 0, lambda: None)  # (the reactor's own handling of the last loss)
        left = garbage.found(lambda o: type(o).__module__.startswith(("twisted", "txheartbeat")))
        assert left == [] and errors == []
        assert all(h.stats.attempts == 1 for h in handlers)
    finally:
        garbage.close()
        globalLogPublisher.removeObserver(observe)
        full.close()
        for s in fillers:
            s.close()
