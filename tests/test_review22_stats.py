"""messagesSent/bytesSent under resume, exact, on the MemoryReactor."""

from txheartbeat import HeartbeatClientFactory, HeartbeatServerFactory, HeartbeatServerProtocol, SendQueueFull
from txheartbeat.testing import MemoryReactor, RecordingHandler

URL = "ws://127.0.0.1:9000/"


class Collector(HeartbeatServerProtocol):
    def onMessage(self, payload, isBinary):
        self.factory.got.append(payload)


def setup(**kw):
    reactor = MemoryReactor()
    handler = RecordingHandler(reactor)
    server = HeartbeatServerFactory(URL, resume=True, pingInterval=None, reactor=reactor)
    server.protocol, server.got = Collector, []
    factory = HeartbeatClientFactory(URL, handler, reactor=reactor, resume=True, jitter=0.0, pingInterval=None, **kw)
    factory.connect().addErrback(lambda f: None)
    return reactor, handler, server, factory


def test_drops_refusals_and_two_resumes_count_each_delivered_message_once():
    """Across drops, refusals and two resumes, messagesSent and bytesSent count each delivered message once."""
    reactor, handler, server, factory = setup(replayBufferSize=64)
    link = reactor.accept(server)
    handler.send("a")
    reactor.flush()
    link.blackhole(toClient=False)
    handler.send("b")  # written, lost
    link.reset()
    refused = 0
    for i in range(70):  # while disconnected, past the replay buffer's 64
        try:
            handler.send(f"m{i}")
        except SendQueueFull:
            refused += 1
    reactor.advance(2.0)
    link = reactor.accept(server)
    reactor.flush()
    link.reset()  # second drop before anything more
    reactor.advance(5.0)
    reactor.accept(server)
    reactor.flush()
    got = server.got
    s = handler.stats
    assert len(got) == len(set(got)), got
    assert s.messagesSent == len(got), (s, got, refused)
    assert s.bytesSent == sum(map(len, got))


def test_close_while_disconnected_counts_nothing_unsent():
    """close() while disconnected counts nothing of what was never sent."""
    reactor, handler, server, factory = setup()
    link = reactor.accept(server)
    handler.send("a")
    reactor.flush()
    link.reset()
    handler.send("b")
    unsent = handler.close()
    reactor.advance(10)
    assert unsent == ["b"] or unsent == ["a", "b"], unsent
    assert handler.stats.messagesSent == 1
