"""
What the client and server protocols share on top of Autobahn: traffic
noting, the heartbeat (RFC ping or application message), the bounded close
and aborting with a reason.  The liveness rules themselves live in
:mod:`txheartbeat._heartbeat`.
"""

from __future__ import annotations

import copy
import os
import re
import struct
import weakref
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union
from urllib.parse import urlsplit, urlunsplit

from autobahn.websocket.protocol import WebSocketProtocol
from autobahn.websocket.types import ConnectionRequest
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from txaio.interfaces import log_levels

from ._errors import HeartbeatTimeout, NotConnected, ProtocolError, SendQueueFull
from ._handler import encodeMessage
from ._heartbeat import Heartbeat, checkByteCount
from ._quietdebug import install as _quietDebug
from ._resume import SessionStream, ackPayload, parseAck, parsePingAck, pingPayload
from ._share import SharedValues, compact
from ._shortcuts import enabled
from ._tcpinfo import _PLAIN_TCP, Progress, outboundProgress, userBacklog
from ._tls import abortTLS

PingMessage = Union[None, str, bytes, Callable[[], Union[str, bytes]]]

try:
    # What a txaio logger's ``debug`` is while debug logging is off.
    from txaio.tx import _no_op as _LOG_OFF
except ImportError:  # pragma: no cover (a txaio without it: debug always looks on, Autobahn's paths run)
    _LOG_OFF = object()  # type: ignore[assignment]
#: ``log.debug`` is this while inbound bytes may skip Autobahn's adapter (the "dataReceived" shortcut)
_QUIET_RECEIVE = _LOG_OFF if enabled("dataReceived") else object()
_DROP_HANDSHAKE = enabled("handshakeMemory")
_quietDebug(_LOG_OFF)
_DRAIN_POLL = 0.02

#: Autobahn's keepalive options, replaced by txheartbeat's (name -> ours).
AUTOPING_OPTIONS = {
    "autoPingInterval": "pingInterval",
    "autoPingTimeout": "pongTimeout",
    "autoPingSize": "pingInterval",
}


def autobahnOptions(
    options: Dict[str, Any], factoryArgNames: Iterable[str], owned: Dict[str, str]
) -> Tuple[Dict[str, Any], Callable[..., None]]:
    """
    Split a factory's extra keywords for Autobahn.

    :returns: the keywords for the Autobahn factory's constructor, and a
        function ``(factory, **ours)`` that sets the rest as protocol options
        along with txheartbeat's own (autoPing always off).
    :raises ValueError: for an option txheartbeat manages itself (``owned``,
        mapped to the option to use instead), or, from the function, for an
        option Autobahn does not know.
    """
    for name, ours in owned.items():
        if name in options:
            raise ValueError(f"{name} is managed by txheartbeat; use {ours}= instead")
    factoryArgs = {name: options.pop(name) for name in factoryArgNames if name in options}

    def apply(factory: Any, **ours: Any) -> None:
        try:
            factory.setProtocolOptions(autoPingInterval=0, **ours, **options)
        except TypeError as e:
            raise ValueError(f"unknown option for {type(factory).__name__}: {e}") from None

    return factoryArgs, apply


def writeNow(transport: Any, data: bytes) -> None:
    """
    ``transport.write(data)``, but straight to the socket when nothing is
    queued ahead of it: Twisted's ``write`` always buffers and sends on the
    next writable event, which costs two epoll updates and a trip through
    the reactor per frame (for an idle connection, per heartbeat).  What the
    kernel does not take, and any error, goes through ``transport.write`` as
    before.  Relies on Twisted's ``FileDescriptor`` buffer attributes
    (the "socketWrites" shortcut: without it, every write is ``transport.write``).
    """
    if (
        type(transport) in _PLAIN_TCP
        and not transport.TLS  # (startTLS on it: writes must go through TLS)
        and transport.connected
        and not transport.disconnecting
        and not transport._writeDisconnected
        and not transport._tempDataBuffer
        and transport.offset == len(transport.dataBuffer)
    ):
        try:
            sent = transport.socket.send(data)
        except OSError:
            sent = 0  # (full, or broken: the reactor's own write finds out and reports it)
        if sent >= len(data):
            return
        data = data[sent:]
    transport.write(data)


def xorMask(mask: bytes, payload: bytes) -> bytes:
    """``payload`` masked (or unmasked) with the 4-byte WebSocket ``mask`` (RFC 6455 section 5.3)."""
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


class ExactTimer:
    """Autobahn's batched-timer interface on the injected clock, without batching."""

    _shared: weakref.WeakKeyDictionary[Any, ExactTimer] = weakref.WeakKeyDictionary()

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock

    @classmethod
    def on(cls, clock: IReactorTime) -> ExactTimer:
        """One per clock, shared by every factory on it (a client's factory is per connection)."""
        try:
            timer = cls._shared.get(clock)
            if timer is None:
                timer = cls._shared[clock] = cls(clock)
        except TypeError:  # a clock that cannot be weakly referenced
            timer = cls(clock)
        return timer

    def call_later(self, delay: float, func: Callable[..., Any], *args: Any, **kwargs: Any) -> IDelayedCall:
        return self._clock.callLater(delay, func, *args, **kwargs)


def redactURL(url: str) -> str:
    """Return ``url`` without user info, query or fragment, fit for logs (whatever the password holds)."""
    scheme, sep, rest = url.partition("://")
    if sep:
        # User info ends at the last "@" before the path; a "#" or "?" inside
        # a password would make urlsplit cut there first and keep the rest.
        slash = rest.find("/")
        at = rest.rfind("@") if slash < 0 or rest.rfind("@") < slash else rest.rfind("@", 0, slash)
        if at < 0 and "@" in rest:
            at = rest.rfind("@")  # "/" inside the password: drop through the last "@"
        rest = rest[at + 1 :]
        url = scheme + sep + rest
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


#: headers whose values never reach the log (credentials; the resume header carries the session token)
_SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "txheartbeat-resume"})
# Such a header line in a raw request or response, folded continuation lines included.
_SECRET_LINE = r"(?im)^((?:proxy-)?authorization[ \t]*:|txheartbeat-resume[ \t]*:)[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*"
_SECRET_LINE_TEXT = re.compile(_SECRET_LINE)
_SECRET_LINE_BYTES = re.compile(_SECRET_LINE.encode("ascii"))
_REDACTED = "<redacted>"


def redactHeaders(value: Any) -> Any:
    """
    Return ``value`` with the values of secret request headers replaced.

    Understands what Autobahn logs of an opening handshake: the raw request
    (``bytes`` or ``str``), the parsed header ``dict`` and a
    ``ConnectionRequest`` (copied, never changed; its query values go too); anything else is returned
    as it is.
    """
    if isinstance(value, bytes):
        return _SECRET_LINE_BYTES.sub(rb"\1 " + _REDACTED.encode("ascii"), value)
    if isinstance(value, str):
        return _SECRET_LINE_TEXT.sub(r"\1 " + _REDACTED, value)
    if isinstance(value, dict):
        return {k: _REDACTED if isinstance(k, str) and k.lower() in _SECRET_HEADERS else v for k, v in value.items()}
    if isinstance(value, ConnectionRequest):
        request = copy.copy(value)
        request.headers = redactHeaders(value.headers)
        # The query may carry a token too (Autobahn before 22.5 logs the request at info level).
        request.params = {name: [_REDACTED] for name in value.params or {}}
        return request
    return value


class HandshakeLog:
    """
    A txaio logger whose events have secret request headers redacted.

    Stands in for an Autobahn protocol's ``log`` during the opening
    handshake, which Autobahn logs in full at debug level.  It also keeps the
    protocol's ``logOctets`` while octet dumps are off, so that the swap adds
    no attribute to the protocol: an Autobahn protocol's ``__dict__`` sits
    just under a resize (about 1.7 KiB more per connection past it).
    """

    def __init__(self, log: Any, logOctets: bool = False, own: bool = False) -> None:
        self.wrapped = log
        self.logOctets = logOctets
        self.own = own  # the protocol had its own ``log`` (not the class's)

    @classmethod
    def install(cls, protocol: Any, logOctets: bool) -> None:
        """Redact ``protocol``'s log and turn its octet dumps off until :meth:`restore`."""
        protocol.log = cls(protocol.log, logOctets, "log" in protocol.__dict__)
        protocol.logOctets = False

    @staticmethod
    def restore(protocol: Any) -> None:
        """Put back the log and ``logOctets`` :meth:`install` replaced (the class's log by deleting ours)."""
        log = protocol.__dict__.get("log")
        if isinstance(log, HandshakeLog):
            if log.own:
                protocol.log = log.wrapped
            else:
                del protocol.log
            protocol.logOctets = log.logOctets

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.wrapped, name)
        if (name != "failure" and name not in log_levels) or method is _LOG_OFF:
            return method  # (a level that is off logs nothing: nothing to redact, and no arguments kept)

        def emit(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **{key: redactHeaders(value) for key, value in kwargs.items()})

        return emit


#: Connection state Autobahn sets on every protocol instance and changes only
#: when something rare happens (a close, a limit, a timeout): class-level
#: values here, so that an open connection holds none of them itself.
STATE_DEFAULTS: Dict[str, Any] = {
    name: False
    for name in (
        "wasClean",
        "closedByMe",
        "failedByMe",
        "droppedByMe",
        "wasMaxFramePayloadSizeExceeded",
        "wasMaxMessagePayloadSizeExceeded",
        "wasServerConnectionDropTimeout",
        "wasOpenHandshakeTimeout",
        "wasCloseHandshakeTimeout",
        "wasServingFlashSocketPolicyFile",
        "triggered",
    )
}
STATE_DEFAULTS.update(
    (name, None)
    for name in (
        "wasNotCleanReason",
        "localCloseCode",
        "localCloseReason",
        "remoteCloseCode",
        "remoteCloseReason",
        "openHandshakeTimeoutCall",
        "closeHandshakeTimeoutCall",
        "serverConnectionDropTimeoutCall",
        "autoPingPending",
        "autoPingPendingCall",
        "autoPingPendingSent",
        "autoPingTimeoutCall",
        "trackedTimings",
        "_perMessageCompress",
        "websocket_protocol_in_use",
    )
)
STATE_DEFAULTS["autoPingPendingSeq"] = 0
STATE_DEFAULTS["websocket_version"] = 13  # (RFC 6455: the only version anyone speaks)


class _SendQueue(list):  # type: ignore[type-arg]
    """
    What Autobahn's ``send_queue`` needs (``append``, ``popleft``, ``len``),
    at 56 bytes empty instead of a ``deque``'s 760: it holds anything only
    for chopped or synchronous sends, and then a few chunks.
    """

    __slots__ = ()

    def popleft(self) -> Any:
        return self.pop(0)


class HeartbeatMixin:
    """
    Mixed into an Autobahn protocol (before it in the bases).

    Subclasses set :attr:`clock` and :attr:`closeTimeout` and may override
    :meth:`heartbeatSent`, :meth:`heartbeatAnswered` and :meth:`peerDead`.
    """

    closeTimeout: float = 2.0
    heartbeat: Optional[Heartbeat] = None
    #: why this connection ended, when txheartbeat knows better than the transport
    failure: Optional[Failure] = None
    _closeCall: Optional[IDelayedCall] = None
    _isClosed: Optional[Deferred[Any]] = None
    _gone = False  # connectionLost has run
    _goneWaiters: Optional[List[Deferred[None]]] = None  # whenGone(), created on first use
    _pingMessage: PingMessage = None
    #: the last ping frame sent: (sequence number, payload awaiting its pong or None, when sent, the
    #: count of octets written once it was, the kernel's acknowledged-octet position less that count)
    _ping: Tuple[int, Optional[bytes], float, int, Optional[int]] = (0, None, 0.0, -1, None)
    #: bytes the write buffer may hold before ``sendMessage`` raises :class:`SendQueueFull` (``None``: no limit)
    maxBuffered: Optional[int] = None
    _drainWaiters: Optional[List[Tuple[int, Deferred[None]]]] = None  # created on first use
    _drainCall: Optional[IDelayedCall] = None
    #: the resumable session's numbering on this connection (``None``: a plain connection)
    _stream: Optional[SessionStream] = None

    # Autobahn attributes used here (provided by WebSocketProtocol)
    state: int
    transport: Any
    wasClean: bool
    wasNotCleanReason: Optional[str]
    factory: Any
    #: the factory options shared through the class (set by the client and server protocol classes)
    sharedOptions: SharedValues
    #: attributes Autobahn keeps after the opening handshake and never reads again
    HANDSHAKE_ONLY: Tuple[str, ...] = ()

    @property
    def clock(self) -> IReactorTime:
        """The factory's reactor: every timer of this connection runs on it."""
        return self.factory.reactor  # type: ignore[no-any-return]

    def shareOptions(self) -> None:
        """
        Before Autobahn copies the factory's options into this connection (it
        copies only what the instance lacks): hold only the ones that differ
        from the class-level values.
        """
        shared = self.sharedOptions
        shared.capture(self.factory)
        mine = self.__dict__
        for name, value in shared.differing(self.factory, type(self)):
            mine[name] = value

    def compactAfterOpen(self) -> None:
        """
        The connection is open: drop what Autobahn keeps of the handshake
        (read the request in ``onConnect``, or in ``onOpen`` at the latest),
        and the state and options that have their class-level values.
        """
        drop = (self.HANDSHAKE_ONLY if _DROP_HANDSHAKE else ()) + tuple(self.sharedOptions.shared(self))
        mine = self.__dict__
        # (no extension negotiated, no Origin sent: the class's empty values do)
        empty = tuple(name for name in ("websocket_extensions_in_use", "websocket_origin") if not mine.get(name, 1))
        queue = mine.get("send_queue")
        if queue is not None and not queue and not isinstance(queue, _SendQueue) and _SEND_QUEUE_LIST:
            mine["send_queue"] = _SendQueue()
        compact(self, drop + empty, STATE_DEFAULTS)

    @property
    def bufferedAmount(self) -> int:
        """
        Bytes given to this connection (messages, frames) and not yet handed
        to the kernel, as the browser's ``WebSocket.bufferedAmount``.
        """
        return userBacklog(self.transport)

    def limitBuffered(self, maxBuffered: Optional[int]) -> None:
        """Make ``sendMessage`` raise :class:`SendQueueFull` past ``maxBuffered`` bytes (set per connection)."""
        checkByteCount("maxBuffered", maxBuffered)
        # Instance attributes only where a limit is set: no cost on the hot path
        # otherwise, and no entry in the protocol's (already large) __dict__.
        if maxBuffered is None:
            self.__dict__.pop("maxBuffered", None)
        else:
            self.maxBuffered = maxBuffered
        self._checkSends()

    def useSession(self, stream: Optional[SessionStream]) -> None:
        """Number every data message sent and delivered on this connection in ``stream`` (resume)."""
        if stream is None:
            self.__dict__.pop("_stream", None)
        else:
            self._stream = stream
        self._checkSends()

    def _checkSends(self) -> None:
        # sendMessage goes through _sendMessageChecked only where it has work to do.
        if self.maxBuffered is None and self._stream is None:
            self.__dict__.pop("sendMessage", None)
        else:
            setattr(self, "sendMessage", self._sendMessageChecked)  # noqa: B010 (mypy: no class-level attribute)

    def _refuseBeyondBuffer(self, size: int, limit: int) -> None:
        """Raise :class:`SendQueueFull` if ``size`` more bytes would take the write buffer past ``limit``."""
        buffered = userBacklog(self.transport)
        if buffered + size > limit:
            raise SendQueueFull(
                f"{buffered} bytes already wait to be written (maxBuffered={limit}); "
                "wait for whenDrained() before sending more"
            )

    def _sendMessageChecked(self, payload: bytes, *args: Any, **kwargs: Any) -> None:
        limit = self.maxBuffered
        if limit is not None:
            self._refuseBeyondBuffer(len(payload), limit)
        stream = self._stream
        if stream is None:
            type(self).sendMessage(self, payload, *args, **kwargs)  # type: ignore[attr-defined]  # a subclass's, then Autobahn's
            return
        # (inlined, not shared with sendUnlimited: this is the per-message path of a session)
        stream.number(payload, bool(args[0] if args else kwargs.get("isBinary", False)))
        if self.state != WebSocketProtocol.STATE_OPEN:
            return  # closing: kept in the session and sent when it resumes
        # Numbered only if it really goes out on this connection: the peer counts what it receives.
        try:
            type(self).sendMessage(self, payload, *args, **kwargs)  # type: ignore[attr-defined]
        except BaseException:
            stream.unnumber()
            raise
        stream.written = stream.sent

    def sendUnlimited(self, payload: bytes, *args: Any, **kwargs: Any) -> None:
        """
        Autobahn's ``sendMessage``, never refused by ``maxBuffered`` or a full
        replay buffer (the flushed send queue, the leave message, heartbeats).
        """
        stream = self._stream
        if stream is None:
            super().sendMessage(payload, *args, **kwargs)  # type: ignore[misc]
            return
        stream.number(payload, bool(args[0] if args else kwargs.get("isBinary", False)), limited=False)
        if self.state != WebSocketProtocol.STATE_OPEN:
            return  # closing: kept in the session and sent when it resumes
        try:
            super().sendMessage(payload, *args, **kwargs)  # type: ignore[misc]
        except BaseException:
            stream.unnumber()
            raise
        stream.written = stream.sent

    def replay(self, messages: List[Tuple[bytes, bool]]) -> None:
        """Send again what the peer of a resumed session had not received (numbered already)."""
        for payload, isBinary in messages:
            super().sendMessage(payload, isBinary)  # type: ignore[misc]

    def acknowledge(self, stream: SessionStream) -> None:
        """Tell the peer how many messages of the session were delivered here (an unsolicited pong)."""
        if self.state == WebSocketProtocol.STATE_OPEN:
            self.sendPong(ackPayload(stream.ackValue()))  # type: ignore[attr-defined]

    def _acknowledged(self, count: Optional[int]) -> None:
        stream = self._stream
        if count is None or stream is None:
            return
        try:
            stream.acknowledge(count)
        except ValueError as e:
            self._fail_connection(1002, f"bad acknowledgement: {e}")

    def _onPing(self, payload: bytes) -> None:
        stream = self._stream
        if stream is None:
            super()._onPing(payload)  # type: ignore[misc]
            return
        self._acknowledged(parsePingAck(payload))
        super()._onPing(payload)  # type: ignore[misc]
        # A pong must echo the ping; what this side received since its last
        # acknowledgement goes in a second one, so a quiet peer's buffer empties too.
        if stream.received != stream.ackSent:
            self.acknowledge(stream)

    def _onPong(self, payload: bytes) -> None:
        if self._stream is not None:
            self._acknowledged(parseAck(payload))
        super()._onPong(payload)  # type: ignore[misc]

    def whenDrained(self, lowWater: int = 0) -> Deferred[None]:
        """
        A Deferred that fires once :attr:`bufferedAmount` is at most
        ``lowWater`` bytes (at once if it is), or fails with
        :class:`NotConnected` if the connection is lost first.  Looked at every
        20 ms on the reactor while someone waits; cancelling removes the waiter.
        """
        if self.state == WebSocketProtocol.STATE_CLOSED or getattr(self.transport, "disconnected", False):
            return fail(NotConnected("the connection is closed: what it buffered will never drain"))
        if userBacklog(self.transport) <= lowWater:
            return succeed(None)
        waiters = self._drainWaiters
        if waiters is None:
            waiters = self._drainWaiters = []
        d: Deferred[None] = Deferred(lambda d: self._dropDrainWaiter(d))
        waiters.append((lowWater, d))
        if self._drainCall is None:
            self._drainCall = self.clock.callLater(_DRAIN_POLL, self._checkDrain)
        return d

    def _checkDrain(self) -> None:
        self._drainCall = None
        amount = userBacklog(self.transport)
        waiters = self._drainWaiters or []
        ready = [d for low, d in waiters if amount <= low]
        self._drainWaiters = [(low, d) for low, d in waiters if amount > low] or None
        if self._drainWaiters:
            self._drainCall = self.clock.callLater(_DRAIN_POLL, self._checkDrain)
        for d in ready:
            if not d.called:  # a waiter's callback may have cancelled another
                d.callback(None)

    def _dropDrainWaiter(self, d: Deferred[None]) -> None:
        self._drainWaiters = [(low, w) for low, w in self._drainWaiters or [] if w is not d] or None
        if self._drainWaiters is None and self._drainCall is not None:
            self._drainCall.cancel()
            self._drainCall = None

    def sendData(self, data: bytes, sync: bool = False, chopsize: Optional[int] = None) -> None:
        """
        Autobahn's ``sendData`` (every frame goes through it) without its
        per-call debug line, whose arguments Autobahn formats even when debug
        logging is off (about a tenth of a small message's round trip).
        Anything else (chopped or synchronous sends, a queue, the handshake,
        debug logging on) goes to Autobahn's own.
        """
        if (
            sync
            or chopsize
            or self.send_queue  # type: ignore[attr-defined]
            or self.state != WebSocketProtocol.STATE_OPEN
            or self.log.debug is not _LOG_OFF  # type: ignore[attr-defined]
        ):
            super().sendData(data, sync, chopsize)  # type: ignore[misc]
            return
        writeNow(self.transport, data)
        self.trafficStats.outgoingOctetsWireLevel += len(data)  # type: ignore[attr-defined]
        if self.logOctets:  # type: ignore[attr-defined]
            self.logTxOctets(data, False)  # type: ignore[attr-defined]

    @property
    def is_closed(self) -> Deferred[Any]:
        """
        Autobahn's future that fires with this protocol once the WebSocket is
        closed.  Once the connection is gone and the fired future is no longer
        needed, it is made again on demand: kept on the protocol, a Deferred
        whose result is the protocol would hold every closed connection in a
        reference cycle, freed only by a full pass of Python's cyclic GC.
        """
        d = self._isClosed
        return succeed(self) if d is None else d

    @is_closed.setter
    def is_closed(self, d: Deferred[Any]) -> None:
        self._isClosed = d

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)  # type: ignore[misc]
        self._released()

    def _released(self) -> None:
        """The connection is gone: let go of the fired is_closed, fire :meth:`whenGone`."""
        d = self._isClosed
        if d is not None and d.called and getattr(d, "result", None) is self:
            del self._isClosed  # (the class default, None: see is_closed)
        self._gone = True
        waiters, self._goneWaiters = self._goneWaiters, None
        for waiter in waiters or ():
            waiter.callback(None)

    def whenGone(self) -> Deferred[None]:
        """
        A Deferred that fires once the TCP connection is gone and its loss
        was handled (a server connection's ``onClose`` has run and it has left
        ``factory.clients``); at once if it already is.  ``is_closed`` fires
        earlier, as soon as Autobahn considers the WebSocket closed.
        """
        if self._gone:
            return succeed(None)
        if self._goneWaiters is None:
            self._goneWaiters = []
        d: Deferred[None] = Deferred()
        self._goneWaiters.append(d)
        return d

    @property
    def isOpen(self) -> bool:
        """Whether the WebSocket is open (handshake done, no close begun)."""
        return self.state == WebSocketProtocol.STATE_OPEN

    def dataReceived(self, data: bytes) -> None:
        heartbeat = self.heartbeat
        if heartbeat is not None:
            heartbeat.noteTraffic()
            if len(data) <= 131 and data[:1] == b"\x8a" and self._pongOnly(data):
                return
        if self.log.debug is _QUIET_RECEIVE:  # type: ignore[attr-defined]
            # Autobahn's Twisted dataReceived formats a debug line's arguments
            # (type names, the peer) before the logger drops it: skip to what
            # it calls next (the "dataReceived" shortcut).
            self._dataReceived(data)  # type: ignore[attr-defined]
        else:
            super().dataReceived(data)  # type: ignore[misc]

    def _pongOnly(self, data: bytes) -> bool:
        """
        Take ``data`` if it is exactly one whole pong frame arriving between
        frames of an open connection (what an idle connection reads once per
        heartbeat); otherwise leave it to Autobahn.

        Autobahn parses every frame in Python and builds a frame header, a
        masker (a cffi object) and a payload list for it; a pong needs none of
        them.  Only the one shape Autobahn would accept without a word is taken
        here: FIN, no RSV bits, payload of at most 125 bytes, masked exactly
        when the peer is a client, nothing buffered and no frame begun, no
        frame/octet logging, no Autobahn auto-ping pending.  Its effects are
        Autobahn's: the wire-level octet count and ``_onPong(payload)``.
        (The "pongFrames" shortcut: without it, always ``False``.)
        """
        b1 = data[1] if len(data) > 1 else 0xFF
        masked = b1 >> 7
        length = b1 & 0x7F
        if (
            length > 125
            or len(data) != 2 + 4 * masked + length
            or masked != self.factory.isServer  # type: ignore[attr-defined]
            or self.state != WebSocketProtocol.STATE_OPEN
            or self.data  # type: ignore[attr-defined]
            or self.current_frame is not None  # type: ignore[attr-defined]
            or self.logOctets  # type: ignore[attr-defined]
            or self.logFrames  # type: ignore[attr-defined]
            or self.autoPingPending  # type: ignore[attr-defined]
            or (masked and not self.applyMask)  # type: ignore[attr-defined]
        ):
            return False
        self.trafficStats.incomingOctetsWireLevel += len(data)  # type: ignore[attr-defined]
        self._onPong(xorMask(data[2:6], data[6:]) if masked else data[2:])
        return True

    def startHeartbeat(self, interval: Optional[float], timeout: Optional[float], message: PingMessage = None) -> None:
        """Start the heartbeat; ``interval=None`` does nothing."""
        if interval is None:
            return
        if message is not self._pingMessage:  # (the class default: no __dict__ entry)
            self._pingMessage = message
        self.heartbeat = Heartbeat(
            self.clock,
            interval,
            timeout,
            self._sendHeartbeat,
            self._peerDead,
            # Any traffic answers an application heartbeat; ping frames are
            # matched by payload in onPong for an exact round trip.
            onAnswer=self.heartbeatAnswered if message is not None else None,
            progress=self._outboundProgress,
        )
        self.heartbeat.start()

    def onPong(self, payload: bytes) -> None:
        sequence, awaited, sentAt, written, offset = self._ping
        if awaited is not None and payload == awaited:
            self._ping = (sequence, None, sentAt, written, offset)
            self.heartbeatAnswered(self.clock.seconds() - sentAt)

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> Optional[bool]:
        result = super().onCloseFrame(code, reasonRaw)  # type: ignore[misc]
        # The peer began (or answered) a close: bound the wait for TCP to end.
        self.startClosingTimer()
        return result

    def _fail_connection(self, code: int = 1001, reason: str = "going away") -> None:
        # Autobahn's one exit for protocol violations and limits: keep the why.
        if self.failure is None and self.state != WebSocketProtocol.STATE_CLOSED:
            self.failure = Failure(ProtocolError(code, reason))
        super()._fail_connection(code, reason)  # type: ignore[misc]

    def closeGracefully(self, code: int = 1000, reason: Optional[str] = None) -> None:
        """
        Start a close handshake, aborting if it does not end within
        ``closeTimeout``.  Codes Autobahn's ``sendClose`` refuses (1001,
        1012, 1013: a server's restart or overload hints) go out through its
        frame-level ``sendCloseFrame``.
        """
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if code == 1000 or 3000 <= code <= 4999:
            self.sendClose(code, reason)  # type: ignore[attr-defined]
        else:
            self.sendCloseFrame(code, (reason or "").encode("utf-8")[:123], isReply=False)  # type: ignore[attr-defined]
        self.startClosingTimer()

    def abort(self, failure: Optional[Failure] = None) -> None:
        """Drop the TCP connection at once, recording why."""
        if failure is not None and self.failure is None:
            self.failure = failure
            self.wasNotCleanReason = failure.getErrorMessage()
        self.wasClean = False
        # (no state: Autobahn's connectionMade raised before it set one; TCP goes all the same)
        if getattr(self, "state", WebSocketProtocol.STATE_CLOSED) == WebSocketProtocol.STATE_CLOSED:
            # Autobahn already dropped it logically; make sure TCP goes.
            if not abortTLS(self.transport):
                self.transport.abortConnection()
        else:
            self.dropConnection(abort=True)  # type: ignore[attr-defined]

    def _closeConnection(self, abort: bool = False) -> None:
        """Autobahn's end of a connection (its ``dropConnection``); an abort of TLS skips the close it throws away."""
        if not (abort and abortTLS(self.transport)):
            super()._closeConnection(abort)  # type: ignore[misc]

    def stopTimers(self) -> None:
        """Cancel the heartbeat, closing and drain timers (the connection is gone)."""
        if self.heartbeat is not None:
            self.heartbeat.stop()
            self.heartbeat = None
        if self._closeCall is not None:
            self._closeCall.cancel()
            self._closeCall = None
        if self._drainCall is not None:
            self._drainCall.cancel()
            self._drainCall = None

    def failDrainWaiters(self) -> None:
        """The connection is gone: what it buffered will never drain."""
        waiters, self._drainWaiters = self._drainWaiters or [], None
        for _, d in waiters:
            if not d.called:
                d.errback(NotConnected("the connection was lost before its buffer drained"))

    def startClosingTimer(self) -> None:
        if self._closeCall is None and self.state != WebSocketProtocol.STATE_CLOSED:
            self._closeCall = self.clock.callLater(self.closeTimeout, self._closingTimedOut)

    # Overridable notifications ----------------------------------------------

    def heartbeatSent(self) -> None:
        """A heartbeat went out."""

    def heartbeatAnswered(self, roundTrip: float) -> None:
        """The peer answered a heartbeat after ``roundTrip`` seconds."""

    def peerDead(self, failure: Failure) -> None:
        """The peer went silent; the connection is being aborted."""

    # Internals ------------------------------------------------------------------

    def _outboundProgress(self) -> Optional[Progress]:
        """
        :func:`outboundProgress`, without asking the kernel when the answer is
        known: on plain TCP, once the pong to our last ping came back and
        nothing was written since, the peer's TCP has acknowledged everything
        (each segment it sends carries the cumulative acknowledgement, and the
        pong was sent after the ping arrived), so the position is the octet
        count plus the offset the last real sample showed, and the backlog is
        zero.  That is every heartbeat of an idle connection; a deadline, or
        any write since, samples the kernel.
        """
        transport = self.transport
        if type(transport) not in _PLAIN_TCP or transport.TLS:
            return outboundProgress(transport)
        sequence, awaited, sentAt, through, offset = self._ping
        written = self.trafficStats.outgoingOctetsWireLevel  # type: ignore[attr-defined]
        idle = (
            not self.send_queue  # type: ignore[attr-defined]
            and transport.offset == len(transport.dataBuffer)
            and not transport._tempDataLen
        )
        if idle and awaited is None and through == written and offset is not None:
            return written + offset, 0
        sample = outboundProgress(transport)
        if sample is not None and idle and sample[1] == 0:
            # Learnt only from an empty queue (read before the count: exact).
            self._ping = (sequence, awaited, sentAt, through, sample[0] - written)
        return sample

    def _sendHeartbeat(self) -> None:
        message = self._pingMessage
        if message is None:
            sequence = self._ping[0] + 1
            stream = self._stream
            # In a session the ping also acknowledges what was received.
            payload = struct.pack("!Q", sequence) if stream is None else pingPayload(sequence, stream.ackValue())
            offset = self._ping[4]
            self._ping = (sequence, payload, self.clock.seconds(), -1, offset)
            self._sendPing(payload)
            _, awaited, sentAt, _, offset = self._ping  # (answered already, if the peer is in this process)
            self._ping = (sequence, awaited, sentAt, self.trafficStats.outgoingOctetsWireLevel, offset)  # type: ignore[attr-defined]
        else:
            # The class's sendMessage: a heartbeat is never refused by maxBuffered.
            self.sendUnlimited(*encodeMessage(message() if callable(message) else message))
        self.heartbeatSent()

    def _sendPing(self, payload: bytes) -> None:
        """
        Autobahn's ``sendPing(payload)`` for a payload of at most 125 bytes,
        the frame built here: Autobahn's ``sendFrame`` builds a cffi masker
        per masked frame.  Frame logging or ``applyMask=False`` go through
        Autobahn's, and so does everything without the "pingFrames" shortcut.
        """
        if self.state != WebSocketProtocol.STATE_OPEN:
            return
        isServer = self.factory.isServer  # type: ignore[attr-defined]
        masked = self.maskServerFrames if isServer else self.maskClientFrames  # type: ignore[attr-defined]
        if self.logFrames or (masked and not self.applyMask):  # type: ignore[attr-defined]
            self.sendPing(payload)  # type: ignore[attr-defined]
        elif masked:
            mask = os.urandom(4)
            self.sendData(bytes((0x89, 0x80 | len(payload))) + mask + xorMask(mask, payload))
        else:
            self.sendData(bytes((0x89, len(payload))) + payload)

    def _peerDead(self, idle: float) -> None:
        self.heartbeat = None
        failure = Failure(HeartbeatTimeout(idle))
        self.peerDead(failure)
        self.abort(failure)

    def _closingTimedOut(self) -> None:
        self._closeCall = None
        self.wasNotCleanReason = "closing handshake timeout (peer did not finish closing in time)"
        self.abort()


for _name, _value in {**STATE_DEFAULTS, "websocket_extensions_in_use": (), "websocket_origin": ""}.items():
    setattr(HeartbeatMixin, _name, _value)


# Shortcuts whose Autobahn code differs from the verified (txheartbeat._shortcuts):
# Autobahn's own methods instead, found further along the MRO.
def _autobahnPing(self: HeartbeatMixin, payload: bytes) -> None:
    if self.state == WebSocketProtocol.STATE_OPEN:
        self.sendPing(payload)  # type: ignore[attr-defined]


def _noPongShortcut(self: HeartbeatMixin, data: bytes) -> bool:
    return False


_SEND_QUEUE_LIST = enabled("sendData")
if not _SEND_QUEUE_LIST:
    del HeartbeatMixin.sendData
if not enabled("pongFrames"):
    HeartbeatMixin._pongOnly = _noPongShortcut  # type: ignore[method-assign]
if not enabled("pingFrames"):
    HeartbeatMixin._sendPing = _autobahnPing  # type: ignore[method-assign]
