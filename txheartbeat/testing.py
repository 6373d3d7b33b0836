"""
Test doubles for code that uses txheartbeat, in the spirit of ``treq.testing``.

:class:`MemoryReactor` is a ``MemoryReactorClock`` whose ``connectTCP``
returns connectors that behave like Twisted's (``connect()`` after a failure
really tries again), and that can be completed against an in-memory
Autobahn server with :meth:`MemoryReactor.accept`.  Bytes move between the
two ends when the reactor is pumped; :meth:`MemoryReactor.advance` moves the
clock from timer to timer and pumps after each, like a real event loop on a
zero-latency network.  Nothing touches a socket or the global reactor.

TLS is simulated, not performed: transports of ``connectSSL`` connections
provide ``ISSLTransport`` (so ``wss://`` clients open) and every transport
has a ``startTLS`` that records its context factory and turns it secure.
No certificate is checked and bytes cross in clear.

Names resolve synchronously through the reactor's ``nameResolver``: IP
literals answer themselves, other names come from
:attr:`MemoryReactor.hosts` (``[]`` for a name that does not resolve), and a
name not listed resolves to ``127.0.0.1`` as with Twisted's ``MemoryReactor``, so
``HostnameEndpoint`` and friends work without threads or DNS.  Connectors
and links to IPv6 literals report ``IPv6Address`` addresses.

:class:`RecordingHandler` is a :class:`txheartbeat.HeartbeatHandler` that
records every hook call, for assertions on order and timing.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type, Union

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from OpenSSL import SSL
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.error import (
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    NotConnectingError,
    UserError,
)
from twisted.internet.interfaces import (
    IAddress,
    IConnector,
    IConsumer,
    IHostnameResolver,
    IHostResolution,
    IPushProducer,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
    ISSLTransport,
)
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import alsoProvides, implementer, implementer_only

from ._handler import HeartbeatHandler, Message
from ._protocol import ExactTimer

__all__ = [
    "advanceStepwise",
    "MemoryReactor",
    "MemoryLink",
    "RecordingHandler",
    "EchoServerProtocol",
    "echoServerFactory",
]


def advanceStepwise(clock: Clock, amount: float, after: Callable[[], object] = lambda: None) -> None:
    """
    Advance ``clock`` by ``amount`` seconds one due timer at a time.

    ``Clock.advance(30)`` runs a timer due at 15 with ``seconds()`` already
    at 30; this instead stops at 15, runs it, calls ``after()`` and goes on,
    so timers that a timer schedules fire at their own instant.
    """
    target = clock.seconds() + amount
    after()
    while True:
        due = [c.getTime() for c in clock.getDelayedCalls() if c.getTime() <= target]
        if not due:
            break
        _advanceTo(clock, min(due))
        after()
    _advanceTo(clock, target)
    after()


def _advanceTo(clock: Clock, when: float) -> None:
    # now + (when - now) can land one ulp short of ``when``: set it exactly.
    clock.rightNow = max(clock.rightNow, when)
    Clock.advance(clock, 0)


class RecordingHandler(HeartbeatHandler):
    """
    A handler that appends ``(reactorTime, hookName, *args)`` to
    :attr:`events` for every hook call (``onError`` records the exception
    instance, not the Failure).
    """

    def __init__(self, clock: Optional[Clock] = None) -> None:
        super().__init__()
        self.clock = clock
        self.events: List[Tuple[Any, ...]] = []
        #: ``(hook, exception)`` for every onReconnect and onGiveUp: the reason each was given
        self.reasons: List[Tuple[str, Any]] = []

    def _record(self, name: str, *args: Any) -> None:
        now = self.clock.seconds() if self.clock is not None else None
        self.events.append((now, name, *args))

    def names(self) -> List[str]:
        """The hook names recorded so far, in order."""
        return [event[1] for event in self.events]

    def onOpen(self) -> None:
        """Record ``(time, 'onOpen')``."""
        self._record("onOpen")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """Record ``(time, 'onMessage', payload, isBinary)``."""
        self._record("onMessage", payload, isBinary)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        """Record ``(time, 'onClose', wasClean, code, reason)``."""
        self._record("onClose", wasClean, code, reason)

    def onError(self, failure: Failure) -> None:
        """Record ``(time, 'onError', exception)``."""
        self._record("onError", failure.value)

    def onReconnect(self, attempt: int, delay: float, reason: Optional[Failure] = None) -> None:
        """Record ``(time, 'onReconnect', attempt, delay)`` and the reason in :attr:`reasons`."""
        self._record("onReconnect", attempt, delay)
        self.reasons.append(("onReconnect", reason.value if reason is not None else None))

    def onGiveUp(self, reason: Optional[Failure] = None) -> None:
        """Record ``(time, 'onGiveUp')`` and the reason in :attr:`reasons`."""
        self._record("onGiveUp")
        self.reasons.append(("onGiveUp", reason.value if reason is not None else None))

    def onHeartbeat(self, roundTrip: float) -> None:
        """Record ``(time, 'onHeartbeat', roundTrip)``."""
        self._record("onHeartbeat", roundTrip)

    def onSessionLost(self, unacked: List[Message]) -> None:
        """Record ``(time, 'onSessionLost', unacked)``."""
        self._record("onSessionLost", unacked)

    def received(self) -> List[bytes]:
        """The payloads delivered to ``onMessage`` so far, in order."""
        return [event[2] for event in self.events if event[1] == "onMessage"]


class EchoServerProtocol(WebSocketServerProtocol):
    """An Autobahn server protocol that echoes every message back."""

    def onConnect(self, request: Any) -> None:
        """Accept, without the info line older Autobahn logs with the whole request (headers, query)."""

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """Send the message back as it came."""
        self.sendMessage(payload, isBinary)


def echoServerFactory(protocol: type = EchoServerProtocol, **options: Any) -> WebSocketServerFactory:
    """An Autobahn server factory for :meth:`MemoryReactor.accept`; ``options`` go to ``setProtocolOptions``."""
    factory = WebSocketServerFactory("ws://127.0.0.1:9000")
    factory.protocol = protocol  # type: ignore[assignment]
    if options:
        factory.setProtocolOptions(**options)
    return factory


_Address = Union[IPv4Address, IPv6Address]


def _address(host: str, port: int, kind: Any = "TCP") -> _Address:
    # Like tcp.Connector: an IPv6 literal gets an IPv6Address, anything else an IPv4Address.
    return (IPv6Address if isIPv6Address(host) else IPv4Address)(kind, host, port)


def _isIPLiteral(host: str) -> bool:
    return isIPAddress(host) or isIPv6Address(host)


class _MemoryTransport(StringTransport):
    def __init__(self, link: MemoryLink, host: _Address, peer: _Address) -> None:
        super().__init__(hostAddress=host, peerAddress=peer)
        self._link = link
        self.closeRequest: Optional[bool] = None  # None, False (lose) or True (abort)
        #: the context factory given to :meth:`startTLS`, or None
        self.tlsContextFactory: Any = None

    def startTLS(self, contextFactory: Any) -> None:
        """Record ``contextFactory`` and provide ``ISSLTransport`` from now on, as Twisted's ``startTLS`` does."""
        self.tlsContextFactory = contextFactory
        alsoProvides(self, ISSLTransport)

    def getPeerCertificate(self) -> None:
        """None: the in-memory peer presents no certificate."""
        return None

    def loseConnection(self) -> None:
        if self.closeRequest is None:
            self.closeRequest = False
        self.disconnecting = True

    def abortConnection(self) -> None:
        self.closeRequest = True
        self.disconnecting = True

    def unregisterProducer(self) -> None:
        self.producer = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


# The type-ignore: connected/disconnecting are bools here, ints in ProtocolWrapper; ours win.
@implementer_only(ISSLTransport, IConsumer, IPushProducer)
class _MemorySSLTransport(_MemoryTransport, TLSMemoryBIOProtocol):  # type: ignore[misc]
    """
    The transport at either end of a ``connectSSL`` connection.

    Autobahn reads the TLS channel id of every ``ISSLTransport`` and insists
    that it be a ``TLSMemoryBIOProtocol`` whose handle is an OpenSSL
    ``Connection``, so this is one in name only: every method that matters
    comes from :class:`_MemoryTransport`, and the handle never handshakes
    (Autobahn then reports the all-zero channel id of an unfinished handshake).
    """

    def getHandle(self) -> SSL.Connection:
        return SSL.Connection(SSL.Context(SSL.TLS_METHOD), None)


class MemoryLink:
    """
    One in-memory TCP connection between a client and a server protocol.

    Faults for tests: :meth:`blackhole` (TCP stays up, nothing crosses),
    :meth:`reset` (the connection dies without a close handshake),
    :meth:`closeFromServer` (a clean TCP close by the server).
    """

    def __init__(self, reactor: MemoryReactor, connector: MemoryConnector, client: Any, server: Any) -> None:
        self.reactor = reactor
        self.connector = connector
        self.client = client
        self.server = server
        serverAddr = connector.getDestination()
        clientHost = "::1" if isinstance(serverAddr, IPv6Address) else "127.0.0.1"
        clientAddr = _address(clientHost, 50000 + len(reactor.links))
        transport = _MemorySSLTransport if connector.secure else _MemoryTransport
        self.clientTransport = transport(self, clientAddr, serverAddr)
        self.serverTransport = transport(self, serverAddr, clientAddr)
        self.toServer = True
        self.toClient = True
        self.connected = True
        #: bytes that crossed in each direction (after black-holing)
        self.bytesToServer = 0
        self.bytesToClient = 0

    def blackhole(self, toServer: bool = True, toClient: bool = True) -> None:
        """Silently discard traffic in the given directions; TCP stays open."""
        self.toServer = not toServer
        self.toClient = not toClient

    def reset(self) -> None:
        """Drop the connection with no close handshake (like a TCP RST)."""
        self.serverTransport.abortConnection()
        self.pump()

    def closeFromServer(self) -> None:
        """The server closes TCP cleanly without a WebSocket close handshake."""
        self.serverTransport.loseConnection()
        self.pump()

    def pump(self) -> bool:
        """Move bytes both ways until quiet, then deliver any requested close."""
        moved = False
        while self.connected:
            step = False
            for src, dst, proto, allowed, counter in (
                (self.clientTransport, self.serverTransport, self.server, self.toServer, "bytesToServer"),
                (self.serverTransport, self.clientTransport, self.client, self.toClient, "bytesToClient"),
            ):
                data = src.value()
                if not data:
                    continue
                src.clear()
                if src.closeRequest is True or dst.closeRequest is True:
                    continue  # aborted: buffered bytes are gone
                step = moved = True
                if allowed:
                    setattr(self, counter, getattr(self, counter) + len(data))
                    proto.dataReceived(data)
            if step:
                continue
            if self.clientTransport.closeRequest is not None or self.serverTransport.closeRequest is not None:
                self._disconnect()
                moved = True
            break
        return moved

    def _disconnect(self) -> None:
        self.connected = False
        clientReq, serverReq = self.clientTransport.closeRequest, self.serverTransport.closeRequest
        if clientReq is not None:
            clientReason: Failure = Failure(ConnectionAborted() if clientReq else ConnectionDone())
            serverReason: Failure = Failure(ConnectionLost() if clientReq else ConnectionDone())
        else:
            serverReason = Failure(ConnectionAborted() if serverReq else ConnectionDone())
            clientReason = Failure(ConnectionLost() if serverReq else ConnectionDone())
        self.reactor.links.remove(self)
        self.server.connectionLost(serverReason)
        self.client.connectionLost(clientReason)
        self.connector.connectionLost(clientReason)


@implementer(IConnector)
class MemoryConnector:
    """An ``IConnector`` whose attempts wait in :attr:`MemoryReactor.pending`."""

    def __init__(self, reactor: MemoryReactor, host: str, port: int, factory: Any, secure: bool) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.factory = factory
        self.secure = secure
        self.state = "disconnected"
        self.attempts = 0

    def connect(self) -> None:
        if self.state != "disconnected":
            raise RuntimeError("can't connect in this state")
        self.state = "connecting"
        self.attempts += 1
        self.reactor.pending.append(self)
        self.factory.startedConnecting(self)

    def stopConnecting(self) -> None:
        if self.state != "connecting":
            raise NotConnectingError("we're not trying to connect")
        self.connectionFailed(Failure(UserError()))

    def disconnect(self) -> None:
        if self.state == "connecting":
            self.stopConnecting()

    def connectionFailed(self, reason: Failure) -> None:
        if self in self.reactor.pending:
            self.reactor.pending.remove(self)
        self.state = "disconnected"
        self.factory.clientConnectionFailed(self, reason)

    def connectionLost(self, reason: Failure) -> None:
        self.state = "disconnected"
        self.factory.clientConnectionLost(self, reason)

    def getDestination(self) -> _Address:
        return _address(self.host, self.port)


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        pass  # already complete when the caller gets it


@implementer(IHostnameResolver)
class _MemoryNameResolver:
    """Resolves IP literals and the names in :attr:`MemoryReactor.hosts`, synchronously."""

    def __init__(self, reactor: MemoryReactor) -> None:
        self._reactor = reactor

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Optional[Sequence[Type[IAddress]]] = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        hosts = [hostName] if _isIPLiteral(hostName) else self._reactor.hosts.get(hostName, ["127.0.0.1"])
        for host in hosts:
            if not _isIPLiteral(host):
                raise ValueError(f"MemoryReactor.hosts[{hostName!r}] must list IP literals, got {host!r}")
        wanted = (IPv4Address, IPv6Address) if addressTypes is None else tuple(addressTypes)
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        for host in hosts:
            address = _address(host, portNumber, transportSemantics)
            if isinstance(address, wanted):
                resolutionReceiver.addressResolved(address)
        resolutionReceiver.resolutionComplete()
        return resolution


@implementer(IReactorPluggableNameResolver)  # (Twisted's own MemoryReactorClock is one only since 23.10)
class MemoryReactor(MemoryReactorClock):
    """
    A ``MemoryReactorClock`` with working client connectors and an in-memory network.

    ``connectTCP``/``connectSSL`` start an attempt that waits in
    :attr:`pending` until the test calls :meth:`accept` or :meth:`refuse`.
    ``nameResolver`` answers synchronously from IP literals and :attr:`hosts`
    (``installNameResolver`` replaces it).
    """

    def __init__(self) -> None:
        super().__init__()
        self.pending: List[MemoryConnector] = []
        self.links: List[MemoryLink] = []
        #: name -> IP literals it resolves to, in order (``[]``: no address, a DNS failure);
        #: names not listed resolve to ``127.0.0.1``, as with Twisted's ``MemoryReactor``
        self.hosts: Dict[str, List[str]] = {"localhost": ["127.0.0.1"]}
        self.nameResolver: IHostnameResolver = _MemoryNameResolver(self)

    def installNameResolver(self, resolver: IHostnameResolver) -> IHostnameResolver:
        """Use ``resolver`` for names from now on; returns the one it replaces."""
        previous, self.nameResolver = self.nameResolver, resolver
        return previous

    def connectTCP(
        self, host: str, port: int, factory: Any, timeout: Any = 30, bindAddress: Any = None
    ) -> MemoryConnector:
        """Start an attempt that waits in :attr:`pending` until :meth:`accept` or :meth:`refuse`."""
        self.tcpClients.append((host, port, factory, timeout, bindAddress))
        connector = MemoryConnector(self, host, port, factory, secure=False)
        connector.connect()
        return connector

    def connectSSL(
        self, host: str, port: int, factory: Any, contextFactory: Any, timeout: Any = 30, bindAddress: Any = None
    ) -> MemoryConnector:
        """As :meth:`connectTCP`, over an in-memory TLS transport."""
        self.sslClients.append((host, port, factory, contextFactory, timeout, bindAddress))
        connector = MemoryConnector(self, host, port, factory, secure=True)
        connector.connect()
        return connector

    def accept(self, serverFactory: Optional[WebSocketServerFactory] = None, *, greet: bool = True) -> MemoryLink:
        """
        Complete the oldest pending attempt against ``serverFactory``
        (an echo server by default) and return the link.

        With ``greet`` the opening handshake is pumped through at once.
        """
        if not self.pending:
            raise AssertionError("no connection attempt is pending")
        connector = self.pending.pop(0)
        if serverFactory is None:
            serverFactory = echoServerFactory()
        # Server timers on this clock too, never on txaio's global loop.
        serverFactory._batched_timer = ExactTimer(self)
        serverFactory.reactor = self
        connector.state = "connected"
        addr = connector.getDestination()
        client = connector.factory.buildProtocol(addr)
        assert client is not None, "the client factory refused the connection"
        server = serverFactory.buildProtocol(addr)
        assert server is not None
        link = MemoryLink(self, connector, client, server)
        self.links.append(link)
        server.makeConnection(link.serverTransport)
        client.makeConnection(link.clientTransport)
        if greet:
            link.pump()
        return link

    def refuse(self, reason: Optional[BaseException] = None) -> None:
        """Fail the oldest pending attempt (connection refused by default)."""
        if not self.pending:
            raise AssertionError("no connection attempt is pending")
        self.pending[0].connectionFailed(Failure(reason or ConnectionRefusedError()))

    def flush(self) -> None:
        """Move bytes on every link until all are quiet."""
        moved = True
        while moved:
            moved = False
            for link in list(self.links):
                moved = link.pump() or moved

    def advance(self, amount: float) -> None:
        """Move time forward by ``amount`` seconds, firing timers in order and pumping after each."""
        advanceStepwise(self, amount, self.flush)
