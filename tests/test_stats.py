"""handler.stats: an immutable snapshot of counters kept across connections."""

import dataclasses

import pytest

from txheartbeat import HeartbeatClientFactory, HeartbeatServerFactory, HeartbeatServerProtocol, HeartbeatStats
from txheartbeat.testing import echoServerFactory

from .conftest import URL


def test_stats_is_an_immutable_snapshot(reactor, handler, make):
    """Reading stats gives a frozen copy: assigning raises, and a later read sees the new figures."""
    make(pingInterval=None)
    before = handler.stats
    assert isinstance(before, HeartbeatStats)
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.opens = 5  # type: ignore[misc]
    reactor.accept()
    assert before.opens == 0 and handler.stats.opens == 1
    handler.close()
    reactor.advance(10)


def test_stats_count_bytes_uptime_queue_and_round_trips(reactor, handler):
    """Bytes both ways, uptime of the open connection, the queue length and the mean round trip are reported."""
    factory = HeartbeatClientFactory(URL, handler, reactor=reactor, jitter=0.0, pingInterval=1.0, pongTimeout=1.0)
    factory.connect()
    handler.send("queued")
    assert handler.stats.queued == 1 and handler.stats.uptime is None
    link = reactor.accept(echoServerFactory())
    handler.send(b"12345")
    reactor.flush()
    stats = handler.stats
    assert (stats.messagesSent, stats.bytesSent) == (2, 11)
    assert (stats.messagesReceived, stats.bytesReceived) == (2, 11)
    assert stats.queued == 0 and stats.uptime == 0.0
    reactor.advance(2.5)  # heartbeats at 1.0 and 2.0, each answered at once
    stats = handler.stats
    assert stats.uptime == 2.5 and stats.heartbeatsAnswered == 2
    assert stats.latency == 0.0 and stats.meanLatency == 0.0
    link.reset()
    assert handler.stats.uptime is None
    handler.close()
    reactor.advance(10)
    assert reactor.getDelayedCalls() == []


class Collector(HeartbeatServerProtocol):
    """Keeps what the application receives on its factory's ``got``."""

    def onMessage(self, payload, isBinary):
        self.factory.got.append(payload)


@pytest.mark.parametrize("resume", [False, True])
def test_messages_sent_count_each_message_once_with_or_without_resume(reactor, handler, resume):
    """messagesSent/bytesSent count every message once: sent while open, lost in a drop, or sent while disconnected (queued, or with resume numbered and sent at the resume)."""
    server = HeartbeatServerFactory(URL, resume=resume, pingInterval=None, reactor=reactor)
    server.protocol, server.got = Collector, []
    factory = HeartbeatClientFactory(URL, handler, reactor=reactor, resume=resume, jitter=0.0, pingInterval=None)
    factory.connect()
    link = reactor.accept(server)
    handler.send("a")
    handler.send("bb")
    reactor.flush()
    link.blackhole(toClient=False)
    handler.send("eeeee")  # written to the connection, lost in the drop below
    link.reset()
    handler.send("ccc")  # while disconnected
    handler.send(b"dddd")
    assert (handler.stats.messagesSent, handler.stats.bytesSent) == (3, 8)
    reactor.advance(2.0)
    reactor.accept(server)
    stats = handler.stats
    assert (stats.messagesSent, stats.bytesSent) == (5, 15)
    if resume:
        assert handler.resumed and stats.replayed == 1  # eeeee went out twice, counted once
        assert server.got == [b"a", b"bb", b"eeeee", b"ccc", b"dddd"]
    else:
        assert server.got == [b"a", b"bb", b"ccc", b"dddd"]
    handler.close()
    reactor.advance(10)
    if resume:
        for session in list(server.sessionStore):
            server._sessions.end(session)
    assert reactor.getDelayedCalls() == []
