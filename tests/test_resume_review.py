"""
Independent review of session resume (issue 11): probes on the in-memory reactor.

Tests marked ``xfail(strict=True)`` reproduce a defect (they start passing,
and so fail the suite, once it is fixed: drop the mark then).  The others
are probes that held; they stay as regression tests.
"""

from __future__ import annotations

import time
from typing import Any, List, Optional

import pytest
from autobahn.websocket.compress import (
    PerMessageDeflateOffer,
    PerMessageDeflateOfferAccept,
    PerMessageDeflateResponseAccept,
)
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from txheartbeat import (
    HeartbeatServerFactory,
    NotConnected,
    ProtocolError,
    SendQueueFull,
)
from txheartbeat._resume import ackPayload, parseHeader, pingPayload
from txheartbeat.testing import MemoryReactor, RecordingHandler

from .conftest import URL
from .test_resume import Recorder, SessionServer, newClient

# Helpers ---------------------------------------------------------------------------


# (Recorder and SessionServer are the unit tests' own)


def only(server: SessionServer):
    (session,) = [s for s in server.sessionStore]
    return session


def reconnect(reactor: MemoryReactor, server: HeartbeatServerFactory, seconds: float = 2.0):
    reactor.advance(seconds)
    return reactor.accept(server)


def comeBack(reactor: MemoryReactor, server: HeartbeatServerFactory, limit: float = 60.0):
    """Advance until the client's next attempt is pending (whatever its backoff), then accept it."""
    waited = 0.0
    while not reactor.pending:
        assert waited < limit, "the client never came back"
        reactor.advance(0.25)
        waited += 0.25
    return reactor.accept(server)


class _RawTransport(StringTransport):
    """A StringTransport that, like Twisted's TCP transports, tolerates unregisterProducer and abort."""

    def unregisterProducer(self):
        self.producer = None

    def abortConnection(self):
        self.loseConnection()


def lostLists(handler: RecordingHandler) -> List[list]:
    return [e[2] for e in handler.events if e[1] == "onSessionLost"]


def endSessions(server: SessionServer) -> None:
    for session in list(server.sessionStore):
        server._sessions.end(session)


def finish(reactor: MemoryReactor, handler: RecordingHandler, server: SessionServer) -> None:
    handler.close()
    reactor.advance(10)
    assert handler.factory.state == "closed"
    endSessions(server)
    assert reactor.getDelayedCalls() == []


def rawHandshake(server: HeartbeatServerFactory, resumeLines: List[str]):
    """Open a server connection with a hand-written upgrade request; return (protocol, transport, answer)."""
    protocol = server.buildProtocol(None)
    transport = _RawTransport()
    protocol.makeConnection(transport)
    lines = [
        "GET / HTTP/1.1",
        "Host: 127.0.0.1:9000",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *resumeLines,
    ]
    protocol.dataReceived(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    head = transport.value().split(b"\r\n\r\n", 1)[0].decode("latin-1")
    answer = None
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "txheartbeat-resume":
            answer = value.strip()
    return protocol, transport, head.split("\r\n", 1)[0], answer


@pytest.fixture
def server(reactor):
    return SessionServer(reactor)


@pytest.fixture
def client(reactor, handler):
    return newClient(reactor, handler)


# Defects (xfail strict) ------------------------------------------------------------


def test_server_late_send_on_an_ended_connection_after_resume_is_exactly_once(reactor, handler, server, client):
    """A reply sent with sendMessage on a connection that ended, after its session resumed on a new one, is delivered exactly once (or refused), and later messages are neither lost nor duplicated."""
    first = reactor.accept(server)
    oldProtocol = first.server  # e.g. an onMessage whose reply was computed in a Deferred
    first.reset()
    reconnect(reactor, server)
    session = only(server)
    try:
        oldProtocol.sendMessage(b"late reply")
        late = [b"late reply"]
    except Exception:  # refusing it, as Autobahn does on a closed connection, is honest too
        late = []
    for i in range(40):
        session.send(f"n{i}")
    reactor.flush()
    reactor.links[0].reset()
    reconnect(reactor, server)
    assert handler.received() == late + [f"n{i}".encode() for i in range(40)]
    finish(reactor, handler, server)


def test_client_late_send_on_an_ended_connection_after_resume_is_exactly_once(reactor, handler, server, client):
    """A HeartbeatClientProtocol's sendMessage on a connection that ended, after the session resumed, is delivered exactly once (or refused), and later messages are neither lost nor duplicated."""
    first = reactor.accept(server)
    oldProtocol = first.client
    first.reset()
    reconnect(reactor, server)
    try:
        oldProtocol.sendMessage(b"late", True)
        late = [b"late"]
    except Exception:
        late = []
    for i in range(40):
        handler.send(f"n{i}")
    reactor.flush()
    reactor.links[0].reset()
    reconnect(reactor, server)
    assert server.got == late + [f"n{i}".encode() for i in range(40)]
    finish(reactor, handler, server)


class Gated(Recorder):
    """onConnect answers with the factory's ``gate`` Deferred when one is set (an asynchronous auth check)."""

    def onConnect(self, request):
        gate, self.factory.gate = self.factory.gate, None
        return gate


def test_stale_handshake_does_not_steal_the_session_from_the_live_connection(reactor, handler, client):
    """A resume handshake whose connection died while an asynchronous onConnect ran never takes the session from the client's live connection."""
    server = SessionServer(reactor, protocol=Gated)
    server.gate = None
    first = reactor.accept(server)
    session = only(server)
    first.reset()
    gate = server.gate = Deferred()
    stale = reconnect(reactor, server)  # the server's onConnect is still pending
    stale.reset()  # ...and that connection dies meanwhile
    live = reconnect(reactor, server, seconds=5.0)
    assert handler.resumed and session.protocol is live.server
    gate.callback(None)  # the dead connection's onConnect completes
    reactor.flush()
    assert session.protocol is live.server and live.server.isOpen
    assert handler.factory.state == "open"
    handler.send("still here")
    reactor.flush()
    assert server.got == [b"still here"]
    finish(reactor, handler, server)


def test_stale_handshake_of_a_departed_client_still_expires(reactor, handler, client):
    """A session whose only resume attempt died during an asynchronous onConnect still expires after resumeWindow, with no connection counted."""
    server = SessionServer(reactor, protocol=Gated, resumeWindow=10.0)
    server.gate = None
    first = reactor.accept(server)
    session = only(server)
    first.reset()
    gate = server.gate = Deferred()
    reconnect(reactor, server)  # onConnect pending
    handler.close()  # the client gives up on it: the attempt is aborted, the client closed for good
    reactor.flush()
    assert handler.factory.state == "closed"
    gate.callback(None)
    reactor.advance(20.0)
    assert ("expired", session.id, []) in server.events
    assert len(server.sessionStore) == 0 and server.stats.clients == 0
    assert reactor.getDelayedCalls() == []


def test_send_after_restart_inside_on_close_is_not_dropped(reactor, server):
    """connect() then send() inside onClose of a final close: the message is delivered in the new run (or refused, or reported), never silently dropped."""
    outcome: List[Any] = []

    class Restarting(RecordingHandler):
        restart = False

        def onClose(self, wasClean, code, reason):
            super().onClose(wasClean, code, reason)
            if self.restart:
                self.restart = False
                self.factory.connect().addErrback(lambda f: None)
                try:
                    self.send("first of the new run")
                    outcome.append("accepted")
                except Exception as e:
                    outcome.append(e)

    handler = Restarting(reactor)
    newClient(reactor, handler)
    reactor.accept(server)
    handler.send("a")
    reactor.flush()
    handler.restart = True
    handler.close()
    reactor.flush()
    reactor.accept(server)
    reactor.flush()
    if outcome == ["accepted"]:
        reported = any("first of the new run" in lost for lost in lostLists(handler))
        assert b"first of the new run" in server.got or reported
    finish(reactor, handler, server)


def test_restart_from_when_closed_does_not_resume_the_closed_session(reactor, handler, server, client):
    """After stopTrying() between connections, a connect() from the whenClosed callback starts a new session; the old one is reported lost, not resumed."""
    first = reactor.accept(server)
    handler.send("old run")
    first.reset()
    factory = handler.factory
    factory.whenClosed().addCallback(lambda _: factory.connect().addErrback(lambda f: None))
    factory.stopTrying()
    reactor.accept(server)
    assert handler.resumed is False
    assert [e[0] for e in server.events] == ["created", "created"]
    assert lostLists(handler) == [["old run"]]
    finish(reactor, handler, server)


def test_message_the_server_refuses_does_not_livelock_the_session(reactor, handler, client):
    """A message the server refuses (too big) does not stall the session forever: later messages arrive, or the session is reported lost."""
    server = SessionServer(reactor, maxMessagePayloadSize=1000)
    reactor.accept(server)
    handler.send("x" * 2000)
    handler.send("small")
    reactor.flush()
    for _ in range(30):
        reactor.advance(5.0)
        if reactor.pending:
            reactor.accept(server)
    assert b"small" in server.got or "onSessionLost" in handler.names() or handler.factory.finished
    finish(reactor, handler, server)


def test_server_send_after_the_clients_final_close_is_refused(reactor, handler, server, client):
    """Once the client's final close frame has arrived, the server's sendMessage and session.send refuse (as Autobahn does without resume) instead of silently discarding."""
    link = reactor.accept(server)
    session = only(server)
    handler.close()
    link.server.dataReceived(link.clientTransport.value())  # the close frame; TCP not yet down
    link.clientTransport.clear()
    from autobahn.exception import Disconnected

    with pytest.raises((Disconnected, NotConnected)):
        link.server.sendMessage(b"late broadcast")
    with pytest.raises(NotConnected):
        session.send("late session.send")
    reactor.advance(10)
    assert server.events[-1] == ("closed", session.id)
    assert reactor.getDelayedCalls() == []


def test_close_inside_on_session_lost_at_open_skips_on_open(reactor, handler, server, client):
    """handler.close() inside onSessionLost at a refused resume: onOpen is not called afterwards and whenOpen does not fire with the handler."""
    handler.onSessionLost = lambda unacked: (handler._record("onSessionLost", unacked), handler.close())
    first = reactor.accept(server)
    first.reset()
    handler.send("x")
    reactor.advance(2.0)
    results: List[Any] = []
    handler.factory.whenOpen().addBoth(results.append)
    reactor.accept(SessionServer(reactor))  # a restarted server: the resume is refused
    reactor.advance(10)
    names = handler.names()
    assert "onOpen" not in names[names.index("onSessionLost") :]
    assert results and isinstance(results[0], Failure)
    endSessions(server)


@pytest.mark.parametrize("value", ["2; session=AAAAAAAAAAAAAAAAAAAAAAAA; received=0", "garbage"])
def test_unknown_version_or_malformed_resume_request_is_served_plain(reactor, value):
    """A request whose resume header is of another version or malformed gets no answer header and no session: it is served as a plain client."""
    server = SessionServer(reactor)
    server.reactor = reactor
    protocol, transport, status, answer = rawHandshake(server, [f"Txheartbeat-Resume: {value}"])
    assert status.startswith("HTTP/1.1 101")
    assert answer is None and protocol.session is None and len(server.sessionStore) == 0
    protocol.connectionLost(Failure(ConnectionDone()))


# Probes that held ---------------------------------------------------------------------


def test_fragmented_compressed_binary_text_and_empty_messages_survive_a_drop(reactor, handler):
    """With permessage-deflate, autoFragmentSize and fragmentSize, text/binary/empty messages each arrive once, in order and type, across a drop."""

    class FragmentingEcho(Recorder):
        def onMessage(self, payload, isBinary):
            super().onMessage(payload, isBinary)
            self.sendMessage(payload, isBinary, fragmentSize=7)

    class Accept:
        # (a callable object, not a function: stays unbound wherever Autobahn's options are stored)
        def __call__(self, offers):
            return next(PerMessageDeflateOfferAccept(o) for o in offers if isinstance(o, PerMessageDeflateOffer))

    server = SessionServer(reactor, protocol=FragmentingEcho, perMessageCompressionAccept=Accept(), autoFragmentSize=5)
    newClient(
        reactor,
        handler,
        perMessageCompressionOffers=[PerMessageDeflateOffer()],
        perMessageCompressionAccept=PerMessageDeflateResponseAccept,
        autoFragmentSize=3,
    )
    link = reactor.accept(server)
    assert link.client._perMessageCompress is not None and link.server._perMessageCompress is not None
    messages: List[Any] = ["", b"", "héllo wörld " * 5, b"\x00\xff" * 40] + [f"m{i}" * 20 for i in range(50)]
    for m in messages[:30]:
        handler.send(m)
    reactor.flush()
    for m in messages[30:]:
        handler.send(m)  # written, never delivered
    link.reset()
    reconnect(reactor, server)
    expected = [(m.encode(), False) if isinstance(m, str) else (m, True) for m in messages]
    assert server.got == [p for p, _ in expected]
    assert [(e[2], e[3]) for e in handler.events if e[1] == "onMessage"] == expected
    finish(reactor, handler, server)


def test_max_buffered_refusal_takes_no_number(reactor, handler, server):
    """With maxBuffered and resume, a send refused by maxBuffered consumes no sequence number: everything accepted arrives once."""
    newClient(reactor, handler, maxBuffered=100)
    link = reactor.accept(server)
    accepted, refused = [], 0
    for i in range(10):
        # every other send finds the kernel buffer backed up (userBacklog reads dataBuffer)
        link.clientTransport.dataBuffer = b"x" * 90 if i % 2 else b""
        try:
            handler.send(f"msg-{i:03}" * 5)
            accepted.append(f"msg-{i:03}" * 5)
        except SendQueueFull:
            refused += 1
    assert refused == 5 and handler.unacked == accepted
    del link.clientTransport.dataBuffer
    link.reset()
    reconnect(reactor, server)
    assert server.got == [a.encode() for a in accepted]
    finish(reactor, handler, server)


def test_message_larger_than_the_replay_bound_is_refused_not_dropped(reactor, handler, server):
    """A message larger than replayBufferBytes raises SendQueueFull (never silently dropped); the session goes on."""
    newClient(reactor, handler, replayBufferBytes=65536)
    reactor.accept(server)
    with pytest.raises(SendQueueFull):
        handler.send(b"x" * 70000)
    handler.send("after")
    reactor.flush()
    assert server.got == [b"after"]
    finish(reactor, handler, server)


@pytest.mark.parametrize(
    "lines",
    [
        ["Txheartbeat-Resume: 1; session={other}; received=0"],
        ["Txheartbeat-Resume: 1; session={upper}; received=0"],
        ["Txheartbeat-Resume: 1; session={token}x; received=0"],
        ["Txheartbeat-Resume: 1; session={token}; received=99999999999999999999999999"],
        ["Txheartbeat-Resume: 1; session={token}; received=-1"],
        ["Txheartbeat-Resume: 1; session={token}; received=" + "9" * 5000],
        ["Txheartbeat-Resume: 1; session=" + "A" * 20000 + "; received=0"],
        ["Txheartbeat-Resume: 1", "Txheartbeat-Resume: 1; session={token}; received=0"],
        ["Txheartbeat-Resume: 1; session={token}; received=0", "Txheartbeat-Resume: 1"],
        ["Txheartbeat-Resume: 2; session={token}; received=0"],
        ["Txheartbeat-Resume: 1; session={token}\x01; received=0"],
    ],
)
def test_injected_resume_headers_never_attach_to_the_live_session(reactor, handler, server, client, lines):
    """Malformed, huge, duplicated or wrong resume headers never attach to (or disturb) another client's live session."""
    link = reactor.accept(server)
    session = only(server)
    token = session._token
    other = token[:-1] + ("A" if token[-1] != "A" else "B")
    lines = [ln.format(token=token, other=other, upper=token.swapcase()) for ln in lines]
    protocol, transport, status, answer = rawHandshake(server, lines)
    assert link.server.isOpen and session.protocol is link.server
    assert protocol.session is not session and not protocol.resumed
    if answer is not None:
        assert token not in answer and parseHeader(answer).resumed is False
    assert server.resumedSessions == 0
    handler.send("unharmed")
    reactor.flush()
    assert server.got == [b"unharmed"]
    protocol.connectionLost(Failure(ConnectionDone()))
    finish(reactor, handler, server)


def test_same_token_from_a_second_connection_takes_over_and_the_first_client_still_gets_everything_once(
    reactor, handler, server, client
):
    """A second connection presenting the client's token and counts supersedes the first; when the real client comes back it gets every server message exactly once."""
    link = reactor.accept(server)
    session = only(server)
    for i in range(5):
        session.send(f"s{i}")
    reactor.flush()
    received = session.stream.sent  # what the client got
    header = f"Txheartbeat-Resume: 1; session={session._token}; received={received}"
    impostor, transport, status, answer = rawHandshake(server, [header])
    assert status.startswith("HTTP/1.1 101") and parseHeader(answer).resumed
    assert session.protocol is impostor and link.serverTransport.closeRequest is True
    reactor.flush()  # the real client's connection is aborted
    for i in range(5, 8):
        session.send(f"s{i}")  # written on the impostor's connection, never acknowledged
    reconnect(reactor, server)
    assert handler.resumed and session.protocol is not impostor
    assert handler.received() == [f"s{i}".encode() for i in range(8)]
    impostor.connectionLost(Failure(ConnectionDone()))
    finish(reactor, handler, server)


def test_stale_and_impossible_acknowledgements(reactor, handler, server, client):
    """A stale (lower) acknowledgement is ignored; one above what was sent, in a ping, fails the connection (1002) and the resume still delivers everything once."""
    link = reactor.accept(server)
    for i in range(40):
        handler.send(f"c{i}")
    reactor.flush()
    assert len(handler.unacked) == 8  # acknowledged at 32
    link.server.sendPong(ackPayload(3))  # stale, out of order
    reactor.flush()
    assert len(handler.unacked) == 8 and handler.factory.state == "open"
    link.server.sendPing(pingPayload(1, 10_000))  # acknowledges more than was ever sent
    reactor.flush()
    errors = [e[2] for e in handler.events if e[1] == "onError"]
    assert isinstance(errors[-1], ProtocolError) and errors[-1].code == 1002
    handler.send("c40")
    reactor.advance(5.0)
    if reactor.pending:
        reactor.accept(server)
    assert handler.resumed and server.got == [f"c{i}".encode() for i in range(41)]
    finish(reactor, handler, server)


def test_server_hooks_send_in_order_and_exactly_once(reactor, handler):
    """Messages sent from onSessionCreated/onSessionResumed, onOpen and onClose arrive once each, after the replay, in send order."""

    class Hooked(Recorder):
        def onOpen(self):
            self.sendMessage(f"open resumed={self.resumed}".encode())

        def onClose(self, wasClean, code, reason):
            if self.session is not None and not self.session.ended:
                self.session.send("from onClose")

    class HookServer(SessionServer):
        def onSessionCreated(self, session):
            super().onSessionCreated(session)
            session.send("created")

        def onSessionResumed(self, session):
            super().onSessionResumed(session)
            session.send("resumed")

    server = HookServer(reactor, protocol=Hooked)
    newClient(reactor, handler)
    link = reactor.accept(server)
    only(server).send("before drop")
    link.reset()
    reconnect(reactor, server)
    assert handler.received() == [
        b"created",
        b"open resumed=False",
        b"before drop",
        b"from onClose",
        b"resumed",
        b"open resumed=True",
    ]
    finish(reactor, handler, server)


def test_server_closing_inside_on_session_resumed_keeps_the_session(reactor, handler):
    """A server that closes (1012) or aborts the connection from onSessionResumed leaves a resumable session: nothing is lost or duplicated."""
    actions = ["close", "abort"]

    class Closing(SessionServer):
        def onSessionResumed(self, session):
            super().onSessionResumed(session)
            if actions:
                action = actions.pop(0)
                session.send(f"before {action}")
                if action == "close":
                    session.protocol.closeGracefully(1012, "retry-window=1")
                else:
                    session.protocol.abort()

    server = Closing(reactor)
    newClient(reactor, handler)
    link = reactor.accept(server)
    link.reset()
    for _ in range(20):
        reactor.advance(2.0)
        if reactor.pending:
            reactor.accept(server)
        if not actions and handler.factory.state == "open":
            break
    assert handler.received() == [b"before close", b"before abort"]
    assert server.resumedSessions == 3 and server.createdSessions == 1
    finish(reactor, handler, server)


def test_request_leave_in_a_session(reactor, handler, server, client):
    """requestLeave sends the leave message once; a client that obeys ends the session cleanly; one that does not is closed and resumes without a duplicate."""
    link = reactor.accept(server)
    session = only(server)
    link.server.requestLeave(timeout=1.0)
    reactor.advance(1.5)  # the client ignores it: the server closes (not final: the session stays)
    assert handler.received() == [b"close"] and len(server.sessionStore) == 1
    reconnect(reactor, server)
    assert handler.resumed and handler.received() == [b"close"]
    handler.onMessage = lambda payload, isBinary: handler.close() if payload == b"close" else None
    session.protocol.requestLeave()
    reactor.advance(10)
    assert server.events[-1] == ("closed", session.id) and "onSessionLost" not in handler.names()
    assert reactor.getDelayedCalls() == []


def test_restart_hint_then_listening_again_resumes(reactor, handler, server, client):
    """After restart() (1012) and overloaded(None) the same process resumes the session: both directions exactly once."""
    reactor.accept(server)
    session = only(server)
    handler.send("c0")
    session.send("s0")
    server.restart(window=1.0)
    handler.send("c1")  # while the close handshake runs
    session.send("s1")
    reactor.flush()
    assert handler.factory.state == "waiting"
    server.overloaded(None)
    for _ in range(10):
        reactor.advance(1.0)
        if reactor.pending:
            reactor.accept(server)
        if handler.factory.state == "open":
            break
    assert handler.resumed and server.got == [b"c0", b"c1"] and handler.received() == [b"s0", b"s1"]
    finish(reactor, handler, server)


def test_stop_factory_while_attached_and_during_a_resume_handshake(reactor, handler, server, client):
    """stopFactory: an attached session carries on until its connection drops, then expires at once; a resume handshake already under way is refused and reported; no timer is left."""
    link = reactor.accept(server)
    session = only(server)
    handler.send("a")
    reactor.flush()
    server.doStart()
    server.doStop()  # attached: carries on
    handler.send("b")
    reactor.flush()
    link.blackhole()
    handler.send("c")  # never delivered
    link.blackhole(False, False)
    link.reset()
    assert server.events[-1][0] == "expired" and len(server.sessionStore) == 0 and session.ended
    comeBack(reactor, server)  # a connection already accepted before the port closed
    assert not handler.resumed and lostLists(handler) == [["a", "b", "c"]]
    assert server.got == [b"a", b"b"] and only(server).resumeRefused
    finish(reactor, handler, server)


def test_expiry_at_the_same_instant_as_the_resume_is_consistent(reactor, handler, client):
    """When the session expires at the very instant the client comes back, the outcome is either a clean resume or a reported loss, never both or neither."""
    server = SessionServer(reactor)
    link = reactor.accept(server)
    session = only(server)
    handler.send("unacked")
    session.send("s-unacked")
    link.reset()
    retryAt = handler.factory._callID.getTime()
    session._expiry.reset(retryAt - reactor.seconds())
    reactor.advance(retryAt - reactor.seconds())
    reactor.accept(server)
    expired = any(e[0] == "expired" for e in server.events)
    if handler.resumed:
        assert not expired and server.got == [b"unacked"] and handler.received() == [b"s-unacked"]
    else:
        assert expired and lostLists(handler) == [["unacked"]]
        assert only(server).resumeRefused
    finish(reactor, handler, server)


def test_heartbeat_acks_and_clean_shutdown_leave_no_timer(reactor, handler):
    """With heartbeats both ways, leave and drain timers in play, a clean shutdown of both ends leaves no delayed call."""
    server = SessionServer(reactor, pingInterval=1.0, pongTimeout=1.0)
    newClient(reactor, handler, pingInterval=1.0, pongTimeout=1.0)
    link = reactor.accept(server)
    session = only(server)
    handler.send("c")
    session.send("s")
    reactor.advance(3.0)
    assert handler.unacked == [] and session.unacked == []
    link.server.requestLeave(timeout=30.0)
    handler.protocol.whenDrained()
    handler.close()
    reactor.advance(10)
    server.doStart()
    server.doStop()
    assert server.events[-1] == ("closed", session.id)
    assert reactor.getDelayedCalls() == []


STATES = ["open", "disconnected", "waiting", "preparing", "connecting", "handshaking", "closing"]


@pytest.mark.parametrize("how", ["handler.close", "factory.close", "cancel-whenOpen-then-close"])
@pytest.mark.parametrize("state", STATES)
def test_final_close_in_every_state_accounts_for_every_message(reactor, state, how):
    """A final close in any state with a session: every accepted message is delivered at most once, and every one not delivered is returned or reported; the client ends closed with no timer."""
    server = SessionServer(reactor, resumeWindow=10.0)
    handler = RecordingHandler(reactor)
    gate: List[Optional[Deferred]] = [None]
    returned: List[Any] = []

    def prepare(attempt):
        return gate[0]

    def closeNow():
        if how == "cancel-whenOpen-then-close":
            handler.factory.whenOpen().cancel()
            handler.factory.close()
        elif how == "factory.close":
            handler.factory.close()
        else:
            returned.extend(handler.close())

    factory = newClient(reactor, handler, prepare=prepare)
    link = reactor.accept(server)
    accepted = []

    def send(text):
        try:
            handler.send(text)
            accepted.append(text)
        except (NotConnected, SendQueueFull):
            pass

    send("m1")
    reactor.flush()
    if state == "open":
        send("m2")
        closeNow()
    elif state == "disconnected":
        handler.onClose = lambda *a: (send("m2"), closeNow())
        link.reset()
    elif state == "closing":
        send("m2")
        factory.close()
        send("m3")  # refused: closing
        closeNow()
    else:
        link.reset()
        send("m2")
        if state == "preparing":
            gate[0] = Deferred()
        if state != "waiting":
            reactor.advance(factory._callID.getTime() - reactor.seconds())
        if state == "handshaking":
            link = reactor.accept(server, greet=False)
        assert factory.state == state
        send("m3")
        closeNow()
    reactor.advance(30.0)
    assert factory.state == "closed"
    reported = [m for lost in lostLists(handler) for m in lost]
    for text in accepted:
        delivered = server.got.count(text.encode())
        assert delivered <= 1
        assert delivered or text in returned or text in reported, (text, server.got, returned, reported)
    assert len(lostLists(handler)) <= 1 and not (returned and reported)
    assert len(server.sessionStore) == 0 and reactor.getDelayedCalls() == []


def test_reentrant_client_hooks_send_exactly_once_in_order(reactor, server):
    """send() from onMessage, onClose (of a drop) and onReconnect, across drops with bytes in flight, delivers each message once in send order."""
    sent: List[bytes] = []

    class Busy(RecordingHandler):
        def send(self, data):
            super().send(data)
            sent.append(data.encode())

        def onMessage(self, payload, isBinary):
            super().onMessage(payload, isBinary)
            self.send("re:" + payload.decode())

        def onClose(self, wasClean, code, reason):
            super().onClose(wasClean, code, reason)
            self.send(f"closed@{len(sent)}")

        def onReconnect(self, attempt, delay, reason=None):
            super().onReconnect(attempt, delay, reason)
            self.send(f"reconnect@{len(sent)}")

    handler = Busy(reactor)
    newClient(reactor, handler)
    link = reactor.accept(server)
    for round_ in range(4):
        session = only(server)
        for i in range(12):
            session.send(f"s{round_}.{i}")
        if round_ % 2:
            link.pump()  # odd rounds: the server's messages are delivered before the drop
        for i in range(3):
            handler.send(f"c{round_}.{i}")
        link.reset()
        link = comeBack(reactor, server)
    reactor.flush()
    assert server.got == sent
    assert handler.received() == [f"s{r}.{i}".encode() for r in range(4) for i in range(12)]
    finish(reactor, handler, server)


def test_token_not_logged_with_octet_and_frame_logging(reactor, handler):
    """With logOctets and logFrames on at both ends (debug level), the session token appears in no log event."""
    import txaio

    server = SessionServer(reactor)
    server.logOctets = server.logFrames = True
    events: List[Any] = []
    globalLogPublisher.addObserver(events.append)
    txaio.set_global_log_level("debug")
    try:
        factory = newClient(reactor, handler)
        factory.logOctets = factory.logFrames = True
        link = reactor.accept(server)
        handler.send("x")
        reactor.flush()
        link.reset()
        reconnect(reactor, server)
    finally:
        txaio.set_global_log_level("info")
        globalLogPublisher.removeObserver(events.append)
    token = only(server)._token
    assert handler.resumed and token not in repr(events)
    finish(reactor, handler, server)


def test_per_message_cost_does_not_grow_with_the_replay_buffer(reactor, handler, server):
    """Sending (numbering) and acknowledging cost the same per message with 100,000 unacknowledged as with none."""
    newClient(reactor, handler, replayBufferSize=300_000, replayBufferBytes=1 << 30)
    link = reactor.accept(server)
    link.blackhole()
    stream = handler.factory._resume.stream

    def timeSends(prefix):
        best = float("inf")
        for attempt in range(3):
            start = time.perf_counter()
            for i in range(2000):
                handler.send(f"{prefix}{attempt}.{i}")
            best = min(best, time.perf_counter() - start)
            reactor.flush()
        return best

    small = timeSends("a")
    for _ in range(100_000):
        stream.number(b"filler", False, False)
    large = timeSends("b")
    assert large < 3 * small + 0.05, (small, large)
    start = time.perf_counter()
    stream.acknowledge(stream.sent)
    assert time.perf_counter() - start < 1.0
    link.blackhole(False, False)
    link.reset()
    handler.close()
    reactor.advance(10)
    endSessions(server)


def test_resume_supersedes_an_old_connection_in_the_middle_of_a_fragmented_message(reactor, handler, server):
    """A resume arriving while the old (half-open) connection holds the first fragments of a message: the message is delivered once, whole, from the replay."""
    from twisted.internet.error import ConnectionLost

    newClient(reactor, handler, autoFragmentSize=4)
    old = reactor.accept(server)
    handler.send("0123456789abcdef")  # four frames of 4 bytes
    wire = old.clientTransport.value()
    old.clientTransport.clear()
    old.server.dataReceived(wire[:20])  # two masked frames: 2 + 4 + 4 bytes each
    assert server.got == []
    reactor.links.remove(old)  # only the client learns the link is gone
    old.client.connectionLost(Failure(ConnectionLost()))
    old.connector.connectionLost(Failure(ConnectionLost()))
    comeBack(reactor, server)
    assert old.server.superseded
    old.server.dataReceived(wire[20:])  # the rest of the old connection's bytes: ignored
    old.server.connectionLost(Failure(ConnectionLost()))
    assert server.got == [b"0123456789abcdef"]
    finish(reactor, handler, server)


def test_open_timeout_and_dead_peer_during_a_session_resume_exactly_once(reactor, handler):
    """A dead peer (heartbeat timeout) and then a resume handshake that times out (openTimeout) still end in a resume with everything exactly once."""
    server = SessionServer(reactor, resumeWindow=120.0)
    newClient(reactor, handler, pingInterval=1.0, pongTimeout=1.0, openTimeout=3.0)
    link = reactor.accept(server)
    session = only(server)
    handler.send("c0")
    session.send("s0")
    reactor.flush()
    link.blackhole()
    handler.send("c1")
    session.send("s1")
    reactor.advance(3.0)  # the heartbeat declares the server dead
    assert handler.stats.deadPeers == 1 and handler.factory.state in ("waiting", "connecting")
    handler.send("c2")
    while not reactor.pending:
        reactor.advance(0.25)
    stalled = reactor.accept(server, greet=False)
    stalled.server.dataReceived(stalled.clientTransport.value())  # the server resumes and answers...
    stalled.clientTransport.clear()
    stalled.blackhole()  # ...but the answer and its replay never arrive
    reactor.advance(3.5)  # openTimeout
    assert any(type(e[2]).__name__ == "OpenTimeout" for e in handler.events if e[1] == "onError")
    comeBack(reactor, server)
    reactor.advance(3.0)
    assert handler.resumed and handler.factory.state == "open"
    assert server.got == [b"c0", b"c1", b"c2"] and handler.received() == [b"s0", b"s1"]
    for stale in list(reactor.links)[:-1]:
        stale.reset()
    finish(reactor, handler, server)


def test_resume_client_against_a_plain_txheartbeat_server(reactor, handler):
    """A resume client with pingMessage against a txheartbeat server without resume: no session, heartbeats answered (not delivered), no onSessionLost on drops."""
    plain = HeartbeatServerFactory(URL, pingInterval=None, reactor=reactor)
    plain.protocol = Recorder
    plain.got = []
    newClient(reactor, handler, pingInterval=1.0, pongTimeout=1.0, pingMessage="heartbeat")
    link = reactor.accept(plain)
    handler.send("data")
    reactor.advance(2.5)
    assert plain.got == [b"data"] and handler.stats.heartbeatsAnswered >= 1
    assert set(handler.received()) == {b"heartbeat"} and handler.protocol._stream is None  # the answers
    link.reset()
    handler.send("queued")
    comeBack(reactor, plain)
    assert plain.got == [b"data", b"queued"] and "onSessionLost" not in handler.names()
    handler.close()
    reactor.advance(10)
    assert reactor.getDelayedCalls() == []


def test_connect_again_after_a_final_close_starts_a_new_session(reactor, handler, server, client):
    """connect() after handler.close() (outside hooks), and again after cancelling that run mid-handshake: each run starts a new session, no old message resurfaces."""
    link = reactor.accept(server)
    handler.send("run1")
    reactor.flush()
    link.blackhole()
    handler.send("run1-unacked")
    assert handler.close() == []  # open: decided by the close handshake...
    reactor.advance(10)  # ...which times out: reported
    assert lostLists(handler) == [["run1", "run1-unacked"]]
    d = handler.factory.connect()
    d.addErrback(lambda f: None)
    reactor.advance(0.1)
    reactor.accept(server, greet=False)
    assert handler.factory.state == "handshaking"
    d.cancel()
    reactor.advance(10)
    assert handler.factory.state == "closed"
    handler.factory.connect().addErrback(lambda f: None)
    reactor.advance(0.1)
    reactor.accept(server)
    assert handler.resumed is False and server.resumedSessions == 0
    handler.send("run3")
    reactor.flush()
    assert server.got == [b"run1", b"run3"]
    for stale in list(reactor.links)[:-1]:
        stale.reset()
    finish(reactor, handler, server)
