"""
The server side: answers the seed's application heartbeats, pings idle
clients and reaps the silent ones, and asks clients to leave by message.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Set, Tuple, Union

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol, _url_to_origin, parseHttpHeader
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._durable import RETRY, DurableSession, DurableSessions, IDurableSessionStore, sendToMemory
from ._errors import NotConnected, ProtocolError
from ._handler import Message, encodeMessage
from ._heartbeat import checkByteCount, checkInterval
from ._options import checkOptions, checkURL
from ._protocol import AUTOPING_OPTIONS, ExactTimer, HandshakeLog, HeartbeatMixin, autobahnOptions
from ._resume import (
    REFUSED_CODES,
    RESUME_HEADER,
    ISessionStore,
    Offer,
    ServerSession,
    ServerSessions,
    ackPayload,
    checkReplayBounds,
    parseHeader,
)
from ._share import SharedValues
from ._wire import (
    ABANDON_CODE,
    CONTROL,
    DATA,
    PLAIN_SUBPROTOCOL,
    SUBPROTOCOL,
    Control,
    WireError,
    ack,
    parseControl,
    pong,
    welcome,
)

_log = Logger(namespace="txheartbeat")

HeartbeatMatch = Union[None, Message, Callable[[bytes, bool], bool]]
HeartbeatReply = Union[None, Message, Callable[[bytes, bool], Message]]
_FACTORY_ARGS = ("protocols", "server", "headers", "externalPort")
_OWNED_OPTIONS = {**AUTOPING_OPTIONS, "allowNullOrigin": "allowedOrigins"}


@dataclass(frozen=True)
class ServerStats:
    """A snapshot of a :class:`HeartbeatServerFactory`'s counters (``factory.stats``)."""

    #: connections open now
    clients: int = 0
    #: connections opened since the factory was made
    opened: int = 0
    #: clients aborted because they went silent
    reaped: int = 0
    #: application heartbeats (the seed's ``heartbeat``) answered
    heartbeatsAnswered: int = 0
    #: ping frames sent to idle clients
    pingsSent: int = 0
    #: with ``resume``: sessions kept now, and how many were created, resumed, expired, closed by their client
    sessions: int = 0
    sessionsCreated: int = 0
    sessionsResumed: int = 0
    sessionsExpired: int = 0
    sessionsClosed: int = 0
    #: with ``resume``: resumes refused (unknown or expired session)
    resumesRefused: int = 0
    #: with a networked store: sessions taken over by another process, lost because the
    #: store refused or failed, released to the store when this server stopped; writes
    #: the store could not take; client messages delivered flagged ``redelivered``
    sessionsMoved: int = 0
    sessionsLost: int = 0
    sessionsReleased: int = 0
    storeFailures: int = 0
    redelivered: int = 0


class HeartbeatServerProtocol(HeartbeatMixin, WebSocketServerProtocol):  # type: ignore[misc]
    """
    A server connection that keeps itself honest.

    Application heartbeats (by default the text ``heartbeat``) are answered
    (by default with ``heartbeat``) and not passed to :meth:`onMessage`.
    After ``pingInterval`` idle seconds the client gets an RFC 6455 ping; a
    client that sends nothing within ``pongTimeout`` after it is aborted,
    after :meth:`onPeerDead` is called.  Subclass and override the usual
    Autobahn hooks (``onOpen``, ``onMessage``, ``onClose``).
    """

    factory: HeartbeatServerFactory
    #: Autobahn copies it from the factory at connectionMade (annotation only: no class default)
    logOctets: bool
    _leaveCall: Optional[IDelayedCall] = None
    #: the client's resumable session (``None``: a plain connection; see the factory's ``resume``)
    session: Optional[ServerSession] = None
    #: whether this connection carried on an earlier session of the client
    resumed = False
    #: a newer connection of the same session took over: nothing from this one counts
    superseded = False
    _offer: Optional[Tuple[ServerSession, bool, int]] = None
    #: the connection speaks the browser's session format (``txheartbeat.resume.1``, see ``_wire``)
    _framed = False
    #: set during ``onMessage`` for a client message that may have been delivered before, by a
    #: process that held the session and died before it could store that it had (networked stores)
    redelivered = False
    _helloCall: Optional[IDelayedCall] = None
    HANDSHAKE_ONLY = (
        "http_headers",
        "http_request_data",
        "http_response_data",
        "http_status_line",
        "http_request_uri",
        "http_request_params",
        "http_request_host",
        "_wskey",
        "websocket_protocols",
        "websocket_extensions",
    )

    def connectionMade(self) -> None:
        """Set the clock, the write-buffer limit, and redact the handshake from logs until open."""
        if self.factory.closeTimeout != self.closeTimeout:  # (the class default: no __dict__ entry)
            self.closeTimeout = self.factory.closeTimeout
        self.limitBuffered(self.factory.maxBuffered)
        self.shareOptions()
        super().connectionMade()
        # At debug level Autobahn logs the client's request three times over
        # (raw, as a header dict, in the default onConnect), and with
        # logOctets as hex, which cannot be redacted reliably: credentials
        # included.  Redact until open, and dump no octets until then.
        HandshakeLog.install(self, self.logOctets)

    def processHandshake(self) -> None:
        """Refuse an upgrade while overloaded (503) or from an origin not allowed (403), else go on as Autobahn."""
        factory = self.factory
        end = self.data.find(b"\r\n\r\n") if self.state == WebSocketProtocol.STATE_CONNECTING else -1
        # Refuse only a complete request: the rest of it would otherwise hit a closed socket and reset the 503.
        if end >= 0 and factory.retryAfter is not None:
            retryAfter = str(math.ceil(factory.retryAfter))
            self.failHandshake("server overloaded: try again later", 503, [("Retry-After", retryAfter)])
            return
        if end >= 0 and factory._originPatterns is not None:
            origin = factory._refusedOrigin(self.data[:end])
            if origin is not None:
                _log.info("txheartbeat: upgrade from origin {origin!r} refused (not in allowedOrigins)", origin=origin)
                self.failHandshake(f"origin {origin!r} not allowed", 403)
                return
        super().processHandshake()

    def succeedHandshake(self, res: Any) -> None:
        """
        With ``resume``: answer the client's ``Txheartbeat-Resume`` header, or
        select the browser's ``txheartbeat.resume.1`` subprotocol when it is
        offered; then complete the upgrade.
        """
        if self.state == WebSocketProtocol.STATE_CLOSED:
            return  # an onConnect Deferred that fired after the client left: nothing to open
        sessions = self.factory._sessions
        offer = parseHeader(self.http_headers.get(RESUME_HEADER.lower()))
        if sessions is None or (offer is None and SUBPROTOCOL not in (self.websocket_protocols or ())):
            if res is None and PLAIN_SUBPROTOCOL in (self.websocket_protocols or ()):
                # A page asking for resume from a server without it: it runs plain (a browser
                # would fail the connection if none of the protocols it offered were selected).
                res = PLAIN_SUBPROTOCOL
            super().succeedHandshake(res)  # a plain client (or a resume version we do not speak)
            return
        # onConnect's result: None, a subprotocol, or (subprotocol, headers)
        subprotocol, headers = res, {}
        if isinstance(res, tuple):
            subprotocol = res[0] if res else None
            headers = dict(res[1]) if len(res) > 1 else {}
        if offer is None:
            # A browser: the session's handshake runs in its first messages (the hello).
            self._framed = True
            super().succeedHandshake((SUBPROTOCOL, headers))
            return
        if isinstance(sessions, DurableSessions):
            # The store answers later (a claim or a new session); the request waits.
            d = sessions.offerLater(offer)
            d.addCallback(self._offered, subprotocol, headers, offer.received)
            d.addErrback(self._offerFailed)
            return
        # Answered from the counts as they are now; the session is attached at
        # open, in the same reactor turn, so nothing can change in between.
        self._offered(sessions.offer(offer), subprotocol, headers, offer.received)

    def _offered(self, answer: Any, subprotocol: Any, headers: Any, received: int) -> None:
        if answer is RETRY:  # (the store cannot say whether the resume took: the client keeps its token and retries)
            if self.state == WebSocketProtocol.STATE_CONNECTING:
                self.failHandshake("the session store is unavailable: try again", 503, [("Retry-After", "1")])
            return
        if answer is None:  # (the store cannot be reached: a plain connection; the client reports its session lost)
            super().succeedHandshake((subprotocol, headers))
            return
        session, resumed, header = answer
        if self.state == WebSocketProtocol.STATE_CLOSED:
            sessions = self.factory._sessions
            if isinstance(sessions, DurableSessions):
                sessions.orphan(session)  # claimed for a client that left meanwhile: kept for the window
            return
        self._offer = (session, resumed, received)
        headers[RESUME_HEADER] = header
        super().succeedHandshake((subprotocol, headers))

    def _offerFailed(self, failure: Failure) -> None:
        _log.failure("txheartbeat: answering a resume failed", failure)
        if self.state == WebSocketProtocol.STATE_CONNECTING:
            self.failHandshake("internal error", 500)
        elif self.state == WebSocketProtocol.STATE_OPEN:
            self._fail_connection(1011, "internal error")

    def _onOpen(self) -> None:
        HandshakeLog.restore(self)
        factory = self.factory
        factory.openedClients += 1
        if self._framed:
            self._openFramed()
            return
        factory.clients.add(self)
        offer = self._offer
        if offer is not None:
            del self._offer
            self._attachSession(*offer)
        self.startHeartbeat(factory.pingInterval, factory.pongTimeout)
        super()._onOpen()
        self.compactAfterOpen()

    def _attachSession(self, session: ServerSession, resumed: bool, clientReceived: int) -> None:
        sessions = self.factory._sessions
        assert sessions is not None
        replay = sessions.attach(self, session, resumed, clientReceived)
        self.session = session
        if type(session) is DurableSession and not self._framed:
            self.__dict__["_onMessage"] = self._onDurableMessage
        if resumed:
            self.resumed = True
        self.useSession(session.stream)
        self.replay(replay)  # before anything the hooks send
        sessions.announce(session, resumed, len(replay))

    # The browser's session format (txheartbeat.resume.1) -------------------------
    # Its connections get their own sendMessage, sendUnlimited, _onMessage and
    # _sendHeartbeat as instance attributes: plain and header-resumed
    # connections keep theirs, with no per-message test of the format.

    def _openFramed(self) -> None:
        """Open, framed: heartbeats start now, the application's onOpen once the hello is answered."""
        self._onMessage = self._onFramedMessage  # type: ignore[method-assign]
        self._sendHeartbeat = self._sendFramedHeartbeat  # type: ignore[method-assign]
        self._checkSends()
        factory = self.factory
        self.startHeartbeat(factory.pingInterval, factory.pongTimeout)
        wait = factory.pongTimeout if factory.pongTimeout is not None else 10.0
        self._helloCall = self.clock.callLater(wait, self._helloTimedOut)

    def _helloTimedOut(self) -> None:
        self._helloCall = None
        self._wireError("no hello within pongTimeout")

    def _checkSends(self) -> None:
        mine = self.__dict__
        if self._stream is not None and type(self.session) is DurableSession:
            mine["sendMessage"] = self._sendDurable
            mine["sendUnlimited"] = self._sendDurableUnlimited
            return
        if not self._framed:
            mine.pop("sendUnlimited", None)
            super()._checkSends()
            return
        mine["sendMessage"] = self._sendFramedMessage
        mine["sendUnlimited"] = self._sendFramedUnlimited

    # A session in a networked store (see _durable): stored, then sent -----------

    def _sendDurable(self, payload: bytes, *args: Any, **kwargs: Any) -> None:
        limit = self.maxBuffered
        if limit is not None:
            self._refuseBeyondBuffer(len(payload), limit)
        self._submit(payload, bool(args[0] if args else kwargs.get("isBinary", False)), True)

    def _sendDurableUnlimited(self, payload: bytes, *args: Any, **kwargs: Any) -> None:
        self._submit(payload, bool(args[0] if args else kwargs.get("isBinary", False)), False)

    def _submit(self, payload: bytes, isBinary: bool, limited: bool) -> None:
        session = self.session
        if type(session) is not DurableSession:
            raise NotConnected("no session on this connection (taken over): not sent")
        session.submit(payload, isBinary, limited)

    def _onDurableMessage(self, payload: bytes, isBinary: bool) -> None:
        session = self.session
        if type(session) is DurableSession:
            session.inbound(self, payload, isBinary)

    def deliver(self, payload: bytes, isBinary: bool) -> None:
        """Give a client message of the session to the application (``onMessage``)."""
        super()._onMessage(payload, isBinary)

    def sendAck(self, received: int) -> None:
        """Tell the client that ``received`` of its messages are delivered (and stored)."""
        if self._framed:
            self._sendControl(ack(received))
        elif self.state == WebSocketProtocol.STATE_OPEN:
            self.sendPong(ackPayload(received))

    def acknowledge(self, stream: Any) -> None:
        """Acknowledge what was received: at once, or once stored with a networked store."""
        session = self.session
        if type(session) is DurableSession:
            session.record(self)
        else:
            self.sendAck(stream.ackValue())

    def _acknowledged(self, count: Optional[int]) -> None:
        stream = self._stream
        acked = stream.acked if stream is not None else 0
        super()._acknowledged(count)
        session = self.session
        if type(session) is DurableSession and stream is not None and stream.acked != acked:
            session.record(None)  # the store drops what the client has (its bounds follow this side's)
            session.roomMade()

    def letGo(self) -> None:
        """The session moved to another connection or process: nothing more from this one counts."""
        self.session = None
        self.superseded = True
        if not self._framed:
            self.__dict__.pop("_onMessage", None)
        self.useSession(None)
        self.abort()

    def sessionLost(self) -> None:
        """The store lost the session: close (1011) so that the client comes back and learns it."""
        self.session = None
        self.useSession(None)
        if self.isOpen:
            self.closeGracefully(1011, "session lost: the session store failed")

    def _sendFramedMessage(self, payload: bytes, *args: Any, **kwargs: Any) -> None:
        limit = self.maxBuffered
        if limit is not None:
            self._refuseBeyondBuffer(len(payload), limit)
        self._sendFramedUnlimited(payload, *args, limited=True, **kwargs)

    def _sendFramedUnlimited(self, payload: bytes, *args: Any, limited: bool = False, **kwargs: Any) -> None:
        stream = self._stream
        if stream is None:
            raise NotConnected("no session on this connection (before the client's hello, or taken over): not sent")
        stream.number(payload, bool(args[0] if args else kwargs.get("isBinary", False)), limited)
        if self.state != WebSocketProtocol.STATE_OPEN:
            return  # closing: kept in the session and sent when it resumes
        try:
            WebSocketServerProtocol.sendMessage(self, DATA + payload, *args, **kwargs)
        except BaseException:
            stream.unnumber()
            raise
        stream.written = stream.sent

    def replay(self, messages: List[Tuple[bytes, bool]]) -> None:
        """Send again what the client of a resumed session had not received (framed for a browser)."""
        if not self._framed:
            super().replay(messages)
            return
        for payload, isBinary in messages:
            WebSocketServerProtocol.sendMessage(self, DATA + payload, isBinary)

    def _sendControl(self, payload: bytes) -> None:
        if self.state == WebSocketProtocol.STATE_OPEN:
            WebSocketServerProtocol.sendMessage(self, payload, False)

    def _sendFramedHeartbeat(self) -> None:
        # A browser cannot see a ping's payload: what was received goes in an ack first.
        stream = self._stream
        if stream is not None and stream.received != stream.ackSent:
            self.acknowledge(stream)
        HeartbeatMixin._sendHeartbeat(self)

    def _onFramedMessage(self, payload: bytes, isBinary: bool) -> None:
        kind = payload[:1]
        stream = self._stream
        if kind == DATA and stream is not None:
            data = payload[1:]
            session = self.session
            if type(session) is DurableSession:
                session.inbound(self, data, isBinary)
                return
            # Counted first: an onMessage that raises still received it (else a resume would repeat it).
            due = stream.delivered(len(data))
            try:
                super()._onMessage(data, isBinary)
            finally:
                if due:
                    self._sendControl(ack(stream.ackValue()))
            return
        if self.superseded:
            return
        try:
            if kind == DATA:
                raise WireError("a data message before the hello")
            if kind != CONTROL or isBinary:
                raise WireError("a message that is neither data (d) nor control (c, text)")
            self._onControl(parseControl(payload[1:]))
        except WireError as e:
            self._wireError(str(e))

    def _onControl(self, message: Control) -> None:
        stream = self._stream
        if message.type == "hello":
            if stream is not None or self._helloCall is None:
                raise WireError("a second hello")
            self._hello(message)
        elif stream is None:
            if message.type in ("ack", "ping"):
                raise WireError(f"{message.type} before the hello")
        elif message.type == "ack":
            if message.received is None:
                raise WireError("an ack without received")
            self._acknowledged(message.received)
        elif message.type == "ping":
            if message.received is not None:
                self._acknowledged(message.received)
            self._sendControl(pong(stream.ackValue()))  # (with a networked store: the stored count)
        # other types: from a later version of the format, ignored

    def _hello(self, message: Control) -> None:
        """Answer the hello with a welcome, attach the session (replaying what the client missed), then onOpen."""
        if self._helloCall is not None:
            self._helloCall.cancel()
            self._helloCall = None
        sessions = self.factory._sessions
        assert sessions is not None
        received = message.received or 0
        offer = Offer(message.session, received, False)
        if isinstance(sessions, DurableSessions):
            sessions.offerLater(offer).addCallback(self._welcome, received).addErrback(self._offerFailed)
            return
        self._welcome(sessions.offer(offer), received)

    def _welcome(self, answered: Any, received: int) -> None:
        if self.state != WebSocketProtocol.STATE_OPEN:
            sessions = self.factory._sessions
            if answered is not None and isinstance(sessions, DurableSessions):
                sessions.orphan(answered[0])
            return
        if answered is None or answered is RETRY:  # the store cannot be reached: the page tries again later
            self._fail_connection(1013, "the session store is unavailable: try again later")
            return
        session, resumed, header = answered
        answer = parseHeader(header)
        assert answer is not None and answer.token is not None
        self._sendControl(welcome(answer.token, answer.received, resumed))
        self.factory.clients.add(self)
        self._attachSession(session, resumed, received)
        super()._onOpen()
        self.compactAfterOpen()

    def _wireError(self, why: str) -> None:
        _log.info("txheartbeat: client {peer} broke {wire}: {why}", peer=self.peer, wire=SUBPROTOCOL, why=why)
        self._fail_connection(1002, f"{SUBPROTOCOL}: {why}"[:120])

    def _onMessage(self, payload: bytes, isBinary: bool) -> None:
        stream = self._stream
        if stream is not None:  # in a session every message is the application's
            # Counted first: an onMessage that raises still received it (else a resume would repeat it).
            due = stream.delivered(len(payload))
            try:
                super()._onMessage(payload, isBinary)
            finally:
                if due:
                    self.acknowledge(stream)
            return
        if self.superseded:
            return
        factory = self.factory
        if not factory._isHeartbeat(payload, isBinary):
            super()._onMessage(payload, isBinary)
        elif self.isOpen:
            self.sendUnlimited(*factory._answer(payload, isBinary))
            factory.heartbeatsAnswered += 1
        # Autobahn still delivers messages once a close has begun (STATE_CLOSING),
        # where sendMessage raises Disconnected: such a heartbeat needs no answer.

    def onCloseFrame(self, code: int, reasonRaw: bytes) -> Optional[bool]:
        """A close frame: one the client begins with 1000, 1001 or an application code ends its session now.

        ``ABANDON_CODE`` excepted: a page gives up on the connection, not the session.
        """
        session = self.session
        ends = code in (1000, 1001) or ((code or 0) >= 3000 and code != ABANDON_CODE)
        if session is not None and not self.closedByMe and ends:
            sessions = self.factory._sessions
            if sessions is not None:
                sessions.close(session)  # nothing sent from here on could ever be delivered
        return super().onCloseFrame(code, reasonRaw)

    def _onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.stopTimers()
        if self._helloCall is not None:
            self._helloCall.cancel()
            self._helloCall = None
        self.failDrainWaiters()
        if self._leaveCall is not None:
            self._leaveCall.cancel()
            self._leaveCall = None
        self.factory.clients.discard(self)
        session = self.session
        sessions = self.factory._sessions
        if session is not None and sessions is not None:
            error = self.failure.value if self.failure is not None else None
            if isinstance(error, ProtocolError) and error.code in REFUSED_CODES:
                sessions.refused(self, session, error.code)
            else:
                sessions.detach(self, session)  # kept for the window, unless the client ended it (onCloseFrame)
        # Gone: a late sendMessage() must not take a number of the session (it
        # raises Disconnected, as without resume); self.session.send() goes on.
        self.useSession(None)
        super()._onClose(wasClean, code, reason)

    def heartbeatSent(self) -> None:
        """Count the ping sent to an idle client."""
        self.factory.pingsSent += 1

    def peerDead(self, failure: Failure) -> None:
        """Count and log the silent client, then call :meth:`onPeerDead`."""
        self.factory.deadClients += 1
        _log.info("txheartbeat: client {peer} went silent: {why}", peer=self.peer, why=failure.getErrorMessage())
        try:
            self.onPeerDead(failure)
        except Exception:
            _log.failure("txheartbeat: onPeerDead raised")

    def onPeerDead(self, failure: Failure) -> None:
        """The client went silent (:class:`HeartbeatTimeout`); it is aborted right after this returns."""

    def requestLeave(self, message: Optional[Message] = None, timeout: Optional[float] = None) -> None:
        """
        Ask the client to close, by the seed's convention: send the agreed
        message and let the client call ``close()``.  If it is still
        connected after ``timeout`` seconds, close it from here (a close
        handshake, aborted after ``closeTimeout``).

        :param message: defaults to the factory's ``leaveMessage``.
        :param timeout: defaults to the factory's ``leaveTimeout``.
        """
        if not self.isOpen or self._leaveCall is not None:
            return
        self.sendUnlimited(*encodeMessage(message if message is not None else self.factory.leaveMessage))
        wait = timeout if timeout is not None else self.factory.leaveTimeout
        self._leaveCall = self.clock.callLater(wait, self._leaveTimedOut)

    def _leaveTimedOut(self) -> None:
        self._leaveCall = None
        if self.isOpen:
            self.closeGracefully(1000, "asked to leave")


class HeartbeatServerFactory(WebSocketServerFactory):
    """
    Autobahn server factory for :class:`HeartbeatServerProtocol` (or a subclass).

    :param url: the server's ``ws://`` URL (as for Autobahn; may be ``None``).
    :param pingInterval: idle seconds before an RFC ping to the client
        (``None``: never ping, never reap).
    :param pongTimeout: seconds a pinged client has to send anything
        (``None``: ping but never reap).
    :param heartbeatMessage: what counts as a client heartbeat: ``str``
        (text message), ``bytes`` (binary message), a predicate
        ``(payload, isBinary) -> bool``, or ``None`` to pass everything to
        ``onMessage``.
    :param heartbeatReply: the answer: ``str``, ``bytes`` or a callable
        ``(payload, isBinary) -> str | bytes``.
    :param leaveMessage: what :meth:`HeartbeatServerProtocol.requestLeave` sends.
    :param leaveTimeout: seconds a client asked to leave has before it is closed.
    :param closeTimeout: seconds allowed for a close handshake before aborting.
    :param maxBuffered: bytes a connection may hold in its write buffer before
        its ``sendMessage`` raises :class:`txheartbeat.SendQueueFull`
        (``None``: no limit); see ``bufferedAmount`` and ``whenDrained()`` on
        the protocol.
    :param allowedOrigins: the browser origins allowed to open a WebSocket:
        patterns matched against ``scheme://host:port`` with ``*`` as a
        wildcard (Autobahn's syntax, e.g. ``"https://*.example.com:*"``; the
        default port may be left out: ``"https://app.example.com"``), and
        ``"null"`` for pages with no origin (``file://``, sandboxed iframes).
        Others get HTTP 403 and a log line.  ``None`` (the default) allows
        every origin, ``null`` included: right for servers that authenticate
        each connection themselves, unsafe for ones that trust the browser's
        cookies (cross-site WebSocket hijacking).  Requests without an
        ``Origin`` header (non-browser clients) are always allowed.
    :param resume: offer resumable sessions to clients that ask (txheartbeat
        clients with ``resume=True``); plain clients are served as before.
        See ``docs/reliability.md``.
    :param resumeWindow: seconds a session waits for its client to come back
        after a connection is lost.
    :param replayBufferSize: messages a session keeps until the client
        acknowledges them; :meth:`ServerSession.send` and the connection's
        ``sendMessage`` raise :class:`txheartbeat.SendQueueFull` past it.
    :param replayBufferBytes: the same bound in payload bytes.
    :param sessionStore: where sessions are kept: an
        :class:`txheartbeat.ISessionStore` (default: a
        :class:`txheartbeat.MemorySessionStore`, in this process), or a
        networked store that outlives the process and is shared by workers
        (``txheartbeat.stores.RedisSessionStore``; see ``docs/sessions.md``).
    :param reactor: reactor and clock for every timer.
    :param options: Autobahn factory arguments (``protocols``, ``server``,
        ``headers``, ``externalPort``) or protocol options.
    """

    protocol = HeartbeatServerProtocol  # type: ignore[assignment]
    _sessions: Optional[ServerSessions] = None

    def __init__(
        self,
        url: Optional[str] = None,
        *,
        pingInterval: Optional[float] = 15.0,
        pongTimeout: Optional[float] = 10.0,
        heartbeatMessage: HeartbeatMatch = "heartbeat",
        heartbeatReply: HeartbeatReply = "heartbeat",
        leaveMessage: Message = "close",
        leaveTimeout: float = 5.0,
        closeTimeout: float = 2.0,
        maxBuffered: Optional[int] = None,
        resume: bool = False,
        resumeWindow: float = 60.0,
        replayBufferSize: int = 1000,
        replayBufferBytes: int = 1 << 20,
        sessionStore: Optional[ISessionStore] = None,
        allowedOrigins: Optional[Sequence[str]] = None,
        reactor: Any = None,
        **options: Any,
    ) -> None:
        checkURL(url, allowNone=True)
        checkOptions(
            type(self).__name__,
            options,
            # (a subclass's own options count: its __init__ or setProtocolOptions may take more)
            (type(self).__init__, type(self).setProtocolOptions)
            + (HeartbeatServerFactory.__init__, WebSocketServerFactory.setProtocolOptions),
            _FACTORY_ARGS,
            tuple(_OWNED_OPTIONS),
        )
        checkInterval("resumeWindow", resumeWindow, allowNone=False)
        checkReplayBounds(replayBufferSize, replayBufferBytes)
        durable = IDurableSessionStore.providedBy(sessionStore)
        if sessionStore is not None and not durable and not ISessionStore.providedBy(sessionStore):
            raise ValueError(f"sessionStore must provide ISessionStore or IDurableSessionStore, got {sessionStore!r}")
        if durable and not resume:
            raise ValueError("sessionStore keeps resumable sessions: it needs resume=True")
        checkInterval("pingInterval", pingInterval)
        checkInterval("pongTimeout", pongTimeout)
        checkInterval("leaveTimeout", leaveTimeout, allowNone=False)
        checkInterval("closeTimeout", closeTimeout, allowNone=False)
        checkByteCount("maxBuffered", maxBuffered)
        if (
            heartbeatMessage is not None
            and not isinstance(heartbeatMessage, (str, bytes))
            and not callable(heartbeatMessage)
        ):
            raise ValueError(f"heartbeatMessage must be None, str, bytes or a predicate, got {heartbeatMessage!r}")
        if heartbeatReply is None or (not isinstance(heartbeatReply, (str, bytes)) and not callable(heartbeatReply)):
            raise ValueError(f"heartbeatReply must be str, bytes or a callable, got {heartbeatReply!r}")
        if not isinstance(leaveMessage, (str, bytes)):
            raise ValueError(f"leaveMessage must be str or bytes, got {leaveMessage!r}")
        # A plain HTTP GET gets 426 rather than Autobahn's status page (its version) and
        # its ?redirect= (an open redirect); webStatus=True brings them back.
        options.setdefault("webStatus", False)
        factoryArgs, protocolOptions = autobahnOptions(options, _FACTORY_ARGS, _OWNED_OPTIONS)
        self._originPatterns = self._checkOrigins(allowedOrigins)
        self.allowedOrigins = None if allowedOrigins is None else list(allowedOrigins)  # type: ignore[assignment]
        WebSocketServerFactory.__init__(self, url, reactor=reactor, **factoryArgs)
        self._batched_timer = ExactTimer(self.reactor)
        # Origins are checked here, before the application's onConnect; Autobahn's own
        # check stays open (its setProtocolOptions resets allowNullOrigin at every call).
        protocolOptions(self, allowedOrigins=["*"], allowNullOrigin=True)
        self.pingInterval = pingInterval
        self.pongTimeout = pongTimeout
        self.heartbeatMessage = heartbeatMessage
        self.heartbeatReply = heartbeatReply
        # Encoded once here, not for every inbound message.
        self._request = (
            None if heartbeatMessage is None or callable(heartbeatMessage) else encodeMessage(heartbeatMessage)
        )
        self._reply = None if callable(heartbeatReply) else encodeMessage(heartbeatReply)
        self.leaveMessage = leaveMessage
        self.leaveTimeout = leaveTimeout
        self.closeTimeout = closeTimeout
        self.maxBuffered = maxBuffered
        #: the open connections
        self.clients: Set[HeartbeatServerProtocol] = set()
        #: clients aborted because they went silent
        self.deadClients = 0
        #: connections opened, application heartbeats answered, pings sent to idle clients (see :attr:`stats`)
        self.openedClients = self.heartbeatsAnswered = self.pingsSent = 0
        #: while not ``None``, upgrades are refused with 503 and this ``Retry-After`` (see :meth:`overloaded`)
        self.retryAfter: Optional[float] = None
        #: session counters (with ``resume``): started, resumed, expired, closed by the client, resumes refused
        self.createdSessions = self.resumedSessions = self.expiredSessions = 0
        self.closedSessions = self.refusedResumes = 0
        #: networked store counters (see :class:`ServerStats`)
        self.movedSessions = self.lostSessions = self.releasedSessions = 0
        self.storeFailures = self.redeliveredMessages = 0
        if resume:
            kind = DurableSessions if durable else ServerSessions
            self._sessions = kind(self, resumeWindow, replayBufferSize, replayBufferBytes, sessionStore)

    @property
    def stats(self) -> ServerStats:
        """A snapshot of this factory's counters (see :class:`ServerStats`)."""
        return ServerStats(
            clients=len(self.clients),
            opened=self.openedClients,
            reaped=self.deadClients,
            heartbeatsAnswered=self.heartbeatsAnswered,
            pingsSent=self.pingsSent,
            sessions=len(self._sessions.store) if self._sessions is not None else 0,
            sessionsCreated=self.createdSessions,
            sessionsResumed=self.resumedSessions,
            sessionsExpired=self.expiredSessions,
            sessionsClosed=self.closedSessions,
            resumesRefused=self.refusedResumes,
            sessionsMoved=self.movedSessions,
            sessionsLost=self.lostSessions,
            sessionsReleased=self.releasedSessions,
            storeFailures=self.storeFailures,
            redelivered=self.redeliveredMessages,
        )

    @staticmethod
    def _checkOrigins(origins: Optional[Sequence[str]]) -> Any:
        if origins is None:
            return None
        if isinstance(origins, str) or not all(isinstance(o, str) and o for o in origins):
            raise ValueError(f"allowedOrigins must be a list of origin patterns, got {origins!r}")
        # Autobahn's wildcard syntax, but case-insensitive and with every other character literal
        # (its wildcards2patterns escapes only "."; an IPv6 literal's brackets would become a class).
        patterns = [
            re.compile("^" + re.escape(o.strip().lower()).replace(r"\*", ".*") + "$")
            for o in origins
            if o.strip().lower() != "null"
        ]
        return (any(o.strip().lower() == "null" for o in origins), patterns)

    def _refusedOrigin(self, head: bytes) -> Optional[str]:
        """The request's origin if the policy refuses it, else ``None`` (no Origin header: allowed)."""
        try:
            _, headers, _ = parseHttpHeader(head)
        except Exception:
            return None  # malformed: Autobahn refuses it with the reason
        # Both origin headers are checked when present (Autobahn reports one or the other
        # by protocol version): the application never sees an origin the policy did not check.
        for name in ("origin", "sec-websocket-origin"):
            origin = headers.get(name)
            if origin is not None and not self._allowedOrigin(origin.strip()):
                return origin.strip()[:200]  # (shortened for the log and the 403 only)
        return None

    def _allowedOrigin(self, origin: str) -> bool:
        if len(origin) > 300:
            return False
        allowNull, patterns = self._originPatterns
        try:
            parsed = _url_to_origin(origin)
        except ValueError:
            return False
        if parsed == "null":
            return bool(allowNull)
        scheme, host, port = parsed
        host = f"[{host}]" if ":" in host else host
        texts = [f"{scheme}://{host}"] if port is None else [f"{scheme}://{host}:{port}"]
        if (scheme, port) in (("http", 80), ("https", 443)):
            texts.append(f"{scheme}://{host}")  # a pattern may leave out the default port
        return any(p.match(text.lower()) for p in patterns for text in texts)

    @property
    def sessionStore(self) -> Any:
        """Where the sessions are kept (``None`` without ``resume``)."""
        sessions = self._sessions
        if sessions is None:
            return None
        return sessions.durable if isinstance(sessions, DurableSessions) else sessions.store

    def sendTo(self, address: str, message: Message) -> Deferred[None]:
        """
        Send ``message`` to the session at ``address`` (its
        :attr:`ServerSession.address`), wherever its client is: on a
        connection of this process, of another worker sharing the store, or
        between connections.  It arrives once, in order with the session's
        other messages.

        With the in-process store the session must be in this process.

        :returns: a Deferred that fires once the message is kept (stored);
            it fails with :class:`txheartbeat.NotConnected` if there is no
            such session (ended or expired), :class:`txheartbeat.SendQueueFull`
            past the session's bounds, :class:`txheartbeat.StoreUnavailable`
            if the store cannot be reached.
        :raises ValueError: for an address that is not one.
        """
        sessions = self._sessions
        if sessions is None:
            raise NotConnected("this server has no sessions (resume=False)")
        if isinstance(sessions, DurableSessions):
            return sessions.sendTo(address, message)
        return sendToMemory(sessions, address, message)

    # Session hooks (with ``resume``): override in a subclass ---------------------

    def onSessionCreated(self, session: ServerSession) -> None:
        """
        A client started a session (its first connection, or one whose resume
        was refused: ``session.resumeRefused``).  Called before that
        connection's ``onOpen``.
        """

    def onSessionResumed(self, session: ServerSession) -> None:
        """A client came back to ``session``; what it missed was replayed.  Called before ``onOpen``."""

    def onSessionExpired(self, session: ServerSession) -> None:
        """
        ``session``'s client did not come back within ``resumeWindow`` (or the
        server stopped listening); ``session.unacked`` is what it never
        acknowledged.
        """

    def onSessionClosed(self, session: ServerSession) -> None:
        """The client ended ``session`` for good (a close handshake it began)."""

    def onSessionMoved(self, session: ServerSession) -> None:
        """
        Another process took ``session`` over (its client resumed there; a
        networked store only): this process no longer serves it and its
        connection here is closed.  ``session.unsent`` are messages given to
        it here that the store refused once it had moved: resend them with
        :meth:`sendTo` if they must arrive.
        """

    def _sessionEvent(self, hook: str, session: ServerSession) -> None:
        try:
            getattr(self, hook)(session)
        except Exception:
            _log.failure("txheartbeat: {hook} raised", hook=hook)

    def startFactory(self) -> None:
        """The server listens (again): sessions are kept for ``resumeWindow`` after a drop."""
        if self._sessions is not None:
            self._sessions.stopped = False
            if isinstance(self._sessions, DurableSessions):
                self._sessions.durable.ensureStarted()
        super().startFactory()

    def stopFactory(self) -> None:
        """
        The server stopped listening: sessions waiting for their client expire
        now (``onSessionExpired``); those on open connections expire when the
        connection ends.  With a networked store they are released instead:
        kept in the store for ``resumeWindow``, for the next process.
        """
        if self._sessions is not None:
            self._sessions.stop()
        super().stopFactory()

    def restart(self, window: float = 5.0, reason: str = "service restart") -> Deferred[None]:
        """
        Ask every open client to reconnect, spread over ``window`` seconds:
        each gets close code 1012 (service restart) with ``retry-window=S``
        in the reason; txheartbeat clients reconnect after a uniformly random
        delay within it.  Other clients just see a close and reconnect their
        own way (websocket-heartbeat-js after its fixed delay).

        :returns: a Deferred that fires when every one of those connections
            is closed (each close is bounded by ``closeTimeout``).
        """
        checkInterval("window", window, allowNone=False)
        # Clients coming back early must not open on a server about to stop.
        self.retryAfter = window if self.retryAfter is None else self.retryAfter
        hint = f"retry-window={window:g}"
        text = f"{hint}; {reason}".encode()[:123].decode("utf-8", "ignore")  # the hint first: never cut
        closing = [client for client in list(self.clients) if client.isOpen]
        sessions = self._sessions
        for client in closing:
            if isinstance(sessions, DurableSessions) and client.session is not None:
                # Handed over to the store first: the client may come back to another process at once.
                sessions.handOver(client.session).addBoth(self._closeForRestart, client, text)
            else:
                client.closeGracefully(1012, text)
        _log.info("txheartbeat: restart: {n} client(s) asked to reconnect within {w:g} s", n=len(closing), w=window)
        return DeferredList([client.whenGone() for client in closing]).addCallback(lambda _: None)

    @staticmethod
    def _closeForRestart(_: object, client: HeartbeatServerProtocol, text: str) -> None:
        if client.isOpen:  # (a hand-over that failed has closed it with 1011 already)
            client.closeGracefully(1012, text)

    def overloaded(self, retryAfter: Optional[float] = 30.0) -> None:
        """
        Refuse new WebSocket upgrades with HTTP 503 and ``Retry-After:
        retryAfter`` (seconds, rounded up) until ``overloaded(None)``;
        connections already open are kept.  txheartbeat clients wait that long
        (bounded by their ``maxDelay``) before they try again.
        """
        if retryAfter is not None:
            checkInterval("retryAfter", retryAfter, allowNone=False)
        self.retryAfter = retryAfter

    def heartbeatAnswer(self, payload: bytes, isBinary: bool) -> Optional[Tuple[bytes, bool]]:
        """Return ``(data, isBinary)`` to answer a heartbeat, or ``None`` for an application message."""
        if not self._isHeartbeat(payload, isBinary):
            return None
        return self._answer(payload, isBinary)

    def _isHeartbeat(self, payload: bytes, isBinary: bool) -> bool:
        if self._request is not None:
            return (payload, isBinary) == self._request
        return callable(self.heartbeatMessage) and bool(self.heartbeatMessage(payload, isBinary))

    def _answer(self, payload: bytes, isBinary: bool) -> Tuple[bytes, bool]:
        # Only for a heartbeat, so a callable reply never sees anything else.
        if self._reply is not None:
            return self._reply
        return encodeMessage(self.heartbeatReply(payload, isBinary))  # type: ignore[operator]


HeartbeatServerProtocol.sharedOptions = SharedValues(HeartbeatServerProtocol, WebSocketServerProtocol.CONFIG_ATTRS)
