"""
Session resume: numbering, the replay buffer, acknowledgements and the
handshake header, on both ends (no Autobahn, no I/O).

Each direction numbers its data messages implicitly: WebSocket over TCP
delivers them in order within a connection, so the n-th message a side
delivers is the peer's n-th message of the session.  A receiver tells the
sender how many it has delivered: in an unsolicited pong every
:data:`ACK_EVERY` messages (or :data:`ACK_BYTES` bytes), in the payload of
each heartbeat ping, and in the opening handshake of a resume.  The sender
keeps what is not acknowledged and replays it after a resume.

The opening handshake carries one header, :data:`RESUME_HEADER`:

- request, new session: ``1``
- request, resume: ``1; session=<token>; received=<n>``
- response: ``1; session=<token>; received=<n>; resumed=0|1``

A server that does not answer with the header is a plain server: the
connection runs without numbering, exactly as without resume.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, Dict, Iterator, List, NamedTuple, Optional, Tuple

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from zope.interface import Interface, implementer

from ._errors import NotConnected, SendQueueFull
from ._handler import Message, encodeMessage

if TYPE_CHECKING:  # pragma: no cover
    from ._server import HeartbeatServerFactory, HeartbeatServerProtocol

_log = Logger(namespace="txheartbeat")

#: the HTTP header that negotiates resume (request and response)
RESUME_HEADER = "Txheartbeat-Resume"
_VERSION = "1"
#: a receiver acknowledges at least every this many messages...
ACK_EVERY = 32
#: ...or this many bytes, whichever comes first
ACK_BYTES = 32 * 1024
#: close codes that say one side refused a message of the other (unsupported,
#: invalid, too big): replaying it would fail again at every resume, so the
#: session ends instead
REFUSED_CODES = frozenset({1003, 1007, 1009})
#: replay buffers may not be smaller than this (a peer acknowledges every ACK_BYTES)
MIN_REPLAY_BYTES = 2 * ACK_BYTES
_ACK_PREFIX = b"ack:"
_ACK = struct.Struct("!Q")
_PING = struct.Struct("!QQ")  # heartbeat ping in a session: (sequence, messages received)


def ackPayload(received: int) -> bytes:
    """The payload of an unsolicited pong that acknowledges ``received`` messages (12 bytes)."""
    return _ACK_PREFIX + _ACK.pack(received)


def parseAck(payload: bytes) -> Optional[int]:
    """The count an acknowledgement pong carries, or ``None`` for any other pong."""
    if len(payload) == 12 and payload[:4] == _ACK_PREFIX:
        return int(_ACK.unpack_from(payload, 4)[0])
    return None


def pingPayload(sequence: int, received: int) -> bytes:
    """A heartbeat ping's payload in a session: its sequence number and the acknowledgement (16 bytes)."""
    return _PING.pack(sequence, received)


def parsePingAck(payload: bytes) -> Optional[int]:
    """The acknowledgement a session heartbeat ping carries, or ``None`` for another ping."""
    return int(_PING.unpack(payload)[1]) if len(payload) == 16 else None


def newToken() -> str:
    """A session token: 192 random bits from ``secrets``, URL-safe text."""
    return secrets.token_urlsafe(24)


def tokenKey(token: str) -> bytes:
    """What a store files a session under: the token's SHA-256 (never the token itself)."""
    return hashlib.sha256(token.encode("ascii", "replace")).digest()


def sessionId(key: bytes) -> str:
    """A short public name for a session, fit for logs (it reveals nothing of the token)."""
    return key[:6].hex()


class Offer(NamedTuple):
    """A parsed :data:`RESUME_HEADER`."""

    token: Optional[str]
    received: int
    resumed: bool


def formatHeader(token: Optional[str] = None, received: int = 0, resumed: Optional[bool] = None) -> str:
    """The header value: a request (``resumed=None``) or a response."""
    if token is None:
        return _VERSION
    value = f"{_VERSION}; session={token}; received={received}"
    return value if resumed is None else f"{value}; resumed={int(resumed)}"


def parseHeader(value: Optional[str]) -> Optional[Offer]:
    """Parse a :data:`RESUME_HEADER` value; ``None`` if absent, malformed or of another version."""
    if value is None:
        return None
    version, _, rest = value.partition(";")
    if version.strip() != _VERSION:
        return None
    fields: Dict[str, str] = {}
    for item in rest.split(";"):
        name, sep, text = item.partition("=")
        if sep:
            fields[name.strip().lower()] = text.strip()
    token = fields.get("session") or None
    try:
        received = int(fields.get("received", "0"))
    except ValueError:
        return None
    if received < 0 or (token is not None and not (16 <= len(token) <= 128 and token.isascii())):
        return None
    return Offer(token, received, fields.get("resumed") == "1")


def checkReplayBounds(messages: int, size: int) -> None:
    """Raise ``ValueError`` for replay buffer bounds a peer's acknowledgements could not keep up with."""
    if isinstance(messages, bool) or not isinstance(messages, int) or messages < 2 * ACK_EVERY:
        raise ValueError(f"replayBufferSize must be an integer >= {2 * ACK_EVERY} messages, got {messages!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < MIN_REPLAY_BYTES:
        raise ValueError(f"replayBufferBytes must be an integer >= {MIN_REPLAY_BYTES}, got {size!r}")


class SessionStream:
    """
    One session's numbering and replay buffer, both directions.

    ``sent`` counts the messages this side numbered, ``acked`` how many of
    them the peer confirmed; the buffer holds the ones in between, oldest
    first.  ``received`` counts the messages delivered here.
    """

    __slots__ = (
        "sent",
        "acked",
        "received",
        "ackSent",
        "_inBytes",
        "_buffer",
        "_bytes",
        "maxMessages",
        "maxBytes",
        "ended",
        "written",
        "resent",
        "durable",
    )

    def __init__(self, maxMessages: int, maxBytes: int) -> None:
        self.sent = 0
        self.acked = 0
        self.received = 0
        self.ackSent = 0  # the count last told to the peer
        self._inBytes = 0  # bytes received since then
        self._buffer: Optional[Deque[Tuple[bytes, bool]]] = None  # created on first use
        self._bytes = 0
        self.maxMessages = maxMessages
        self.maxBytes = maxBytes
        #: the session is over: nothing more can be numbered
        self.ended = False
        #: how many of the numbered messages were written to a connection at least once
        self.written = 0
        #: how many messages the last :meth:`replay` sent a second time (the rest of it went out for the first time)
        self.resent = 0
        #: with a networked store: the received count known to be stored (what may be acknowledged); ``None`` otherwise
        self.durable: Optional[int] = None

    @classmethod
    def restored(
        cls, maxMessages: int, maxBytes: int, acked: int, received: int, messages: List[Tuple[bytes, bool]]
    ) -> SessionStream:
        """A stream taken over from a store: ``messages`` are the ones numbered from ``acked`` on, all written once."""
        stream = cls(maxMessages, maxBytes)
        stream.acked = acked
        stream.sent = stream.written = acked + len(messages)
        if messages:
            stream._buffer = deque(messages)
            stream._bytes = sum(len(payload) for payload, _ in messages)
        stream.received = stream.ackSent = received
        stream.durable = received
        return stream

    @property
    def bufferedBytes(self) -> int:
        """Payload bytes held for replay."""
        return self._bytes

    def number(self, payload: bytes, isBinary: bool, limited: bool = True) -> None:
        """
        Number an outgoing message and keep it until acknowledged.

        :raises SendQueueFull: if the replay buffer is full (unless ``limited=False``).
        :raises NotConnected: once the session has ended.
        """
        if self.ended:
            raise NotConnected("the session has ended (closed by the client, expired or lost); not sent")
        buffer = self._buffer
        if buffer is None:
            buffer = self._buffer = deque()
        if limited and (len(buffer) >= self.maxMessages or self._bytes + len(payload) > self.maxBytes):
            raise SendQueueFull(
                f"the replay buffer is full ({len(buffer)} messages, {self._bytes} bytes not yet acknowledged "
                f"by the peer; bounds {self.maxMessages} messages, {self.maxBytes} bytes): not sent"
            )
        buffer.append((payload, isBinary))
        self._bytes += len(payload)
        self.sent += 1

    def unnumber(self) -> None:
        """Take back the last numbered message (it could not be sent after all)."""
        assert self._buffer
        payload, _ = self._buffer.pop()
        self._bytes -= len(payload)
        self.sent -= 1

    def acknowledge(self, count: int) -> None:
        """
        The peer has delivered ``count`` messages of this session: forget them.

        :raises ValueError: if ``count`` is more than were sent (a broken peer).
        """
        if count > self.sent:
            raise ValueError(f"the peer acknowledged {count} messages; {self.sent} were sent")
        buffer = self._buffer
        while self.acked < count and buffer:
            payload, _ = buffer.popleft()
            self._bytes -= len(payload)
            self.acked += 1
        if not buffer:
            self._buffer = None

    def replay(self, peerReceived: int) -> List[Tuple[bytes, bool]]:
        """What to send again after a resume: the messages past ``peerReceived`` (:meth:`acknowledge` first)."""
        if peerReceived < self.acked:
            raise ValueError(f"the peer says it received {peerReceived} messages; it had acknowledged {self.acked}")
        self.acknowledge(peerReceived)
        self.resent = max(0, self.written - peerReceived)
        self.written = self.sent
        return list(self._buffer or ())

    def delivered(self, size: int) -> bool:
        """Count a delivered message of ``size`` bytes; ``True`` when an acknowledgement is due."""
        self.received += 1
        self._inBytes += size
        return self.received - self.ackSent >= ACK_EVERY or self._inBytes >= ACK_BYTES

    def ackValue(self) -> int:
        """The count to acknowledge now (it is marked as told); with a networked store, the stored count."""
        if self.durable is not None:
            return self.durable
        self.ackSent = self.received
        self._inBytes = 0
        return self.received

    def unacked(self) -> List[Message]:
        """The messages the peer has not acknowledged, oldest first, as given to ``send()``."""
        return [payload if isBinary else payload.decode("utf-8") for payload, isBinary in self._buffer or ()]


class ClientResume:
    """The client's side of one session across its connections."""

    __slots__ = ("token", "stream", "maxMessages", "maxBytes")

    def __init__(self, maxMessages: int, maxBytes: int) -> None:
        self.token: Optional[str] = None
        self.stream: Optional[SessionStream] = None
        self.maxMessages = maxMessages
        self.maxBytes = maxBytes

    def offer(self) -> str:
        """The request header for the next attempt."""
        if self.token is None or self.stream is None:
            return formatHeader()
        return formatHeader(self.token, self.stream.received)

    def opened(self, answer: Optional[str]) -> Tuple[bool, Optional[List[Message]], List[Tuple[bytes, bool]]]:
        """
        Read the server's answer at open.

        :returns: ``(resumed, lost, replay)``: whether the session carried on,
            the unacknowledged messages of a session that could not be
            recovered (``None`` if none was lost), and what to send again
            before anything else.  Afterwards :attr:`stream` is the open
            connection's (``None``: a plain server, no numbering).
        """
        offer = parseHeader(answer)
        old = self.stream
        if offer is not None and offer.token is not None and old is not None and offer.resumed:
            if offer.token == self.token:
                try:
                    return True, None, old.replay(offer.received)
                except ValueError as e:
                    _log.warn("txheartbeat: the server's resume answer is inconsistent ({why}); session lost", why=e)
        lost = None
        if old is not None:
            old.ended = True
            lost = old.unacked()
        if offer is None or offer.token is None:
            self.token = self.stream = None
        else:
            self.token, self.stream = offer.token, SessionStream(self.maxMessages, self.maxBytes)
        return False, lost, []

    def end(self) -> List[Message]:
        """Forget the session; return what the server never acknowledged."""
        stream, self.stream, self.token = self.stream, None, None
        if stream is None:
            return []
        stream.ended = True
        return stream.unacked()


class ISessionStore(Interface):
    """
    Where a server keeps its sessions, filed by :func:`tokenKey` (never by
    the token).  The default, :class:`MemorySessionStore`, keeps them in
    this process: they survive reconnects and ``restart()`` hints, not a
    restart of the process.
    """

    def get(key: bytes) -> Optional[ServerSession]:
        """The session filed under ``key``, or ``None``."""

    def add(session: ServerSession) -> None:
        """File ``session`` under ``session.key``."""

    def remove(session: ServerSession) -> None:
        """Forget ``session`` (no error if it is not there)."""

    def __len__() -> int:
        """How many sessions are kept."""

    def __iter__() -> Iterator[ServerSession]:
        """Every session kept."""


@implementer(ISessionStore)
class MemorySessionStore:
    """Sessions in a dict in this process (the default store)."""

    def __init__(self) -> None:
        self._sessions: Dict[bytes, ServerSession] = {}

    def get(self, key: bytes) -> Optional[ServerSession]:
        """The session filed under ``key``, or ``None``."""
        return self._sessions.get(key)

    def add(self, session: ServerSession) -> None:
        """File ``session`` under ``session.key``."""
        self._sessions[session.key] = session

    def remove(self, session: ServerSession) -> None:
        """Forget ``session`` (no error if it is not there)."""
        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]

    def __len__(self) -> int:
        return len(self._sessions)

    def __iter__(self) -> Iterator[ServerSession]:
        return iter(list(self._sessions.values()))


class ServerSession:
    """
    One client's session on the server, across its connections.

    ``protocol`` is the connection it is on (``None`` between connections);
    :meth:`send` works in both cases.  ``data`` is a dict for the
    application's own state of this client.
    """

    #: the store's key: the token's SHA-256
    key: bytes
    #: a short public name for logs (not the token)
    id: str
    protocol: Optional[HeartbeatServerProtocol] = None
    #: whether the client asked to resume a session this server did not know (unknown or expired)
    resumeRefused: bool = False
    #: how many times the client came back to this session
    resumes: int = 0
    _expiry: Optional[IDelayedCall] = None

    def __init__(self, token: str, stream: SessionStream) -> None:
        self._token = token
        self.key = tokenKey(token)
        self.id = sessionId(self.key)
        self.stream = stream
        self.data: Dict[str, Any] = {}

    def __repr__(self) -> str:  # never the token
        return f"<ServerSession {self.id} sent={self.stream.sent} received={self.stream.received}>"

    @property
    def address(self) -> str:
        """Where :meth:`HeartbeatServerFactory.sendTo` reaches this session: the hex of its key (not the token)."""
        return self.key.hex()

    @property
    def ended(self) -> bool:
        """Whether the session is over (closed by its client, expired or refused): it cannot resume."""
        return self.stream.ended

    @property
    def unacked(self) -> List[Message]:
        """What the client has not acknowledged, oldest first."""
        return self.stream.unacked()

    def send(self, data: Message) -> None:
        """
        Send to this client: at once on an open connection, else kept and
        sent when it resumes.

        :raises SendQueueFull: if the replay buffer is full.
        :raises NotConnected: once the session has ended or expired.
        """
        if self.ended:
            raise NotConnected(f"session {self.id} has ended; not sent")
        protocol = self.protocol
        payload, isBinary = encodeMessage(data)
        if protocol is not None and protocol.isOpen:
            protocol.sendMessage(payload, isBinary)
        else:
            self.stream.number(payload, isBinary)


class ServerSessions:
    """A server factory's sessions: the resume handshake, expiry and the store."""

    def __init__(
        self, factory: HeartbeatServerFactory, window: float, maxMessages: int, maxBytes: int, store: Any
    ) -> None:
        self.factory = factory
        self.window = window
        self.maxMessages = maxMessages
        self.maxBytes = maxBytes
        self.store: ISessionStore = store if store is not None else MemorySessionStore()
        #: the server is not listening (see :meth:`stop`)
        self.stopped = False

    def offer(self, offer: Offer) -> Tuple[ServerSession, bool, str]:
        """
        Answer a client's parsed request header: ``(session, resumed,
        response header)``.  Nothing changes until :meth:`attach`.
        """
        if offer.token is not None:
            session = self.store.get(tokenKey(offer.token))
            if session is not None and not session.ended and offer.received <= session.stream.sent:
                if offer.received >= session.stream.acked:
                    return session, True, formatHeader(session._token, session.stream.received, True)
        token = newToken()
        session = ServerSession(token, SessionStream(self.maxMessages, self.maxBytes))
        session.resumeRefused = offer.token is not None
        return session, False, formatHeader(token, 0, False)

    def attach(
        self, protocol: HeartbeatServerProtocol, session: ServerSession, resumed: bool, clientReceived: int
    ) -> List[Tuple[bytes, bool]]:
        """Put ``session`` on ``protocol``; return what to replay to the client, before anything else."""
        if session._expiry is not None:
            session._expiry.cancel()
            session._expiry = None
        old, session.protocol = session.protocol, protocol
        if old is not None and old is not protocol:
            # Still attached (a half-open connection the client gave up on): nothing
            # more from it may count, or the client's replay would be delivered twice.
            old.session = None
            old.superseded = True
            old.useSession(None)
            old.abort()
        if not resumed:
            self.store.add(session)
            return []
        return session.stream.replay(clientReceived)

    def announce(self, session: ServerSession, resumed: bool, replayed: int) -> None:
        """Log and count the session's start or resume, and call the factory's hook."""
        factory = self.factory
        if resumed:
            session.resumes += 1
            factory.resumedSessions += 1
            _log.info(
                "txheartbeat: session {id} resumed ({n} unacknowledged message(s) sent)", id=session.id, n=replayed
            )
            factory._sessionEvent("onSessionResumed", session)
            return
        factory.createdSessions += 1
        if session.resumeRefused:
            factory.refusedResumes += 1
            _log.info("txheartbeat: resume refused (unknown or expired session); new session {id}", id=session.id)
        factory._sessionEvent("onSessionCreated", session)

    def detach(self, protocol: HeartbeatServerProtocol, session: ServerSession) -> None:
        """
        The connection ended: keep the session for the window (not once the
        server stopped listening: it expires at once).
        """
        if session.protocol is not protocol:
            return
        session.protocol = None
        if session.ended:
            return
        if self.stopped:
            self._expired(session)
        else:
            session._expiry = self.factory.reactor.callLater(self.window, self._expire, session)

    def refused(self, protocol: HeartbeatServerProtocol, session: ServerSession, code: int) -> None:
        """``protocol`` was failed because the client sent a message refused with ``code``: the session ends now."""
        if session.protocol is protocol:
            session.protocol = None
        if not session.ended:
            _log.info(
                "txheartbeat: session {id} ends: the client sent a message refused with {code}",
                id=session.id,
                code=code,
            )
            self._expired(session)

    def close(self, session: ServerSession) -> None:
        """The client ended ``session`` for good (its close frame)."""
        if session.ended:
            return
        self.end(session)
        self.factory.closedSessions += 1
        _log.info("txheartbeat: session {id} closed by the client", id=session.id)
        self.factory._sessionEvent("onSessionClosed", session)

    def end(self, session: ServerSession) -> None:
        """Forget ``session``: it can no longer be resumed."""
        session.stream.ended = True
        if session._expiry is not None:
            session._expiry.cancel()
            session._expiry = None
        self.store.remove(session)

    def _expire(self, session: ServerSession) -> None:
        session._expiry = None  # (this is it firing)
        self._expired(session)

    def _expired(self, session: ServerSession) -> None:
        self.end(session)
        self._report(session)

    def _report(self, session: ServerSession) -> None:
        """Count, log and tell the factory (``onSessionExpired``) that ``session`` expired."""
        self.factory.expiredSessions += 1
        _log.info(
            "txheartbeat: session {id} expired ({n} message(s) never acknowledged)",
            id=session.id,
            n=len(session.unacked),
        )
        self.factory._sessionEvent("onSessionExpired", session)

    def stop(self) -> None:
        """
        The server stopped listening: sessions waiting for their client
        expire now (no client can come back); the ones still on an open
        connection carry on until it ends, then expire at once.
        """
        self.stopped = True
        for session in list(self.store):
            if session.protocol is None:
                self._expired(session)
