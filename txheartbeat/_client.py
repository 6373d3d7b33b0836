"""
The Autobahn client protocol and the reconnecting factory that drives it.

The factory's lifecycle is the table in :mod:`txheartbeat._lifecycle`: every
notification (from Twisted connectors, endpoints, the protocol, timers and
the user) becomes one event, looked up there.
"""

from __future__ import annotations

import base64
import time
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union
from urllib.parse import unquote, urlsplit, urlunsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.util import parse_url
from twisted.internet import tcp
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError, DNSLookupError, NotConnectingError
from twisted.internet.interfaces import (
    IConnector,
    IReactorPluggableNameResolver,
    IResolutionReceiver,
    ISSLTransport,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import ClientFactory, ReconnectingClientFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ._backoff import RetryPolicy, exponentialBackoff
from ._errors import ConnectionClosed, GaveUp, HandshakeError, NotConnected, OpenTimeout, ProtocolError, TLSRequired
from ._handler import HeartbeatHandler, Message, encodeMessage
from ._heartbeat import Timeline, Timers, checkByteCount, checkInterval
from ._lifecycle import ATTEMPTING, FINAL, TRANSITIONS, Event, State
from ._options import checkOptions, checkURL
from ._protocol import (
    AUTOPING_OPTIONS,
    ExactTimer,
    HandshakeLog,
    HeartbeatMixin,
    PingMessage,
    autobahnOptions,
    redactURL,
)
from ._resume import REFUSED_CODES, RESUME_HEADER, ClientResume, checkReplayBounds
from ._retry import ReconnectPolicy, RetryContext, shouldRetryByDefault, yieldWhenBehind
from ._share import SharedValues, compact
from ._shortcuts import enabled
from ._tls import ResumingClientTLS, connectTLS, defaultClientTLSOptions, resuming

_monotonic = time.monotonic  # (real time: whether a reconnect timer is late; tests move it with their clock)
_log = Logger(namespace="txheartbeat")

# Autobahn options whose job txheartbeat does itself, on the injected clock.
_OWNED_OPTIONS = {
    **AUTOPING_OPTIONS,
    "openHandshakeTimeout": "openTimeout",
    "closeHandshakeTimeout": "closeTimeout",
    "serverConnectionDropTimeout": "closeTimeout",
}
_FACTORY_ARGS = ("origin", "protocols", "useragent", "headers", "proxy")

#: What ``prepare(attempt)`` may return (or a Deferred of it): ``None`` (no
#: change), a URL, extra headers, or ``(url, headers)`` with either ``None``.
Preparation = Union[None, str, Mapping[str, str], Tuple[Optional[str], Optional[Mapping[str, str]]]]
Prepare = Callable[[int], Union[Preparation, "Deferred[Preparation]"]]


class HeartbeatClientProtocol(HeartbeatMixin, WebSocketClientProtocol):  # type: ignore[misc]
    """
    One WebSocket connection: notes inbound traffic, runs the heartbeat and
    reports to its :class:`HeartbeatClientFactory`.  A new instance is built
    for every connection; keep state on the handler instead.

    txheartbeat works through Autobahn's internal entry points (``_onOpen``,
    ``_onMessage``, ``_onClose``), so a subclass may override Autobahn's
    ``onOpen``/``onMessage``/``onClose`` without calling ``super()``.
    """

    factory: HeartbeatClientFactory
    #: whether a subclass overrides ``onMessage`` (checked once per class, not per message)
    _forwardMessages = False
    HANDSHAKE_ONLY = ("http_headers", "http_request_data", "http_response_data", "http_status_line", "websocket_key")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._forwardMessages = cls.onMessage is not HeartbeatClientProtocol.onMessage

    # Defaults on the class: set per connection only when they change.
    #: whether the opening handshake completed
    opened = False
    #: the reason Twisted gave this protocol (under TLS, truer than the connector's)
    lostReason: Optional[Failure] = None
    #: ``(wasClean, code, reason)`` as Autobahn reported the close
    closeInfo: Tuple[bool, Optional[int], Optional[str]] = (False, 1006, None)
    #: with ``resume``: what the server's answer meant, ``(resumed, lost, replay)`` (read once at open)
    resumeOutcome: Optional[Tuple[bool, Optional[List[Message]], List[Tuple[bytes, bool]]]] = None

    # Twisted entry points --------------------------------------------------

    def connectionMade(self) -> None:
        """Refuse ``wss://`` without TLS, send the opening handshake (redacted in logs)."""
        factory = self.factory
        if factory.closeTimeout != self.closeTimeout:  # (the class default: no __dict__ entry)
            self.closeTimeout = factory.closeTimeout
        self.limitBuffered(factory.maxBuffered)
        if factory.isSecure and factory.proxy is None and not ISSLTransport.providedBy(self.transport):
            # reactor.connectTCP() with a wss:// factory: never send the
            # handshake in plain text.
            self.failure = Failure(
                TLSRequired(
                    "wss:// needs TLS: use txheartbeat.connect(), or "
                    "reactor.connectSSL(host, port, factory, factory.contextFactory)"
                )
            )
            self.transport.abortConnection()
            return
        # Autobahn sends the opening handshake from inside connectionMade and
        # logs it at debug level ("sent HTTP request"; as hex with logOctets),
        # the Authorization header made from URL user info included.  Redact
        # until open, and dump no octets until then.
        self.shareOptions()  # (before anything reads an option: the factory's, not the class's, must win)
        HandshakeLog.install(self, self.logOctets)  # type: ignore[attr-defined]
        if factory._resume is not None:
            factory.headers[RESUME_HEADER] = factory._resume.offer()
        super().connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Stop every timer of this connection and report the loss to the factory."""
        self.lostReason = reason
        if self.failure is None or not self.failure.check(TLSRequired):
            WebSocketClientProtocol.connectionLost(self, reason)  # (the mixin's release comes last, below)
        else:
            # With TLSRequired, Autobahn never started on this connection: end what it would have.
            self.state = WebSocketProtocol.STATE_CLOSED
            if not self.is_closed.called:
                self.is_closed.callback(self)
        self.stopTimers()
        try:
            self.failDrainWaiters()
        finally:
            try:
                self.factory._protocolLost(self)
            finally:
                self._released()

    # Autobahn's internal entry points (user overrides of on* stay safe) -----

    def _onOpen(self) -> None:
        HandshakeLog.restore(self)
        factory = self.factory
        self.opened = True
        resume = factory._resume
        if resume is not None and self is factory._protocol:
            self.resumeOutcome = resume.opened(self.http_headers.get(RESUME_HEADER.lower()))
            self.useSession(resume.stream)
        # In a session, heartbeats are ping frames: they carry acknowledgements,
        # and an application heartbeat would be numbered as a message.
        message = factory.pingMessage if self._stream is None else None
        self.startHeartbeat(factory.pingInterval, factory.pongTimeout, message)
        if factory.isSecure:
            factory._keepTLSSession(self)
        factory._protocolOpened(self)
        super()._onOpen()
        self.compactAfterOpen()

    def _onMessage(self, payload: bytes, isBinary: bool) -> None:
        stream = self._stream
        # In a session: counted first, so that a hook that raises still received it.
        due = stream is not None and stream.delivered(len(payload))
        try:
            self.factory.handler._received(payload, isBinary)
            if self._forwardMessages:
                self.onMessage(payload, isBinary)
        finally:
            if due:
                self.acknowledge(stream)  # type: ignore[arg-type]

    def _onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.stopTimers()
        self.closeInfo = (wasClean, code, reason)
        # Gone: a late sendMessage() on it must not take a number of the session
        # (it raises Disconnected, as without resume); handler.send() goes on.
        self.useSession(None)
        super()._onClose(wasClean, code, reason)

    def failHandshake(self, reason: str) -> None:
        """Keep the server's HTTP status and ``Retry-After`` as a :class:`HandshakeError`."""
        status: Optional[int] = None
        line = getattr(self, "http_status_line", None)
        if line and reason.startswith("WebSocket connection upgrade failed"):
            try:
                status = int(line.split()[1])
            except (IndexError, ValueError):
                status = None
        self.failure = Failure(HandshakeError(reason, status, _retryAfter(getattr(self, "http_headers", None))))
        super().failHandshake(reason)

    def failProxyConnect(self, reason: str) -> None:
        """Keep the proxy's HTTP status as a :class:`HandshakeError`."""
        # Autobahn only drops the connection (ConnectionAborted); keep the
        # proxy's answer.  self.data still holds it: Autobahn trims it on success only.
        status: Optional[int] = None
        if reason.startswith("HTTP proxy connect failed"):
            try:
                status = int(self.data.split(b"\r\n", 1)[0].split()[1])
            except (IndexError, ValueError):
                status = None
        self.failure = Failure(HandshakeError(reason, status))
        super().failProxyConnect(reason)

    # HeartbeatMixin notifications --------------------------------------------

    def heartbeatSent(self) -> None:
        """Count the heartbeat in the handler's stats."""
        self.factory.handler._counts.heartbeatsSent += 1

    def heartbeatAnswered(self, roundTrip: float) -> None:
        """Count the answer, keep the round trip and call ``onHeartbeat``."""
        handler = self.factory.handler
        counts = handler._counts
        counts.heartbeatsAnswered += 1
        counts.latency = roundTrip
        counts.latencySum += roundTrip
        try:  # (handler._fire, without the lookup: once per heartbeat)
            handler.onHeartbeat(roundTrip)
        except Exception:
            handler._hookFailed("onHeartbeat")

    def peerDead(self, failure: Failure) -> None:
        """Report the silent server to the factory (the connection is aborted next)."""
        self.factory._protocolDead(self, failure)

    # Used by the handler -------------------------------------------------------

    def sendPayload(self, data: Message, limited: bool = True) -> None:
        """
        Send ``str`` as a text message, ``bytes`` as a binary one (``TypeError``
        otherwise); ``limited=False`` skips ``maxBuffered`` (the send queue,
        already bounded by ``sendQueueSize``, is flushed that way).
        """
        payload, isBinary = encodeMessage(data)
        if limited:
            self.sendMessage(payload, isBinary)
        else:
            self.sendUnlimited(payload, isBinary)
        counts = self.factory.handler._counts
        counts.messagesSent += 1
        counts.bytesSent += len(payload)


HeartbeatClientProtocol.sharedOptions = SharedValues(HeartbeatClientProtocol, WebSocketClientProtocol.CONFIG_ATTRS)
_AUTOBAHN_DEFAULT_ACCEPT = "WebSocketClientFactory.resetProtocolOptions.<locals>"


def _refusedMessage(protocol: HeartbeatClientProtocol) -> bool:
    """Whether the connection ended because one side refused a message of the other."""
    error = protocol.failure.value if protocol.failure is not None else None
    if isinstance(error, ProtocolError):
        return error.code in REFUSED_CODES
    return protocol.closeInfo[1] in REFUSED_CODES


def _retryAfter(headers: Optional[Mapping[str, str]]) -> Optional[float]:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date), else ``None``."""
    value = (headers or {}).get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    # Zero, past dates and garbage are no hint: the client backs off as usual instead of looping.
    return seconds if 0 < seconds < float("inf") else None


def _discard(waiters: Any, d: Any) -> None:
    if d in waiters:
        waiters.remove(d)


def _acceptNoCompression(offers: Any) -> None:
    """Autobahn's default ``perMessageCompressionAccept`` (a lambda per factory), shared."""
    return None


#: (initialDelay, maxDelay, factor, jitter, probeInterval, restartWindow) -> (backoff, policy): both are
#: stateless, so clients built with the same settings share them (bounded: cleared when full)
_POLICIES: Dict[Tuple[Any, ...], Tuple[RetryPolicy, ReconnectPolicy]] = {}


def _defaultPolicy(
    initialDelay: float, maxDelay: float, factor: float, jitter: float, probeInterval: Optional[float], window: float
) -> Tuple[RetryPolicy, ReconnectPolicy]:
    key = (initialDelay, maxDelay, factor, jitter, probeInterval, window)
    found = _POLICIES.get(key)
    if found is None:
        if len(_POLICIES) >= 64:
            _POLICIES.clear()
        backoff = exponentialBackoff(initialDelay=initialDelay, maxDelay=maxDelay, factor=factor, jitter=jitter)
        policy = ReconnectPolicy(
            backoff, probeInterval=probeInterval, restartWindow=window, maxDelay=maxDelay, spread=bool(jitter)
        )
        found = _POLICIES[key] = (backoff, policy)
    return found


@implementer(IResolutionReceiver)
class _Resolution:
    """Collects the addresses the reactor's name resolver finds, then fires :attr:`done`."""

    def __init__(self) -> None:
        self.addresses: List[str] = []
        self.done: Deferred[List[str]] = Deferred()

    def resolutionBegan(self, resolution: Any) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        self.addresses.append(address.host)

    def resolutionComplete(self) -> None:
        self.done.callback(_interleave(self.addresses))


def _interleave(addresses: List[str]) -> List[str]:
    """Alternate address families, the first family first (as ``HostnameEndpoint`` and RFC 8305 do)."""
    v6 = [a for a in addresses if isIPv6Address(a)]
    v4 = [a for a in addresses if not isIPv6Address(a)]
    first, second = (v6, v4) if addresses and isIPv6Address(addresses[0]) else (v4, v6)
    out: List[str] = []
    for i in range(max(len(first), len(second))):
        out.extend(first[i : i + 1] + second[i : i + 1])
    return out


class _AttemptFactory(ClientFactory):
    """What an endpoint is given: builds the protocol only for the attempt it was made for."""

    def __init__(self, factory: HeartbeatClientFactory, attemptId: int) -> None:
        self.factory = factory
        self.attemptId = attemptId

    def buildProtocol(self, addr: Any) -> Optional[HeartbeatClientProtocol]:  # type: ignore[override]
        if self.attemptId != self.factory._attemptId:
            return None  # a late connection of a cancelled attempt
        return self.factory.buildProtocol(addr)


def releaseFailedClient(transport: Any) -> None:
    """
    Break the reference cycle a failed TCP connect leaves behind.

    Twisted's ``tcp.BaseClient`` points ``doRead`` and ``doWrite`` at its own
    bound ``doConnect`` while connecting and keeps them when the connect
    fails: six objects per failed attempt that only a full pass of Python's
    cyclic GC frees.  Thousands of clients probing a server that is down
    fail thousands of connects a second, and the full passes they set off
    (hundreds of milliseconds at 10,000 connections) delay every timer.  The
    transport is closed by then; the reactor may still dispatch an event of
    the same poll to it, so both become a no-op that holds nothing (as
    Twisted's ``abortConnection`` does).  (The "failedConnects" shortcut:
    checked at import against the ``doConnect`` it was verified with.)
    """
    attributes = getattr(transport, "__dict__", None)
    if attributes is None or _DO_CONNECT is None:
        return
    for name in ("doRead", "doWrite"):
        if getattr(attributes.get(name), "__func__", None) is _DO_CONNECT:
            attributes[name] = _closed


def _closed(*args: object, **kwargs: object) -> None:
    """What a failed connect's transport does on a late event: nothing."""


# (the "failedConnects" shortcut: without it, a failed connect is left as Twisted leaves it)
_DO_CONNECT = getattr(tcp.BaseClient, "doConnect", None) if enabled("failedConnects") else None


class HeartbeatClientFactory(WebSocketClientFactory, ReconnectingClientFactory):
    """
    A reconnecting WebSocket client factory with heartbeat and dead-peer
    detection, reporting to a persistent :class:`HeartbeatHandler`.

    Start it with :meth:`connect` (or :func:`txheartbeat.connect`): names are
    resolved with the reactor's resolver (IPv6 and IPv4, tried in turn),
    ``wss://`` certificates are verified.  It also works the Twisted way, with
    ``reactor.connectTCP(host, port, factory)``,
    ``reactor.connectSSL(host, port, factory, factory.contextFactory)`` or
    Autobahn's ``connectWS(factory, contextFactory=factory.contextFactory)``
    (Autobahn's default context does not verify certificates); then that
    connector is reused for every retry.

    :param url: ``ws://`` or ``wss://`` URL; user info becomes HTTP basic auth.
    :param handler: the persistent :class:`HeartbeatHandler`.
    :param pingInterval: idle seconds before a heartbeat; ``None`` turns the
        heartbeat (and dead-peer detection) off.
    :param pongTimeout: seconds to wait for any traffic after a heartbeat;
        ``None`` keeps the heartbeat but never declares the peer dead.
    :param pingMessage: ``None`` sends RFC 6455 ping frames; a ``str``
        (text), ``bytes`` (binary) or zero-argument callable returning one of
        those sends an application-level heartbeat instead.
    :param initialDelay: seconds before the first reconnect.
    :param maxDelay: upper bound of any reconnect delay, jitter included (an
        attempt may then yield up to 1 s to a process that is behind).
    :param factor: growth of the delay per failed attempt.
    :param jitter: fraction of random spread, in ``[0, 1)``.
    :param maxRetries: retries after a failed attempt: it gives up once
        ``maxRetries + 1`` attempts in a row have failed (``2``: at the third
        failure; ``0``: at the first; ``None``: never).  A connection that
        opens resets the count.
    :param minUptime: seconds a connection must stay open before the
        backoff delay starts again from ``initialDelay``.
    :param openTimeout: seconds allowed for ``prepare``, name resolution,
        TCP connect and the opening handshake together.
    :param closeTimeout: seconds allowed for the close handshake before aborting.
    :param sendQueueSize: messages kept while not open (``0``: none).
    :param maxBuffered: bytes an open connection may hold in its write buffer
        before ``send()`` raises :class:`SendQueueFull` (``None``: no limit);
        see ``handler.bufferedAmount`` and ``handler.whenDrained()``.
    :param retryPolicy: ``attempt -> seconds``, replacing the whole default
        schedule (:class:`txheartbeat._retry.ReconnectPolicy`: steady probes
        while nothing listens, backoff for costly failures, server hints).
    :param shouldRetry: ``failure -> bool``: whether to try again after this
        failure or loss (default :func:`txheartbeat._retry.shouldRetryByDefault`:
        not after HTTP 401/403/404, close code 1008 or ``TLSRequired``);
        ``False`` gives up at once, ``onGiveUp(reason)`` says why.
    :param probeInterval: while the server refuses connections (nothing
        listening), the first retry comes within ``[0, probeInterval]`` and
        the next every ``probeInterval`` ± 5 %, never backing off; the first
        retry after losing a stable connection is spread over the same
        interval.  ``None``: back off as for other failures.
    :param restartWindow: seconds over which to spread the reconnect after a
        close 1012 (service restart) that announces no window.
    :param prepare: ``attempt -> preparation`` (or a Deferred of it), called
        before every attempt (numbered from 1 since :meth:`connect`), never
        after :meth:`close`: ``None``, a URL, a mapping of extra headers, or
        ``(url, headers)``.  Its failure is a failed attempt (``onError``,
        then a retry with backoff).  Needs :meth:`connect`.
    :param endpoint: a Twisted client endpoint (``IStreamClientEndpoint``) or
        an endpoint string (``"unix:path=/run/ws.sock"``) to connect through
        instead of the URL's host and port; the URL still gives the Host
        header, path and scheme.  For ``wss://`` it must provide TLS
        (e.g. ``"tls:host=example.com:port=443"``).  Needs :meth:`connect`.
    :param resume: ask the server for a resumable session: nothing sent is
        lost or delivered twice across reconnects within the server's
        ``resumeWindow``; ``onSessionLost(unacked)`` says when a session
        could not be recovered.  A plain server is used as without it.  See
        ``docs/reliability.md``.
    :param replayBufferSize: messages kept until the server acknowledges
        them; ``send()`` raises :class:`SendQueueFull` past it.
    :param replayBufferBytes: the same bound in payload bytes.
    :param reactor: the reactor (and clock) for connections and every timer.
    :param options: passed to Autobahn: ``origin``, ``protocols``,
        ``useragent``, ``headers``, ``proxy`` to the factory, anything else to
        ``setProtocolOptions`` (e.g. ``maxMessagePayloadSize``).
    """

    protocol = HeartbeatClientProtocol  # type: ignore[assignment]
    noisy = False

    # Lifecycle bookkeeping.  Immutable defaults live on the class, so that an
    # idle client (10,000 per process in the benchmark) keeps only what it set.
    _userContext = False  # contextFactory given by the user (never replaced)
    _protocol: Optional[HeartbeatClientProtocol] = None
    _dialing = False  # True while this factory itself starts a connector
    _ownDialing = False  # True after connect(): attempts are dialed here, not by a user's connector
    _current: Optional[IConnector] = None  # the connector of the attempt under way
    _dialTransport: Any = None  # its transport while connecting (see releaseFailedClient)
    _pendingD: Optional[Deferred[Any]] = None  # prepare or endpoint Deferred under way
    _addresses: List[str] = []  # resolved addresses still to try (always replaced, never mutated)
    _attemptId = 0  # results of older attempts (late Deferreds) are ignored
    _attemptNo = 0  # prepare(attempt) numbering, from 1 since connect()
    _failures = 0  # failed attempts in a row (maxRetries)
    _costly = 0  # failures that cost the server, in a row since a stable open (backoff step)
    _refusals = 0  # refused attempts in a row
    _lostOpen = False  # the failure being decided ended an open connection
    _yielded = 0.0  # seconds since the reconnect attempt was due, as of its last timer (their lateness included)
    _dueReal = 0.0  # when the reconnect timer is due, in time.monotonic()
    _openTimer: Optional[Any] = None  # (an entry on the clock's timeline of openTimeout)
    _tlsWrapper: Any = None  # (what wraps this client in TLS for every attempt: connectTLS)
    _openedAt = 0.0
    _parked: Optional[List[Any]] = None  # waiters held while a loss's hooks run
    _resume: Optional[ClientResume] = None  # the session, with resume=True
    # Deferreds waiting for the next open / the final close (lists once one waits)
    _openWaiters: Sequence[Deferred[HeartbeatHandler]] = ()
    _closeWaiters: Sequence[Deferred[None]] = ()

    def __init__(
        self,
        url: str,
        handler: HeartbeatHandler,
        *,
        pingInterval: Optional[float] = 15.0,
        pongTimeout: Optional[float] = 10.0,
        pingMessage: PingMessage = None,
        initialDelay: float = 1.0,
        maxDelay: float = 30.0,
        factor: float = 2.0,
        jitter: float = 0.1,
        maxRetries: Optional[int] = None,
        minUptime: float = 5.0,
        openTimeout: float = 10.0,
        closeTimeout: float = 2.0,
        sendQueueSize: int = 1000,
        maxBuffered: Optional[int] = None,
        retryPolicy: Optional[RetryPolicy] = None,
        shouldRetry: Optional[Callable[[Failure], bool]] = None,
        probeInterval: Optional[float] = 1.7,
        restartWindow: float = 5.0,
        prepare: Optional[Prepare] = None,
        endpoint: Union[None, str, IStreamClientEndpoint] = None,
        resume: bool = False,
        replayBufferSize: int = 1000,
        replayBufferBytes: int = 1 << 20,
        reactor: Any = None,
        **options: Any,
    ) -> None:
        checkURL(url)
        if not isinstance(handler, HeartbeatHandler):
            raise TypeError(f"handler must be a HeartbeatHandler instance, got {type(handler).__name__}")
        checkOptions(
            type(self).__name__,
            options,
            # (a subclass's own options count: its __init__ or setProtocolOptions may take more)
            (type(self).__init__, type(self).setProtocolOptions)
            + (HeartbeatClientFactory.__init__, WebSocketClientFactory.setProtocolOptions),
            _FACTORY_ARGS,
            tuple(_OWNED_OPTIONS),
        )
        checkInterval("pingInterval", pingInterval)
        checkInterval("pongTimeout", pongTimeout)
        checkInterval("openTimeout", openTimeout, allowNone=False)
        checkInterval("closeTimeout", closeTimeout, allowNone=False)
        if isinstance(minUptime, bool) or not isinstance(minUptime, (int, float)) or minUptime < 0:
            raise ValueError(f"minUptime must be a number of seconds >= 0, got {minUptime!r}")
        if pingMessage is not None and not isinstance(pingMessage, (str, bytes)) and not callable(pingMessage):
            raise ValueError(f"pingMessage must be None, str, bytes or a callable, got {pingMessage!r}")
        if maxRetries is not None and (
            isinstance(maxRetries, bool) or not isinstance(maxRetries, int) or maxRetries < 0
        ):
            raise ValueError(f"maxRetries must be None or an integer >= 0, got {maxRetries!r}")
        if isinstance(sendQueueSize, bool) or not isinstance(sendQueueSize, int) or sendQueueSize < 0:
            raise ValueError(f"sendQueueSize must be an integer >= 0, got {sendQueueSize!r}")
        checkByteCount("maxBuffered", maxBuffered)
        checkInterval("probeInterval", probeInterval)
        checkInterval("restartWindow", restartWindow, allowNone=False)
        if shouldRetry is not None and not callable(shouldRetry):
            raise ValueError("shouldRetry must be a callable failure -> bool")
        self._policy: Optional[ReconnectPolicy] = None
        if retryPolicy is None:
            retryPolicy, self._policy = _defaultPolicy(
                initialDelay, maxDelay, factor, jitter, probeInterval, restartWindow
            )
        elif not callable(retryPolicy):
            raise ValueError("retryPolicy must be a callable attempt -> seconds")
        if prepare is not None and not callable(prepare):
            raise ValueError("prepare must be a callable attempt -> URL and/or headers")
        if endpoint is not None and not isinstance(endpoint, str) and not IStreamClientEndpoint.providedBy(endpoint):
            raise ValueError(f"endpoint must be an IStreamClientEndpoint or an endpoint string, got {endpoint!r}")
        checkReplayBounds(replayBufferSize, replayBufferBytes)
        if resume:
            self._resume = ClientResume(replayBufferSize, replayBufferBytes)

        url, headers = self._splitCredentials(url, options.pop("headers", None))
        self._checkURL(url)
        factoryArgs, protocolOptions = autobahnOptions(options, _FACTORY_ARGS, _OWNED_OPTIONS)
        WebSocketClientFactory.__init__(self, url, reactor=reactor, headers=headers, **factoryArgs)
        if reactor is None:
            reactor = self.reactor
        self._batched_timer = ExactTimer.on(reactor)
        protocolOptions(self, openHandshakeTimeout=0, closeHandshakeTimeout=0, serverConnectionDropTimeout=0)
        if getattr(self.perMessageCompressionAccept, "__qualname__", "").startswith(_AUTOBAHN_DEFAULT_ACCEPT):
            self.perMessageCompressionAccept = _acceptNoCompression
        #: the endpoint attempts go through instead of the URL's host, or ``None``
        self.endpoint: Optional[IStreamClientEndpoint] = None
        if isinstance(endpoint, str):
            from twisted.internet.endpoints import clientFromString

            self.endpoint = clientFromString(reactor, endpoint)
        else:
            self.endpoint = endpoint

        self.handler = handler
        self.sendQueueSize = sendQueueSize
        self.maxBuffered = maxBuffered
        handler._attach(self, sendQueueSize)
        self.safeURL = redactURL(url)
        self.pingInterval = pingInterval
        self.pongTimeout = pongTimeout
        self.pingMessage = pingMessage
        self.initialDelay = float(initialDelay)
        self.maxDelay = float(maxDelay)  # type: ignore[assignment]
        self.factor = factor
        self.jitter = jitter
        self.maxRetries = maxRetries  # type: ignore[assignment]
        self.minUptime = minUptime
        self.openTimeout = openTimeout
        self.closeTimeout = closeTimeout
        self.retryPolicy = retryPolicy
        self.shouldRetry = shouldRetry or shouldRetryByDefault
        self.prepare = prepare
        self.clock: Any = reactor
        self.contextFactory: Any = None
        self._baseURL, self._baseHeaders = url, dict(self.headers)
        self._setTLS()

        #: a :class:`txheartbeat._lifecycle.State` (compares equal to its string value)
        self.state: State = State.IDLE
        # Values most clients share (Autobahn's options, ours, the URL of a fleet's
        # server) live on the class; this client keeps only what differs.
        _SHARED.capture(self)
        compact(self, _SHARED.shared(self))

    def _addWaiter(self, name: str, d: Deferred[Any]) -> None:
        waiters = self.__dict__.get(name)
        if not isinstance(waiters, list):  # (an empty tuple until the first waiter)
            waiters = self.__dict__[name] = []
        waiters.append(d)

    @staticmethod
    def _splitCredentials(url: str, headers: Optional[Mapping[str, str]]) -> Tuple[str, Dict[str, str]]:
        parts = urlsplit(url)
        headers = dict(headers or {})
        if "@" not in parts.netloc:
            return url, headers
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
        headers.setdefault("Authorization", f"Basic {token}")
        return urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment)), headers

    @staticmethod
    def _checkURL(url: str) -> None:
        try:
            parse_url(url)
        except Exception as e:  # (a ValueError since Autobahn 22.5, a bare Exception before)
            # Autobahn's message quotes the URL, password included: say only what is wrong, on the redacted URL.
            # (and a fragment or query may hold a token: never quote any of it)
            why = str(e).split("'", 1)[0].strip().rstrip(":")
            raise ValueError(f"bad WebSocket URL {redactURL(str(url))!r}: {why}") from None

    def _setTLS(self) -> None:
        if self.isSecure and not self._userContext:
            # One verified context per host name, shared by the clients of that
            # host; this client's sessions stay its own (resumed on reconnect).
            self.contextFactory = resuming(defaultClientTLSOptions(self.host), self._tlsTarget)

    def _tlsTarget(self) -> Tuple[str, int]:
        """Where the TLS session to resume must have been made: the URL's host and port (so the name verified)."""
        return (self.host, self.port)

    def _keepTLSSession(self, protocol: HeartbeatClientProtocol) -> None:
        """``protocol`` opened: its TLS session is the one to resume (:class:`ResumingClientTLS`)."""
        if isinstance(self.contextFactory, ResumingClientTLS) and ISSLTransport.providedBy(protocol.transport):
            self.contextFactory.keep(protocol.transport)

    # Public ------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Whether the client closed for good or gave up."""
        return self.state in FINAL

    def connect(self, contextFactory: Any = None) -> Deferred[HeartbeatHandler]:
        """
        Start connecting, or start again after a final close or a give-up
        (the handler, its hooks and its stats carry on).

        The Deferred fires with the handler at the first open.  It fails with
        :class:`GaveUp` when retries run out, with :class:`NotConnected` when
        :meth:`close` comes first; cancelling it (directly or through
        ``addTimeout``) is a final :meth:`close`, and it fails with
        ``CancelledError``.

        :raises RuntimeError: if the client is already running.
        """
        if TRANSITIONS[(self.state, Event.START)][1] == "_refuse":
            self._refuse()
        self._checkHandlerFree()
        if contextFactory is not None:
            self.contextFactory, self._userContext = resuming(contextFactory, self._tlsTarget), True
        self._ownDialing = True

        def cancel(d: Deferred[HeartbeatHandler]) -> None:
            _discard(self._openWaiters, d)
            self._event(Event.CANCEL, 1000, None)
            self._dropQueue()

        d: Deferred[HeartbeatHandler] = Deferred(cancel)
        self._addWaiter("_openWaiters", d)
        self._event(Event.START)
        return d

    def whenOpen(self) -> Deferred[HeartbeatHandler]:
        """
        A Deferred that fires with the handler when a connection is open: at
        once if one is, else at the next open.  It fails with
        :class:`NotConnected` or :class:`GaveUp` if the client stops first;
        cancelling it only removes this waiter.
        """
        if self.state == State.OPEN:
            return succeed(self.handler)
        d: Deferred[HeartbeatHandler] = Deferred(lambda d: _discard(self._openWaiters, d))
        if self.finished:
            d.errback(NotConnected(f"the client is {self.state}"))
        else:
            self._addWaiter("_openWaiters", d)
        return d

    def whenClosed(self) -> Deferred[None]:
        """A Deferred that fires once the client is closed for good or gave up (no timer left)."""
        d: Deferred[None] = Deferred(lambda d: _discard(self._closeWaiters, d))
        if self.finished:
            d.callback(None)
        else:
            self._addWaiter("_closeWaiters", d)
        return d

    def close(self, code: int = 1000, reason: Optional[str] = None) -> None:
        """Close for good (see :meth:`HeartbeatHandler.close`, which also returns the queue)."""
        self._checkClose(code, reason)
        self._event(Event.CLOSE, code, reason)
        self._dropQueue()

    @staticmethod
    def _checkClose(code: int, reason: Optional[str]) -> None:
        if code != 1000 and not (isinstance(code, int) and 3000 <= code <= 4999):
            raise ValueError(f"close code must be 1000 or in 3000-4999 (RFC 6455 application codes), got {code!r}")
        if reason is not None and len(reason.encode("utf-8")) > 123:
            raise ValueError("close reason must encode to at most 123 bytes of UTF-8")

    def _dropQueue(self) -> None:
        # handler.close() took the queue already (and returns it); any other
        # final close (stopTrying, cancel) must not leave it for a later run.
        if self.state in FINAL or self.state == State.CLOSING:
            dropped = self.handler._takeQueue()
            if dropped:
                _log.warn(
                    "txheartbeat: {n} queued message(s) dropped at close ({url})", n=len(dropped), url=self.safeURL
                )

    # ReconnectingClientFactory ------------------------------------------------

    def startedConnecting(self, connector: IConnector) -> None:
        """A connector began an attempt (Twisted's hook): the ``attempt`` event."""
        adopting = self.state in (State.IDLE, State.CLOSED, State.GAVEUP)
        if adopting and not self._dialing and (self.prepare is not None or self.endpoint is not None):
            raise ValueError("prepare= and endpoint= need factory.connect() or txheartbeat.connect(), not a connector")
        if self.finished:
            self._checkHandlerFree()
        self._event(Event.ATTEMPT, connector)

    def buildProtocol(self, addr: Any) -> Optional[HeartbeatClientProtocol]:  # type: ignore[override]
        """The attempt's TCP connection is up: build its protocol (``None`` for a connection no longer wanted)."""
        self._dialTransport = None
        if self._protocol is not None or self.state != State.CONNECTING:
            return None
        protocol: HeartbeatClientProtocol = WebSocketClientFactory.buildProtocol(self, addr)  # type: ignore[assignment]
        self._event(Event.TCP_UP, protocol)
        return protocol

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        """TCP connect failed: try the attempt's next address, or report the failed attempt."""
        transport, self._dialTransport = self._dialTransport, None
        if transport is not None:
            releaseFailedClient(transport)
        if connector is not self._current:
            return  # an attempt this factory stopped or refused
        self._current = None
        if self._addresses:
            address, self._addresses = self._addresses[0], self._addresses[1:]
            self._connectTo(address)  # the next address of the same attempt
        else:
            self._event(Event.CONNECT_FAILED, reason)

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        """Nothing to do: the protocol reports the loss (it knows the true reason, under TLS too)."""

    def retry(self, connector: Optional[IConnector] = None) -> None:
        """
        Reconnecting is scheduled by the factory itself; here only as part of
        Twisted's interface.  A no-op once closed or given up (as Twisted's
        after ``stopTrying()``).

        :raises RuntimeError: in any other state.
        """
        if self.finished:
            return
        raise RuntimeError(
            f"retry() is scheduled by txheartbeat itself (the client is {self.state}); "
            "use close() to stop, connect() to start again"
        )

    def resetDelay(self) -> None:
        """Start the backoff again from the first delay; unlike Twisted's, never undoes :meth:`close`."""
        self.retries = 0
        self._costly = 0
        self.delay = self.initialDelay

    def stopTrying(self) -> None:
        """Same as :meth:`close` with code 1000: final."""
        self.close()

    # The state machine ----------------------------------------------------------

    def _event(self, event: Event, *args: Any) -> Any:
        state = self.state
        try:
            nextState, action = TRANSITIONS[(state, event)]
        except KeyError:
            _log.error("txheartbeat: bug: event {event} in state {state} ignored", event=event.value, state=state.value)
            return None
        self._setState(nextState)
        return getattr(self, action)(*args)

    def _setState(self, state: State) -> None:
        # Each timer belongs to one state and dies when it is left.
        self.state = state
        if state not in ATTEMPTING and self._openTimer is not None:
            self._openTimer.cancel()
            self._openTimer = None
        if state != State.WAITING and self._callID is not None:
            self._callID.cancel()
            self._callID = None

    # Actions (named in the table) ------------------------------------------------

    def _ignore(self, *args: Any) -> None:
        pass

    def _refuse(self, *args: Any) -> None:
        raise RuntimeError(f"connect() called on a factory that is {self.state}; close() it first")

    def _refuseConnector(self, connector: IConnector) -> None:
        _log.error("txheartbeat: a second connect on one factory was refused (one factory runs one connection)")
        connector.stopConnecting()

    def _prepare(self) -> None:
        self._startAttempt()
        self._attemptNo += 1
        if self.prepare is None:
            self._event(Event.PREPARED, None)
            return
        attemptId = self._attemptId
        d = self._pendingD = maybeDeferred(self.prepare, self._attemptNo)
        d.addCallbacks(
            lambda result: self._still(attemptId, Event.PREPARED, result),
            lambda failure: self._still(attemptId, Event.CONNECT_FAILED, failure),
        )

    def _dial(self, preparation: Preparation) -> None:
        self._pendingD = None
        try:
            self._apply(preparation)
        except Exception:
            self._event(Event.CONNECT_FAILED, Failure())
            return
        if not self._ownDialing:
            assert self.connector is not None
            self._connectWith(self.connector)
        elif self.endpoint is not None:
            attemptId = self._attemptId
            d = self._pendingD = maybeDeferred(self.endpoint.connect, _AttemptFactory(self, attemptId))
            d.addCallbacks(
                lambda _: None, lambda failure: self._still(attemptId, Event.CONNECT_FAILED, failure)
            ).addErrback(lambda f: None)
        else:
            host, port = (self.proxy["host"], self.proxy["port"]) if self.proxy is not None else (self.host, self.port)
            self._resolve(host, port)

    def _attemptStarted(self, connector: IConnector) -> None:
        if self._dialing:
            self.connector = self._current = connector
            self._dialTransport = getattr(connector, "transport", None)
        else:
            self._refuseConnector(connector)

    def _adoptConnector(self, connector: IConnector) -> None:
        """Attempts are driven by a user's connector (``reactor.connectTCP(…, factory)``)."""
        self._ownDialing = False
        self._startAttempt()
        self.connector = self._current = connector

    def _connectorWhileWaiting(self, connector: IConnector) -> None:
        if self._ownDialing or connector is not self.connector:
            self._refuseConnector(connector)
            return
        self._setState(State.CONNECTING)  # the user's connector.connect(): try now, not at the timer
        self._adoptConnector(connector)

    def _restartWithConnector(self, connector: IConnector) -> None:
        self.handler._attach(self, self.sendQueueSize)
        self._resetCounts()
        self._adoptConnector(connector)

    def _restart(self) -> None:
        self.handler._attach(self, self.sendQueueSize)
        self._resetCounts()
        self._prepare()

    def _opened(self, protocol: HeartbeatClientProtocol) -> None:
        self._failures = 0
        self._openedAt = self.reactor.seconds()
        handler = self.handler
        handler.protocol = protocol
        handler._counts.opens += 1
        waiters, self._openWaiters = self._openWaiters, ()
        _log.info("txheartbeat: open to {url}", url=self.safeURL)
        outcome = protocol.resumeOutcome
        if outcome is not None:
            self._sessionOpened(protocol, *outcome)
            if self.state != State.OPEN:  # closed from onSessionLost: no onOpen; the close fails the waiters
                self._openWaiters = [*waiters, *self._openWaiters]
                return
        handler._fire("onOpen")
        if handler.protocol is protocol:
            handler._flush(protocol)
        for d in waiters:
            if not d.called:  # a hook may have cancelled it
                d.callback(handler)

    def _sessionOpened(
        self,
        protocol: HeartbeatClientProtocol,
        resumed: bool,
        lost: Optional[List[Message]],
        replay: List[Tuple[bytes, bool]],
    ) -> None:
        handler = self.handler
        del protocol.resumeOutcome
        handler.resumed = resumed
        counts = handler._counts
        if resumed:
            counts.resumes += 1
            resent = protocol._stream.resent if protocol._stream is not None else 0
            counts.replayed += resent
            # The replay's oldest ``resent`` went out before; the rest were sent while
            # disconnected and leave now for the first time: count them once, here.
            first = replay[resent:]
            counts.messagesSent += len(first)
            counts.bytesSent += sum(len(payload) for payload, _ in first)
            protocol.replay(replay)  # before anything a hook sends
            _log.info("txheartbeat: session resumed ({n} unacknowledged message(s) sent)", n=len(replay))
        if lost is not None:
            counts.sessionsLost += 1
            _log.warn(
                "txheartbeat: session lost (the server did not resume it); {n} message(s) never acknowledged",
                n=len(lost),
            )
            handler._fire("onSessionLost", lost)

    def _endSession(self) -> List[Message]:
        """The client stops for good: the session ends; return what the server never acknowledged."""
        return self._resume.end() if self._resume is not None else []

    def _sessionEnded(self) -> None:
        """The session ends without a clean close: tell the handler what it leaves unacknowledged."""
        self._reportLost(self._endSession())

    def _reportLost(self, lost: List[Message]) -> None:
        if lost:
            self.handler._counts.sessionsLost += 1
            _log.warn("txheartbeat: session ended; {n} message(s) never acknowledged", n=len(lost))
            self.handler._fire("onSessionLost", lost)

    def _connectionLost(self, protocol: HeartbeatClientProtocol) -> None:
        self._lostOpen = True
        if self.reactor.seconds() - self._openedAt >= self.minUptime:
            self.resetDelay()
        self._inHooks(self._reportClose, protocol)
        if self.state == State.DISCONNECTED and self._resume is not None and _refusedMessage(protocol):
            # Replaying the message one side refused would only fail again, at every resume.
            self._inHooks(self._sessionEnded)
        if self.state == State.DISCONNECTED:
            self._decide(protocol.failure or Failure(ConnectionClosed(*protocol.closeInfo[1:], protocol.closeInfo[0])))

    def _handshakeLost(self, protocol: HeartbeatClientProtocol) -> None:
        reason = protocol.lostReason or Failure(ConnectionDone())
        if protocol.failure is not None:
            failure = protocol.failure
        elif reason.check(ConnectionDone):
            failure = Failure(HandshakeError("the server closed the connection during the opening handshake"))
        else:
            failure = reason
        self._attemptFailed(failure)

    def _attemptFailed(self, failure: Failure) -> None:
        self._lostOpen = False
        self._pendingD = None
        self._addresses = []
        self._failures += 1
        self._inHooks(self.handler._fire, "onError", failure)
        if self.state != State.DISCONNECTED:
            return  # a hook closed (or restarted) the client
        self._decide(failure)

    def _decide(self, failure: Failure) -> None:
        try:
            retry = bool(self.shouldRetry(failure))
        except Exception:
            _log.failure("txheartbeat: shouldRetry raised; retrying")
            retry = True
        if not retry:
            _log.warn("txheartbeat: not retrying {url}: {why}", url=self.safeURL, why=type(failure.value).__name__)
            self._event(Event.GIVE_UP, failure.value, failure)
        elif self.maxRetries is not None and self._failures > self.maxRetries:
            _log.warn(
                "txheartbeat: giving up on {url} after {n} failed attempt(s) in a row",
                url=self.safeURL,
                n=self._failures,
            )
            self._event(Event.GIVE_UP, GaveUp(self._failures, self.safeURL, failure), failure)
        else:
            self.retries += 1
            if self._policy is None or self._policy.backsOff(failure):
                self._costly += 1
            # Refusals in a row; a spread first retry after a stable loss counts as the first, so
            # that the phase it drew carries on into the probes.
            if failure.check(ConnectionRefusedError):
                self._refusals += 1
            else:
                self._refusals = 1 if self._lostOpen and self._costly <= 1 else 0
            self._event(Event.RETRY, self._retryDelay(failure), failure)

    def _retryDelay(self, failure: Failure) -> float:
        attempt = self.retries
        try:
            if self._policy is not None:
                sinceOpen = self.reactor.seconds() - self._openedAt if self.handler._counts.opens else None
                # (only ever called from _decide, in DISCONNECTED)
                context = RetryContext(attempt, failure, sinceOpen, self._lostOpen, self._refusals)
                delay = self._policy(context, self._costly)
            else:
                delay = float(self.retryPolicy(attempt))
            if not 0 <= delay < float("inf"):
                raise ValueError(f"retryPolicy({attempt}) returned {delay!r}, not a finite number of seconds >= 0")
        except Exception:
            # A broken policy must not strand the client: log it and wait maxDelay.
            _log.failure("txheartbeat: retryPolicy failed; waiting maxDelay instead")
            delay = self.maxDelay if 0 <= self.maxDelay < float("inf") else 30.0
        return delay

    def _scheduleRetry(self, delay: float, reason: Failure) -> None:
        self.delay = delay
        self._yielded = 0.0
        self.handler._counts.reconnects += 1
        _log.info(
            "txheartbeat: reconnecting to {url} in {delay:.3f} s (attempt {attempt})",
            url=self.safeURL,
            delay=delay,
            attempt=self.retries,
        )
        # On the clock's shared timers (a heap compared in C): thousands of
        # clients waiting at once do not slow every delayed call of the reactor.
        self._armRetry(delay)
        self.handler._fireReason("onReconnect", reason, self.retries, delay)

    def _armRetry(self, delay: float) -> None:
        self._dueReal = _monotonic() + delay
        self._callID = Timers.on(self.clock).callLater(delay, HeartbeatClientFactory._timerFired, self)  # type: ignore[assignment]

    def _timerFired(self) -> None:
        entry, self._callID = self._callID, None  # (the entry firing: a cancelled one never does)
        # Late by the clock and by real time (a task.Clock stepped past it is not behind;
        # nor is a process whose wall clock jumped).
        late = min(self.clock.seconds() - entry.getTime(), _monotonic() - self._dueReal)  # type: ignore[union-attr]
        # (YIELD_MAX bounds the time since the attempt was due: each timer's lateness counts too.)
        self._yielded += max(0.0, late)
        wait = yieldWhenBehind(late, self._yielded)
        if wait:
            # The process is behind: verdicts and reads already due go before this attempt.
            self._yielded += wait
            self._armRetry(wait)
            return
        self._event(Event.TIMER)

    def _openTimerFired(self) -> None:
        self._openTimer = None
        self._event(Event.OPEN_TIMEOUT)

    def _openTimedOut(self) -> None:
        phase = {
            State.PREPARING: "prepare",
            State.CONNECTING: "TCP connect",
            State.HANDSHAKING: "opening handshake",
        }[self.state]
        failure = Failure(OpenTimeout(self.openTimeout, phase))
        if self._protocol is not None:
            self._protocol.abort(failure)  # the loss follows: _handshakeLost
        else:
            self._cancelAttempt()
            self._event(Event.CONNECT_FAILED, failure)

    def _abortHandshake(self, code: int, reason: Optional[str]) -> None:
        if self._protocol is not None:
            self._protocol.abort()

    def _closeOpen(self, code: int, reason: Optional[str]) -> None:
        if self._protocol is not None:
            self._protocol.closeGracefully(code, reason)

    def _deadPeer(self, failure: Failure) -> None:
        self.handler._counts.deadPeers += 1
        _log.info("txheartbeat: {why} ({url})", why=failure.getErrorMessage(), url=self.safeURL)

    def _closedLost(self, protocol: HeartbeatClientProtocol) -> None:
        waiters = self._takeWaiters()
        # Ended before the hooks run: one that connects again starts a new session.
        # A clean close handshake delivered everything sent before it.
        lost = self._endSession()
        if protocol.opened:
            self._reportClose(protocol)
        if not (protocol.opened and protocol.closeInfo[0]):
            self._reportLost(lost)
        self._fireWaiters(waiters, None)

    def _cancelAttemptAndFinish(self, *args: Any) -> None:
        self._cancelAttempt()
        self._finish()

    def _finish(self, *args: Any) -> None:
        waiters = self._takeWaiters()
        self._sessionEnded()  # (handler.close() took it already; a cancel or stopTrying did not)
        if self._parked is not None:
            self._parked.append(waiters)  # closed from a loss's hook: fire after the rest of its hooks
        else:
            self._fireWaiters(waiters, None)

    def _inHooks(self, call: Callable[..., None], *args: Any) -> None:
        """Run the hooks of a loss; waiters released by a close() inside them fire after the last hook."""
        outer, self._parked = self._parked, []
        try:
            call(*args)
        finally:
            parked, self._parked = self._parked, outer
            for waiters in parked:
                self._fireWaiters(waiters, None)

    def _giveUp(self, error: Exception, reason: Optional[Failure] = None) -> None:
        waiters = self._takeWaiters()
        self._sessionEnded()
        self.handler._fireReason("onGiveUp", reason or Failure(error))
        self._fireWaiters(waiters, error)

    # Helpers -------------------------------------------------------------------------

    def _still(self, attemptId: int, event: Event, value: Any) -> None:
        """Deliver a Deferred's result, unless its attempt was cancelled or superseded."""
        if attemptId == self._attemptId:
            self._event(event, value)

    def _startAttempt(self) -> None:
        self._attemptId += 1
        self.continueTrying = 1
        self.handler._counts.attempts += 1
        # On the timeline every factory with this openTimeout shares: thousands of
        # attempts at once (a storm, every peer dead at once) hold one delayed
        # call between them, not one each on the reactor's heap.
        line = Timeline.on(self.clock, self.openTimeout)
        self._openTimer = line.callLater(HeartbeatClientFactory._openTimerFired, self)
        _log.debug("txheartbeat: connecting to {url}", url=self.safeURL)

    def _checkHandlerFree(self) -> None:
        """A restart takes the handler back; refuse if another factory of it still runs."""
        owner = self.handler.factory
        if owner is not None and owner is not self and not owner.finished:
            raise ValueError(
                f"this factory's handler now belongs to another client that is {owner.state}; close() that one first"
            )

    def _resetCounts(self) -> None:
        self.resetDelay()
        self._failures = 0
        self._attemptNo = 0

    def _apply(self, preparation: Preparation) -> None:
        """Set this attempt's URL and headers from what ``prepare`` returned."""
        if preparation is None:
            return
        if isinstance(preparation, str):
            url, extra = preparation, None
        elif isinstance(preparation, Mapping):
            url, extra = None, preparation
        elif isinstance(preparation, tuple) and len(preparation) == 2:
            url, extra = preparation
        else:
            raise TypeError(f"prepare() must return None, a URL, headers or (url, headers), got {preparation!r}")
        url, headers = self._splitCredentials(url or self._baseURL, self._baseHeaders)
        self._checkURL(url)
        headers.update(extra or {})
        secure = self.isSecure
        self.setSessionParameters(url, self.origin, self.protocols, self.useragent, headers, self.proxy)
        self.safeURL = redactURL(url)
        if self.isSecure != secure or self.isSecure:
            self._setTLS()

    def _resolve(self, host: str, port: int) -> None:
        resolver = IReactorPluggableNameResolver(self.reactor, None)
        if isIPAddress(host) or isIPv6Address(host) or resolver is None:
            self._connectTo(host)
            return
        attemptId = self._attemptId
        resolution = _Resolution()
        try:
            resolver.nameResolver.resolveHostName(resolution, host, port)
        except Exception:
            self._event(Event.CONNECT_FAILED, Failure())
            return

        def resolved(addresses: List[str]) -> None:
            if attemptId != self._attemptId:
                return
            if not addresses:
                self._event(Event.CONNECT_FAILED, Failure(DNSLookupError(f"no address for {host}")))
                return
            self._addresses = addresses[1:]
            self._connectTo(addresses[0])

        resolution.done.addCallback(resolved)

    def _connectTo(self, address: str) -> None:
        port = self.proxy["port"] if self.proxy is not None else self.port
        self._dialing = True
        try:
            # No connector timeout: openTimeout covers the whole attempt.
            if self.isSecure and self.proxy is None:
                self._tlsWrapper = connectTLS(self.reactor, address, port, self, self.contextFactory, self._tlsWrapper)
            else:
                self.reactor.connectTCP(address, port, self, timeout=None)
        finally:
            self._dialing = False

    def _connectWith(self, connector: IConnector) -> None:
        self._dialing = True
        try:
            self._current = connector
            connector.connect()
        finally:
            self._dialing = False

    def _cancelAttempt(self) -> None:
        """Stop the attempt under way; whatever it reports later is ignored."""
        self._attemptId += 1
        self._addresses = []
        pending, self._pendingD = self._pendingD, None
        if pending is not None:
            pending.addErrback(lambda f: None)
            pending.cancel()
        connector, self._current = self._current, None
        if connector is not None:
            try:
                connector.stopConnecting()
            except (NotConnectingError, RuntimeError):
                pass

    def _reportClose(self, protocol: HeartbeatClientProtocol) -> None:
        handler = self.handler
        if handler.protocol is protocol:
            handler.protocol = None
        if protocol.failure is not None:
            handler._fire("onError", protocol.failure)
        wasClean, code, reason = protocol.closeInfo
        _log.info("txheartbeat: closed (clean={clean}, code={code})", clean=wasClean, code=code)
        handler._fire("onClose", wasClean, code, reason)

    def _takeWaiters(self) -> Tuple[Sequence[Deferred[HeartbeatHandler]], Sequence[Deferred[None]]]:
        """Take the waiters of the run that is ending, so a hook that starts a new run gets fresh lists."""
        self.continueTrying = 0
        waiters = (self._openWaiters, self._closeWaiters)
        self._openWaiters, self._closeWaiters = (), ()
        return waiters

    @staticmethod
    def _fireWaiters(
        waiters: Tuple[Sequence[Deferred[HeartbeatHandler]], Sequence[Deferred[None]]], error: Optional[Exception]
    ) -> None:
        opens, closes = waiters
        for d in opens:
            if not d.called:  # a hook may have cancelled it
                d.errback(error or NotConnected("close() was called before the connection opened"))
        for c in closes:
            if not c.called:
                c.callback(None)

    # Called by the protocol --------------------------------------------------------

    def _protocolOpened(self, protocol: HeartbeatClientProtocol) -> None:
        if protocol is self._protocol:
            self._event(Event.OPENED, protocol)

    def _protocolDead(self, protocol: HeartbeatClientProtocol, failure: Failure) -> None:
        if protocol is self._protocol:
            self._event(Event.DEAD_PEER, failure)

    def _protocolLost(self, protocol: HeartbeatClientProtocol) -> None:
        if protocol is not self._protocol:
            return
        self._protocol = None
        self._current = None
        self._event(Event.LOST, protocol)

    def _tcpUp(self, protocol: HeartbeatClientProtocol) -> None:
        self._protocol = protocol
        self._addresses = []


def connect(
    url: str,
    handler: HeartbeatHandler,
    *,
    reactor: Any = None,
    contextFactory: Any = None,
    **options: Any,
) -> Deferred[HeartbeatHandler]:
    """
    Connect ``handler`` to ``url`` and keep it connected.

    Builds a :class:`HeartbeatClientFactory` with ``options`` and starts it.
    ``wss://`` certificates are verified for the URL's host unless a
    ``contextFactory`` is given.  A handler that was closed for good or gave
    up may be connected again.

    :returns: a Deferred that fires with ``handler`` at the first open, or
        fails with :class:`GaveUp` (retries exhausted) or
        :class:`NotConnected` (``handler.close()`` came first); cancelling
        it closes the client for good (``CancelledError``).
    """
    # (checked here too, so that a misspelt contextFactory is suggested connect()'s own)
    checkOptions(
        "HeartbeatClientFactory",  # (what connect() builds)
        options,
        (connect, HeartbeatClientFactory.__init__, WebSocketClientFactory.setProtocolOptions),
        _FACTORY_ARGS,
        tuple(_OWNED_OPTIONS),
    )
    factory = HeartbeatClientFactory(url, handler, reactor=reactor, **options)
    return factory.connect(contextFactory)


#: The client factory's attributes that most clients hold at the same value.
_SHARED = SharedValues(
    HeartbeatClientFactory,
    (
        *WebSocketClientProtocol.CONFIG_ATTRS,
        *("pingInterval", "pongTimeout", "pingMessage", "initialDelay", "maxDelay", "factor", "jitter"),
        *("maxRetries", "minUptime", "openTimeout", "closeTimeout", "sendQueueSize", "maxBuffered", "prepare"),
        *("endpoint", "shouldRetry", "retryPolicy", "_policy", "contextFactory", "clock", "reactor"),
        *("_batched_timer", "origin", "protocols", "useragent", "proxy", "isSecure", "host", "port", "path"),
        *("resource", "params", "url", "safeURL", "_baseURL", "_baseHeaders"),
    ),
)
