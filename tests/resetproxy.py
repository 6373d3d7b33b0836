"""
A TCP proxy that adds latency and resets every connection, for the session
resume tests (Twisted, loopback only).

Each proxied connection forwards bytes both ways, each chunk ``latency``
seconds after it arrived, in order; a clean end of one side reaches the other
after the bytes before it.  At a random time in ``resetAfter`` seconds after
the proxy accepted it (a seeded :class:`random.Random`, so a run can be
repeated), the connection is reset: both of its TCP connections are aborted
and whatever the proxy still held is dropped, as when a NAT or a load
balancer forgets a flow.

Every timer is on the given reactor (the global one by default); a direction
has at most one pending call, and only while it holds bytes.  :meth:`stop`
aborts every connection, stops listening and cancels everything.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any, Callable, Deque, Optional, Set, Tuple

from twisted.internet import protocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure


class _Delay:
    """One direction of a link: chunks released ``latency`` seconds after they arrived, oldest first."""

    def __init__(self, reactor: Any, latency: float, write: Callable[[bytes], None], end: Callable[[], None]) -> None:
        self.reactor = reactor
        self.latency = latency
        self.write = write
        self.end = end
        self.queue: Deque[Tuple[float, Optional[bytes]]] = deque()  # (due, chunk); None: the sender ended
        self.call: Optional[IDelayedCall] = None

    def push(self, chunk: Optional[bytes]) -> None:
        self.queue.append((self.reactor.seconds() + self.latency, chunk))
        if self.call is None:
            self._schedule()

    def _schedule(self) -> None:
        due = self.queue[0][0]
        self.call = self.reactor.callLater(max(0.0, due - self.reactor.seconds()), self._release)

    def _release(self) -> None:
        self.call = None
        # The head is due (its timer fired); later chunks go along if they are due too.
        # One timer per direction, so the order never depends on how a reactor breaks ties.
        now = self.reactor.seconds()
        first = True
        while self.queue and (first or self.queue[0][0] <= now):
            first = False
            _, chunk = self.queue.popleft()
            if chunk is None:
                self.end()
            else:
                self.write(chunk)
        if self.queue:
            self._schedule()

    def cancel(self) -> None:
        self.queue.clear()
        if self.call is not None:
            self.call.cancel()
            self.call = None


class _Side(protocol.Protocol):
    """One of a link's two TCP connections; what it receives goes to the other one."""

    transport: Any  # a TCP transport: pauseProducing, abortConnection, connected

    def __init__(self, link: _Link, toServer: bool) -> None:
        self.link = link
        self.toServer = toServer

    def dataReceived(self, data: bytes) -> None:
        self.link.forward(self.toServer, data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.link.sideLost(self)


class _ClientSide(_Side):
    def connectionMade(self) -> None:
        self.transport.pauseProducing()  # read nothing until the server side is up
        self.link.accepted(self)


class _ServerSide(_Side):
    def connectionMade(self) -> None:
        self.link.dialed(self)


class _Link:
    """One proxied connection: the client's, the proxy's to the server, a delay each way and the reset timer."""

    def __init__(self, proxy: ResetProxy) -> None:
        self.proxy = proxy
        self.client: Optional[_Side] = None
        self.server: Optional[_Side] = None
        self.resetCall: Optional[IDelayedCall] = None
        self.over = False
        reactor, latency = proxy.reactor, proxy.latency
        self.toServer = _Delay(reactor, latency, lambda b: self._write(self.server, b), lambda: self._end(self.server))
        self.toClient = _Delay(reactor, latency, lambda b: self._write(self.client, b), lambda: self._end(self.client))

    def accepted(self, client: _Side) -> None:
        self.client = client
        proxy = self.proxy
        if proxy.resetAfter is not None:
            self.resetCall = proxy.reactor.callLater(proxy.random.uniform(*proxy.resetAfter), self._resetFired)
        factory = protocol.ClientFactory()
        factory.buildProtocol = lambda addr: _ServerSide(self, toServer=False)  # type: ignore[method-assign]
        factory.clientConnectionFailed = lambda connector, reason: self.abort()  # type: ignore[method-assign]
        proxy.reactor.connectTCP(proxy.targetHost, proxy.targetPort, factory)

    def dialed(self, server: _Side) -> None:
        self.server = server
        if self.over:
            server.transport.abortConnection()
        elif self.client is not None:
            self.client.transport.resumeProducing()

    def forward(self, toServer: bool, data: bytes) -> None:
        (self.toServer if toServer else self.toClient).push(data)

    def sideLost(self, side: _Side) -> None:
        if self.over:
            return
        # A clean end (or the peer's own reset) reaches the other side after the bytes before it.
        (self.toServer if side.toServer else self.toClient).push(None)
        if side is self.client and self.server is None:
            self.abort()
        self._forgetIfDone()

    def _write(self, side: Optional[_Side], data: bytes) -> None:
        if side is not None and side.transport is not None and side.transport.connected:
            side.transport.write(data)

    def _end(self, side: Optional[_Side]) -> None:
        if side is not None and side.transport is not None and side.transport.connected:
            side.transport.loseConnection()
        self._forgetIfDone()

    def _forgetIfDone(self) -> None:
        sides = [s for s in (self.client, self.server) if s is not None]
        if all(not s.transport.connected for s in sides) and not self.toServer.queue and not self.toClient.queue:
            self.abort()

    def _resetFired(self) -> None:
        self.resetCall = None
        self.proxy.resets += 1
        self.abort()

    def calm(self) -> None:
        if self.resetCall is not None:
            self.resetCall.cancel()
            self.resetCall = None

    def abort(self) -> None:
        """Abort both connections and drop what is held (a reset); also how a link is forgotten."""
        self.over = True
        self.calm()
        self.toServer.cancel()
        self.toClient.cancel()
        for side in (self.client, self.server):
            if side is not None and side.transport is not None and side.transport.connected:
                side.transport.abortConnection()
        self.proxy.links.discard(self)


class ResetProxy(protocol.Factory):
    """
    Listen on 127.0.0.1 (port 0) and forward to ``targetPort``, with latency
    and random resets.

    :param latency: seconds each chunk waits, in each direction.
    :param resetAfter: ``(low, high)``: each connection is reset at a uniformly
        random time that many seconds after it was accepted; ``None``: never
        (use :meth:`reset`).
    :param seed: seeds the proxy's own :class:`random.Random`.
    :param reactor: where connections and timers live (default: the global reactor).
    """

    noisy = False

    def __init__(
        self,
        targetPort: int,
        *,
        latency: float = 0.05,
        resetAfter: Optional[Tuple[float, float]] = (0.3, 1.0),
        seed: int = 0,
        targetHost: str = "127.0.0.1",
        reactor: Any = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.targetHost = targetHost
        self.targetPort = targetPort
        self.latency = latency
        self.resetAfter = resetAfter
        self.random = random.Random(seed)
        self.links: Set[_Link] = set()
        #: connections accepted
        self.connections = 0
        #: connections reset by their timer (not by :meth:`reset`)
        self.resets = 0
        self.port = reactor.listenTCP(0, self, interface="127.0.0.1")

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port.getHost().port}/"

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        self.connections += 1
        link = _Link(self)
        self.links.add(link)
        return _ClientSide(link, toServer=True)

    def reset(self) -> None:
        """Reset every connection now."""
        for link in list(self.links):
            link.abort()

    def calm(self) -> None:
        """Reset nothing more: pending resets are cancelled and new connections get none (latency stays)."""
        self.resetAfter = None
        for link in self.links:
            link.calm()

    def stop(self) -> Deferred[None]:
        """Reset every connection, cancel every timer and stop listening."""
        self.calm()
        self.reset()
        return self.port.stopListening()  # type: ignore[no-any-return]
