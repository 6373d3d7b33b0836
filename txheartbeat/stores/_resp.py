"""
A small Redis client for Twisted: RESP2 over one connection, commands
pipelined and answered in order, and a subscriber connection.

Why not txredisapi or redis-py: redis-py's client is asyncio (it would
force the asyncio reactor on every user), and txredisapi imports the global
reactor when it is imported, which installs the default reactor before an
application can choose another (``--reactor=asyncio``, a GUI reactor).  The
store needs five commands and pub/sub; this is them, on the injected
reactor, through an endpoint (``ClientService`` reconnects).

A command sent while there is no connection fails at once with
:class:`txheartbeat.StoreUnavailable` (never queued for later: a session
must learn now that it cannot be made durable), and so does every command
still waiting for its reply when the connection is lost.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Deque, List, Optional, Sequence, Tuple, Union

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from .._errors import StoreUnavailable
from ._redisurl import RedisAddress

_log = Logger(namespace="txheartbeat")

Word = Union[bytes, str, int]
Reply = Any  # bytes, int, None, a list of replies, or a ReplyError
#: seconds of a last look, with the reactor running, before a late reply is blamed on Redis
_SECOND_LOOK = 0.25
#: a reply this long or a nesting this deep is a broken server, not data
_MAX_BULK = 512 * 1024 * 1024


class ReplyError(Exception):
    """Redis answered a command with an error; :attr:`code` is its first word (``FENCED``, ``NOSCRIPT``...)."""

    @property
    def code(self) -> str:
        return str(self.args[0]).split(" ", 1)[0]


class ProtocolViolation(Exception):
    """The server sent something that is not RESP2."""


def encode(words: Sequence[Word]) -> bytes:
    """One command in RESP2 (an array of bulk strings)."""
    parts = [b"*%d\r\n" % len(words)]
    for word in words:
        data = word if isinstance(word, bytes) else str(word).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def parse(buffer: bytes, at: int) -> Optional[Tuple[Reply, int]]:
    """The reply that starts at ``at`` and where the next one starts, or ``None`` if it is not all here yet."""
    end = buffer.find(b"\r\n", at)
    if end < 0:
        return None
    kind, line = buffer[at : at + 1], buffer[at + 1 : end]
    after = end + 2
    if kind == b"+":
        return line, after
    if kind == b"-":
        return ReplyError(line.decode("utf-8", "replace")), after
    if kind == b":":
        return int(line), after
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, after
        if size > _MAX_BULK:
            raise ProtocolViolation(f"a bulk string of {size} bytes")
        if len(buffer) < after + size + 2:
            return None
        return buffer[after : after + size], after + size + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, after
        items: List[Reply] = []
        for _ in range(count):
            parsed = parse(buffer, after)
            if parsed is None:
                return None
            item, after = parsed
            items.append(item)
        return items, after
    raise ProtocolViolation(f"a reply starting with {kind!r}")


class RespProtocol(Protocol):
    """One connection: :meth:`call` returns a Deferred per command, fired in order; pushes go to :attr:`onPush`."""

    transport: Any
    #: called with each pub/sub message (``[b"message", channel, data]``) on a subscriber connection
    onPush: Optional[Callable[[List[Reply]], None]] = None

    #: the reactor (for the reply timeout) and the seconds a reply may take (``None``: forever)
    clock: Any = None
    timeout: Optional[float] = None
    _timer: Any = None
    _due = 0.0
    _answered = 0  # replies read so far
    _answeredAtCheck = -1

    def __init__(self) -> None:
        self._waiting: Deque[Deferred[Reply]] = deque()
        self._sentAt: Deque[float] = deque()
        self._buffer = b""
        self.connected = False
        self._lost: List[Deferred[None]] = []

    def connectionMade(self) -> None:
        self.connected = True

    def call(self, *words: Word) -> Deferred[Reply]:
        """Send one command; the Deferred fires with its reply or fails with :class:`ReplyError`."""
        if not self.connected:
            return fail(StoreUnavailable("the connection to Redis is closed"))
        d: Deferred[Reply] = Deferred()
        self._waiting.append(d)
        if self.timeout is not None:
            self._sentAt.append(self.clock.seconds())
            if self._timer is None:
                self._due = self.clock.seconds() + self.timeout
                self._timer = self.clock.callLater(self.timeout, self._overdue)
        self.transport.write(encode(words))
        return d

    def _overdue(self) -> None:
        self._timer = None
        if not self._sentAt or not self.connected:
            return
        now = self.clock.seconds()
        assert self.timeout is not None
        if now - self._due > min(1.0, self.timeout / 2):
            # This check itself ran late: this process was stalled (SIGSTOP, a long GC, a busy
            # reactor), not Redis; the replies may be in the socket unread. Redis gets a fresh timeout.
            self._sentAt = deque(now for _ in self._sentAt)
        late = now - self._sentAt[0]
        if late < self.timeout:
            self._due = now + self.timeout - late
            self._timer = self.clock.callLater(self.timeout - late, self._overdue)
            return
        if self._answeredAtCheck != self._answered:
            # Answers came since the last look (or this is the first): this process may just have
            # woken up with replies unread. One more short look before Redis is blamed.
            self._answeredAtCheck = self._answered
            self._due = now + _SECOND_LOOK
            self._timer = self.clock.callLater(_SECOND_LOOK, self._overdue)
            return
        _log.warn("txheartbeat: Redis did not answer within {t:g} s: reconnecting", t=self.timeout)
        self.transport.abortConnection()

    def dataReceived(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        at = 0
        try:
            while at < len(buffer):
                parsed = parse(buffer, at)
                if parsed is None:
                    break
                reply, at = parsed
                self._answer(reply)
        except (ProtocolViolation, ValueError) as e:
            _log.warn("txheartbeat: Redis sent what is not RESP2 ({why}); reconnecting", why=e)
            self._buffer = b""
            self.transport.abortConnection()
            return
        self._buffer = buffer[at:]

    def _answer(self, reply: Reply) -> None:
        if self.onPush is not None and isinstance(reply, list) and reply and reply[0] in (b"message", b"pmessage"):
            try:
                self.onPush(reply)
            except Exception:
                _log.failure("txheartbeat: a Redis message handler raised")
            return
        if not self._waiting:
            return  # (a subscription's confirmation)
        d = self._waiting.popleft()
        self._answered += 1
        if self._sentAt:
            self._sentAt.popleft()
            if not self._sentAt and self._timer is not None:
                self._timer.cancel()  # (nothing waits: no timer outlives what it watches)
                self._timer = None
        if isinstance(reply, ReplyError):
            d.errback(reply)
        else:
            d.callback(reply)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.connected = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._sentAt.clear()
        waiting, self._waiting = self._waiting, deque()
        why = reason.getErrorMessage() if reason is not None else "closed"
        for d in waiting:
            d.errback(StoreUnavailable(f"the connection to Redis was lost ({why}) before its answer"))
        lost, self._lost = self._lost, []
        for w in lost:
            w.callback(None)

    def whenLost(self) -> Deferred[None]:
        """Fires once the connection is closed."""
        d: Deferred[None] = Deferred()
        if self.connected:
            self._lost.append(d)
        else:
            d.callback(None)
        return d


class _RespFactory(Factory):
    # (set here: ClientService hands out a proxy of the protocol)
    def __init__(self, onPush: Optional[Callable[[List[Reply]], None]], clock: Any, timeout: Optional[float]) -> None:
        self.onPush = onPush
        self.clock = clock
        self.timeout = timeout

    def buildProtocol(self, addr: Any) -> RespProtocol:
        protocol = RespProtocol()
        protocol.factory = self
        protocol.onPush = self.onPush
        protocol.clock, protocol.timeout = self.clock, self.timeout
        return protocol


class RedisLink:
    """
    A connection to one Redis server kept up by a ``ClientService`` on the
    injected reactor: logged in, the database selected and ``prepare`` run
    before anyone may use it.

    :param prepare: called with each new connection (a ``RespProtocol``)
        before it is handed out; may return a Deferred (e.g. loading scripts,
        subscribing).
    """

    def __init__(
        self,
        reactor: Any,
        address: RedisAddress,
        prepare: Callable[[RespProtocol], Any],
        onPush: Optional[Callable[[List[Reply]], None]] = None,
        name: str = "commands",
        timeout: Optional[float] = None,
    ) -> None:
        self.address = address
        self._prepare = prepare
        self.name = name
        self.protocol: Optional[RespProtocol] = None
        #: how many times a connection was made ready (1 at start; more after Redis came back)
        self.connections = 0
        self._downSince: Optional[float] = None
        self._reactor = reactor
        factory = _RespFactory(onPush, reactor, timeout)
        endpoint = HostnameEndpoint(reactor, address.host, address.port, timeout=5)
        self._service = ClientService(
            endpoint,
            factory,
            retryPolicy=backoffPolicy(initialDelay=0.1, maxDelay=2.0),
            clock=reactor,
            prepareConnection=self._ready,  # type: ignore[arg-type]
        )

    def start(self) -> None:
        self._service.startService()

    def stop(self) -> Deferred[None]:
        self.protocol = None
        return self._service.stopService()  # type: ignore[no-any-return]

    def whenReady(self, failAfterFailures: Optional[int] = None) -> Deferred[RespProtocol]:
        """The next ready connection (fails after that many failed attempts, if given)."""
        return self._service.whenConnected(failAfterFailures=failAfterFailures)  # type: ignore[return-value]

    def _ready(self, protocol: RespProtocol) -> Deferred[None]:
        d: Deferred[Any] = Deferred()
        d.callback(None)
        address = self.address
        if address.password is not None:
            login: Tuple[Word, ...] = ("AUTH", address.password)
            if address.username is not None:
                login = ("AUTH", address.username, address.password)
            d.addCallback(lambda _: protocol.call(*login))
        if address.db:
            d.addCallback(lambda _: protocol.call("SELECT", address.db))
        d.addCallback(lambda _: self._prepare(protocol))

        def ready(_: object) -> None:
            self.protocol = protocol
            self.connections += 1
            if self.connections > 1:
                _log.info(
                    "txheartbeat: Redis {address} reachable again ({name})", address=address.redacted, name=self.name
                )
            protocol.whenLost().addCallback(self._lost, protocol)

        def refused(failure: Failure) -> Failure:
            # A wrong password or database: said once per attempt, without the password.
            _log.warn(
                "txheartbeat: Redis {address} refused the connection: {why}",
                address=address.redacted,
                why=failure.getErrorMessage(),
            )
            protocol.transport.abortConnection()
            return failure

        return d.addCallbacks(ready, refused)

    def _lost(self, _: object, protocol: RespProtocol) -> None:
        if self.protocol is protocol:
            self.protocol = None
            if self._service.running:
                _log.warn(
                    "txheartbeat: lost the connection to Redis {address} ({name})",
                    address=self.address.redacted,
                    name=self.name,
                )

    def call(self, *words: Word) -> Deferred[Reply]:
        """Send one command on the ready connection, or fail at once with :class:`StoreUnavailable`."""
        protocol = self.protocol
        if protocol is None or not protocol.connected:
            return fail(StoreUnavailable(f"Redis {self.address.redacted} is not reachable"))
        return protocol.call(*words)
