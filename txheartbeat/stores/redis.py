"""
:class:`RedisSessionStore`: resumable sessions kept in Redis, so that they
outlive the process (a deploy, a crash) and are shared by workers.

    from txheartbeat import HeartbeatServerFactory
    from txheartbeat.stores import RedisSessionStore

    store = RedisSessionStore("redis://127.0.0.1:6379/0", reactor=reactor)
    await store.start()              # fails at once, saying where, if Redis is down
    factory = HeartbeatServerFactory(resume=True, sessionStore=store, reactor=reactor)

See ``docs/sessions.md`` for the rules (persist then send, persist then
acknowledge, fencing) and what each durability costs.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred, DeferredList
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .._durable import Claimed, IDurableSessionStore, StoreRefused
from .._errors import NotConnected, SendQueueFull, StoreUnavailable
from .._resume import ACK_EVERY
from ._redisscripts import SCRIPTS
from ._redisurl import parseRedisURL
from ._resp import RedisLink, ReplyError, RespProtocol

_log = Logger(namespace="txheartbeat")

#: the channel takeovers and pushes are announced on (one subscription per process)
CHANNEL = "txhb:events"
_KIND = {b"t": False, b"b": True}
#: durability -> how far delivery may run ahead of the store (messages)
DURABILITY = {"write": 0, "batched": ACK_EVERY}


def _keys(key: bytes) -> Tuple[str, str, str]:
    d = key.hex()
    return f"txhb:{{{d}}}:meta", f"txhb:{{{d}}}:out", f"txhb:{{{d}}}:in"


def _message(stored: bytes) -> Tuple[bytes, bool]:
    return stored[1:], _KIND.get(stored[:1], False)


def _stored(payload: bytes, isBinary: bool) -> bytes:
    return (b"b" if isBinary else b"t") + payload


@implementer(IDurableSessionStore)
class RedisSessionStore:
    """
    Sessions in one Redis server (5.0 or later; Debian's ``redis-server``).

    :param url: ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``; the
        password is used to log in and never shown (logs, errors, ``repr``).
    :param durability: ``"write"`` (the default): client messages are
        stored as received after each batch, before they are acknowledged,
        and the store learns how far delivery may go before each batch is
        delivered: after a ``kill -9`` only the messages of the batch being
        delivered come again, flagged.  ``"batched"``: both are stored every
        32 messages (or 32 KiB, or at the client's heartbeat): fewer writes,
        and after a ``kill -9`` up to 32 more messages per session come
        again, all flagged ``redelivered``.  Nothing is lost in either mode;
        server→client messages are always stored before they are sent.
    :param replyTimeout: seconds Redis may take to answer before its
        connection is dropped (every write waiting then fails with
        :class:`txheartbeat.StoreUnavailable`, and the connection is made
        again): a Redis that stops answering (paused, partitioned) is never
        a hang.
    :param reactor: the reactor every connection and timer runs on
        (default: the global one, looked up when needed).

    Two connections: one for commands (pipelined: a session's writes are
    answered in the order they were made), one subscribed to the channel
    that announces takeovers and messages sent from other processes.  Both
    reconnect by themselves; while the command connection is down every
    write fails at once with :class:`txheartbeat.StoreUnavailable`.
    """

    def __init__(self, url: str, *, durability: str = "write", replyTimeout: float = 5.0, reactor: Any = None) -> None:
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {', '.join(map(repr, DURABILITY))}, got {durability!r}")
        self.address = parseRedisURL(url)
        self.durability = durability
        #: how many client messages delivery may run ahead of the store (see IDurableSessionStore)
        self.lead = DURABILITY[durability]
        if reactor is None:
            from twisted.internet import reactor as globalReactor

            reactor = globalReactor
        self.reactor = reactor
        self._shas: Dict[str, bytes] = {}
        self._takenOver: Optional[Callable[[bytes, int], None]] = None
        self._waiting: Optional[Callable[[bytes], None]] = None
        self._ready: Optional[Callable[[], None]] = None
        self._commands = RedisLink(reactor, self.address, self._loadScripts, name="commands", timeout=replyTimeout)
        self._events = RedisLink(
            reactor, self.address, self._subscribe, onPush=self._announced, name="events", timeout=replyTimeout
        )
        self._started = False
        #: commands sent (one per write; a benchmark's count of Redis round trips per message)
        self.commands = 0

    def __repr__(self) -> str:
        return f"<RedisSessionStore {self.address.redacted}>"

    # Connections --------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """
        Connect both connections; fires once they are ready, or fails with
        :class:`txheartbeat.StoreUnavailable` (saying where, never the
        password) if the first attempt fails.  Afterwards they reconnect by
        themselves.
        """
        self.ensureStarted()
        ready = [link.whenReady(failAfterFailures=1) for link in (self._commands, self._events)]

        def done(results: List[Tuple[bool, Any]]) -> None:
            for ok, result in results:
                if not ok:
                    raise StoreUnavailable(f"cannot use Redis at {self.address.redacted}: {result.getErrorMessage()}")

        # Answered on a later turn: the callbacks may stop the store, which the
        # connection service refuses to do from inside its own transition.
        return DeferredList(ready, consumeErrors=True).addCallback(done).addBoth(self._later)

    def _later(self, result: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.reactor.callLater(0, d.callback, None)
        return d.addCallback(lambda _: result)

    def ensureStarted(self) -> None:
        """Start connecting (once)."""
        if not self._started:
            self._started = True
            self._commands.start()
            self._events.start()

    def stop(self) -> Deferred[None]:
        """Disconnect both connections (writes already sent are answered or failed first)."""
        self._started = False
        return DeferredList([self._commands.stop(), self._events.stop()]).addCallback(lambda _: None)

    def _loadScripts(self, protocol: RespProtocol) -> Deferred[Any]:
        loads = [protocol.call("SCRIPT", "LOAD", body) for body in SCRIPTS.values()]

        def loaded(shas: List[Any]) -> None:
            self._shas = dict(zip(SCRIPTS, shas, strict=True))
            if self._ready is not None:
                self._ready()  # (its first commands go out before anyone else's on this connection)

        return DeferredList(loads, fireOnOneErrback=True, consumeErrors=True).addCallback(
            lambda results: loaded([sha for _, sha in results])
        )

    def _subscribe(self, protocol: RespProtocol) -> Deferred[Any]:
        return protocol.call("SUBSCRIBE", CHANNEL)

    def watch(
        self,
        takenOver: Callable[[bytes, int], None],
        waiting: Callable[[bytes], None],
        ready: Optional[Callable[[], None]] = None,
    ) -> None:
        """Be told of takeovers, of pushes to a session, and each time Redis is reachable (a server's sessions)."""
        self._takenOver, self._waiting, self._ready = takenOver, waiting, ready

    def _announced(self, push: List[Any]) -> None:
        words = push[-1].split()
        try:
            if words[0] == b"owner" and self._takenOver is not None:
                self._takenOver(bytes.fromhex(words[1].decode()), int(words[2]))
            elif words[0] == b"inbox" and self._waiting is not None:
                self._waiting(bytes.fromhex(words[1].decode()))
        except (IndexError, ValueError):
            _log.warn("txheartbeat: an announcement on {channel} not understood", channel=CHANNEL)

    # Scripts ------------------------------------------------------------------

    def _run(self, name: str, key: bytes, *args: Any) -> Deferred[Any]:
        sha = self._shas.get(name)
        if sha is None:
            return _unavailable(self)
        self.commands += 1
        return self._commands.call("EVALSHA", sha, 3, *_keys(key), *args).addErrback(self._refused)

    def _refused(self, failure: Failure) -> Failure:
        error = failure.value
        if isinstance(error, ReplyError):
            code = error.code
            if code == "NOSCRIPT":  # (scripts flushed by hand: reconnecting loads them again)
                protocol = self._commands.protocol
                if protocol is not None:
                    protocol.transport.abortConnection()
                return Failure(StoreUnavailable("Redis lost the store's scripts (SCRIPT FLUSH?); reconnecting"))
            if code in ("FENCED", "EXPIRED", "GAP", "FULL", "EXISTS"):
                return Failure(StoreRefused(code, str(error).partition(" ")[2]))
            return Failure(StoreUnavailable(f"Redis refused a command: {error}"))
        return failure

    def create(self, key: bytes, ttl: float) -> Deferred[int]:
        """Make a session (epoch 1)."""
        return self._run("CREATE", key, _ms(ttl))

    def claim(self, key: bytes, clientReceived: int, ttl: float) -> Deferred[Claimed]:
        """Take a session over (see ``_redisscripts.CLAIM``)."""

        def claimed(answer: List[Any]) -> Claimed:
            epoch, received, seen, waiting = (int(n) for n in answer[:4])
            return Claimed(epoch, received, seen, waiting, [_message(m) for m in answer[4:]])

        return self._run("CLAIM", key, _ms(ttl), clientReceived, CHANNEL, key.hex()).addCallback(claimed)

    def append(
        self, key: bytes, epoch: int, payload: bytes, isBinary: bool, maxMessages: int, maxBytes: int, ttl: float
    ) -> Deferred[int]:
        """Number and keep a server→client message."""
        return self._run("APPEND", key, _ms(ttl), epoch, maxMessages, maxBytes, _stored(payload, isBinary))

    def record(self, key: bytes, epoch: int, acked: int, received: int, seen: int, ttl: float) -> Deferred[None]:
        """Store the acknowledgements and the counts."""
        return self._run("RECORD", key, _ms(ttl), epoch, acked, received, seen)

    def take(
        self, key: bytes, epoch: int, maxMessages: int, maxBytes: int, ttl: float
    ) -> Deferred[Tuple[int, int, List[Tuple[bytes, bool]]]]:
        """Number what was pushed (what fits; how many still wait)."""

        def taken(answer: List[Any]) -> Tuple[int, int, List[Tuple[bytes, bool]]]:
            return int(answer[0]), int(answer[1]), [_message(m) for m in answer[2:]]

        return self._run("TAKE", key, _ms(ttl), epoch, maxMessages, maxBytes).addCallback(taken)

    def touch(self, key: bytes, epoch: int, ttl: float) -> Deferred[None]:
        """Keep a session another ``ttl`` seconds (its owner serves it on a connection)."""
        return self._run("TOUCH", key, _ms(ttl), epoch)

    def end(self, key: bytes, epoch: int) -> Deferred[None]:
        """Forget a session."""
        return self._run("END", key, epoch)

    def push(self, key: bytes, payload: bytes, isBinary: bool, maxMessages: int, maxBytes: int) -> Deferred[None]:
        """Send to a session from anywhere (``NotConnected``: no such session; ``SendQueueFull``: past its bounds)."""

        def refused(failure: Failure) -> Failure:
            if failure.check(StoreRefused):
                if getattr(failure.value, "code", None) == "FULL":
                    return Failure(SendQueueFull(f"session {key[:6].hex()} holds as much as it may: not sent"))
                return Failure(NotConnected(f"no session {key[:6].hex()} (ended or expired): not sent"))
            return failure

        d = self._run("PUSH", key, maxMessages, maxBytes, _stored(payload, isBinary), CHANNEL, key.hex())
        return d.addCallbacks(lambda _: None, refused)

    def sendTo(self, address: str, message: Any, maxMessages: int = 1000, maxBytes: int = 1 << 20) -> Deferred[None]:
        """
        Send to the session at ``address`` from any process, even one that
        serves no clients (a backend job): it arrives once, in order.  The
        bounds default to the server factory's defaults; pass the ones your
        servers use.
        """
        from .._durable import _addressKey
        from .._handler import encodeMessage

        payload, isBinary = encodeMessage(message)
        return self.push(_addressKey(address), payload, isBinary, maxMessages, maxBytes)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _unavailable(store: RedisSessionStore) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(StoreUnavailable(f"Redis {store.address.redacted} is not reachable"))
    return d


__all__ = ["RedisSessionStore"]
