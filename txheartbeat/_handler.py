"""
The persistent handler: hooks, the bounded send queue and statistics.

One :class:`HeartbeatHandler` outlives every connection its factory makes.
"""

from __future__ import annotations

import inspect
from collections import deque
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Deque, Dict, List, Optional, Tuple, Union

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._errors import NotConnected, SendQueueFull

if TYPE_CHECKING:  # pragma: no cover
    from ._client import HeartbeatClientFactory, HeartbeatClientProtocol

Message = Union[str, bytes]

_log = Logger(namespace="txheartbeat")
#: (handler class, hook) -> whether the hook takes the ``reason`` argument
_TAKES_REASON: Dict[Tuple[type, str], bool] = {}
#: Factory states in which send() raises instead of queueing (nothing would ever send or hand back the message).
_NOT_SENDING = frozenset({"closing", "closed", "gaveup"})


def encodeMessage(data: Message) -> Tuple[bytes, bool]:
    """Return ``(payload, isBinary)``: ``str`` is a UTF-8 text message, ``bytes`` a binary one."""
    if isinstance(data, str):
        return data.encode("utf-8"), False
    if isinstance(data, bytes):
        return data, True
    raise TypeError(f"send() takes str (text) or bytes (binary), not {type(data).__name__}")


@dataclass(frozen=True)
class HeartbeatStats:
    """
    A snapshot of a handler's counters, kept across every connection
    (``handler.stats`` makes a new one each time it is read).
    """

    #: connection attempts started (TCP connect begun)
    attempts: int = 0
    #: connections that completed the opening handshake
    opens: int = 0
    #: reconnects scheduled after a loss or a failed attempt
    reconnects: int = 0
    #: heartbeats sent (ping frames or application messages)
    heartbeatsSent: int = 0
    #: heartbeats answered in time
    heartbeatsAnswered: int = 0
    #: connections dropped because the peer went silent
    deadPeers: int = 0
    #: messages handed to an open connection, each counted once: flushed ones
    #: and (with ``resume``) ones sent while disconnected, counted when they go
    #: out at the resume; a message sent again after a drop is not counted
    #: again (see :attr:`replayed`)
    messagesSent: int = 0
    #: messages delivered to ``onMessage`` (heartbeat answers included)
    messagesReceived: int = 0
    #: seconds between the last answered heartbeat and its answer, or ``None``
    latency: Optional[float] = None
    #: with ``resume``: opens that carried on the session
    resumes: int = 0
    #: with ``resume``: messages sent a second time after a resume (lost with a
    #: connection); messages sent between connections go out for the first
    #: time at the resume and are not counted
    replayed: int = 0
    #: with ``resume``: sessions that could not be recovered (``onSessionLost``)
    sessionsLost: int = 0
    #: payload bytes of the messages sent / received (as counted by the two above)
    bytesSent: int = 0
    bytesReceived: int = 0
    #: mean round trip of the answered heartbeats, or ``None``
    meanLatency: Optional[float] = None
    #: seconds the current connection has been open, or ``None`` while not open
    uptime: Optional[float] = None
    #: messages waiting for the next open (the send queue)
    queued: int = 0


class _Counts:
    """The handler's live counters (``HeartbeatStats`` is their snapshot)."""

    __slots__ = (
        "attempts",
        "opens",
        "reconnects",
        "heartbeatsSent",
        "heartbeatsAnswered",
        "deadPeers",
        "messagesSent",
        "messagesReceived",
        "latency",
        "resumes",
        "replayed",
        "sessionsLost",
        "bytesSent",
        "bytesReceived",
        "latencySum",
    )

    def __init__(self) -> None:
        self.attempts = self.opens = self.reconnects = 0
        self.heartbeatsSent = self.heartbeatsAnswered = self.deadPeers = 0
        self.messagesSent = self.messagesReceived = 0
        self.latency: Optional[float] = None
        self.resumes = self.replayed = self.sessionsLost = 0
        self.bytesSent = self.bytesReceived = 0
        self.latencySum = 0.0


class HeartbeatHandler:
    """
    The object a user subclasses: its hooks survive every reconnect.

    Hooks are no-ops here; override the ones you need.  They are called in
    the order ``onOpen`` → ``onMessage``… → ``onClose`` → ``onReconnect`` for
    each connection that opens; a failed attempt calls ``onError`` and then
    ``onReconnect``.  An exception raised by a hook is logged and otherwise
    ignored: it never stops the heartbeat or the reconnect loop.

    A handler belongs to one factory at a time; once that factory is closed
    for good or gave up, the handler may be connected again (its stats carry
    on).  ``send()`` and ``close()`` work in every state; see their
    docstrings.
    """

    # Every attribute has a class default or is made on first use, so that a
    # subclass whose __init__ does not call super().__init__() works all the same.

    #: the current native protocol instance, or ``None`` between connections
    protocol: Optional[HeartbeatClientProtocol] = None
    #: with ``resume``: whether the last open carried on the session (nothing
    #: was lost; the server kept its state of this client)
    resumed = False
    #: the factory this handler belongs to, or ``None`` before the first connect
    factory: Optional[HeartbeatClientFactory] = None
    # Created on first use: an empty deque costs ~600 bytes, times 10,000 clients.
    _queue: Optional[Deque[Message]] = None
    _queueSize = 1000

    def __init__(self) -> None:
        pass  # (nothing to set up; subclasses may call it or not)

    @cached_property
    def _counts(self) -> _Counts:
        # Made at first use, then a plain instance attribute (no cost on the per-message path).
        return _Counts()

    # Hooks -----------------------------------------------------------------

    def onOpen(self) -> None:
        """The connection is open; queued messages are sent right after this returns."""

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """A whole message arrived (text messages arrive as UTF-8 bytes)."""

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        """A connection that had opened is gone (1006 when it was not closed cleanly)."""

    def onError(self, failure: Failure) -> None:
        """
        Something went wrong: an attempt failed (refused, DNS, HTTP status,
        timeout) or the peer went silent (:class:`HeartbeatTimeout`).
        """

    def onReconnect(self, attempt: int, delay: float, reason: Optional[Failure] = None) -> None:
        """
        Reconnect attempt number ``attempt`` will start in ``delay`` seconds;
        ``reason`` is why the last attempt failed or the connection ended (a
        :class:`txheartbeat.ConnectionClosed` for a close).  Overrides that
        take only ``(attempt, delay)`` keep working.
        """

    def onGiveUp(self, reason: Optional[Failure] = None) -> None:
        """
        Nothing more will be tried: ``maxRetries + 1`` attempts failed in a
        row (the first and every retry), or ``shouldRetry`` said no.  ``reason`` is the last failure (overrides
        without the argument keep working).
        """

    def onHeartbeat(self, roundTrip: float) -> None:
        """A heartbeat was answered ``roundTrip`` seconds after it was sent."""

    def onSessionLost(self, unacked: List[Message]) -> None:
        """
        With ``resume``: the session could not be recovered (the server did not
        know it any more: its window expired, it restarted, or it does not
        offer resume), or the client stopped for good without a clean close.
        ``unacked`` are the messages sent in that session that the server never
        acknowledged, oldest first: some may have arrived, none is sent
        again unless you send it.  At a reconnect, numbering starts again and
        ``onOpen`` follows as for a new session (:attr:`resumed` is ``False``).
        """

    # Methods ---------------------------------------------------------------

    @property
    def stats(self) -> HeartbeatStats:
        """A snapshot of the counters (see :class:`HeartbeatStats`); read it again for fresh figures."""
        c = self._counts
        factory, protocol = self.factory, self.protocol
        uptime = None
        if factory is not None and protocol is not None and protocol.isOpen:
            uptime = factory.reactor.seconds() - factory._openedAt
        return HeartbeatStats(
            attempts=c.attempts,
            opens=c.opens,
            reconnects=c.reconnects,
            heartbeatsSent=c.heartbeatsSent,
            heartbeatsAnswered=c.heartbeatsAnswered,
            deadPeers=c.deadPeers,
            messagesSent=c.messagesSent,
            messagesReceived=c.messagesReceived,
            latency=c.latency,
            resumes=c.resumes,
            replayed=c.replayed,
            sessionsLost=c.sessionsLost,
            bytesSent=c.bytesSent,
            bytesReceived=c.bytesReceived,
            meanLatency=c.latencySum / c.heartbeatsAnswered if c.heartbeatsAnswered else None,
            uptime=uptime,
            queued=len(self._queue or ()),
        )

    @property
    def isOpen(self) -> bool:
        """Whether a connection is open and ``send()`` goes straight out."""
        protocol = self.protocol
        return protocol is not None and protocol.isOpen

    def send(self, data: Message) -> None:
        """
        Send a text (``str``) or binary (``bytes``) message.

        While open it goes out at once.  Otherwise it joins a FIFO queue
        flushed right after the next ``onOpen`` returns (with ``resume``, once
        a session exists, it joins the session's replay buffer instead and
        goes out when the session resumes); a full queue or replay buffer
        raises :class:`SendQueueFull`, and with ``sendQueueSize=0``, or once
        :meth:`close` was called (while the close handshake runs, in
        ``onClose`` and after), or after a give-up, :class:`NotConnected`
        is raised instead.

        :raises TypeError: for anything but ``str`` or ``bytes``.
        """
        protocol = self.protocol
        if protocol is not None and protocol.isOpen:
            protocol.sendPayload(data)  # type-checks too
            return
        payload, isBinary = encodeMessage(data)  # type-check before queueing
        factory = self.factory
        if factory is not None and factory.state in _NOT_SENDING:
            raise NotConnected(f"the client is {factory.state} (close() was called or it gave up); not sent")
        session = factory._resume.stream if factory is not None and factory._resume is not None else None
        if session is not None:
            session.number(payload, isBinary)  # sent when the session resumes
            return
        if self._queueSize == 0:
            raise NotConnected("not connected and sendQueueSize=0; the message was not sent")
        queue = self._queue
        if queue is None:
            queue = self._queue = deque()
        if len(queue) >= self._queueSize:
            raise SendQueueFull(f"{len(queue)} messages already wait for the connection to open")
        queue.append(data)

    @property
    def bufferedAmount(self) -> int:
        """
        Bytes given to the open connection by :meth:`send` and not yet handed
        to the kernel (``0`` while not open; messages waiting for a connection
        are in :attr:`queued`).  Like the browser's ``WebSocket.bufferedAmount``.
        """
        protocol = self.protocol
        return protocol.bufferedAmount if protocol is not None else 0

    def whenDrained(self, lowWater: int = 0) -> Deferred[None]:
        """
        A Deferred that fires once :attr:`bufferedAmount` is at most
        ``lowWater`` bytes: at once while not open or already drained.  It
        fails with :class:`NotConnected` if the connection is lost first.
        Use it with ``maxBuffered`` to send large data without growing
        memory: ``await handler.whenDrained(); handler.send(chunk)``.
        """
        protocol = self.protocol
        if protocol is None:
            return succeed(None)
        return protocol.whenDrained(lowWater)

    @property
    def queued(self) -> List[Message]:
        """A copy of the messages waiting for the next open, oldest first."""
        return list(self._queue or ())

    @property
    def unacked(self) -> List[Message]:
        """With ``resume``: a copy of the session's messages the server has not acknowledged yet, oldest first."""
        factory = self.factory
        stream = factory._resume.stream if factory is not None and factory._resume is not None else None
        return stream.unacked() if stream is not None else []

    @property
    def sessionAddress(self) -> Optional[str]:
        """
        With ``resume``: the address of this client's session on the server
        (its ``ServerSession.address``, the hex of the token's SHA-256, not
        the token), where a backend reaches it with ``sendTo``; ``None``
        before the first open or without a session.
        """
        factory = self.factory
        token = factory._resume.token if factory is not None and factory._resume is not None else None
        if token is None:
            return None
        from ._resume import tokenKey

        return tokenKey(token).hex()

    def close(self, code: int = 1000, reason: Optional[str] = None) -> List[Message]:
        """
        Close for good, whatever the state; nothing reconnects afterwards.

        An open connection gets a clean close handshake (aborted if the peer
        does not answer within ``closeTimeout``); a pending retry or attempt
        is cancelled.

        With ``resume``, closing while open ends the session with the close
        handshake, which delivers everything sent before it; closing while
        not open ends it at once.

        :returns: the messages still queued, oldest first (they were not
            sent); with ``resume`` and not open, first the session's messages
            the server never acknowledged.
        """
        factory = self.factory
        if factory is not None:
            factory._checkClose(code, reason)
        queued = self._takeQueue()
        if factory is not None:
            if not self.isOpen and factory.state not in _NOT_SENDING:
                queued = factory._endSession() + queued
            factory.close(code, reason)
        return queued

    def whenClosed(self) -> Deferred[None]:
        """A Deferred that fires once the client has closed for good or given up."""
        if self.factory is None:
            raise NotConnected("this handler is not attached to a factory")
        return self.factory.whenClosed()

    # Used by the factory ---------------------------------------------------

    def _attach(self, factory: HeartbeatClientFactory, queueSize: int) -> None:
        old = self.factory
        if old is not None and old is not factory and not old.finished:
            raise ValueError(
                f"this handler belongs to a factory that is {old.state}: "
                "close() it first, or make one handler per client"
            )
        self.factory = factory
        self._queueSize = queueSize

    def _takeQueue(self) -> List[Message]:
        items = list(self._queue or ())
        self._queue = None
        return items

    def _flush(self, protocol: HeartbeatClientProtocol) -> None:
        queue = self._queue
        while queue and protocol.isOpen:
            protocol.sendPayload(queue.popleft(), limited=False)
        if not queue:
            self._queue = None

    def _fireReason(self, hook: str, reason: Failure, *args: Any) -> None:
        """Call a hook with ``reason`` appended, if its signature takes it (0.1 overrides do not)."""
        # Cached per class; a hook set on the instance is looked at each time.
        key = (type(self), hook)
        takes = None if hook in self.__dict__ else _TAKES_REASON.get(key)
        if takes is None:
            try:
                inspect.signature(getattr(self, hook)).bind(*args, reason)
                takes = True
            except TypeError:
                takes = False
            except ValueError:  # no signature to inspect (a builtin): call it the 0.1 way
                takes = False
            if hook not in self.__dict__:
                _TAKES_REASON[key] = takes
        self._fire(hook, *args, reason) if takes else self._fire(hook, *args)

    def _fire(self, hook: str, *args: Any) -> None:
        """Call a hook; log what it raises instead of letting it escape."""
        try:
            getattr(self, hook)(*args)
        except Exception:
            self._hookFailed(hook)

    def _received(self, payload: bytes, isBinary: bool) -> None:
        """Deliver a message: :meth:`_fire` for ``onMessage``, without the lookup (per-message path)."""
        counts = self._counts
        counts.messagesReceived += 1
        counts.bytesReceived += len(payload)
        try:
            self.onMessage(payload, isBinary)
        except Exception:
            self._hookFailed("onMessage")

    def _hookFailed(self, hook: str) -> None:
        _log.failure("txheartbeat: {hook} of {handler} raised", hook=hook, handler=type(self).__name__)
