"""
A rate-limited TCP proxy with real backpressure, for the liveness tests
(Twisted, loopback only).

Each direction is forwarded at a fixed byte rate through a small bounded
buffer.  When the buffer is full the proxy stops reading from that
direction's input, so the sender's kernel buffers fill and its TCP window
closes, as on a slow link; it reads again once the buffer has drained to half.
The proxy's own sockets get small kernel buffers so that this shows within a
few tens of kilobytes.  When the output cannot take more (the receiver stopped
reading), forwarding stops too, and the backpressure travels back to the
sender.

``freeze()`` turns a direction into a frozen path: nothing more is forwarded
or read (a FIN or RST from its input is held as well), so the sender's window
closes and the receiver gets nothing.  At most the few kilobytes already
handed to the output socket before the freeze still arrive.  ``thaw()``
undoes it.

Every timer is on the global reactor; a direction has at most one pending
call, and only while it holds bytes it may send.  ``stop()`` aborts every
connection, stops listening and cancels everything.
"""

from __future__ import annotations

import socket
from typing import Dict, List, Optional, Set, Tuple

from twisted.internet import defer, protocol
from twisted.internet import reactor as _reactor
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.python.failure import Failure
from zope.interface import implementer

DIRECTIONS = ("toServer", "toClient")


def _directions(direction: str) -> Tuple[str, ...]:
    if direction == "both":
        return DIRECTIONS
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'toServer', 'toClient' or 'both', got {direction!r}")
    return (direction,)


def setSocketBuffers(sock: object, size: int) -> None:
    """Set SO_RCVBUF and SO_SNDBUF on a socket (Linux doubles the figure for bookkeeping)."""
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, size)  # type: ignore[attr-defined]


class _Side(protocol.Protocol):
    """One TCP connection of the proxy: to the client (accepted) or to the server (dialed)."""

    def __init__(self, link: _Link, name: str) -> None:
        self.link = link
        self.name = name  # "client" or "server"
        self.gone = False

    def connectionMade(self) -> None:
        self.link.proxy._sides.add(self)
        setSocketBuffers(self.transport.getHandle(), self.link.proxy.socketBuffer)
        self.link.sideMade(self)

    def dataReceived(self, data: bytes) -> None:
        self.link.outOf(self).receive(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.gone = True
        self.link.sideLost(self, reason)
        self.link.proxy._sideGone(self)


@implementer(IPushProducer)
class _Direction:
    """
    Bytes from ``source`` to ``target`` at ``rate`` bytes per second through
    a buffer of ``bufferSize`` bytes.

    It is the push producer registered on the target's transport, so a full
    output buffer (the receiver stopped reading) pauses forwarding.
    """

    def __init__(self, proxy: RateProxy, name: str, source: _Side, target: _Side) -> None:
        self.proxy = proxy
        self.name = name
        self.source = source
        self.target = target
        self.rate = proxy.rates[name]
        self.buffer = bytearray()
        self.reading = True
        self.blocked = False  # the target's transport asked us to pause
        self.ready = False  # both sides connected
        self.eof: Optional[str] = None  # "close" or "abort" once the source is gone
        self.credit = 0.0
        self.lastTick = _reactor.seconds()
        self.call: Optional[IDelayedCall] = None
        # At most one tick's worth (twice, to absorb timer lateness) goes out at once.
        self.burst = max(1.0, 2 * self.rate * proxy.tick)

    @property
    def frozen(self) -> bool:
        return self.name in self.proxy.frozen

    # Input -----------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        self.buffer += data
        self.proxy.lastRead[self.name] = _reactor.seconds()
        self.proxy.read[self.name] += len(data)
        self.updateReading()
        self.kick()

    def updateReading(self) -> None:
        """Read from the source only while the buffer has room and the direction is not frozen."""
        if self.source.gone or self.source.transport is None:
            return
        size = len(self.buffer)
        if self.reading and (self.frozen or size >= self.proxy.bufferSize):
            self.reading = False
            self.source.transport.pauseProducing()
        elif not self.reading and not self.frozen and size <= self.proxy.bufferSize // 2:
            self.reading = True
            self.source.transport.resumeProducing()

    def sourceGone(self, reason: Optional[Failure]) -> None:
        # A clean FIN follows the buffered bytes; a reset or abort is passed on at once
        # (unless frozen: a frozen path carries neither).
        self.eof = "close" if reason is None or reason.check(ConnectionDone) else "abort"
        self.kick()

    # Output ----------------------------------------------------------------------

    def kick(self) -> None:
        """Forward now if nothing is scheduled (the pending tick will otherwise)."""
        if self.call is None:
            self.pump()

    def pump(self) -> None:
        self.call = None
        target = self.target
        if not self.ready or self.frozen or target.gone or target.transport is None:
            return
        if self.eof == "abort":
            self.buffer.clear()
            target.transport.abortConnection()
            return
        now = _reactor.seconds()
        self.credit = min(self.burst, self.credit + (now - self.lastTick) * self.rate)
        self.lastTick = now
        if self.buffer and not self.blocked:
            n = min(len(self.buffer), int(self.credit))
            if n > 0:
                chunk = bytes(self.buffer[:n])
                del self.buffer[:n]
                self.credit -= n
                # May pause us (self.blocked) before it returns.
                target.transport.write(chunk)
                self.proxy._noteForwarded(self.name, n)  # may freeze this direction
                self.updateReading()
        if self.frozen or target.gone:
            return
        if self.buffer:
            if not self.blocked:
                self.call = _reactor.callLater(self.proxy.tick, self.pump)
        elif self.eof == "close":
            target.transport.loseConnection()

    def cancel(self) -> None:
        if self.call is not None:
            call, self.call = self.call, None
            if call.active():
                call.cancel()

    # IPushProducer, toward the target's transport ----------------------------

    def pauseProducing(self) -> None:
        self.blocked = True
        self.cancel()

    def resumeProducing(self) -> None:
        self.blocked = False
        self.kick()

    def stopProducing(self) -> None:
        self.blocked = True
        self.cancel()


class _Link:
    """One proxied connection: a client side, a server side and the two directions between them."""

    def __init__(self, proxy: RateProxy) -> None:
        self.proxy = proxy
        self.client = _Side(self, "client")
        self.server = _Side(self, "server")
        self.toServer = _Direction(proxy, "toServer", self.client, self.server)
        self.toClient = _Direction(proxy, "toClient", self.server, self.client)

    def outOf(self, side: _Side) -> _Direction:
        return self.toServer if side is self.client else self.toClient

    def sideMade(self, side: _Side) -> None:
        if side is self.client:
            # Read nothing until the server side is up.
            side.transport.pauseProducing()
            factory = protocol.ClientFactory()
            factory.buildProtocol = lambda addr: self.server  # type: ignore[method-assign]
            factory.clientConnectionFailed = lambda connector, reason: self.client.transport.abortConnection()  # type: ignore[method-assign]
            _reactor.connectTCP(self.proxy.targetHost, self.proxy.targetPort, factory)
            return
        if self.client.gone or self.proxy.stopped:
            side.transport.abortConnection()
            return
        self.client.transport.registerProducer(self.toClient, True)
        self.server.transport.registerProducer(self.toServer, True)
        # The client side was paused above; the server side reads from the start.
        self.toServer.reading, self.toClient.reading = False, True
        for direction in (self.toServer, self.toClient):
            direction.ready = True
            direction.lastTick = _reactor.seconds()
            direction.updateReading()

    def sideLost(self, side: _Side, reason: Optional[Failure]) -> None:
        self.outOf(side).sourceGone(reason)
        inbound = self.toClient if side is self.client else self.toServer
        inbound.cancel()
        inbound.buffer.clear()

    def directions(self) -> List[_Direction]:
        return [self.toServer, self.toClient]


class RateProxy(protocol.Factory):
    """
    Listen on 127.0.0.1:0 and forward to ``targetHost:targetPort`` at a fixed rate per direction.

    :param rate: bytes per second in each direction.
    :param rateToServer: overrides ``rate`` from client to server.
    :param rateToClient: overrides ``rate`` from server to client.
    :param bufferSize: bytes buffered per direction before the proxy stops
        reading its input (one read of up to 64 KiB may overshoot it).
    :param socketBuffer: SO_RCVBUF and SO_SNDBUF for the proxy's sockets.
    :param tick: seconds between two forwarded chunks while bytes are waiting.
    """

    def __init__(
        self,
        targetPort: int,
        rate: float = 1_000_000,
        *,
        rateToServer: Optional[float] = None,
        rateToClient: Optional[float] = None,
        bufferSize: int = 64 * 1024,
        socketBuffer: int = 32 * 1024,
        tick: float = 0.01,
        targetHost: str = "127.0.0.1",
    ) -> None:
        self.targetHost = targetHost
        self.targetPort = targetPort
        self.rates: Dict[str, float] = {
            "toServer": rate if rateToServer is None else rateToServer,
            "toClient": rate if rateToClient is None else rateToClient,
        }
        if min(self.rates.values()) <= 0:
            raise ValueError(f"rates must be positive, got {self.rates}")
        self.bufferSize = bufferSize
        self.socketBuffer = socketBuffer
        self.tick = tick
        self.links: List[_Link] = []
        self.stopped = False
        self._sides: Set[_Side] = set()
        self._whenIdle: List[defer.Deferred] = []
        self._triggers: List[Tuple[str, int, defer.Deferred]] = []
        #: directions currently frozen
        self.frozen: Set[str] = set()
        #: when the last freeze began (reactor seconds), or None
        self.frozenAt: Optional[float] = None
        #: bytes read from each direction's input / forwarded to its output, over all connections
        self.read: Dict[str, int] = dict.fromkeys(DIRECTIONS, 0)
        self.forwarded: Dict[str, int] = dict.fromkeys(DIRECTIONS, 0)
        #: when each direction last read from its input / forwarded to its output
        self.lastRead: Dict[str, Optional[float]] = dict.fromkeys(DIRECTIONS)
        self.lastForwarded: Dict[str, Optional[float]] = dict.fromkeys(DIRECTIONS)
        self.port = _reactor.listenTCP(0, self, interface="127.0.0.1")
        # Accepted sockets inherit the listener's buffer sizes, so the first
        # window the client sees is already small.
        setSocketBuffers(self.port.socket, socketBuffer)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port.getHost().port}/"

    def buildProtocol(self, addr: object) -> protocol.Protocol:
        link = _Link(self)
        self.links.append(link)
        return link.client

    # Faults ----------------------------------------------------------------------

    def freeze(self, direction: str = "both") -> None:
        """Stop forwarding and reading in ``direction`` ("toServer", "toClient" or "both")."""
        names = _directions(direction)
        if not self.frozen.issuperset(names):
            self.frozenAt = _reactor.seconds()
        self.frozen.update(names)
        for link in self.links:
            for d in link.directions():
                if d.name in names:
                    d.cancel()
                    d.updateReading()

    def thaw(self) -> None:
        """Undo every freeze: read and forward again (a held close is passed on)."""
        self.frozen.clear()
        for link in self.links:
            for d in link.directions():
                d.lastTick = _reactor.seconds()
                d.updateReading()
                d.kick()

    def whenForwarded(self, nbytes: int, direction: str = "toServer") -> defer.Deferred:
        """A Deferred that fires with the time once ``nbytes`` in all have been forwarded in ``direction``."""
        (name,) = _directions(direction)
        d: defer.Deferred = defer.Deferred()
        if self.forwarded[name] >= nbytes:
            d.callback(_reactor.seconds())
        else:
            self._triggers.append((name, nbytes, d))
        return d

    def freezeAfter(self, nbytes: int, counted: str = "toServer", direction: str = "both") -> defer.Deferred:
        """Freeze ``direction`` as soon as ``nbytes`` have been forwarded in ``counted`` (synchronously, mid-pump)."""
        _directions(direction)

        def freeze(when: float) -> float:
            self.freeze(direction)
            return when

        return self.whenForwarded(nbytes, counted).addCallback(freeze)

    def _noteForwarded(self, name: str, n: int) -> None:
        self.forwarded[name] += n
        self.lastForwarded[name] = now = _reactor.seconds()
        due = [t for t in self._triggers if t[0] == name and self.forwarded[name] >= t[1]]
        for t in due:
            self._triggers.remove(t)
            t[2].callback(now)

    # Shutting down ------------------------------------------------------------------

    def _sideGone(self, side: _Side) -> None:
        self._sides.discard(side)
        if not self._sides:
            waiting, self._whenIdle = self._whenIdle, []
            for d in waiting:
                d.callback(None)

    def stop(self) -> defer.Deferred:
        """Abort every connection, stop listening; fires once every socket is closed."""
        self.stopped = True
        self.frozen.clear()
        for link in self.links:
            for d in link.directions():
                d.cancel()
                d.ready = False
        for side in list(self._sides):
            if side.transport is not None:
                side.transport.abortConnection()
        idle: defer.Deferred = defer.Deferred()
        if self._sides:
            self._whenIdle.append(idle)
        else:
            idle.callback(None)
        stopped = defer.maybeDeferred(self.port.stopListening)
        return defer.gatherResults([stopped, idle]).addCallback(lambda _: None)
