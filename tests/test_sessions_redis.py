"""
Sessions in Redis (issue 18) on loopback, against a real redis-server of
the test's own: a session outlives the server that made it, exactly once
both ways; a takeover fences the previous owner; a delivery the previous
owner may have made is flagged; Redis down at start, stopped while serving
and back; expiry; sending from anywhere; no credentials in logs.

Two ``HeartbeatServerFactory`` objects with their own store stand for two
processes (tests/test_workers.py runs real ones and kills them).
"""

from __future__ import annotations

from typing import Any, Callable, List, Tuple

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import globalLogPublisher

from txheartbeat import (
    HeartbeatHandler,
    HeartbeatServerFactory,
    HeartbeatServerProtocol,
    NotConnected,
    SendQueueFull,
    StoreUnavailable,
    connect,
)
from txheartbeat.stores import RedisSessionStore

from .faultproxy import FaultProxy
from .redisserver import RedisServer
from .test_resume_loopback import opened, until

FAST = dict(initialDelay=0.05, maxDelay=0.2, jitter=0, minUptime=0, probeInterval=0.05)


class Keeper(HeartbeatServerProtocol):
    """Keeps each client message with its ``redelivered`` flag."""

    factory: Server

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.got.append((payload.decode(), self.redelivered))


class Server(HeartbeatServerFactory):
    """A resume server on a Redis store, keeping its sessions and what happened to them."""

    protocol = Keeper

    def __init__(self, store: Any, **options: Any) -> None:
        options.setdefault("pingInterval", 0.5)
        options.setdefault("pongTimeout", 1.0)
        super().__init__(resume=True, sessionStore=store, reactor=_reactor, **options)
        self.got: List[Tuple[str, bool]] = []
        self.sessions: List[Any] = []
        self.events: List[Tuple[str, Any]] = []

    def onSessionCreated(self, session: Any) -> None:
        self.sessions.append(session)

    def onSessionResumed(self, session: Any) -> None:
        self.sessions.append(session)

    def onSessionMoved(self, session: Any) -> None:
        self.events.append(("moved", session))

    def onSessionExpired(self, session: Any) -> None:
        self.events.append(("expired", session))


class Client(HeartbeatHandler):
    def __init__(self) -> None:
        super().__init__()
        self.got: List[str] = []
        self.lost: List[list] = []
        self.opens = 0

    def onOpen(self) -> None:
        self.opens += 1

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.got.append(payload.decode())

    def onSessionLost(self, unacked: list) -> None:
        self.lost.append(unacked)


class Processes:
    """Stand-ins for server processes: each a factory with its own store, listening on one port in turn."""

    def __init__(self, redis: RedisServer) -> None:
        self.redis = redis
        self.stores: List[RedisSessionStore] = []
        self.ports: List[Any] = []
        self.number = 0

    async def start(self, durability: str = "write", **options: Any) -> Server:
        store = RedisSessionStore(self.redis.url, durability=durability, reactor=_reactor)
        self.stores.append(store)
        await store.start()
        server = Server(store, **options)
        port = _reactor.listenTCP(self.number, server, interface="127.0.0.1")
        self.number = port.getHost().port
        self.ports.append(port)
        return server

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.number}/"

    async def away(self, server: Server) -> Tuple[FaultProxy, Client, Any]:
        """A resumable client of ``server`` through a proxy, then away: the proxy stopped (the client keeps trying) and its session detached, waiting for it."""
        proxy = FaultProxy(self.number)
        client = Client()
        await opened(connect(proxy.url, client, resume=True, reactor=_reactor, **FAST))
        session = server.sessions[-1]
        await proxy.stop()
        await until(lambda: session.protocol is None, lambda: "the drop")
        return proxy, client, session

    async def crash(self, server: Server) -> None:
        """As a kill -9 looks from outside: the port closes, connections drop, nothing is handed over."""
        server._sessions.stopped = True  # (so that nothing is released or expired on the way down)
        server.stopFactory = lambda: None  # type: ignore[method-assign]
        await self.ports[-1].stopListening()
        for client in list(server.clients):
            client.transport.abortConnection()

    async def close(self) -> None:
        for port in self.ports:
            if port.connected:
                await port.stopListening()
        for store in self.stores:
            await store.stop()


@pytest.fixture
def processes(redis: RedisServer) -> Any:
    p = Processes(redis)
    yield p
    pytest_twisted.blockon(ensureDeferred(p.close()))


@pytest_twisted.ensureDeferred
async def test_a_session_outlives_its_process_exactly_once_both_ways(processes: Processes) -> None:
    """A crashed server's session resumes on a new one: what each side sent arrives once, in order, none flagged; a push from a third process arrives too."""
    a = await processes.start()
    client = Client()
    await opened(connect(processes.url, client, resume=True, reactor=_reactor, **FAST))
    for i in range(10):
        client.send(f"c{i}")
        a.sessions[0].send(f"a{i}")
    await until(
        lambda: len(a.got) == 10 and len(client.got) == 10 and not client.unacked, lambda: f"{a.got} {client.got}"
    )
    address = a.sessions[0].address
    assert client.sessionAddress == address
    await processes.crash(a)
    for i in range(10, 15):
        client.send(f"c{i}")  # while no server is up: kept, replayed to the next owner
    backend = RedisSessionStore(processes.redis.url, reactor=_reactor)
    processes.stores.append(backend)
    await backend.start()
    await backend.sendTo(address, "from-anywhere")
    b = await processes.start()
    await until(lambda: len(b.got) == 5 and "from-anywhere" in client.got, lambda: f"{b.got} {client.got}")
    b.sessions[0].send("b-after")
    await until(lambda: "b-after" in client.got, lambda: str(client.got))
    assert a.got == [(f"c{i}", False) for i in range(10)]
    assert b.got == [(f"c{i}", False) for i in range(10, 15)]
    assert client.got == [f"a{i}" for i in range(10)] + ["from-anywhere", "b-after"]
    assert client.lost == [] and b.stats.sessionsResumed == 1 and b.stats.redelivered == 0
    client.close()


@pytest_twisted.ensureDeferred
async def test_a_delivery_the_dead_owner_may_have_made_is_flagged(processes: Processes) -> None:
    """Killed between delivering client messages and storing that it had: the new owner delivers them again flagged redelivered, the rest unflagged."""
    a = await processes.start()
    client = Client()
    await opened(connect(processes.url, client, resume=True, reactor=_reactor, **FAST))
    client.send("c0")
    await until(lambda: len(a.got) == 1 and not client.unacked, lambda: str(a.got))
    store = processes.stores[-1]
    never: List[Deferred[None]] = []

    def recordNever(*args: Any) -> Deferred[None]:  # the process dies before this write reaches Redis
        d: Deferred[None] = Deferred()
        never.append(d)
        return d

    original = store.record
    leases = []

    def leaseThenDie(key: bytes, epoch: int, acked: int, received: int, seen: int, ttl: float) -> Deferred[None]:
        if seen > received:  # the lease before delivery goes through; the record after it "never" does
            leases.append(seen)
            return original(key, epoch, acked, received, seen, ttl)
        return recordNever()

    store.record = leaseThenDie  # type: ignore[method-assign]
    client.send("c1")
    client.send("c2")
    await until(lambda: len(a.got) == 3, lambda: str(a.got))
    await processes.crash(a)
    b = await processes.start()
    client.send("c3")
    await until(lambda: b.got and b.got[-1][0] == "c3", lambda: str(b.got))
    assert leases and a.got == [("c0", False), ("c1", False), ("c2", False)]
    # c2 at least was delivered and never recorded (c1 too, unless c2's lease, which carries
    # the received count, came in a read of its own): flagged, and nothing else is.
    first = 3 - len(b.got) + 1
    assert first in (1, 2) and b.got == [(f"c{i}", True) for i in range(first, 3)] + [("c3", False)]
    assert b.stats.redelivered == 3 - first and client.lost == []
    client.close()


@pytest_twisted.ensureDeferred
async def test_a_takeover_fences_the_previous_owner(processes: Processes, redis: RedisServer) -> None:
    """Another process claims the session: the owner is told and lets go; a paused owner that was not told has its writes refused and reported."""
    a = await processes.start()
    client = Client()
    await opened(connect(processes.url, client, resume=True, reactor=_reactor, **FAST))
    session = a.sessions[0]
    other = RedisSessionStore(redis.url, reactor=_reactor)
    processes.stores.append(other)
    await other.start()
    # Told on the channel: it closes its connection and forgets the session.
    await other.claim(session.key, 0, 60)
    await until(lambda: a.events and a.events[0][0] == "moved", lambda: str(a.events))
    assert a.stats.sessionsMoved == 1 and session.protocol is None
    with pytest.raises(NotConnected, match="moved to another process"):
        session.send("late")
    client.close()

    # A paused owner (deaf to the channel) wakes up and writes: refused, the message reported unsent.
    client2 = Client()
    await opened(connect(processes.url, client2, resume=True, reactor=_reactor, **FAST))
    session2 = a.sessions[-1]
    await processes.stores[0]._events.stop()
    await other.claim(session2.key, 0, 60)
    session2.send("after-the-takeover")
    await until(lambda: len(a.events) == 2, lambda: str(a.events))
    assert a.events[1] == ("moved", session2) and session2.unsent == ["after-the-takeover"]
    client2.close()


@pytest_twisted.ensureDeferred
async def test_redis_down_at_start_is_a_clear_error_without_the_password() -> None:
    """start() fails at once with StoreUnavailable saying where (credentials redacted)."""
    from .redisserver import freePort

    store = RedisSessionStore(f"redis://user:s3cret-pw@127.0.0.1:{freePort()}/2", reactor=_reactor)
    with pytest.raises(StoreUnavailable) as raised:
        await store.start()
    assert "redis://***@127.0.0.1" in str(raised.value) and "s3cret-pw" not in str(raised.value)
    assert "s3cret-pw" not in repr(store)
    await store.stop()


@pytest_twisted.ensureDeferred
async def test_redis_stopped_while_serving_degrades_reports_and_recovers(processes: Processes) -> None:
    """Redis stops: heartbeats go on; a session that needs a write ends, reported with what was never acknowledged; its client is asked to wait (503) and, once Redis is back, told its session is lost; new sessions are kept again."""
    a = await processes.start(pingInterval=0.2, pongTimeout=0.5)
    logged: List[str] = []
    observer: Callable[[Any], None] = lambda event: logged.append(str(event.get("log_format", "")))  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        client = Client()
        options = dict(FAST, pingInterval=0.2, pongTimeout=0.5)
        await opened(connect(processes.url, client, resume=True, reactor=_reactor, **options))
        processes.redis.stop()
        pings = a.stats.pingsSent
        await until(lambda: a.stats.pingsSent >= pings + 3, lambda: "pings")  # the connection lives on
        assert client.opens == 1
        client.send("c-unacked")  # (held: its delivery needs the store)
        a.sessions[0].send("x")  # cannot be stored: the session ends, reported with it
        with pytest.raises(NotConnected):
            a.sessions[0].send("y")
        await until(lambda: a.events, lambda: "the report")
        assert a.events[0][0] == "expired" and a.events[0][1].unacked == ["x"] and a.stats.sessionsLost == 1
        # Its client comes back asking to resume: whether it could is unknown while Redis is down,
        # so it is asked to try again (503), keeping its token and what it sent.
        await until(lambda: a.stats.storeFailures >= 2, lambda: "resumes refused for now")
        assert client.opens == 1 and client.lost == []
        processes.redis.start(processes.redis.port)
        await until(lambda: client.lost, lambda: "the session reported lost")
        assert client.lost == [["c-unacked"]] and client.opens == 2
        later = Client()
        await opened(connect(processes.url, later, resume=True, reactor=_reactor, **FAST))
        await until(lambda: later.sessionAddress is not None, lambda: "a session")
        later.close()
        client.close()
    finally:
        globalLogPublisher.removeObserver(observer)
    assert any("lost the connection to Redis" in line for line in logged)


@pytest_twisted.ensureDeferred
async def test_an_expired_session_is_refused_and_both_ends_told(processes: Processes) -> None:
    """A client away longer than the window: its owner reports the session expired with what was unacknowledged; the client's resume is refused (onSessionLost)."""
    a = await processes.start(resumeWindow=0.3)
    proxy, client, session = await processes.away(a)
    session.send("never-acked")
    client.send("c-while-away")
    await until(lambda: a.events, lambda: "expiry")
    assert a.events[0][0] == "expired" and session.unacked == ["never-acked"]
    proxy.listen()
    await until(lambda: client.lost, lambda: "session lost")
    assert client.lost == [["c-while-away"]] and a.sessions[-1].resumeRefused
    client.close()
    await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_send_to_a_missing_or_full_session_fails_clearly(processes: Processes) -> None:
    """sendTo an unknown address fails with NotConnected, past the bounds with SendQueueFull, a malformed address with ValueError."""
    a = await processes.start(replayBufferSize=64)
    with pytest.raises(NotConnected):
        await a.sendTo("00" * 32, "x")
    with pytest.raises(ValueError, match="64 hex digits"):
        a.sendTo("not-an-address", "x")
    proxy, client, _ = await processes.away(a)  # (pushes wait in the store)
    address = a.sessions[0].address
    for i in range(64):
        await a.sendTo(address, f"p{i}")
    with pytest.raises(SendQueueFull):
        await a.sendTo(address, "one-too-many")
    proxy.listen()
    await until(lambda: len(client.got) == 64, lambda: f"{len(client.got)}")
    assert client.got == [f"p{i}" for i in range(64)]
    client.close()
    await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_batched_durability_writes_less_and_flags_what_a_crash_repeats(processes: Processes) -> None:
    """With durability="batched" a crash loses nothing either: the messages the dead owner may have delivered come again, all flagged; it takes fewer store writes."""
    a = await processes.start(durability="batched")
    client = Client()
    await opened(connect(processes.url, client, resume=True, reactor=_reactor, pingInterval=60, **FAST))
    commands = processes.stores[-1].commands
    for i in range(10):
        client.send(f"c{i}")
    await until(lambda: len(a.got) == 10, lambda: str(a.got))
    batchedWrites = processes.stores[-1].commands - commands
    assert batchedWrites <= 2  # one lease for the lot (write-through: one before and one after each batch)
    await processes.crash(a)
    b = await processes.start(durability="batched")
    client.send("c10")
    await until(lambda: b.got and b.got[-1][0] == "c10", lambda: str(b.got))
    assert [m for m, _ in b.got] == [f"c{i}" for i in range(11)] and all(flag for _, flag in b.got)
    assert client.lost == []
    client.close()


def test_durability_is_checked() -> None:
    """An unknown durability is refused at construction, naming the choices."""
    with pytest.raises(ValueError, match="'write', 'batched'"):
        RedisSessionStore("redis://127.0.0.1/0", durability="fast")


@pytest_twisted.ensureDeferred
async def test_a_browser_session_outlives_its_process(processes: Processes) -> None:
    """A page speaking txheartbeat.resume.1 resumes on a new process: replayed once, its own messages delivered once, acknowledged only once stored."""
    from autobahn.twisted.websocket import WebSocketClientFactory, connectWS

    from txheartbeat._wire import PLAIN_SUBPROTOCOL, SUBPROTOCOL

    from .test_wire import Page

    opens: List[Page] = []

    class Opened(Page):
        def onOpen(self) -> None:
            super().onOpen()
            opens.append(self)

    def page() -> Any:
        factory = WebSocketClientFactory(processes.url, protocols=[SUBPROTOCOL, PLAIN_SUBPROTOCOL], reactor=_reactor)
        factory.protocol = Opened
        return connectWS(factory)

    a = await processes.start()
    page()
    await until(lambda: opens, lambda: "open")
    first = opens[0]
    first.hello()
    await until(lambda: first.controls(), lambda: "welcome")
    welcome = first.controls()[0]
    assert welcome["type"] == "welcome" and welcome["resumed"] is False
    for i in range(3):
        first.say(f"p{i}")
    await until(lambda: len(a.got) == 3, lambda: str(a.got))
    await until(lambda: any(c["type"] == "ack" for c in first.controls()), lambda: str(first.controls()))
    assert [c["received"] for c in first.controls() if c["type"] == "ack"][-1] == 3
    a.sessions[0].send("s0")
    await until(lambda: first.messages() == ["s0"], lambda: str(first.got))
    await processes.crash(a)
    await until(lambda: first.closed is not None, lambda: "the drop")
    b = await processes.start()
    await processes.stores[-1].sendTo(a.sessions[0].address, "s1")
    page()
    await until(lambda: len(opens) == 2, lambda: "second open")
    second = opens[1]
    second.hello(session=welcome["session"], received=1)
    await until(lambda: second.controls(), lambda: "welcome")
    assert second.controls()[0]["resumed"] is True and second.controls()[0]["received"] == 3
    second.say("p3")
    await until(lambda: len(b.got) == 1 and second.messages() == ["s1"], lambda: f"{b.got} {second.got}")
    assert a.got == [("p0", False), ("p1", False), ("p2", False)] and b.got == [("p3", False)]
    second.sendClose(1000)


@pytest_twisted.ensureDeferred
async def test_a_batched_lease_runs_out_so_a_paused_owner_cannot_deliver(
    processes: Processes, redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """durability="batched": an owner whose lease ran out (as after a pause longer than LEASE_TIME) asks the store before it delivers, and is fenced if the session moved."""
    from txheartbeat import _durable

    monkeypatch.setattr(_durable, "LEASE_TIME", 0.05)
    a = await processes.start(durability="batched")
    client = Client()
    await opened(connect(processes.url, client, resume=True, reactor=_reactor, pingInterval=60, **FAST))
    client.send("c0")
    await until(lambda: len(a.got) == 1, lambda: str(a.got))
    session = a.sessions[0]
    assert session.seen > session.stream.received  # a lease ahead: without the time limit, c1 would go through
    await processes.stores[0]._events.stop()  # deaf to the takeover, as a paused process
    other = RedisSessionStore(redis.url, reactor=_reactor)
    processes.stores.append(other)
    await other.start()
    await other.claim(session.key, 0, 60)
    await until(lambda: _reactor.seconds() > session._leaseUntil, lambda: "the lease runs out")
    client.send("c1")
    await until(lambda: a.events, lambda: "fenced")
    assert a.events[0][0] == "moved" and a.got == [("c0", False)]
    client.close()
