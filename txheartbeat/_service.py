"""
A Twisted service that keeps one heartbeat client connected while it runs.

For ``twistd``/``.tac`` applications and ``MultiService`` trees: starting the
service connects, stopping it closes for good and waits for the close to
finish, so the reactor shuts down with no connection and no timer left.
"""

from __future__ import annotations

from typing import Any, List, Optional

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._client import HeartbeatClientFactory
from ._errors import GaveUp, NotConnected
from ._handler import HeartbeatHandler

_log = Logger(namespace="txheartbeat")


class HeartbeatClientService(Service):
    """
    Connect ``handler`` to ``url`` while the service runs.

    ``startService()`` connects as :func:`txheartbeat.connect` does;
    ``stopService()`` calls ``handler.close()`` and returns a Deferred that
    fires once the connection is fully closed, so ``twistd`` (or a parent
    ``MultiService``) waits for the close handshake.  The service can be
    started again: the same handler is connected anew and its ``stats``
    carry on.  A failure to open (``GaveUp`` after ``maxRetries``) is logged,
    never raised; the service stays running, idle, until it is restarted.

    The factory is built here, unstarted, so that bad options raise
    ``ValueError`` when the application is configured, not when ``twistd``
    starts it.  The handler belongs to it from now on: messages it is given
    with ``send()`` before the service starts go out at the first open.

    :param url: ``ws://`` or ``wss://`` URL.
    :param handler: the persistent :class:`HeartbeatHandler`; one per service.
    :param reactor: reactor and clock for connections and every timer
        (default: the global reactor, imported here, not at module import).
    :param contextFactory: TLS client options for ``wss://``; by default the
        certificate is verified for the URL's host.
    :param options: the options of :class:`HeartbeatClientFactory`
        (``pingInterval``, ``pongTimeout``, ``maxRetries``, ...).
    :raises ValueError: for a malformed URL or a bad option.
    :raises TypeError: if ``handler`` is not a :class:`HeartbeatHandler`.
    """

    def __init__(
        self,
        url: str,
        handler: HeartbeatHandler,
        *,
        reactor: Any = None,
        contextFactory: Any = None,
        **options: Any,
    ) -> None:
        factory = HeartbeatClientFactory(url, handler, reactor=reactor, **options)
        self._factory = factory
        #: the persistent handler this service connects
        self.handler = handler
        self._url = url
        # Later factories run on the same reactor as the first, even if the
        # global one was meant: every connection then shares one clock.
        self._reactor = factory.reactor
        self._contextFactory = contextFactory
        self._options = options
        # Set while a restart waits for the previous connection to finish closing.
        self._waiting: Optional[Deferred[None]] = None
        self._openWaiters: List[Deferred[HeartbeatHandler]] = []

    @property
    def factory(self) -> HeartbeatClientFactory:
        """
        The factory of the current (or last) connection.

        Before the first start it is the unstarted factory built by the
        constructor; each restart replaces it with a new one.
        """
        return self._factory

    def startService(self) -> None:
        """
        Start connecting (a no-op if already running).

        If a stop is still closing the previous connection, the new one
        starts as soon as that close has finished.
        """
        if self.running:
            return
        factory = self._factory
        if factory.state not in ("idle", "closing") and not factory.finished:
            raise RuntimeError(f"the service's factory is already {factory.state}: it was started outside the service")
        super().startService()
        if factory.state == "idle":
            self._connect(factory)
        elif factory.finished:
            self._connect(self._newFactory())
        else:
            waiting = self._waiting = factory.whenClosed()
            waiting.addCallback(self._previousClosed, waiting).addErrback(self._restartFailed)

    def stopService(self) -> Deferred[None]:
        """
        Close for good and return a Deferred that fires once fully closed.

        An open connection gets a clean close handshake (aborted after
        ``closeTimeout``); a pending attempt or retry is cancelled at once.
        Messages still queued are dropped, and their number logged.
        Stopping a service that never started, or stopping it again, is safe.

        :returns: a Deferred that fires with ``None`` when no connection and
            no timer of this client are left.
        """
        super().stopService()
        factory = self._factory
        if self._waiting is not None:
            self._waiting = None
            waiters, self._openWaiters = self._openWaiters, []
            for d in waiters:
                d.errback(NotConnected("the service was stopped before the connection opened"))
            return factory.whenClosed()
        if factory.state == "idle":
            return succeed(None)
        unsent = self.handler.close()
        if unsent:
            _log.warn(
                "txheartbeat: service stopped with {count} queued message(s) unsent ({url})",
                count=len(unsent),
                url=factory.safeURL,
            )
        return factory.whenClosed()

    def whenOpen(self) -> Deferred[HeartbeatHandler]:
        """
        A Deferred that fires with the handler when a connection is open.

        At once if one is open, else at the next open, also across a restart
        (delegates to :meth:`HeartbeatClientFactory.whenOpen`).  It fails
        with :class:`NotConnected` if the service is stopped first, and with
        :class:`GaveUp` if retries run out.
        """
        if self._waiting is not None:
            d: Deferred[HeartbeatHandler] = Deferred()
            self._openWaiters.append(d)
            return d
        return self._factory.whenOpen()

    # Internals -------------------------------------------------------------

    def _newFactory(self) -> HeartbeatClientFactory:
        return HeartbeatClientFactory(self._url, self.handler, reactor=self._reactor, **self._options)

    def _connect(self, factory: HeartbeatClientFactory) -> None:
        self._factory = factory
        # What txheartbeat.connect() does, keeping hold of the factory.
        factory.connect(self._contextFactory).addErrback(self._notOpened, factory)

    def _previousClosed(self, _: None, waiting: Deferred[None]) -> None:
        if self._waiting is not waiting:
            return  # stopped (and maybe started again) meanwhile
        self._waiting = None
        self._connect(self._newFactory())
        waiters, self._openWaiters = self._openWaiters, []
        for d in waiters:
            self._factory.whenOpen().chainDeferred(d)

    def _restartFailed(self, failure: Failure) -> None:
        _log.failure("txheartbeat: service could not connect {url} again", failure, url=self._factory.safeURL)

    def _notOpened(self, failure: Failure, factory: HeartbeatClientFactory) -> None:
        # The Deferred of connect(): consumed here so that a give-up or a
        # stop before the first open is never an unhandled error.
        error = failure.value
        if isinstance(error, NotConnected):
            _log.debug("txheartbeat: service stopped before {url} opened", url=factory.safeURL)
        elif isinstance(error, GaveUp):
            _log.info(
                "txheartbeat: service gave up on {url} ({attempts} failed attempt(s)); it stays idle until restarted",
                url=factory.safeURL,
                attempts=error.attempts,
            )
        else:
            _log.failure("txheartbeat: service could not connect to {url}", failure, url=factory.safeURL)
