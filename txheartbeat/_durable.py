"""
Sessions kept in a networked store (Redis), so that they outlive the
process: a restart, a crash, or another worker behind the same balancer.

The rules (docs/sessions.md tells why each one):

- **persist, then send**: a server→client message is stored (numbered by
  the store) before its frame is written, so that a new owner can replay it;
- **persist, then acknowledge**: the count acknowledged to the client is
  stored first.  Before a batch of client messages (what one read brought)
  is delivered to the application, the store learns how far delivery may
  go (``seen``); after it, how far it went (``received``), and only then is
  it acknowledged.  A new owner flags the messages between the two as
  ``redelivered`` (the process that held the session may have delivered
  them before it died), never silently;
- **fencing**: a takeover bumps the session's epoch in the store; every
  later write of the previous owner is refused (``FENCED``), and it is told
  on the store's channel, closes its connection and forgets the session
  (``onSessionMoved``);
- **never a partial replay**: a resume the store cannot prove continuous
  (trimmed, expired, epoch changed) is refused, as with the memory store;
- a store that cannot be reached ends the sessions that needed it
  (``onSessionExpired`` with what was never acknowledged, the client told
  at its next connection), and new connections run plain until it is back.

This module knows the store only through :class:`IDurableSessionStore`;
``txheartbeat.stores`` implements it (the arrows point here, never back).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, NamedTuple, Optional, Tuple

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface

from ._errors import NotConnected, SendQueueFull, StoreUnavailable
from ._handler import Message, encodeMessage
from ._resume import (
    MemorySessionStore,
    Offer,
    ServerSession,
    ServerSessions,
    SessionStream,
    formatHeader,
    newToken,
    tokenKey,
)

if TYPE_CHECKING:  # pragma: no cover
    from ._server import HeartbeatServerFactory, HeartbeatServerProtocol

_log = Logger(namespace="txheartbeat")

#: the store may hold this many times the replay bounds: pushes from other
#: processes (numbered by the owner) and the owner's own sends are each bounded by them
_STORE_SLACK = 2


#: seconds a lease to deliver ahead of the store lasts (durability "batched"): a process
#: paused longer than this (SIGSTOP, GC) asks the store again before it delivers, and is
#: fenced if its session moved meanwhile.  A client notices a dead server no sooner than
#: its pongTimeout after the last bytes, so a takeover never falls within a lease unless a
#: client's dead-peer bound is shorter than this.
LEASE_TIME = 1.0

#: what :meth:`DurableSessions.offerLater` answers when the store cannot say whether a
#: resume took: the client is asked to try again later, with its token
RETRY = "retry later"


class StoreRefused(Exception):
    """The store refused a write: :attr:`code` is ``FENCED``, ``EXPIRED``, ``GAP``, ``FULL`` or ``EXISTS``."""

    def __init__(self, code: str, text: str = "") -> None:
        super().__init__(f"{code} {text}".strip())
        self.code = code


class Claimed(NamedTuple):
    """A session taken over: its new epoch, the counts and what the client lacks."""

    epoch: int
    #: client→server messages stored as received (acknowledged)
    received: int
    #: client→server messages the application may have been given
    seen: int
    #: messages pushed from elsewhere, waiting to be numbered
    waiting: int
    #: the server→client messages the client lacks, oldest first
    messages: List[Tuple[bytes, bool]]


class IDurableSessionStore(Interface):
    """
    A store that keeps sessions outside the process (see ``txheartbeat.stores``).
    Every method answers with a Deferred; a refusal fails it with
    :class:`StoreRefused`, an unreachable store with
    :class:`txheartbeat.StoreUnavailable`.
    """

    lead = Attribute(
        "How many client messages delivery may run ahead of what the store knows"
        " (0: stored before each batch is delivered, and after it: exact redelivery flags)"
    )

    def start() -> Deferred[None]:
        """Connect; fails with ``StoreUnavailable`` (saying where, never the password) if it cannot."""

    def stop() -> Deferred[None]:
        """Disconnect, once the writes sent have been answered."""

    def ensureStarted() -> None:
        """Start connecting unless :meth:`start` was called (a server factory calls it when it starts)."""

    def watch(
        takenOver: Callable[[bytes, int], None], waiting: Callable[[bytes], None], ready: Callable[[], None]
    ) -> None:
        """Be told of takeovers (key, new epoch), of pushes to a session (key), and each time it is reachable."""

    def touch(key: bytes, epoch: int, ttl: float) -> Deferred[None]:
        """Keep the session another ``ttl`` seconds (it is on a connection of its owner)."""

    def create(key: bytes, ttl: float) -> Deferred[int]:
        """Make a session (epoch 1), kept ``ttl`` seconds from each write."""

    def claim(key: bytes, clientReceived: int, ttl: float) -> Deferred[Claimed]:
        """Take the session over (a new epoch), dropping the ``clientReceived`` messages the client has."""

    def append(
        key: bytes, epoch: int, payload: bytes, isBinary: bool, maxMessages: int, maxBytes: int, ttl: float
    ) -> Deferred[int]:
        """Number and keep a server→client message; fires with its number."""

    def record(key: bytes, epoch: int, acked: int, received: int, seen: int, ttl: float) -> Deferred[None]:
        """Store what the client acknowledged, and the received and seen counts of its messages."""

    def take(
        key: bytes, epoch: int, maxMessages: int, maxBytes: int, ttl: float
    ) -> Deferred[Tuple[int, int, List[Tuple[bytes, bool]]]]:
        """Number the pushed messages that fit: ``(number of the first, how many still wait, messages)``."""

    def end(key: bytes, epoch: int) -> Deferred[None]:
        """Forget the session (closed by its client, or expired here)."""

    def push(key: bytes, payload: bytes, isBinary: bool, maxMessages: int, maxBytes: int) -> Deferred[None]:
        """Send to a session from anywhere: kept until its owner numbers it."""


class DurableSession(ServerSession):
    """A session whose state is in a networked store; this process owns it at :attr:`epoch`."""

    #: set once this process no longer holds the session (moved, ended or lost): no more writes
    gone = False
    _paused = False
    #: messages pushed from elsewhere that the claim found waiting (numbered once attached)
    _waiting = 0
    #: when the lease ahead of the store (durability "batched") runs out, on the reactor's clock
    _leaseUntil = 0.0

    def __init__(self, token: str, stream: SessionStream, sessions: DurableSessions, epoch: int, seen: int) -> None:
        super().__init__(token, stream)
        self.sessions = sessions
        self.epoch = epoch
        #: client→server messages the store knows may have been delivered
        self.seen = seen
        #: messages numbered up to this one may have been delivered by the previous owner
        self.redeliverUpTo = seen
        self._inflight: Deque[Tuple[bytes, bool]] = deque()  # sent to the store, not answered yet
        self._inflightBytes = 0
        #: claims of this session by this process in flight: sends wait for their outcome (a send
        #: made meanwhile with the old epoch would be refused, and must not be lost)
        self._claiming = 0
        self._waitingSends: Deque[Tuple[bytes, bool, bool]] = deque()
        #: messages pushed from elsewhere that a take could not fit yet
        self._waitingLeft = 0
        self._held: Deque[Tuple[bytes, bool]] = deque()  # received, waiting for the store's lease
        self._leasing = False
        self._taking = self._takeAgain = False
        #: messages given to :meth:`send` that the store refused after the session moved or was lost
        self.unsent: List[Message] = []

    @property
    def unacked(self) -> List[Message]:
        """
        What the client has not acknowledged, oldest first: messages not yet
        stored included, and, once the session is lost, the ones the store
        refused.
        """
        pending = [p if b else p.decode("utf-8") for p, b in self._inflight]
        pending += [p if b else p.decode("utf-8") for p, b, _ in self._waitingSends]
        return self.stream.unacked() + pending + (self.unsent if self.stream.ended else [])

    def send(self, data: Message) -> None:
        """
        Send to this client: stored first, then written on its connection
        (or replayed when it comes back, to whichever process).

        :raises SendQueueFull: if the replay bounds are reached.
        :raises NotConnected: once the session has ended or moved to another process
            (:meth:`HeartbeatServerFactory.sendTo` reaches it there).
        """
        self.submit(*encodeMessage(data))

    def submit(self, payload: bytes, isBinary: bool, limited: bool = True) -> None:
        """Number ``payload`` in the store, then write it (the path of every message this side sends)."""
        if self.gone or self.ended:
            where = "moved to another process (send with sendTo)" if self.gone and not self.ended else "ended"
            raise NotConnected(f"session {self.id} has {where}; not sent")
        stream = self.stream
        inflight = self._inflight
        if limited and (
            len(stream._buffer or ()) + len(inflight) + len(self._waitingSends) >= stream.maxMessages
            or stream.bufferedBytes + self._inflightBytes + len(payload) > stream.maxBytes
        ):
            raise SendQueueFull(
                f"the replay buffer is full ({stream.sent - stream.acked + len(inflight)} messages not yet "
                f"acknowledged by the peer; bounds {stream.maxMessages} messages, {stream.maxBytes} bytes): not sent"
            )
        if self._claiming:
            self._waitingSends.append((payload, isBinary, limited))
            return
        self._append(payload, isBinary, limited)

    def _append(self, payload: bytes, isBinary: bool, limited: bool) -> None:
        stream = self.stream
        inflight = self._inflight
        inflight.append((payload, isBinary))
        self._inflightBytes += len(payload)
        sessions = self.sessions
        bound = _STORE_SLACK if limited else 1 << 20
        d = sessions.durable.append(
            self.key,
            self.epoch,
            payload,
            isBinary,
            bound * stream.maxMessages,
            bound * stream.maxBytes,
            sessions.window,
        )
        d.addCallbacks(self._stored, self._notStored, errbackArgs=(self.epoch,))

    def _stored(self, number: int) -> None:
        payload, isBinary = self._inflight.popleft()
        self._inflightBytes -= len(payload)
        if self.gone:
            return
        self._number(number, payload, isBinary)

    def _number(self, number: int, payload: bytes, isBinary: bool) -> None:
        stream = self.stream
        if number != stream.sent:
            self.sessions.lost(self, f"the store numbered a message {number}, {stream.sent} expected")
            return
        stream.number(payload, isBinary, limited=False)
        protocol = self.protocol
        if protocol is not None and protocol.isOpen:
            protocol.replay([(payload, isBinary)])
            stream.written = stream.sent

    def _notStored(self, failure: Failure, epoch: int) -> None:
        payload, isBinary = self._inflight.popleft()
        self._inflightBytes -= len(payload)
        self.unsent.append(payload if isBinary else payload.decode("utf-8"))
        self.sessions.failed(self, failure, epoch)

    def claiming(self) -> None:
        """This process claims the session again (its client came back here): sends wait for the outcome."""
        self._claiming += 1

    def claimed(self, epoch: int, stream: SessionStream, seen: int) -> None:
        """The claim took: the same object carries on at ``epoch`` (its ``data`` kept); waiting sends go out first."""
        self._claiming -= 1
        self.epoch = epoch
        self.stream = stream
        self.seen = self.redeliverUpTo = seen
        self._held.clear()
        self._leasing = False
        self._flushWaitingSends()

    def notClaimed(self) -> None:
        """The claim was refused or failed: the session carries on as it was."""
        self._claiming -= 1
        self._flushWaitingSends()

    def _flushWaitingSends(self) -> None:
        waiting = self._waitingSends
        while waiting and not self._claiming and not self.gone:
            payload, isBinary, limited = waiting.popleft()
            self._append(payload, isBinary, limited)

    # Client→server: deliver within the lease, acknowledge what is stored ----------

    def inbound(self, protocol: HeartbeatServerProtocol, data: bytes, isBinary: bool) -> None:
        """
        A data message from the client: held (reading paused) until the store
        knows it may be delivered, then delivered with the rest of its batch;
        delivered at once if a previous owner may have delivered it already
        (flagged ``redelivered``).
        """
        if self.gone:
            return  # (nothing counts any more: never acknowledged, the client sends it again)
        stream = self.stream
        if (
            self._held
            or stream.received >= self.seen
            or (
                # A lease ahead (durability "batched") lasts LEASE_TIME: a process that was paused
                # longer asks the store again (and is fenced if its session moved meanwhile).
                stream.received >= self.redeliverUpTo and self.sessions.factory.reactor.seconds() >= self._leaseUntil
            )
        ):
            self._held.append((data, isBinary))
            if not self._paused:
                self._paused = True
                protocol.transport.pauseProducing()  # what is held is bounded by what one read brought
            self._extend(protocol)
            return
        self._deliver(protocol, data, isBinary)

    def _deliver(self, protocol: HeartbeatServerProtocol, data: bytes, isBinary: bool, record: bool = True) -> None:
        stream = self.stream
        # Counted first: an onMessage that raises still received it (else a resume would repeat it).
        due = stream.delivered(len(data))
        flagged = stream.received <= self.redeliverUpTo
        if flagged:
            protocol.redelivered = True
            self.sessions.factory.redeliveredMessages += 1
        try:
            protocol.deliver(data, isBinary)
        finally:
            if flagged:
                del protocol.redelivered
            if record and (due or (flagged and stream.received == self.redeliverUpTo)):
                self.record(protocol)

    def _extend(self, protocol: HeartbeatServerProtocol, again: bool = False) -> None:
        if self.gone:
            self._unpause(protocol)
            return
        if self._leasing:
            return
        self._leasing = True
        target = self.stream.received + len(self._held) + self.sessions.durable.lead
        until = self.sessions.factory.reactor.seconds() + LEASE_TIME  # (from the request: conservative)
        self._write(target).addCallback(self._extended, protocol, target, until, again)

    def _unpause(self, protocol: HeartbeatServerProtocol) -> None:
        if self._paused:
            self._paused = False
            if protocol.transport is not None:
                protocol.transport.resumeProducing()

    def deliverHeld(self, protocol: HeartbeatServerProtocol) -> None:
        """The client ends the session (its close frame): what it sent before is delivered now, lease or not."""
        held = self._held
        while held and protocol.session is self:
            self._deliver(protocol, *held.popleft(), record=False)
        held.clear()

    def _extended(self, ok: bool, protocol: HeartbeatServerProtocol, target: int, until: float, again: bool) -> None:
        self._leasing = False
        if not ok or self.gone:
            self._unpause(protocol)
            return
        if self.sessions.factory.reactor.seconds() >= until and self._held and not again:
            # Answered, but read only after LEASE_TIME (this process was paused): the session may
            # have moved meanwhile. Asked once more: a moved session is fenced, never delivered
            # here (once: a store that is merely slow must not stop delivery).
            self._extend(protocol, again=True)
            return
        self.seen = max(self.seen, target)
        self._leaseUntil = until
        held = self._held
        stream = self.stream
        before = stream.received
        while held and stream.received < self.seen and protocol.session is self:
            self._deliver(protocol, *held.popleft())
        exact = not self.sessions.durable.lead
        if exact and stream.received != before and stream.ackSent != stream.received and protocol.session is self:
            self.record(protocol)  # the batch is delivered: store how far, then acknowledge it
        if held:
            if protocol.session is self:
                self._extend(protocol)
            return
        self._unpause(protocol)

    def record(self, protocol: Optional[HeartbeatServerProtocol]) -> None:
        """Store the counts; then acknowledge to the client on ``protocol`` (``None``: only trim the store)."""
        stream = self.stream
        value = stream.received
        if protocol is not None:
            stream.ackSent = value  # (told, or about to be: no second acknowledgement is due meanwhile)
            stream._inBytes = 0
        d = self._write(self.seen)
        if protocol is not None:
            d.addCallback(self._recorded, protocol, value)

    def _recorded(self, ok: bool, protocol: HeartbeatServerProtocol, value: int) -> None:
        if ok and not self.gone and protocol.session is self and protocol.isOpen:
            protocol.sendAck(value)

    def _write(self, seen: int) -> Deferred[bool]:
        """Store acked/received/seen; fires ``True`` once stored (``False`` if refused: the session is then handled)."""
        if self.gone:
            return succeed(False)
        stream = self.stream
        received = stream.received
        epoch = self.epoch
        d = self.sessions.durable.record(self.key, epoch, stream.acked, received, seen, self.sessions.window)

        def stored(_: object) -> bool:
            if self.epoch == epoch and (stream.durable is None or stream.durable < received):
                stream.durable = received
            return self.epoch == epoch

        def refused(failure: Failure) -> bool:
            self.sessions.failed(self, failure, epoch)
            return False

        return d.addCallbacks(stored, refused)

    # Pushed from elsewhere ------------------------------------------------------

    def take(self) -> None:
        """Number what was pushed to the session (announced on the store's channel)."""
        if self._taking:
            self._takeAgain = True
            return
        if self.gone:
            return
        self._taking = True
        stream = self.stream
        sessions = self.sessions
        d = sessions.durable.take(self.key, self.epoch, stream.maxMessages, stream.maxBytes, sessions.window)
        d.addCallbacks(self._taken, self._notTaken, callbackArgs=(stream.acked,), errbackArgs=(self.epoch,))

    def _taken(self, answer: Tuple[int, int, List[Tuple[bytes, bool]]], ackedBefore: int) -> None:
        self._taking = False
        first, left, messages = answer
        self._waitingLeft = left
        if left and self.stream.acked > ackedBefore:
            self._takeAgain = True  # (the client made room while the take was under way)
        for offset, (payload, isBinary) in enumerate(messages):
            if self.gone:
                return
            self._number(first + offset, payload, isBinary)
        if self._takeAgain:
            self._takeAgain = False
            self.take()

    def _notTaken(self, failure: Failure, epoch: int) -> None:
        self._taking = False
        self.sessions.failed(self, failure, epoch)

    def roomMade(self) -> None:
        """The client acknowledged messages: pushed ones that did not fit may now."""
        if self._waitingLeft and self.protocol is not None:
            self.take()


class DurableSessions(ServerSessions):
    """A server factory's sessions, kept in an :class:`IDurableSessionStore` (this process holds the ones it serves)."""

    def __init__(
        self, factory: HeartbeatServerFactory, window: float, maxMessages: int, maxBytes: int, store: Any
    ) -> None:
        super().__init__(factory, window, maxMessages, maxBytes, MemorySessionStore())
        self.durable = store
        store.watch(self._takenOver, self._waiting, self._storeReady)
        self._byKey: Dict[bytes, DurableSession] = {}
        #: sessions ended here while the store was unreachable: ended there once it is back
        self._toEnd: Dict[bytes, int] = {}
        # The store forgets a session a resume window after its last write: sessions on a
        # connection (which may write nothing for long) are refreshed three times a window.
        self._touch = LoopingCall(self._touchAttached)
        self._touch.clock = factory.reactor

    def offerLater(self, offer: Offer) -> Deferred[Optional[Tuple[ServerSession, bool, str]]]:
        """
        Answer a client's request header: ``(session, resumed, response
        header)``, or ``None`` when the store cannot be reached (the
        connection then runs plain, and the client learns its session is lost).
        """
        token = offer.token
        if token is None:
            return self._create(False)
        key = tokenKey(token)
        if key in self._toEnd:  # (ended and reported here while the store was down: it ends there first)
            self._end(key, self._toEnd.pop(key))
        local = self._byKey.get(key)
        if local is not None:
            local.claiming()  # (its client is back here: the same object carries on)
        d = self.durable.claim(key, offer.received, self.window)

        def claimed(claim: Claimed) -> Tuple[ServerSession, bool, str]:
            stream = SessionStream.restored(
                self.maxMessages, self.maxBytes, offer.received, claim.received, claim.messages
            )
            if local is not None and self._byKey.get(key) is local and not local.gone:
                protocol, local.protocol = local.protocol, None
                if protocol is not None:
                    protocol.letGo()  # (a half-open connection the client gave up on)
                local.claimed(claim.epoch, stream, claim.seen)
                session = local
            else:
                if local is not None:
                    local.notClaimed()
                self._retire(key)
                session = DurableSession(token, stream, self, claim.epoch, claim.seen)
            session._waiting = claim.waiting
            return session, True, formatHeader(token, claim.received, True)

        def notClaimed(failure: Failure) -> Any:
            if local is not None:
                local.notClaimed()
            if failure.check(StoreRefused):
                return self._create(True)
            # Whether the claim ran is unknown: the client is asked to come back with its token.
            self._unreachable(failure, "a resume")
            return RETRY

        return d.addCallbacks(claimed, notClaimed)

    def _create(self, refused: bool) -> Deferred[Any]:
        token = newToken()
        d = self.durable.create(tokenKey(token), self.window)

        def created(epoch: int) -> Tuple[ServerSession, bool, str]:
            session = DurableSession(token, SessionStream(self.maxMessages, self.maxBytes), self, epoch, 0)
            session.stream.durable = 0
            session.resumeRefused = refused
            return session, False, formatHeader(token, 0, False)

        return d.addCallbacks(created, self._unreachable, errbackArgs=("a new session",))

    def _unreachable(self, failure: Failure, what: str) -> None:
        _log.warn(
            "txheartbeat: {what} could not be stored ({why}): the connection runs without a session",
            what=what,
            why=failure.getErrorMessage(),
        )
        self.factory.storeFailures += 1

    def offer(self, offer: Offer) -> Tuple[ServerSession, bool, str]:  # pragma: no cover - the server asks offerLater
        raise TypeError("a durable store answers offers asynchronously (offerLater)")

    def attach(
        self, protocol: HeartbeatServerProtocol, session: ServerSession, resumed: bool, clientReceived: int
    ) -> List[Tuple[bytes, bool]]:
        """Put the claimed or new ``session`` on ``protocol``; return what to replay (what the claim found)."""
        assert isinstance(session, DurableSession)
        self._adopt(session)
        session.protocol = protocol
        replay = session.stream.replay(clientReceived) if resumed else []
        if session._waiting:
            session._waiting = 0
            session.take()
        return replay

    def _adopt(self, session: DurableSession) -> None:
        if session._expiry is not None:
            session._expiry.cancel()
            session._expiry = None
        self._byKey[session.key] = session
        self.store.add(session)
        if not self._touch.running:
            self._touch.start(self.window / 3, now=False)

    def _touchAttached(self) -> None:
        attached = [s for s in self._byKey.values() if s.protocol is not None and not s.gone]
        if not attached:
            self._touch.stop()
            return
        for session in attached:
            epoch = session.epoch
            d = self.durable.touch(session.key, epoch, self.window)
            d.addErrback(lambda f, s=session, e=epoch: self.failed(s, f, e))

    def orphan(self, session: ServerSession) -> None:
        """A session was claimed or made for a connection that closed before it opened: kept for the window."""
        assert isinstance(session, DurableSession)
        self._adopt(session)
        self.detach(None, session)  # type: ignore[arg-type]

    def detach(self, protocol: HeartbeatServerProtocol, session: ServerSession) -> None:
        """The connection ended: keep the session for the window (released, not expired, once the server stopped)."""
        if session.protocol is not protocol:
            return
        session.protocol = None
        assert isinstance(session, DurableSession)
        if session.ended or session.gone:
            return
        if self.stopped:
            self._release(session)
        else:
            session._expiry = self.factory.reactor.callLater(self.window, self._expire, session)

    def _expire(self, session: ServerSession) -> None:
        assert isinstance(session, DurableSession)
        session._expiry = None
        d = self.durable.end(session.key, session.epoch)

        def ended(result: object) -> None:
            if isinstance(result, Failure) and getattr(result.value, "code", None) == "FENCED":
                self._moved(session)
            elif not session.gone:  # (ended in the store, gone from it already, or to be ended once it is back)
                if isinstance(result, Failure) and result.check(StoreUnavailable):
                    self._toEnd[session.key] = session.epoch
                self._forget(session)
                session.stream.ended = True
                self._report(session)

        d.addBoth(ended)

    def end(self, session: ServerSession) -> None:
        """Forget ``session`` here and in the store: it can no longer be resumed."""
        assert isinstance(session, DurableSession)
        first = not session.gone
        self._forget(session)
        session.stream.ended = True
        if first:
            self._end(session.key, session.epoch)

    def _end(self, key: bytes, epoch: int) -> None:
        def notEnded(failure: Failure) -> None:
            if failure.check(StoreUnavailable):
                self._toEnd[key] = epoch  # (ended once the store is back: no resume may find it)

        self.durable.end(key, epoch).addErrback(notEnded)

    def _storeReady(self) -> None:
        """The store is reachable again: end there what ended here meanwhile (before any client resumes it)."""
        toEnd, self._toEnd = self._toEnd, {}
        for key, epoch in toEnd.items():
            self._end(key, epoch)

    def close(self, session: ServerSession) -> None:
        """The client ended ``session`` (its close frame): what it sent before is delivered first."""
        if isinstance(session, DurableSession) and session.protocol is not None and not session.gone:
            session.deliverHeld(session.protocol)
        super().close(session)

    def _forget(self, session: DurableSession) -> None:
        session.gone = True
        if session._expiry is not None:
            session._expiry.cancel()
            session._expiry = None
        session._held.clear()  # (never acknowledged: the client sends them again, or is told they are lost)
        if session._paused:
            session._paused = False
            protocol = session.protocol
            if protocol is not None and protocol.transport is not None:
                protocol.transport.resumeProducing()  # (it still has a close handshake to read)
        if self._byKey.get(session.key) is session:
            del self._byKey[session.key]
        self.store.remove(session)

    def _release(self, session: DurableSession) -> None:
        """This process stops serving ``session``: it stays in the store for the window, for the next owner."""
        self._forget(session)
        self.factory.releasedSessions += 1

    def _retire(self, key: bytes) -> None:
        """A session of this process was claimed again (its client came back here): the old object lets go."""
        old = self._byKey.get(key)
        if old is not None:
            self._forget(old)
            protocol, old.protocol = old.protocol, None
            if protocol is not None:
                protocol.letGo()

    def handOver(self, session: ServerSession) -> Deferred[None]:
        """
        Before a planned close (``restart``): store the session's final
        counts once every write made for it is answered (the store answers in
        order), then stop serving it here, so that the client's next
        connection, to any process, finds it whole.
        """
        if not isinstance(session, DurableSession) or session.gone:
            return succeed(None)
        return session._write(session.seen).addCallback(lambda _: self._release(session) if not session.gone else None)

    def stop(self) -> None:
        """The server stopped listening: sessions waiting for their client are released to the store (not expired)."""
        self.stopped = True
        if self._touch.running:
            self._touch.stop()
        for session in list(self.store):
            assert isinstance(session, DurableSession)
            if session.protocol is None:
                self._release(session)

    # What the store tells -------------------------------------------------------

    def _takenOver(self, key: bytes, epoch: int) -> None:
        session = self._byKey.get(key)
        # (while this process claims it, the claim's answer settles it; a later write is fenced if need be)
        if session is not None and session.epoch < epoch and not session._claiming:
            self._moved(session)

    def _waiting(self, key: bytes) -> None:
        session = self._byKey.get(key)
        if session is not None and session.protocol is not None:
            session.take()

    def failed(self, session: DurableSession, failure: Failure, epoch: int) -> None:
        """A write made at ``epoch`` failed: moved (fenced), or lost (expired, refused, store unreachable)."""
        if session.gone or epoch != session.epoch:
            return  # (a write of before this process claimed the session again: the claim settled it)
        if getattr(failure.value, "code", None) == "FENCED":
            self._moved(session)
            return
        if failure.check(StoreUnavailable):
            self._toEnd[session.key] = epoch  # (reported lost here: ended there once it is back)
        self.lost(session, failure.getErrorMessage())

    def _moved(self, session: DurableSession) -> None:
        if session.gone:
            return
        self._forget(session)
        protocol, session.protocol = session.protocol, None
        _log.info("txheartbeat: session {id} was taken over by another process", id=session.id)
        self.factory.movedSessions += 1
        if protocol is not None:
            protocol.letGo()
        self.factory._sessionEvent("onSessionMoved", session)

    def lost(self, session: DurableSession, why: str) -> None:
        """The store cannot keep ``session``: it ends (``onSessionExpired``), its connection closes (1011)."""
        if session.gone:
            return
        self._forget(session)
        session.stream.ended = True
        protocol, session.protocol = session.protocol, None
        _log.warn("txheartbeat: session {id} lost: the store refused or failed ({why})", id=session.id, why=why)
        self.factory.lostSessions += 1
        if protocol is not None:
            protocol.sessionLost()
        self._report(session)

    # Sending from anywhere --------------------------------------------------------

    def sendTo(self, address: str, data: Message) -> Deferred[None]:
        """Send to the session at ``address`` wherever its client is (see :meth:`HeartbeatServerFactory.sendTo`)."""
        key = _addressKey(address)
        payload, isBinary = encodeMessage(data)
        return self.durable.push(key, payload, isBinary, self.maxMessages, self.maxBytes)


def _addressKey(address: str) -> bytes:
    try:
        key = bytes.fromhex(address)
    except (TypeError, ValueError):
        key = b""
    if len(key) != 32:
        raise ValueError(f"a session address is the 64 hex digits of ServerSession.address, got {address!r:.80}")
    return key


def sendToMemory(sessions: ServerSessions, address: str, data: Message) -> Deferred[None]:
    """:meth:`HeartbeatServerFactory.sendTo` with the in-process store: the session must be in this process."""
    session = sessions.store.get(_addressKey(address))
    if session is None or session.ended:
        return fail(NotConnected(f"no session {address[:12]} in this process (ended, expired, or never made here)"))
    try:
        session.send(data)
    except Exception as e:
        return fail(e)
    return succeed(None)


__all__ = ["IDurableSessionStore", "StoreRefused", "Claimed", "DurableSession", "DurableSessions", "StoreUnavailable"]
