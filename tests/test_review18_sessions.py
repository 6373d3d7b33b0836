"""
Review of issue 18 (sessions in Redis): each test is a scenario that breaks
a rule of the feature, against a real redis-server (the ``redis`` fixture),
on loopback.  Each failed before the fix its docstring's defect called for.
"""

from __future__ import annotations

from typing import Any, List

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import ensureDeferred

from txheartbeat import connect
from txheartbeat._resume import Offer

from .redisserver import Client as RedisClient
from .redisserver import RedisServer
from .test_resume_loopback import opened, until
from .test_sessions_redis import FAST, Client, Processes


@pytest.fixture
def processes(redis: RedisServer) -> Any:
    p = Processes(redis)
    yield p
    pytest_twisted.blockon(ensureDeferred(p.close()))


def _meta(session: Any) -> bytes:
    return f"txhb:{{{session.key.hex()}}}:meta".encode()


@pytest_twisted.ensureDeferred
async def test_an_idle_connected_session_does_not_expire_in_the_store(processes: Processes) -> None:
    """
    A client stays connected (heartbeats only) longer than the resume window:
    its session must not expire meanwhile (as with the memory store, the window
    starts at the drop).  Today the Redis keys expire window seconds after the
    last write, so the next send loses the session (1011, onSessionExpired).
    """
    a = await processes.start(resumeWindow=0.4, pingInterval=0.1, pongTimeout=1.0)
    client = Client()
    await opened(connect(processes.url, client, resume=True, reactor=_reactor, pingInterval=0.1, **FAST))
    session = a.sessions[0]
    pings = a.stats.pingsSent
    # Idle but alive for well over the window (counted in heartbeats, not slept).
    await until(lambda: a.stats.pingsSent >= pings + 10, lambda: "heartbeats")
    assert client.opens == 1 and session.protocol is not None
    session.send("after-idle")
    await until(lambda: client.got or client.lost or a.events, lambda: "the send's outcome")
    assert a.events == [] and client.lost == [] and client.got == ["after-idle"]
    client.close()


@pytest_twisted.ensureDeferred
async def test_messages_sent_before_a_client_close_are_delivered(processes: Processes) -> None:
    """
    docs (HeartbeatHandler.close): "closing while open ends the session with
    the close handshake, which delivers everything sent before it".  With the
    Redis store the messages are held for the store's lease and the close
    frame, read in the same read, ends the session first: the held messages
    are dropped without a word (the memory store delivers them).
    """
    a = await processes.start()
    client = Client()
    await opened(connect(processes.url, client, resume=True, reactor=_reactor, **FAST))
    closed = a.stats.sessionsClosed
    client.send("last-1")
    client.send("last-2")
    client.close()  # same reactor turn: one write, one read on the server
    await until(lambda: a.stats.sessionsClosed > closed, lambda: "the session closed")
    await until(lambda: not a.clients, lambda: "the connection gone")
    assert a.got == [("last-1", False), ("last-2", False)]


@pytest_twisted.ensureDeferred
async def test_a_send_racing_a_resume_in_the_same_process_is_not_lost(processes: Processes) -> None:
    """
    The application sends on a session while its client's new connection
    (to this same process) has its claim in flight: the APPEND reaches Redis
    after the CLAIM and is FENCED; the old object was retired (no hook), so
    the message is neither delivered nor reported (persist-then-send promised
    a new owner could replay it; onSessionMoved tells of ``unsent`` only when
    another process took over).
    """
    a = await processes.start()
    client = Client()
    await opened(connect(processes.url, client, resume=True, reactor=_reactor, **FAST))
    session = a.sessions[0]
    sessions = a._sessions
    # What a second connection's handshake does (a client back while its old connection looks alive).
    claim = sessions.offerLater(Offer(session._token, 0, False))
    session.send("during-the-claim")  # accepted: no exception, so the application counts on it
    answer = await claim
    sessions.orphan(answer[0])  # (that connection went away before it opened; the client comes back)
    await until(lambda: session.unsent or session.stream.sent, lambda: "the append answered")
    await until(lambda: client.opens >= 2, lambda: "the client back")
    a.sessions[-1].send("marker")
    await until(lambda: "marker" in client.got, lambda: str(client.got))
    # The claim by this process carried on with the same object (its data too); the send waited for it.
    assert a.sessions[-1] is session and session.unsent == []
    assert client.got.count("during-the-claim") == 1 and client.got.index("during-the-claim") < client.got.index(
        "marker"
    )
    client.close()


@pytest_twisted.ensureDeferred
async def test_a_push_that_did_not_fit_at_take_is_delivered_once_room_is_made(processes: Processes) -> None:
    """
    sendTo() succeeded (the message is kept in the session's inbox), then
    the owner's own sends filled the replay bound before the client came
    back: the TAKE at attach numbers nothing, and nothing ever takes again
    (only a new push or a new claim does) once the client's acknowledgements
    make room.  The message waits until the session ends, then is dropped
    with it, never reported.
    """
    a = await processes.start(replayBufferSize=64)
    proxy, client, session = await processes.away(a)
    for i in range(63):
        session.send(f"s{i}")
    await until(lambda: session.stream.sent == 63, lambda: "stored")
    await a.sendTo(session.address, "pushed")  # kept: 63 + 1 waiting fits the bound of 64
    session.send("s63")  # the owner's own: the store now keeps 64
    await until(lambda: session.stream.sent == 64, lambda: "stored")
    proxy.listen()
    await until(lambda: len(client.got) >= 64, lambda: f"{len(client.got)}")
    # (the client's acknowledgement of those 64 makes room for one more)
    await until(lambda: len(a.sessions[-1].unacked) < 64, lambda: "the acknowledgement")
    a.sessions[-1].send("marker")
    await until(lambda: "marker" in client.got and not a.sessions[-1].unacked, lambda: f"{client.got[-3:]}")
    await until(lambda: "pushed" in client.got, lambda: f"stranded: {client.got[-3:]}", timeout=3.0)
    assert client.got.count("pushed") == 1
    client.close()
    await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_a_session_refused_for_a_message_is_ended_in_the_store(processes: Processes) -> None:
    """
    A client message refused with 1009 ends the session here
    (onSessionExpired reports its unacknowledged messages as never
    delivered); the store must forget it too, or any process can resume it
    (and replay what was just reported as lost).  ServerSessions.refused calls
    DurableSessions._expired, which never ENDs the session in Redis.
    """
    a = await processes.start()
    a.setProtocolOptions(maxMessagePayloadSize=100)
    client = Client()
    await opened(connect(processes.url, client, resume=True, reactor=_reactor, **FAST))
    session = a.sessions[0]
    client.send("x" * 1000)
    await until(lambda: a.events, lambda: "the session ends")
    assert a.events[0] == ("expired", session)
    check = RedisClient(processes.redis.port)
    try:
        assert check.call("EXISTS", _meta(session)) == 0
    finally:
        check.close()
    client.close()


@pytest_twisted.ensureDeferred
async def test_a_redis_that_stops_answering_is_not_a_hang(processes: Processes) -> None:
    """
    Redis unreachable without a reset (SIGSTOP here; a network partition or
    a blackholed route look the same): the issue asks "never a hang, never
    a silent loss".  No command has a timeout, so a send on a session waits
    for its APPEND forever: neither written nor reported (onSessionExpired).
    """
    import signal

    a = await processes.start()
    client = Client()
    await opened(connect(processes.url, client, resume=True, reactor=_reactor, **FAST))
    session = a.sessions[0]
    processes.redis.signal(signal.SIGSTOP)
    try:
        session.send("while-redis-is-stuck")
        await until(lambda: client.got or a.events, lambda: f"hang: inflight={len(session._inflight)}")
        assert a.events and a.events[0][1].unacked == ["while-redis-is-stuck"]
    finally:
        processes.redis.signal(signal.SIGCONT)
    client.close()


@pytest_twisted.ensureDeferred
async def test_a_message_during_a_hand_over_does_not_stall_the_restart(processes: Processes) -> None:
    """
    restart() hands the session over (a RECORD), then closes with 1012.  A
    client message that arrives meanwhile pauses reading until its lease is
    stored; the lease comes back after the hand-over (the session is gone),
    _extended returns without resumeProducing, and the connection never
    reads the client's close reply: the 1012 close is not clean (the
    connection ends dropped, here after the client gives up on it).
    """
    from twisted.internet.defer import Deferred

    a = await processes.start(closeTimeout=30.0, pingInterval=10.0, pongTimeout=20.0)
    client = Client()
    await opened(connect(processes.url, client, resume=True, reactor=_reactor, **FAST))
    session = a.sessions[0]
    server = session.protocol
    store = processes.stores[-1]
    original = store.record
    held: List[Any] = []

    def hold(*args: Any) -> Any:  # the writes wait here, in order, so that the test sees the window
        d: Deferred[None] = Deferred()
        held.append((args, d))
        return d

    store.record = hold  # type: ignore[method-assign]
    done = a.restart(window=0.5)
    assert len(held) == 1  # the hand-over's write
    client.send("during-the-hand-over")
    await until(lambda: len(held) == 2 and session._held, lambda: "the lease asked")
    store.record = original  # type: ignore[method-assign]
    for args, d in held:  # in the order they were made, as Redis answers them
        original(*args).chainDeferred(d)
    await until(lambda: done.called, lambda: f"restart stalled (paused={session._paused})")
    # Without the message the 1012 handshake ends cleanly in one round trip; with it the
    # server never reads the client's close reply and the connection ends dropped.
    assert server.wasClean, (server.wasNotCleanReason, session._paused)
    client.close()


@pytest.mark.parametrize(
    "url, secret",
    [
        ("redis://:p@ss#w0rd@127.0.0.1:6379/0", "w0rd"),  # '#' in a password
        ("redis://default:9/Xy@127.0.0.1:6379/0", "9/Xy"),  # '/' in a password (base64-made)
        ("redis://:12/secret@127.0.0.1:6379/0", "secret"),
    ],
)
def test_a_malformed_url_never_shows_the_password(url: str, secret: str) -> None:
    """The message of a refused address (shown by ``serve --session-store``) must not repeat the password."""
    from txheartbeat.stores._redisurl import parseRedisURL

    try:
        parseRedisURL(url)
    except ValueError as e:
        assert secret not in str(e), str(e)


@pytest_twisted.ensureDeferred
async def test_session_data_lives_across_a_resume_to_the_same_process(processes: Processes) -> None:
    """
    docs/reliability.md: "keep per-client state on self.session.data (a dict
    that lives across the client's connections)" and "in onOpen, check
    self.resumed before re-subscribing" (README's example keeps topics
    there).  With the Redis store every claim makes a new DurableSession
    with an empty ``data``, even when the client comes back to the process
    that holds the old object: a resumed client loses its subscriptions.
    """
    a = await processes.start()
    proxy, client, first = await processes.away(a)
    first.data["topics"] = ["news"]
    proxy.listen()
    await until(lambda: len(a.sessions) == 2 and a.sessions[1].protocol is not None, lambda: "the resume")
    assert a.sessions[1].protocol.resumed
    assert a.sessions[1].data.get("topics") == ["news"]
    client.close()
    await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_a_claim_whose_answer_is_lost_loses_nothing_silently(processes: Processes) -> None:
    """
    The Redis connection drops after CLAIM ran but before its answer (a
    Redis restart, a reset): the claimant runs the connection plain and the
    client declares its session lost; the old owner, told of the takeover,
    reports the session *moved* (it lives elsewhere); nobody owns it, and
    its unacknowledged server->client message expires with it in Redis,
    reported by no onSessionExpired (the issue: "nothing silent").
    """
    from txheartbeat import StoreUnavailable

    a = await processes.start()
    proxy, client, session = await processes.away(a)
    session.send("unacked-1")
    await until(lambda: session.stream.sent == 1, lambda: "stored")
    processes.number = 0  # (b listens on a port of its own)
    b = await processes.start()
    store = processes.stores[-1]
    original = store._run

    def answerLost(name: str, key: bytes, *args: Any) -> Any:
        d = original(name, key, *args)
        if name != "CLAIM":
            return d

        def lost(_: object) -> None:  # it ran in Redis; the answer never came back
            store._run = original  # type: ignore[method-assign]
            raise StoreUnavailable("the connection to Redis was lost (simulated) before its answer")

        return d.addCallback(lost)

    store._run = answerLost  # type: ignore[method-assign]
    proxy.targetPort = processes.number
    proxy.listen()

    def reported() -> bool:
        return any(kind == "expired" and "unacked-1" in s.unacked for kind, s in a.events + b.events)

    await until(
        lambda: "unacked-1" in client.got or reported(), lambda: f"a={a.events} b={b.events} lost={client.lost}"
    )
    client.close()
    await proxy.stop()


@pytest_twisted.ensureDeferred
async def test_a_session_reported_expired_cannot_be_resumed(processes: Processes) -> None:
    """
    The window runs out while Redis cannot be written (END fails with
    StoreUnavailable): _expire reports the session expired with its
    unacknowledged messages (the application may resend them elsewhere),
    but the session is still in Redis, so the client's next connection
    resumes it and gets the same messages again (a duplicate the
    application was told was not delivered).
    """
    from twisted.internet.defer import fail

    from txheartbeat import StoreUnavailable

    a = await processes.start()
    proxy, client, session = await processes.away(a)
    await until(lambda: session._expiry is not None, lambda: "the drop")
    session.send("reported-never-acked")
    await until(lambda: session.stream.sent == 1, lambda: "stored")
    store = processes.stores[-1]
    original = store.end
    store.end = lambda key, epoch: fail(StoreUnavailable("Redis is not reachable (simulated)"))  # type: ignore[method-assign]
    session._expiry.reset(0)  # (the window runs out now)
    await until(lambda: a.events, lambda: "the expiry")
    store.end = original  # type: ignore[method-assign]
    assert a.events[0][0] == "expired" and session.unacked == ["reported-never-acked"]
    proxy.listen()
    await until(lambda: client.opens >= 2, lambda: "back")
    a.sessions[-1].send("marker")
    await until(lambda: "marker" in client.got, lambda: str(client.got))
    assert "reported-never-acked" not in client.got and a.sessions[-1].resumeRefused
    client.close()
    await proxy.stop()
