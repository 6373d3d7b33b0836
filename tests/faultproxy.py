"""
A fault-injecting TCP proxy for the tests (Twisted, loopback only).

It sits between a client and a server and can, at any moment: black-hole
traffic in one or both directions (TCP stays open), reset every connection,
delay or trickle bytes, cut the connection in the middle of the next frame
from the server, and refuse new connections (stop listening).
"""

from __future__ import annotations

from typing import List, Optional

from twisted.internet import protocol
from twisted.internet import reactor as _reactor


class _Pipe(protocol.Protocol):
    """One direction's receiving end; ``peer`` is the other side's _Pipe."""

    def __init__(self, proxy: FaultProxy, toServer: bool) -> None:
        self.proxy = proxy
        self.toServer = toServer
        self.peer: Optional[_Pipe] = None
        self.pending: List[bytes] = []
        self.nextAt = 0.0  # when the last delayed chunk for this side leaves

    def dataReceived(self, data: bytes) -> None:
        self.proxy._forward(self, data)

    def deliver(self, data: bytes) -> None:
        if self.transport is not None and self.connected:
            self.transport.write(data)

    def connectionLost(self, reason: object = None) -> None:
        self.connected = False
        self.proxy.pipes.discard(self)
        peer = self.peer
        if peer is not None and peer.connected and peer.transport is not None:
            peer.transport.loseConnection()


class _ServerSide(_Pipe):
    """The proxy's connection to the real server; data from here goes to the client."""

    def connectionMade(self) -> None:
        self.connected = True
        self.proxy.pipes.add(self)
        client = self.peer
        assert client is not None
        client.peer = self
        for data in client.pending:
            self.proxy._forward(client, data)
        client.pending = []
        if client.transport is not None:
            client.transport.resumeProducing()


class _ClientSide(_Pipe):
    """A connection accepted from the client; data from here goes to the server."""

    def connectionMade(self) -> None:
        self.connected = True
        self.proxy.pipes.add(self)
        self.proxy.accepted += 1
        server = _ServerSide(self.proxy, toServer=False)
        server.peer = self
        self.transport.pauseProducing()
        factory = protocol.ClientFactory()
        factory.buildProtocol = lambda addr: server  # type: ignore[method-assign]

        def failed(connector: object, reason: object) -> None:
            if self.transport is not None:
                self.transport.abortConnection()

        factory.clientConnectionFailed = failed  # type: ignore[method-assign]
        _reactor.connectTCP(self.proxy.targetHost, self.proxy.targetPort, factory)

    def dataReceived(self, data: bytes) -> None:
        if self.peer is None or not self.peer.connected:
            self.pending.append(data)
            return
        super().dataReceived(data)


class FaultProxy(protocol.Factory):
    """Listen on 127.0.0.1:0 and forward to ``targetPort``; faults are switched on by the methods."""

    def __init__(self, targetPort: int, targetHost: str = "127.0.0.1") -> None:
        self.targetHost = targetHost
        self.targetPort = targetPort
        self.pipes: set = set()
        self.accepted = 0
        self.dropToServer = False
        self.dropToClient = False
        self.delay = 0.0
        self.trickle: Optional[tuple] = None  # (bytes per chunk, seconds between chunks)
        self.cutNextServerFrame = False
        self.port = None
        self.portNumber = 0
        self.listen()

    # Listening ----------------------------------------------------------------

    def buildProtocol(self, addr: object) -> protocol.Protocol:
        return _ClientSide(self, toServer=True)

    def listen(self) -> None:
        self.port = _reactor.listenTCP(self.portNumber, self, interface="127.0.0.1")
        self.portNumber = self.port.getHost().port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.portNumber}/"

    def refuse(self):
        """Stop accepting: new connections are refused (existing ones go on)."""
        return self.port.stopListening()

    def stop(self):
        self.reset()
        return self.port.stopListening()

    # Faults ---------------------------------------------------------------------

    def blackhole(self, toServer: bool = True, toClient: bool = True) -> None:
        self.dropToServer, self.dropToClient = toServer, toClient

    def heal(self) -> None:
        self.dropToServer = self.dropToClient = False
        self.delay = 0.0
        self.trickle = None

    def reset(self) -> None:
        """Abort every proxied connection on both sides (like a RST)."""
        for pipe in list(self.pipes):
            if pipe.transport is not None:
                pipe.transport.abortConnection()

    # Forwarding -------------------------------------------------------------------

    def _forward(self, source: _Pipe, data: bytes) -> None:
        toServer = source.toServer
        if (toServer and self.dropToServer) or (not toServer and self.dropToClient):
            return
        target = source.peer
        if target is None:
            return
        if not toServer and self.cutNextServerFrame and len(data) > 1:
            self.cutNextServerFrame = False
            target.deliver(data[: len(data) // 2])
            self.reset()
            return
        if self.trickle is None and not self.delay:
            target.deliver(data)
            return
        size, every = self.trickle if self.trickle is not None else (len(data), 0.0)
        # Keep the byte order: each chunk leaves no earlier than the one before it.
        at = max(_reactor.seconds() + self.delay, target.nextAt)
        for i in range(0, len(data), size):
            target.nextAt = at
            _reactor.callLater(max(0.0, at - _reactor.seconds()), target.deliver, data[i : i + size])
            at += every
