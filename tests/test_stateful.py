"""
A hypothesis state machine on the in-memory reactor: it interleaves opening,
inbound traffic, silence, peer close, transport loss, send, close() and time,
and checks the library's invariants after every step.
"""

import random
from typing import List

from autobahn.twisted.websocket import WebSocketServerProtocol
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from txheartbeat import HeartbeatClientFactory, HeartbeatTimeout, NotConnected, SendQueueFull, exponentialBackoff
from txheartbeat.testing import MemoryReactor, RecordingHandler, echoServerFactory

PING, PONG = 1.0, 1.0


class Server(WebSocketServerProtocol):
    received: List[bytes] = []

    def onMessage(self, payload, isBinary):
        Server.received.append(payload)


class Silent(Server):
    def onPing(self, payload):
        pass


def clientCalls(reactor):
    """Pending delayed calls, less the in-memory Autobahn server's own (its close timer can outlive it)."""
    return [
        c
        for c in reactor.getDelayedCalls()
        if not isinstance(getattr(c.func, "__self__", None), WebSocketServerProtocol)
    ]


def checkHookOrder(names: List[str]) -> None:
    """onOpen → (onMessage|onHeartbeat)* → [onError] → onClose, then onReconnect/onGiveUp; failed attempts: onError → onReconnect/onGiveUp."""
    open_ = False
    for name in names:
        if name == "onOpen":
            assert not open_, names
            open_ = True
        elif name in ("onMessage", "onHeartbeat"):
            assert open_, names
        elif name == "onClose":
            assert open_, names
            open_ = False
        elif name in ("onReconnect", "onGiveUp"):
            assert not open_, names


class ReentrantHandler(RecordingHandler):
    """Runs ``plan = (hook, action)`` once, from inside that hook: close(), send() or connect() re-entrantly."""

    def __init__(self, clock, machine) -> None:
        super().__init__(clock)
        self.machine = machine
        self.plan = None

    def _record(self, name, *args):
        super()._record(name, *args)
        if self.plan is not None and self.plan[0] == name:
            _, action = self.plan
            self.plan = None
            self.machine.reentrant(action)


class ClientMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        Server.received = []
        self.reactor = MemoryReactor()
        self.handler = ReentrantHandler(self.reactor, self)
        self.factory = HeartbeatClientFactory(
            "ws://127.0.0.1:9000/",
            self.handler,
            reactor=self.reactor,
            pingInterval=PING,
            pongTimeout=PONG,
            # Autobahn reseeds the global random module: keep the jitter reproducible.
            retryPolicy=exponentialBackoff(initialDelay=0.5, maxDelay=4.0, random=random.Random(0).random),
            maxRetries=8,
            sendQueueSize=5,
            minUptime=2.0,
        )
        self.connectD = self.factory.connect().addErrback(lambda f: None)  # GaveUp/NotConnected/CancelledError
        self.counter = 0
        self.queued: List[bytes] = []  # accepted by send() while not open
        self.direct: List[bytes] = []  # handed to an open connection
        self.refused: List[bytes] = []
        self.handedBack: List[bytes] = []
        self.partitioned = False
        self.maybe: List[bytes] = []  # sent from inside a hook: delivered or handed back, or refused

    # Network -------------------------------------------------------------------

    @precondition(lambda self: self.reactor.pending)
    @rule(silent=st.booleans())
    def accept(self, silent):
        self.reactor.accept(echoServerFactory(Silent if silent else Server))
        self.partitioned = False

    @precondition(lambda self: self.reactor.pending)
    @rule()
    def refuse(self):
        self.reactor.refuse()

    @precondition(lambda self: self.reactor.links)
    @rule()
    def serverSpeaks(self):
        server = self.reactor.links[0].server
        if server.state == server.STATE_OPEN:
            server.sendMessage(b"from server")
        self.reactor.flush()

    @precondition(lambda self: self.reactor.links)
    @rule()
    def partition(self):
        self.reactor.links[0].blackhole()
        self.partitioned = True

    @precondition(lambda self: self.reactor.links)
    @rule()
    def reset(self):
        self.reactor.links[0].reset()

    @precondition(lambda self: self.reactor.links)
    @rule()
    def serverCloses(self):
        link = self.reactor.links[0]
        if link.server.state == link.server.STATE_OPEN:
            link.server.sendClose(1000, "going away")
        self.reactor.flush()

    @rule(dt=st.sampled_from([0.1, 0.5, 1.0, 2.0, 5.0]))
    def advance(self, dt):
        self.reactor.advance(dt)

    # Application ---------------------------------------------------------------

    @rule()
    def send(self):
        self.counter += 1
        message = f"m{self.counter}"
        wasOpen = self.handler.isOpen
        try:
            self.handler.send(message)
        except (SendQueueFull, NotConnected):
            self.refused.append(message.encode())
            return
        if wasOpen:
            if not self.partitioned:
                self.direct.append(message.encode())
        else:
            self.queued.append(message.encode())
        self.reactor.flush()

    @rule()
    def close(self):
        self.handedBack += [m.encode() for m in self.handler.close()]
        self.reactor.flush()

    @rule()
    def cancel(self):
        waiting = [m.encode() for m in self.handler.queued]
        self.connectD.cancel()  # before the first open: a final close (the queue is dropped, logged); after it: nothing
        if self.handler.queued == []:
            self.handedBack += waiting  # accounted for: never sent
        self.reactor.flush()

    @precondition(lambda self: self.factory.finished)
    @rule()
    def restart(self):
        self.connectD = self.factory.connect().addErrback(lambda f: None)
        self.reactor.flush()

    @rule(
        hook=st.sampled_from(["onOpen", "onClose", "onError", "onReconnect", "onGiveUp", "onMessage"]),
        action=st.sampled_from(["close", "send", "connect"]),
    )
    def actInsideHook(self, hook, action):
        self.handler.plan = (hook, action)

    def reentrant(self, action):
        if action == "close":
            self.handedBack += [m.encode() for m in self.handler.close()]
        elif action == "send":
            self.counter += 1
            message = f"m{self.counter}"
            try:
                self.handler.send(message)
                self.maybe.append(message.encode())
            except (SendQueueFull, NotConnected):
                self.refused.append(message.encode())
        elif self.factory.finished:
            self.connectD = self.factory.connect().addErrback(lambda f: None)
        else:
            try:
                self.factory.connect()
                raise AssertionError("connect() on a running client must raise")
            except RuntimeError:
                pass

    # Invariants ------------------------------------------------------------------

    @invariant()
    def oneConnectionOrOneRetry(self):
        links, pending = len(self.reactor.links), len(self.reactor.pending)
        retry = self.factory._callID is not None
        assert links + pending + retry <= 1, (links, pending, retry)
        if self.factory.state not in ("closed", "gaveup", "closing", "disconnected"):
            assert links + pending + retry == 1, (self.factory.state, links, pending, retry)

    @invariant()
    def finishedMeansQuiet(self):
        if self.factory.finished:
            assert self.reactor.links == [] and self.reactor.pending == []
            assert clientCalls(self.reactor) == []

    @invariant()
    def hookOrder(self):
        checkHookOrder(self.handler.names())

    @invariant()
    def detectionIsExact(self):
        for event in self.handler.events:
            if event[1] == "onError" and isinstance(event[2], HeartbeatTimeout):
                assert abs(event[2].idle - (PING + PONG)) < 1e-6

    def teardown(self):
        self.handler.plan = None  # a connect() planned for onClose would (rightly) start the client again
        self.handedBack += [m.encode() for m in self.handler.close()]
        self.reactor.advance(10)
        assert self.factory.finished
        assert clientCalls(self.reactor) == []
        received = set(Server.received)
        for message in self.queued:
            assert message in received or message in self.handedBack, message
        for message in self.direct:
            assert message in received, message
        for message in self.refused:
            assert message not in received
        assert len(Server.received) == len(set(Server.received)), "a message was delivered twice"


ClientMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=50, deadline=None)
TestClientMachine = ClientMachine.TestCase
