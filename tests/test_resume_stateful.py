"""
A hypothesis state machine for session resume on the in-memory reactor: it
interleaves sends both ways, drops with bytes in flight, half-open links,
black holes, server-side closes, refused attempts and time, and checks after
every step that each side delivered a prefix of what the other sent, in order,
with nothing twice; at the end, after the link heals, everything arrived.
"""

from typing import List

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure

from txheartbeat import HeartbeatClientFactory, HeartbeatServerFactory, HeartbeatServerProtocol, SendQueueFull
from txheartbeat.testing import MemoryReactor, RecordingHandler

URL = "ws://127.0.0.1:9000/"


class Recorder(HeartbeatServerProtocol):
    def onMessage(self, payload, isBinary):
        self.factory.got.append(payload)


class ResumeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.reactor = MemoryReactor()
        self.server = HeartbeatServerFactory(
            URL, resume=True, resumeWindow=1000.0, pingInterval=2.0, pongTimeout=2.0, reactor=self.reactor
        )
        self.server.protocol = Recorder
        self.server.got: List[bytes] = []
        self.handler = RecordingHandler(self.reactor)
        self.factory = HeartbeatClientFactory(
            URL,
            self.handler,
            reactor=self.reactor,
            resume=True,
            pingInterval=1.0,
            pongTimeout=1.0,
            jitter=0.0,
            replayBufferSize=64,
        )
        self.factory.connect()
        self.clientSent: List[bytes] = []
        self.serverSent: List[bytes] = []
        self.session = None
        self.orphans: list = []

    # actions -------------------------------------------------------------------

    @rule()
    def accept(self):
        if self.reactor.pending:
            self.reactor.accept(self.server)
            if self.session is None:
                (self.session,) = list(self.server.sessionStore)

    @rule()
    def refuse(self):
        if self.reactor.pending:
            self.reactor.refuse()

    @rule(n=st.integers(1, 40))
    def clientSends(self, n):
        for _ in range(n):
            text = f"c{len(self.clientSent)}"
            try:
                self.handler.send(text)
            except SendQueueFull:
                return
            self.clientSent.append(text.encode())

    @precondition(lambda self: self.session is not None)
    @rule(n=st.integers(1, 40))
    def serverSends(self, n):
        for _ in range(n):
            text = f"s{len(self.serverSent)}"
            try:
                self.session.send(text)
            except SendQueueFull:
                return
            self.serverSent.append(text.encode())

    @rule()
    def pump(self):
        self.reactor.flush()

    @rule()
    def resetWithBytesInFlight(self):
        for link in list(self.reactor.links):
            link.reset()

    @rule()
    def halfOpen(self):
        """Only the client learns the link is gone; the server's side stays open until superseded."""
        for link in list(self.reactor.links):
            self.reactor.links.remove(link)
            link.client.connectionLost(Failure(ConnectionLost()))
            link.connector.connectionLost(Failure(ConnectionLost()))
            self.orphans.append(link)

    @rule()
    def blackhole(self):
        for link in self.reactor.links:
            link.blackhole()

    @rule()
    def serverCloses(self):
        for link in list(self.reactor.links):
            if link.server.isOpen:
                link.server.closeGracefully(1000, "bye")

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 2.5]))
    def advance(self, seconds):
        self.reactor.advance(seconds)

    # invariants ----------------------------------------------------------------

    @invariant()
    def prefixesInOrderNothingTwice(self):
        got = self.server.got
        assert got == self.clientSent[: len(got)]
        received = self.handler.received()
        assert received == self.serverSent[: len(received)]
        assert "onSessionLost" not in self.handler.names()

    def teardown(self):
        # No more faults.  A black-holed link lost bytes while "up", which TCP
        # never does: it is a dead connection, so it is reset rather than healed.
        for link in list(self.reactor.links):
            if not (link.toServer and link.toClient):
                link.reset()
        for _ in range(100):
            if self.server.got == self.clientSent and self.handler.received() == self.serverSent:
                break
            if self.reactor.pending:
                self.reactor.accept(self.server)
            self.reactor.advance(0.5)
        assert self.server.got == self.clientSent
        assert self.handler.received() == self.serverSent
        self.handler.close()
        self.reactor.advance(10)
        for link in self.orphans:
            if link.server.transport is not None:
                link.server.connectionLost(Failure(ConnectionLost()))
        self.server.stopFactory()


TestResume = ResumeMachine.TestCase
TestResume.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
