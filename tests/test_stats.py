"""handler.stats: an immutable snapshot of counters kept across connections."""

import dataclasses

import pytest

from txheartbeat import HeartbeatClientFactory, HeartbeatStats
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
