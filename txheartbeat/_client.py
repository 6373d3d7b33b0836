"""
The Autobahn client protocol and the reconnecting factory that drives it.
"""

from __future__ import annotations

import base64
from typing import Any, List, Optional
from urllib.parse import unquote, urlsplit, urlunsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.util import parse_url
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, UserError
from twisted.internet.interfaces import IConnector, IDelayedCall, ISSLTransport
from twisted.internet.protocol import ReconnectingClientFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._backoff import RetryPolicy, exponentialBackoff
from ._errors import GaveUp, HandshakeError, NotConnected, OpenTimeout, TLSRequired
from ._handler import HeartbeatHandler, Message, encodeMessage
from ._heartbeat import checkInterval
from ._protocol import AUTOPING_OPTIONS, ExactTimer, HeartbeatMixin, PingMessage, autobahnOptions, redactURL

_log = Logger(namespace="txheartbeat")

# Autobahn options whose job txheartbeat does itself, on the injected clock.
_OWNED_OPTIONS = {
    **AUTOPING_OPTIONS,
    "openHandshakeTimeout": "openTimeout",
    "closeHandshakeTimeout": "closeTimeout",
    "serverConnectionDropTimeout": "closeTimeout",
}
_FACTORY_ARGS = ("origin", "protocols", "useragent", "headers", "proxy")


class HeartbeatClientProtocol(HeartbeatMixin, WebSocketClientProtocol):  # type: ignore[misc]
    """
    One WebSocket connection: notes inbound traffic, runs the heartbeat and
    reports to its :class:`HeartbeatClientFactory`.  A new instance is built
    for every connection; keep state on the handler instead.
    """

    factory: HeartbeatClientFactory

    def __init__(self) -> None:
        super().__init__()
        self.opened = False
        #: the reason Twisted gave this protocol (under TLS, truer than the connector's)
        self.lostReason: Optional[Failure] = None

    # Twisted entry points --------------------------------------------------

    def connectionMade(self) -> None:
        factory = self.factory
        self.clock = factory.reactor
        self.closeTimeout = factory.closeTimeout
        if factory.isSecure and not ISSLTransport.providedBy(self.transport):
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
        super().connectionMade()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        # Under TLS the connector only sees the TCP-level reason; keep the real one.
        self.lostReason = reason
        if self.failure is not None and self.failure.check(TLSRequired):
            return  # Autobahn never started on this connection
        super().connectionLost(reason)

    # Autobahn hooks ----------------------------------------------------------

    def onOpen(self) -> None:
        factory = self.factory
        self.opened = True
        self.startHeartbeat(factory.pingInterval, factory.pongTimeout, factory.pingMessage)
        factory._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.handler._received(payload, isBinary)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.stopTimers()
        self.factory._closed(self, wasClean, code, reason)

    def failHandshake(self, reason: str) -> None:
        status: Optional[int] = None
        line = getattr(self, "http_status_line", None)
        if line and reason.startswith("WebSocket connection upgrade failed"):
            try:
                status = int(line.split()[1])
            except (IndexError, ValueError):
                status = None
        self.failure = Failure(HandshakeError(reason, status))
        super().failHandshake(reason)

    # HeartbeatMixin notifications --------------------------------------------

    def heartbeatSent(self) -> None:
        self.factory.handler.stats.heartbeatsSent += 1

    def heartbeatAnswered(self, roundTrip: float) -> None:
        handler = self.factory.handler
        handler.stats.heartbeatsAnswered += 1
        handler.stats.latency = roundTrip
        handler._fire("onHeartbeat", roundTrip)

    def peerDead(self, failure: Failure) -> None:
        self.factory.handler.stats.deadPeers += 1
        _log.info("txheartbeat: {why} ({url})", why=failure.getErrorMessage(), url=self.factory.safeURL)

    # Used by the handler -------------------------------------------------------

    def sendPayload(self, data: Message) -> None:
        """Send ``str`` as a text message, ``bytes`` as a binary one (``TypeError`` otherwise)."""
        self.sendMessage(*encodeMessage(data))
        self.factory.handler.stats.messagesSent += 1


class HeartbeatClientFactory(WebSocketClientFactory, ReconnectingClientFactory):
    """
    A reconnecting WebSocket client factory with heartbeat and dead-peer
    detection, reporting to a persistent :class:`HeartbeatHandler`.

    Use it with :func:`txheartbeat.connect`, with Autobahn's
    ``connectWS(factory)`` or with ``reactor.connectTCP(host, port, factory)``.
    For ``wss://`` with ``connectWS`` pass ``contextFactory=factory.contextFactory``
    (Autobahn's default does not verify certificates); ``connectTCP`` and
    :func:`connect` verify by themselves.

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
    :param maxDelay: upper bound of any reconnect delay, jitter included.
    :param factor: growth of the delay per failed attempt.
    :param jitter: fraction of random spread, in ``[0, 1)``.
    :param maxRetries: failed attempts in a row before giving up
        (``0``: never retry; ``None``: never give up).
    :param minUptime: seconds a connection must stay open before the
        backoff starts again from ``initialDelay``.
    :param openTimeout: seconds allowed for TCP connect plus opening handshake.
    :param closeTimeout: seconds allowed for the close handshake before aborting.
    :param sendQueueSize: messages kept while not open (``0``: none).
    :param retryPolicy: ``attempt -> seconds``, replacing the exponential
        backoff built from the four options above.
    :param reactor: the reactor (and clock) for connections and every timer.
    :param options: passed to Autobahn: ``origin``, ``protocols``,
        ``useragent``, ``headers``, ``proxy`` to the factory, anything else to
        ``setProtocolOptions`` (e.g. ``maxMessagePayloadSize``).
    """

    protocol = HeartbeatClientProtocol  # type: ignore[assignment]
    noisy = False

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
        retryPolicy: Optional[RetryPolicy] = None,
        reactor: Any = None,
        **options: Any,
    ) -> None:
        if not isinstance(handler, HeartbeatHandler):
            raise TypeError(f"handler must be a HeartbeatHandler instance, got {type(handler).__name__}")
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
        if retryPolicy is None:
            retryPolicy = exponentialBackoff(initialDelay=initialDelay, maxDelay=maxDelay, factor=factor, jitter=jitter)
        elif not callable(retryPolicy):
            raise ValueError("retryPolicy must be a callable attempt -> seconds")

        url, headers = self._splitCredentials(url, options.pop("headers", None))
        try:
            parse_url(url)
        except ValueError as e:
            raise ValueError(f"bad WebSocket URL {redactURL(url)!r}: {e}") from None
        factoryArgs, protocolOptions = autobahnOptions(options, _FACTORY_ARGS, _OWNED_OPTIONS)
        WebSocketClientFactory.__init__(self, url, reactor=reactor, headers=headers, **factoryArgs)
        if reactor is None:
            reactor = self.reactor
        self._batched_timer = ExactTimer(reactor)
        protocolOptions(self, openHandshakeTimeout=0, closeHandshakeTimeout=0, serverConnectionDropTimeout=0)

        self.handler = handler
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
        self.clock: Any = reactor
        self.contextFactory: Any = None
        if self.isSecure:
            from twisted.internet.ssl import optionsForClientTLS

            self.contextFactory = optionsForClientTLS(self.host)

        #: one of idle, connecting, open, disconnected, waiting, closing, closed, gaveup
        self.state = "idle"
        self._protocol: Optional[HeartbeatClientProtocol] = None
        self._openTimeoutCall: Optional[IDelayedCall] = None
        self._openTimedOut: Optional[Failure] = None
        self._openedAt = 0.0
        self._openWaiters: List[Deferred[HeartbeatHandler]] = []
        self._closeWaiters: List[Deferred[None]] = []

    @staticmethod
    def _splitCredentials(url: str, headers: Optional[dict]) -> tuple:
        parts = urlsplit(url)
        headers = dict(headers or {})
        if "@" not in parts.netloc:
            return url, headers
        userinfo, _, hostport = parts.netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
        headers.setdefault("Authorization", f"Basic {token}")
        return urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment)), headers

    # Public ------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """Whether the client closed for good or gave up."""
        return self.state in ("closed", "gaveup")

    def connect(self, contextFactory: Any = None) -> Deferred[HeartbeatHandler]:
        """
        Start connecting; the Deferred fires with the handler at the first open.

        It fails with :class:`GaveUp` when retries run out and with
        :class:`NotConnected` when :meth:`close` comes first.
        """
        if self.state != "idle":
            raise RuntimeError(f"connect() called on a factory that is {self.state}")
        if contextFactory is not None:
            self.contextFactory = contextFactory
        waiter = self.whenOpen()
        # No connector timeout: openTimeout covers TCP connect and handshake.
        connectWS(self, contextFactory=self.contextFactory, timeout=None)
        return waiter

    def whenOpen(self) -> Deferred[HeartbeatHandler]:
        """A Deferred that fires with the handler at the next open."""
        d: Deferred[HeartbeatHandler] = Deferred()
        if self.finished:
            d.errback(NotConnected(f"the client is {self.state}"))
        else:
            self._openWaiters.append(d)
        return d

    def whenClosed(self) -> Deferred[None]:
        """A Deferred that fires once the client is closed for good or gave up."""
        d: Deferred[None] = Deferred()
        if self.finished:
            d.callback(None)
        else:
            self._closeWaiters.append(d)
        return d

    def close(self, code: int = 1000, reason: Optional[str] = None) -> None:
        """Close for good (see :meth:`HeartbeatHandler.close`, which also returns the queue)."""
        if code != 1000 and not (isinstance(code, int) and 3000 <= code <= 4999):
            raise ValueError(f"close code must be 1000 or in 3000-4999 (RFC 6455 application codes), got {code!r}")
        if reason is not None and len(reason.encode("utf-8")) > 123:
            raise ValueError("close reason must encode to at most 123 bytes of UTF-8")
        if self.state in ("closed", "gaveup", "closing"):
            return
        self.continueTrying = 0
        if self._callID is not None:
            self._callID.cancel()
            self._callID = None
        protocol = self._protocol
        if protocol is not None:
            self.state = "closing"
            self._cancelOpenTimeout()
            if protocol.isOpen:
                protocol.closeGracefully(code, reason)
            elif protocol.state in (WebSocketProtocol.STATE_CONNECTING, WebSocketProtocol.STATE_PROXY_CONNECTING):
                protocol.abort()
            # else a close is under way, bounded by closeTimeout; losing the
            # connection finishes the close.
        elif self.state == "connecting" and self.connector is not None:
            self.state = "closing"
            self._cancelOpenTimeout()
            self.connector.stopConnecting()
        else:
            self._finish("closed")

    # ReconnectingClientFactory -------------------------------------------------

    def startedConnecting(self, connector: IConnector) -> None:
        if self.finished or self.state == "closing":
            connector.stopConnecting()
            return
        if self.state in ("connecting", "open", "disconnected", "waiting") and connector is not self.connector:
            _log.error("txheartbeat: a second connect on one factory was refused (one factory runs one connection)")
            connector.stopConnecting()
            return
        self.connector = connector
        self.state = "connecting"
        self.handler.stats.attempts += 1
        self._openTimedOut = None
        self._cancelOpenTimeout()
        self._openTimeoutCall = self.clock.callLater(self.openTimeout, self._openTimeout)
        _log.debug("txheartbeat: connecting to {url}", url=self.safeURL)

    def buildProtocol(self, addr: Any) -> Optional[HeartbeatClientProtocol]:  # type: ignore[override]
        if self._protocol is not None or self.state != "connecting":
            return None
        protocol: HeartbeatClientProtocol = WebSocketClientFactory.buildProtocol(self, addr)  # type: ignore[assignment]
        self._protocol = protocol
        return protocol

    def clientConnectionFailed(self, connector: IConnector, reason: Failure) -> None:
        if connector is not self.connector:
            return
        self._cancelOpenTimeout()
        if reason.check(UserError) and self._openTimedOut is not None:
            reason = self._openTimedOut
        if self.state == "closing":
            self._finish("closed")
            return
        self.handler._fire("onError", reason)
        self.retry(connector)

    def clientConnectionLost(self, connector: IConnector, reason: Failure) -> None:
        if connector is not self.connector:
            return
        protocol, self._protocol = self._protocol, None
        self._cancelOpenTimeout()
        if protocol is not None and not protocol.opened:
            if self.state != "closing":
                lost = protocol.lostReason or reason
                failure = protocol.failure or self._openTimedOut or self._handshakeFailure(lost)
                self.handler._fire("onError", failure)
                if failure.check(TLSRequired):
                    self._giveUp(failure.value)  # type: ignore[arg-type]
                    return
        if self.state == "closing":
            self._finish("closed")
            return
        self.retry(connector)

    def retry(self, connector: Optional[IConnector] = None) -> None:
        if not self.continueTrying or self.finished:
            return
        connector = connector or self.connector
        if connector is None:
            raise ValueError("no connector to retry")
        self.retries += 1
        if self.maxRetries is not None and self.retries > self.maxRetries:
            attempts = self.retries - 1
            _log.warn(
                "txheartbeat: giving up on {url} after {n} failed reconnect attempt(s)", url=self.safeURL, n=attempts
            )
            self._giveUp(GaveUp(attempts))
            return
        delay = float(self.retryPolicy(self.retries))
        self.delay = delay
        self.state = "waiting"
        self.handler.stats.reconnects += 1
        _log.info(
            "txheartbeat: reconnecting to {url} in {delay:.3f} s (attempt {attempt})",
            url=self.safeURL,
            delay=delay,
            attempt=self.retries,
        )
        self._callID = self.clock.callLater(delay, self._reconnect, connector)
        self.handler._fire("onReconnect", self.retries, delay)

    def resetDelay(self) -> None:
        """Start the backoff again from the first delay; unlike Twisted's, never undoes :meth:`close`."""
        self.retries = 0
        self.delay = self.initialDelay

    def stopTrying(self) -> None:
        """Same as :meth:`close` with code 1000: final."""
        self.close()

    # Called by the protocol --------------------------------------------------------

    def _opened(self, protocol: HeartbeatClientProtocol) -> None:
        self._cancelOpenTimeout()
        if self.state == "closing":
            protocol.closeGracefully(1000, None)
            return
        self.state = "open"
        self._openedAt = self.reactor.seconds()
        handler = self.handler
        handler.protocol = protocol
        handler.stats.opens += 1
        _log.info("txheartbeat: open to {url}", url=self.safeURL)
        handler._fire("onOpen")
        handler._flush(protocol)
        waiters, self._openWaiters = self._openWaiters, []
        for d in waiters:
            d.callback(handler)

    def _closed(
        self, protocol: HeartbeatClientProtocol, wasClean: bool, code: Optional[int], reason: Optional[str]
    ) -> None:
        handler = self.handler
        if handler.protocol is protocol:
            handler.protocol = None
        if not protocol.opened:
            return
        if self.reactor.seconds() - self._openedAt >= self.minUptime:
            self.resetDelay()
        if self.state == "open":
            self.state = "disconnected"  # until clientConnectionLost schedules a retry
        if protocol.failure is not None:
            handler._fire("onError", protocol.failure)
        _log.info("txheartbeat: closed (clean={clean}, code={code})", clean=wasClean, code=code)
        handler._fire("onClose", wasClean, code, reason)

    # Internals ------------------------------------------------------------------------

    def _reconnect(self, connector: IConnector) -> None:
        self._callID = None
        connector.connect()

    def _openTimeout(self) -> None:
        self._openTimeoutCall = None
        protocol = self._protocol
        phase = "opening handshake" if protocol is not None else "TCP connect"
        self._openTimedOut = Failure(OpenTimeout(self.openTimeout, phase))
        if protocol is not None:
            protocol.abort(self._openTimedOut)
        elif self.connector is not None:
            self.connector.stopConnecting()

    def _cancelOpenTimeout(self) -> None:
        if self._openTimeoutCall is not None:
            self._openTimeoutCall.cancel()
            self._openTimeoutCall = None

    @staticmethod
    def _handshakeFailure(reason: Failure) -> Failure:
        if reason.check(ConnectionDone):
            return Failure(HandshakeError("the server closed the connection during the opening handshake"))
        return reason

    def _giveUp(self, error: Exception) -> None:
        self.state = "gaveup"  # before the hook: send() in onGiveUp must raise
        self.handler._fire("onGiveUp")
        self._finish("gaveup", error)

    def _finish(self, state: str, error: Optional[Exception] = None) -> None:
        self.state = state
        self.continueTrying = 0
        self._cancelOpenTimeout()
        if self._callID is not None:
            self._callID.cancel()
            self._callID = None
        waiters, self._openWaiters = self._openWaiters, []
        for d in waiters:
            d.errback(error or NotConnected("close() was called before the connection opened"))
        closers, self._closeWaiters = self._closeWaiters, []
        for c in closers:
            c.callback(None)


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
    ``contextFactory`` is given.

    :returns: a Deferred that fires with ``handler`` at the first open, or
        fails with :class:`GaveUp` (retries exhausted) or
        :class:`NotConnected` (``handler.close()`` came first).
    """
    factory = HeartbeatClientFactory(url, handler, reactor=reactor, **options)
    return factory.connect(contextFactory)
