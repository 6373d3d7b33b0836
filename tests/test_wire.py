"""The browser's session format (txheartbeat.resume.1) on the server, driven by a raw browser-like client on the in-memory reactor."""

import json
from typing import Any, List, Optional

import pytest
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol

from txheartbeat import HeartbeatServerFactory, HeartbeatServerProtocol, NotConnected, SendQueueFull
from txheartbeat._protocol import ExactTimer
from txheartbeat._resume import ACK_EVERY
from txheartbeat._wire import ABANDON_CODE, PLAIN_SUBPROTOCOL, SUBPROTOCOL, WireError, parseControl

from .conftest import URL


class Page(WebSocketClientProtocol):
    """What a browser page speaking txheartbeat.resume.1 does, one frame at a time, recording what it gets."""

    def onOpen(self):
        self.got: List[Any] = []
        self.closed: Optional[tuple] = None

    def onMessage(self, payload, isBinary):
        self.got.append((payload, isBinary))

    def onClose(self, wasClean, code, reason):
        self.closed = (wasClean, code, reason)

    def control(self, type, **fields):
        self.sendMessage(b"c" + json.dumps({"type": type, **fields}).encode())

    def hello(self, session=None, received=0):
        self.control("hello", session=session, received=received)

    def say(self, text):
        self.sendMessage(b"d" + text.encode())

    def controls(self):
        return [json.loads(p[1:]) for p, b in self.got if p[:1] == b"c"]

    def messages(self):
        return [p[1:].decode() for p, b in self.got if p[:1] == b"d"]


class Recorder(HeartbeatServerProtocol):
    """Records its hooks and what reaches the application."""

    def onOpen(self):
        self.factory.events.append(("open", self.session is not None, self.resumed))

    def onMessage(self, payload, isBinary):
        self.factory.got.append(payload.decode())


class Server(HeartbeatServerFactory):
    def __init__(self, reactor, **options):
        options.setdefault("pingInterval", None)
        options.setdefault("resume", True)
        super().__init__(URL, reactor=reactor, **options)
        self.protocol = Recorder
        self.got: List[str] = []
        self.events: List[tuple] = []


@pytest.fixture
def server(reactor):
    return Server(reactor)


def connect(reactor, server, protocols=(SUBPROTOCOL, PLAIN_SUBPROTOCOL)):
    """A page's connection to ``server``, open (the handshake pumped through)."""
    factory = WebSocketClientFactory(URL, protocols=list(protocols))
    factory.protocol = Page
    factory._batched_timer = ExactTimer(reactor)
    factory.setProtocolOptions(openHandshakeTimeout=0, closeHandshakeTimeout=0)
    reactor.connectTCP("127.0.0.1", 9000, factory)
    return reactor.accept(server)


def welcomed(reactor, server, session=None, received=0):
    """A connection whose hello was answered: ``(link, welcome)``."""
    link = connect(reactor, server)
    link.client.hello(session, received)
    reactor.flush()
    return link, link.client.controls()[0]


def finish(reactor, server):
    for link in list(reactor.links):
        link.reset()
    for session in list(server.sessionStore or ()):
        server._sessions.end(session)
    assert reactor.getDelayedCalls() == []


def test_subprotocol_selected_and_on_open_waits_for_the_hello(reactor, server):
    """The server selects txheartbeat.resume.1; onOpen runs only once the hello is answered, with the session attached."""
    link = connect(reactor, server)
    assert link.client.websocket_protocol_in_use == SUBPROTOCOL
    assert server.events == [] and server.clients == set()
    link.client.hello()
    reactor.flush()
    (welcome,) = link.client.controls()
    assert welcome["type"] == "welcome" and welcome["received"] == 0 and welcome["resumed"] is False
    assert 16 <= len(welcome["session"]) <= 128
    assert server.events == [("open", True, False)] and server.clients == {link.server}
    finish(reactor, server)


def test_data_both_ways_framed_and_control_never_reaches_on_message(reactor, server):
    """Data crosses as d-prefixed frames both ways; controls, including unknown types, never reach onMessage."""
    link, _ = welcomed(reactor, server)
    link.client.say("one")
    link.client.control("future-type", x=1)
    link.client.say("heartbeat")  # in a session every data message is the application's
    link.server.sendMessage(b"two")
    reactor.flush()
    assert server.got == ["one", "heartbeat"]
    assert link.client.messages() == ["two"] and link.client.got[-1] == (b"dtwo", False)
    assert link.server.isOpen
    finish(reactor, server)


def test_resume_after_a_drop_replays_both_ways_exactly_once(reactor, server):
    """After a drop, a hello with the token and the count received brings a welcome with the server's count and replays only what each side missed."""
    link, welcome = welcomed(reactor, server)
    token = welcome["session"]
    for i in range(5):
        link.client.say(f"c{i}")
        link.server.sendMessage(f"s{i}".encode())
    reactor.flush()
    link.blackhole()  # the last ones are lost in flight, both ways
    link.client.say("c5")
    link.client.say("c6")
    link.server.sendMessage(b"s5")
    reactor.flush()
    link.reset()
    assert server.got == [f"c{i}" for i in range(5)]
    again, welcome = welcomed(reactor, server, token, received=3)  # (the page had delivered 3)
    assert welcome == {"type": "welcome", "session": token, "received": 5, "resumed": True}
    assert again.client.messages() == ["s3", "s4", "s5"]  # replayed after the welcome
    assert server.events[-1] == ("open", True, True) and server.resumedSessions == 1
    again.client.say("c5")  # the page replays past the server's 5
    again.client.say("c6")
    reactor.flush()
    assert server.got == [f"c{i}" for i in range(7)]
    finish(reactor, server)


def test_unknown_session_is_refused_with_a_new_one(reactor, server):
    """A hello with a token the server does not know gets a new session (resumed false): the page reports its session lost."""
    link, welcome = welcomed(reactor, server, "x" * 32, received=7)
    assert welcome["resumed"] is False and welcome["session"] != "x" * 32 and welcome["received"] == 0
    assert server.refusedResumes == 1 and server.events == [("open", True, False)]
    finish(reactor, server)


def test_expired_session_is_lost(reactor):
    """Past resumeWindow the session expires; the page's hello with its token starts a new one."""
    server = Server(reactor, resumeWindow=5.0)
    link, welcome = welcomed(reactor, server)
    link.reset()
    reactor.advance(6)
    assert server.expiredSessions == 1
    _, again = welcomed(reactor, server, welcome["session"], 0)
    assert again["resumed"] is False and again["session"] != welcome["session"]
    finish(reactor, server)


def test_acknowledgements_both_ways_empty_the_buffers(reactor, server):
    """The server acks every ACK_EVERY messages, the page's acks empty the server's buffer, and a ping is answered by a pong with the server's count."""
    link, _ = welcomed(reactor, server)
    session = link.server.session
    for i in range(ACK_EVERY + 3):
        link.client.say(str(i))
        link.server.sendMessage(str(i).encode())
    reactor.flush()
    assert [c for c in link.client.controls() if c["type"] == "ack"] == [{"type": "ack", "received": ACK_EVERY}]
    assert len(session.unacked) == ACK_EVERY + 3
    link.client.control("ack", received=ACK_EVERY)
    reactor.flush()
    assert len(session.unacked) == 3
    link.client.control("ping", received=ACK_EVERY + 3)
    reactor.flush()
    assert session.unacked == [] and link.client.controls()[-1] == {"type": "pong", "received": ACK_EVERY + 3}
    finish(reactor, server)


def test_server_heartbeat_acks_what_a_browser_cannot_read_in_a_ping(reactor):
    """An idle server's heartbeat sends an ack control first (a browser cannot see ping payloads); the browser's automatic pong keeps it alive."""
    server = Server(reactor, pingInterval=1.0, pongTimeout=1.0)
    link, _ = welcomed(reactor, server)
    link.client.say("a")
    reactor.flush()
    reactor.advance(1.5)
    assert link.client.controls()[-1] == {"type": "ack", "received": 1}
    assert link.server.isOpen and server.pingsSent == 1
    finish(reactor, server)


def test_replay_buffer_is_bounded_and_raises(reactor):
    """Past replayBufferSize unacknowledged messages sendMessage raises SendQueueFull; nothing accepted is dropped."""
    server = Server(reactor, replayBufferSize=2 * ACK_EVERY)
    link, _ = welcomed(reactor, server)
    for i in range(2 * ACK_EVERY):
        link.server.sendMessage(str(i).encode())
    with pytest.raises(SendQueueFull):
        link.server.sendMessage(b"more")
    with pytest.raises(SendQueueFull):
        link.server.session.send("more")
    reactor.flush()
    assert link.client.messages() == [str(i) for i in range(2 * ACK_EVERY)]
    link.client.control("ack", received=2 * ACK_EVERY)
    reactor.flush()
    link.server.sendMessage(b"more")
    reactor.flush()
    assert link.client.messages()[-1] == "more"
    finish(reactor, server)


def test_protocol_errors_fail_the_connection_with_1002(reactor, server):
    """A message without the prefix, data before the hello, a second hello or an ack beyond what was sent fail the connection (ProtocolError 1002, the TCP connection dropped)."""
    for send in (
        lambda c: c.sendMessage(b"plain"),
        lambda c: c.say("early"),
        lambda c: (c.hello(), c.hello()),
        lambda c: (c.hello(), c.control("ack", received=1)),
        lambda c: c.sendMessage(b"c{not json"),
        lambda c: c.sendMessage(b"c" + json.dumps({"type": "hello", "received": -1}).encode()),
    ):
        link = connect(reactor, server)
        send(link.client)
        reactor.flush()
        assert link.client.closed is not None and link.server.failure.value.code == 1002, link.server.failure
    assert server.got == []
    finish(reactor, server)


def test_no_hello_within_pong_timeout_fails_the_connection(reactor):
    """A page that opens and never says hello is dropped after pongTimeout, with no session made."""
    server = Server(reactor, pingInterval=5.0, pongTimeout=2.0)
    link = connect(reactor, server)
    reactor.advance(2.1)
    assert link.client.closed is not None and link.server.failure.value.code == 1002
    assert len(server.sessionStore) == 0
    finish(reactor, server)


def test_send_before_the_hello_raises_not_connected(reactor, server):
    """Before the hello there is no session: sendMessage raises NotConnected instead of sending an unframed message."""
    link = connect(reactor, server)
    with pytest.raises(NotConnected):
        link.server.sendMessage(b"x")
    finish(reactor, server)


def test_page_close_ends_the_session(reactor, server):
    """The page's close() (code 1000) ends the session on the server."""
    link, _ = welcomed(reactor, server)
    link.client.sendClose(1000)
    reactor.flush()
    assert server.closedSessions == 1 and len(server.sessionStore) == 0
    finish(reactor, server)


def test_abandon_code_keeps_the_session_for_a_resume(reactor, server):
    """A close with ABANDON_CODE (4990: a mini-program giving up on a connection) keeps the session, and the page resumes it; 4000 would end it."""
    link, first = welcomed(reactor, server)
    link.client.sendClose(ABANDON_CODE, "txheartbeat: abandoned")
    reactor.flush()
    assert server.closedSessions == 0 and len(server.sessionStore) == 1
    again, welcome = welcomed(reactor, server, first["session"])
    assert welcome["resumed"] is True and welcome["session"] == first["session"]
    again.client.sendClose(4000)
    reactor.flush()
    assert server.closedSessions == 1 and len(server.sessionStore) == 0
    finish(reactor, server)


def test_server_without_resume_leaves_the_page_plain(reactor):
    """Without resume the server selects txheartbeat.plain: the page runs plain and its messages reach onMessage as they are."""
    server = Server(reactor, resume=False)
    link = connect(reactor, server)
    assert link.client.websocket_protocol_in_use == PLAIN_SUBPROTOCOL and server.events == [("open", False, False)]
    link.client.sendMessage(b"hello")
    reactor.flush()
    assert server.got == ["hello"]
    finish(reactor, server)


def test_parse_control_refuses_malformed_messages():
    """parseControl takes objects with a string type and a count >= 0, and a token of 16-128 ASCII characters or null."""
    assert parseControl(b'{"type":"ack","received":3}').received == 3
    assert parseControl(b'{"type":"hello","session":null,"received":0}').session is None
    for body in (b"[]", b'{"type":1}', b'{"type":"ack","received":true}', b'{"type":"hello","session":"short"}'):
        with pytest.raises(WireError):
            parseControl(body)


def test_python_resume_client_and_page_share_one_server(reactor, server):
    """A Python client resuming by header and a page speaking txheartbeat.resume.1 each get their own session on one server, unframed and framed."""
    from txheartbeat import HeartbeatClientFactory
    from txheartbeat.testing import RecordingHandler

    handler = RecordingHandler(reactor)
    factory = HeartbeatClientFactory(URL, handler, reactor=reactor, resume=True, jitter=0.0, pingInterval=None)
    factory.connect().addErrback(lambda f: None)
    python = reactor.accept(server)
    page, _ = welcomed(reactor, server)
    handler.send("from python")
    page.client.say("from the page")
    python.server.sendMessage(b"to python")
    page.server.sendMessage(b"to the page")
    reactor.flush()
    assert len(server.sessionStore) == 2 and python.server.session is not page.server.session
    assert sorted(server.got) == ["from python", "from the page"]
    assert handler.received() == [b"to python"] and page.client.messages() == ["to the page"]
    handler.close()
    finish(reactor, server)


def test_plain_clients_get_no_subprotocol_they_did_not_offer(reactor):
    """A client offering other subprotocols (or none) gets what onConnect chose, never one of ours."""
    for resume in (True, False):
        server = Server(reactor, resume=resume)
        link = connect(reactor, server, protocols=("chat",))
        assert link.client.websocket_protocol_in_use is None and server.events == [("open", False, False)]
        finish(reactor, server)
