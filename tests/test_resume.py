"""Session resume on the in-memory reactor: every path, exact counts."""

from typing import List

import pytest
from twisted.internet.error import ConnectionLost
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from txheartbeat import (
    HeartbeatClientFactory,
    HeartbeatServerFactory,
    HeartbeatServerProtocol,
    NotConnected,
    ProtocolError,
    SendQueueFull,
)
from txheartbeat._resume import (
    ACK_EVERY,
    RESUME_HEADER,
    ClientResume,
    SessionStream,
    formatHeader,
    parseHeader,
)
from txheartbeat.testing import RecordingHandler, echoServerFactory

from .conftest import URL


class Recorder(HeartbeatServerProtocol):
    """Records what the application receives on the server, per factory, and can echo."""

    echo = False

    def onMessage(self, payload, isBinary):
        self.factory.got.append(payload)
        if self.echo:
            self.sendMessage(payload, isBinary)


class Echo(Recorder):
    echo = True


class SessionServer(HeartbeatServerFactory):
    """A resume server that records its session events."""

    def __init__(self, reactor, protocol=Recorder, **options):
        options.setdefault("pingInterval", None)
        super().__init__(URL, resume=True, reactor=reactor, **options)
        self.protocol = protocol
        self.got: List[bytes] = []
        self.events: List[tuple] = []

    def onSessionCreated(self, session):
        self.events.append(("created", session.id, session.resumeRefused))

    def onSessionResumed(self, session):
        self.events.append(("resumed", session.id))

    def onSessionExpired(self, session):
        self.events.append(("expired", session.id, session.unacked))

    def onSessionClosed(self, session):
        self.events.append(("closed", session.id))


@pytest.fixture
def server(reactor):
    return SessionServer(reactor)


@pytest.fixture
def client(reactor, handler):
    factory = HeartbeatClientFactory(URL, handler, reactor=reactor, resume=True, jitter=0.0, pingInterval=None)
    factory.connect().addErrback(lambda f: None)
    return factory


def newClient(reactor, handler, **options):
    """A started resume client on ``reactor``: no heartbeat, exact delays unless ``options`` say otherwise."""
    options.setdefault("pingInterval", None)
    options.setdefault("jitter", 0.0)
    factory = HeartbeatClientFactory(URL, handler, reactor=reactor, resume=True, **options)
    factory.connect().addErrback(lambda f: None)
    return factory


def numbers(prefix, start, stop):
    return [f"{prefix}{i}" for i in range(start, stop)]


def sendAll(handler, items):
    for item in items:
        handler.send(item)


def reconnect(reactor, server, seconds=2.0):
    """Let the retry timer fire and accept the attempt on ``server``."""
    reactor.advance(seconds)
    return reactor.accept(server)


def serverSession(server):
    (session,) = list(server.sessionStore)
    return session


def finish(reactor, handler, server):
    handler.close()
    reactor.advance(10)
    assert handler.factory.state == "closed"
    server.doStop() if server.numPorts else None
    for session in list(server.sessionStore):
        server._sessions.end(session)
    assert reactor.getDelayedCalls() == []


def test_resume_replays_only_what_each_side_missed(reactor, handler, server, client):
    """A drop with messages in flight both ways: after the resume each side has every message exactly once, in order."""
    link = reactor.accept(server)
    sendAll(handler, numbers("c", 0, 40))
    reactor.flush()
    session = serverSession(server)
    for text in numbers("s", 0, 10):
        session.send(text)
    reactor.flush()
    sendAll(handler, numbers("c", 40, 45))  # written, never delivered
    for text in numbers("s", 10, 13):
        session.send(text)
    link.reset()
    assert session.protocol is None and handler.factory.state == "waiting"
    reconnect(reactor, server)
    assert handler.resumed is True
    assert server.got == [t.encode() for t in numbers("c", 0, 45)]
    assert handler.received() == [t.encode() for t in numbers("s", 0, 13)]
    assert handler.stats.resumes == 1 and handler.stats.replayed == 5
    assert "onSessionLost" not in handler.names()
    assert [e[0] for e in server.events] == ["created", "resumed"]
    assert server.resumedSessions == 1 and len(server.sessionStore) == 1
    finish(reactor, handler, server)


def test_on_open_runs_at_every_open_and_says_whether_resumed(reactor, handler, server, client):
    """onOpen runs for a resumed connection too; handler.resumed tells it apart from a new session."""
    seen = []
    handler.onOpen = lambda: seen.append(handler.resumed)
    link = reactor.accept(server)
    link.reset()
    reconnect(reactor, server)
    assert seen == [False, True]
    finish(reactor, handler, server)


def test_acknowledgements_keep_both_replay_buffers_small(reactor, handler, server, client):
    """Streaming 1,000 messages each way, neither side holds more than ACK_EVERY unacknowledged."""
    reactor.accept(server)
    session = serverSession(server)
    for i in range(1000):
        handler.send(f"c{i}")
        session.send(f"s{i}")
        reactor.flush()
        assert len(handler.unacked) < ACK_EVERY
        assert len(session.unacked) < ACK_EVERY
    finish(reactor, handler, server)


def test_heartbeat_ping_acknowledges_the_rest(reactor, handler):
    """A few messages (fewer than ACK_EVERY) are acknowledged by the next heartbeat ping, both ways."""
    server = SessionServer(reactor, pingInterval=5.0, pongTimeout=5.0)
    factory = HeartbeatClientFactory(
        URL, handler, reactor=reactor, resume=True, jitter=0.0, pingInterval=1.0, pongTimeout=1.0
    )
    factory.connect()
    reactor.accept(server)
    session = serverSession(server)
    sendAll(handler, numbers("c", 0, 3))
    session.send("s0")
    reactor.flush()
    assert len(handler.unacked) == 3 and len(session.unacked) == 1
    reactor.advance(1.0)  # the client's heartbeat: acknowledges s0 and is answered
    assert len(session.unacked) == 0
    reactor.advance(5.0)  # the server's heartbeat acknowledges c0-c2
    assert handler.unacked == []
    finish(reactor, handler, server)


def test_messages_sent_while_disconnected_are_sent_at_resume(reactor, handler, server, client):
    """Once a session exists, send() between connections joins the replay buffer and goes out at resume, in order."""
    link = reactor.accept(server)
    handler.send("before")
    reactor.flush()
    link.reset()
    sendAll(handler, ["while-down-1", "while-down-2"])
    assert handler.queued == [] and handler.unacked[-2:] == ["while-down-1", "while-down-2"]
    reconnect(reactor, server)
    assert server.got == [b"before", b"while-down-1", b"while-down-2"]
    finish(reactor, handler, server)


def test_expired_window_is_a_lost_session_with_the_unacked_messages(reactor, handler, client):
    """Back after resumeWindow: onSessionLost gets what the server never acknowledged, then onOpen of a new session."""
    server = SessionServer(reactor, resumeWindow=10.0)
    link = reactor.accept(server)
    old = serverSession(server)
    sendAll(handler, ["delivered"])
    reactor.flush()
    old.send("never-acked-by-client")
    sendAll(handler, ["lost-1", "lost-2"])
    link.reset()
    reactor.advance(11.0)  # the server forgets the session at 10 s
    assert ("expired", old.id, ["never-acked-by-client"]) in server.events
    for _ in range(20):
        if reactor.pending:
            break
        reactor.advance(1.0)
    reactor.accept(server)
    names = handler.names()
    assert names[-2:] == ["onSessionLost", "onOpen"]
    lost = [e for e in handler.events if e[1] == "onSessionLost"][0][2]
    assert lost == ["delivered", "lost-1", "lost-2"]  # "delivered" arrived but was never acknowledged
    assert handler.resumed is False and handler.stats.sessionsLost == 1
    new = serverSession(server)
    assert new is not old and new.resumeRefused and server.refusedResumes == 1
    assert server.events[-1] == ("created", new.id, True)
    # numbering restarted: the new session delivers from the first message
    handler.send("fresh")
    reactor.flush()
    assert server.got[-1] == b"fresh" and new.stream.received == 1
    finish(reactor, handler, server)


def test_unknown_token_after_server_restart_is_a_lost_session(reactor, handler, server, client):
    """A server that restarted (a new factory: in-memory sessions gone) starts a new session; the client is told."""
    link = reactor.accept(server)
    sendAll(handler, ["a", "b"])
    link.reset()
    restarted = SessionServer(reactor)
    reconnect(reactor, restarted)
    lost = [e for e in handler.events if e[1] == "onSessionLost"]
    assert [e[2] for e in lost] == [["a", "b"]]
    assert restarted.refusedResumes == 1 and serverSession(restarted).resumeRefused
    assert restarted.got == []  # nothing was replayed into the new session
    for session in list(server.sessionStore):
        server._sessions.end(session)
    finish(reactor, handler, restarted)


def test_replay_buffer_full_raises_and_drops_nothing(reactor, handler, server):
    """When the replay buffer is full send() raises SendQueueFull; every accepted message still arrives, once."""
    newClient(reactor, handler, replayBufferSize=64)
    link = reactor.accept(server)
    link.reset()  # disconnected: nothing can be acknowledged
    sendAll(handler, numbers("m", 0, 64))
    with pytest.raises(SendQueueFull, match="replay buffer is full"):
        handler.send("m64")
    reconnect(reactor, server)
    assert server.got == [t.encode() for t in numbers("m", 0, 64)]
    handler.send("m64")  # acknowledged meanwhile: room again
    reactor.flush()
    assert server.got[-1] == b"m64"
    finish(reactor, handler, server)


def test_replay_buffer_full_while_open_and_unanswered(reactor, handler, server):
    """Open but the peer never acknowledges (black hole): send() raises once the bound in bytes is reached."""
    newClient(reactor, handler, replayBufferBytes=65536)
    link = reactor.accept(server)
    link.blackhole()
    sent = 0
    with pytest.raises(SendQueueFull):
        while True:
            handler.send(b"x" * 1000)
            sent += 1
    assert sent == 65 and len(handler.unacked) == 65
    link.blackhole(False, False)
    finish(reactor, handler, server)


def test_server_session_send_between_connections_is_replayed_and_bounded(reactor, handler, client):
    """session.send() while the client is away is kept, bounded, sent at resume; after expiry it raises NotConnected."""
    server = SessionServer(reactor, replayBufferSize=64, resumeWindow=30.0)
    link = reactor.accept(server)
    session = serverSession(server)
    link.reset()
    for text in numbers("s", 0, 64):
        session.send(text)
    with pytest.raises(SendQueueFull):
        session.send("s64")
    reconnect(reactor, server)
    assert handler.received() == [t.encode() for t in numbers("s", 0, 64)]
    handler.close()
    reactor.advance(10)
    with pytest.raises(NotConnected):
        session.send("after the end")
    assert server.events[-1] == ("closed", session.id)
    assert reactor.getDelayedCalls() == []


def test_drop_during_the_replay_replays_again(reactor, handler, server, client):
    """A drop while the replay is still in flight: the next resume replays it again; still exactly once."""
    link = reactor.accept(server)
    link.reset()
    sendAll(handler, numbers("m", 0, 10))
    reactor.advance(2.0)
    link = reactor.accept(server, greet=False)
    # Hand-pump the handshake: request to the server, response (and nothing else) to the client.
    link.server.dataReceived(link.clientTransport.value())
    link.clientTransport.clear()
    link.client.dataReceived(link.serverTransport.value())
    link.serverTransport.clear()
    # sent for the first time (they were sent between connections): not counted as replayed
    assert handler.factory.state == "open" and handler.stats.replayed == 0
    link.clientTransport.clear()  # the replay never reaches the server
    link.reset()
    assert server.got == []
    reconnect(reactor, server)
    assert server.got == [t.encode() for t in numbers("m", 0, 10)]
    assert handler.stats.resumes == 2 and handler.stats.replayed == 10  # now a second time
    finish(reactor, handler, server)


def test_drop_before_the_first_acknowledgement_duplicates_nothing(reactor, handler, server, client):
    """Delivered but not yet acknowledged when the drop comes: the resume handshake says so, nothing is sent twice."""
    link = reactor.accept(server)
    sendAll(handler, numbers("m", 0, 10))
    reactor.flush()
    assert len(handler.unacked) == 10  # fewer than ACK_EVERY: no acknowledgement yet
    link.reset()
    reconnect(reactor, server)
    assert handler.stats.replayed == 0 and handler.unacked == []
    assert server.got == [t.encode() for t in numbers("m", 0, 10)]
    finish(reactor, handler, server)


def test_drop_during_the_opening_handshake_keeps_the_old_session(reactor, handler, server, client):
    """A resume whose handshake answer never arrives: the next attempt resumes the same session."""
    link = reactor.accept(server)
    sendAll(handler, ["a"])
    link.reset()
    sendAll(handler, ["b"])
    reactor.advance(2.0)
    link = reactor.accept(server, greet=False)
    link.server.dataReceived(link.clientTransport.value())  # the server resumed and answered...
    link.clientTransport.clear()
    link.serverTransport.clear()  # ...but the answer is lost
    link.reset()
    reconnect(reactor, server, seconds=3.0)
    assert server.got == [b"a", b"b"] and "onSessionLost" not in handler.names()
    finish(reactor, handler, server)


def test_half_open_old_connection_is_superseded(reactor, handler, server, client):
    """The client resumes while the server still holds the old connection: it is aborted and delivers nothing more."""
    old = reactor.accept(server)
    oldServer = old.server
    sendAll(handler, ["a"])
    reactor.flush()
    sendAll(handler, ["b"])  # never crosses the old link
    # Only the client learns that the old link is gone (a dead-peer verdict; the server's side stays half-open).
    reactor.links.remove(old)
    old.client.connectionLost(Failure(ConnectionLost()))
    old.connector.connectionLost(Failure(ConnectionLost()))
    assert oldServer.isOpen and oldServer.session is not None
    reactor.advance(2.0)
    reactor.accept(server)
    assert oldServer.superseded and oldServer.session is None
    assert old.serverTransport.closeRequest is True  # aborted
    oldServer.dataReceived(b"\x81\x81\x00\x00\x00\x00c")  # a late frame of the old link: ignored
    oldServer.connectionLost(Failure(ConnectionLost()))
    assert server.got == [b"a", b"b"] and serverSession(server).protocol is not oldServer
    finish(reactor, handler, server)


def test_plain_server_is_used_without_resume(reactor, handler, client):
    """A resume client against a plain Autobahn server: no header answered, messages flow unnumbered, drops lose nothing of the API."""
    link = reactor.accept(echoServerFactory())
    handler.send("hello")
    reactor.flush()
    assert handler.received() == [b"hello"]
    assert handler.protocol._stream is None and handler.resumed is False
    link.reset()
    reconnect(reactor, echoServerFactory())
    assert "onSessionLost" not in handler.names()  # there never was a session
    handler.close()
    reactor.advance(10)
    assert reactor.getDelayedCalls() == []


def test_server_that_stops_offering_resume_loses_the_session(reactor, handler, server, client):
    """A session, then a reconnect to a plain server: onSessionLost with the unacknowledged messages, then plain operation."""
    link = reactor.accept(server)
    sendAll(handler, ["x"])
    link.reset()
    reconnect(reactor, echoServerFactory())
    assert [e[2] for e in handler.events if e[1] == "onSessionLost"] == [["x"]]
    handler.send("plain")
    reactor.flush()
    assert handler.received()[-1] == b"plain"
    finish(reactor, handler, server)


def test_plain_client_on_a_resume_server_is_served_as_before(reactor, handler, server):
    """A client without resume (the seed's heartbeats included) gets no session and its heartbeats answered."""
    factory = HeartbeatClientFactory(URL, handler, reactor=reactor, jitter=0.0, pingInterval=None)
    factory.connect()
    link = reactor.accept(server)
    assert link.server.session is None and len(server.sessionStore) == 0
    handler.send("heartbeat")
    handler.send("data")
    reactor.flush()
    assert handler.received() == [b"heartbeat"] and server.got == [b"data"]
    finish(reactor, handler, server)


def test_client_close_ends_the_session_on_both_sides(reactor, handler, server, client):
    """handler.close() while open: a clean close handshake, the server forgets the session, nothing is reported lost."""
    reactor.accept(server)
    sendAll(handler, ["a"])
    handler.close()
    reactor.advance(10)
    assert server.got == [b"a"] and len(server.sessionStore) == 0
    assert server.events[-1][0] == "closed" and server.closedSessions == 1
    assert "onSessionLost" not in handler.names()
    assert reactor.getDelayedCalls() == []


def test_server_close_keeps_the_session(reactor, handler, server, client):
    """A close the server begins (requestLeave timeout, restart) is not the client's: the session is resumed."""
    link = reactor.accept(server)
    link.server.closeGracefully(1000, "bye")
    reactor.flush()
    assert handler.factory.state == "waiting" and len(server.sessionStore) == 1
    reconnect(reactor, server)
    assert handler.resumed and server.resumedSessions == 1
    finish(reactor, handler, server)


def test_close_while_disconnected_returns_the_unacked(reactor, handler, server, client):
    """close() between connections ends the session and returns what the server never acknowledged."""
    link = reactor.accept(server)
    sendAll(handler, ["a", "b"])
    link.reset()
    sendAll(handler, ["c"])
    assert handler.close() == ["a", "b", "c"]
    assert "onSessionLost" not in handler.names()
    reactor.advance(100)
    for session in list(server.sessionStore):
        server._sessions.end(session)
    assert reactor.getDelayedCalls() == []


def test_give_up_reports_the_lost_session_first(reactor, handler, server):
    """Giving up ends the session: onSessionLost with the unacknowledged messages, then onGiveUp."""
    newClient(reactor, handler, maxRetries=0)
    link = reactor.accept(server)
    sendAll(handler, ["a"])
    link.reset()
    reactor.advance(5)
    reactor.refuse()
    assert handler.names()[-2:] == ["onSessionLost", "onGiveUp"]
    for session in list(server.sessionStore):
        server._sessions.end(session)


def test_acknowledging_more_than_was_sent_is_a_protocol_error(reactor, handler, server, client):
    """A peer that acknowledges messages never sent breaks the session: the connection fails with 1002."""
    from txheartbeat._resume import ackPayload

    link = reactor.accept(server)
    link.server.sendPong(ackPayload(5))
    reactor.flush()
    errors = [e[2] for e in handler.events if e[1] == "onError"]
    assert isinstance(errors[0], ProtocolError) and errors[0].code == 1002
    assert "bad acknowledgement" in str(errors[0])
    finish(reactor, handler, server)


def test_token_is_random_long_and_never_logged(reactor, handler, server, client):
    """Tokens are 192-bit URL-safe secrets, differ per session and appear in no log event, even at debug level."""
    import txaio

    events = []
    globalLogPublisher.addObserver(events.append)
    txaio.set_global_log_level("debug")
    try:
        link = reactor.accept(server)
        link.reset()
        reconnect(reactor, server)
    finally:
        txaio.set_global_log_level("info")
        globalLogPublisher.removeObserver(events.append)
    session = serverSession(server)
    token = session._token
    assert len(token) == 32 and token == handler.factory._resume.token
    text = repr(events)
    assert token not in text
    assert session.id in text  # the public id is what is logged
    other = SessionServer(reactor)
    assert other._sessions.offer(parseHeader("1"))[0]._token != token
    finish(reactor, handler, server)


def test_header_round_trip_and_garbage():
    """The header parses what it formats; anything malformed or of another version means no resume."""
    token = "A" * 32
    assert parseHeader(formatHeader(token, 7, True)) == (token, 7, True)
    assert parseHeader(formatHeader()) == (None, 0, False)
    for bad in ["2", "1; received=x", "1; received=-1", "1; session=short", "", "x; session=" + token]:
        assert parseHeader(bad) is None
    assert RESUME_HEADER.lower() == "txheartbeat-resume"


def test_client_resume_answer_claiming_more_than_sent_is_a_lost_session():
    """A server answer that claims more than was sent cannot be trusted: the session is lost, not corrupted."""
    resume = ClientResume(100, 1 << 20)
    resume.opened(formatHeader("B" * 32, 0, False))
    assert resume.stream is not None
    resume.stream.number(b"a", False)
    resumed, lost, replay = resume.opened(formatHeader("B" * 32, 5, True))
    assert (resumed, lost, replay) == (False, ["a"], [])


def test_stream_bounds_and_unnumber():
    """A stream numbers, bounds by messages and bytes, takes back the last, and refuses impossible acknowledgements."""
    stream = SessionStream(2, 10)
    stream.number(b"12345", False)
    with pytest.raises(SendQueueFull):
        stream.number(b"123456", True)
    stream.number(b"12345", True)
    with pytest.raises(SendQueueFull):
        stream.number(b"", False)
    stream.unnumber()
    assert stream.sent == 1 and stream.bufferedBytes == 5
    with pytest.raises(ValueError):
        stream.acknowledge(2)
    stream.acknowledge(1)
    assert stream.unacked() == [] and stream.bufferedBytes == 0


@pytest.mark.parametrize(
    "options",
    [{"replayBufferSize": 10}, {"replayBufferBytes": 1000}, {"replayBufferSize": True}, {"resumeWindow": 0}],
)
def test_bad_options_are_clear_errors(reactor, options):
    """Bounds an acknowledging peer could not keep up with, or a non-positive window, are refused up front."""
    with pytest.raises(ValueError):
        HeartbeatServerFactory(URL, resume=True, reactor=reactor, **options)
    if "resumeWindow" not in options:
        with pytest.raises(ValueError):
            HeartbeatClientFactory(URL, RecordingHandler(), reactor=reactor, resume=True, **options)


def test_send_while_the_server_closes_is_kept_for_the_resume(reactor, handler, server, client):
    """Messages sent on either side while a server-begun close runs are not refused or lost: they arrive after the resume."""
    link = reactor.accept(server)
    session = serverSession(server)
    link.server.closeGracefully(1000, "bye")  # the close frame is on its way
    session.send("from server while closing")
    link.server.sendMessage(b"sendMessage while closing")
    reactor.flush()
    handler.send("from client after the close")
    reconnect(reactor, server)
    assert handler.received() == [b"from server while closing", b"sendMessage while closing"]
    assert server.got == [b"from client after the close"]
    finish(reactor, handler, server)


def test_server_stop_keeps_open_sessions_until_their_connection_ends(reactor, handler, server, client):
    """After the server stops listening, a session on an open connection works on, and expires at once when it drops."""
    link = reactor.accept(server)
    session = serverSession(server)
    server.doStart()
    server.doStop()
    handler.send("still served")
    session.send("still sent")
    reactor.flush()
    assert server.got == [b"still served"] and handler.received() == [b"still sent"]
    assert server.events == [("created", session.id, False)]
    link.reset()
    assert server.events[-1][0] == "expired" and len(server.sessionStore) == 0
    handler.close()
    reactor.advance(10)
    assert reactor.getDelayedCalls() == []


def test_server_stop_ends_every_session(reactor, handler, server, client):
    """When the server stops listening its sessions end: detached ones expire at once, no timer is left."""
    link = reactor.accept(server)
    session = serverSession(server)
    link.reset()
    server.doStart()
    server.doStop()  # the last port stopped listening
    assert ("expired", session.id, []) in server.events and len(server.sessionStore) == 0
    with pytest.raises(NotConnected):
        session.send("too late")
    handler.close()
    reactor.advance(10)
    assert reactor.getDelayedCalls() == []


def test_client_service_passes_resume_through(reactor, handler, server):
    """HeartbeatClientService(resume=True) runs a resumable session like connect() does."""
    from txheartbeat import HeartbeatClientService

    service = HeartbeatClientService(URL, handler, reactor=reactor, resume=True, jitter=0.0, pingInterval=None)
    service.startService()
    link = reactor.accept(server)
    handler.send("a")
    link.reset()
    handler.send("b")
    reconnect(reactor, server)
    assert handler.resumed and server.got == [b"a", b"b"]
    service.stopService()
    reactor.advance(10)
    for session in list(server.sessionStore):
        server._sessions.end(session)
    assert reactor.getDelayedCalls() == []


def test_custom_store_is_used(reactor, handler, client):
    """A store given to the server holds its sessions (filed by the token's digest, never the token)."""
    from txheartbeat import MemorySessionStore

    store = MemorySessionStore()
    server = SessionServer(reactor, sessionStore=store)
    reactor.accept(server)
    (session,) = list(store)
    assert server.sessionStore is store and store.get(session.key) is session
    assert session._token.encode() not in session.key
    with pytest.raises(ValueError):
        HeartbeatServerFactory(URL, resume=True, sessionStore=object(), reactor=reactor)
    finish(reactor, handler, server)


def test_a_raising_on_message_still_counts_the_message(reactor, handler, client):
    """A server onMessage that raises received the message: a resume does not deliver it again."""

    class Raising(Recorder):
        def onMessage(self, payload, isBinary):
            super().onMessage(payload, isBinary)
            raise RuntimeError("application bug")

    server = SessionServer(reactor, protocol=Raising)
    link = reactor.accept(server)
    handler.send("once")
    with pytest.raises(RuntimeError):
        reactor.flush()  # (a real reactor logs it and drops the connection)
    link.reset()
    reconnect(reactor, server)
    assert server.got == [b"once"]
    finish(reactor, handler, server)


def test_a_message_the_client_refuses_ends_the_session(reactor, handler):
    """A server message the client refuses (too big) is not replayed forever: the session ends, both sides are told."""
    server = SessionServer(reactor)
    newClient(reactor, handler, maxMessagePayloadSize=1000)
    reactor.accept(server)
    session = serverSession(server)
    session.send("x" * 2000)
    session.send("small")
    reactor.flush()
    errors = [e[2] for e in handler.events if e[1] == "onError"]
    assert isinstance(errors[0], ProtocolError) and errors[0].code == 1009
    reconnect(reactor, server)
    (new,) = [s for s in server.sessionStore if s is not session]
    assert new.resumeRefused is False  # the client asked for a new session, not a resume
    handler.send("after")
    reactor.flush()
    assert server.got == [b"after"]
    reactor.advance(61)  # the old session, never resumed, expires with what the client refused
    assert ("expired", session.id, ["x" * 2000, "small"]) in server.events
    finish(reactor, handler, server)
