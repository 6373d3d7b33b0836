"""Counters as Prometheus metrics, scraped over HTTP on loopback."""

import subprocess
import sys

import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import reactor
from twisted.web.client import Agent, readBody

from txheartbeat import HeartbeatHandler, HeartbeatServerFactory, HeartbeatServerProtocol, connect
from txheartbeat.metrics import HeartbeatCollector, listenMetrics


class Echo(HeartbeatServerProtocol):
    def onMessage(self, payload, isBinary):
        self.sendMessage(payload, isBinary)


class Waiting(HeartbeatHandler):
    def __init__(self):
        super().__init__()
        self.echoes = 0

    def onMessage(self, payload, isBinary):
        self.echoes += 1


@pytest_twisted.inlineCallbacks
def test_scrape_shows_server_and_client_counters():
    """A scrape of /metrics shows the server's clients and answered heartbeats and the client's counters, labelled."""
    server = HeartbeatServerFactory(pingInterval=None)
    server.protocol = Echo
    wsPort = reactor.listenTCP(0, server, interface="127.0.0.1")
    handler = Waiting()
    registry = CollectorRegistry()
    registry.register(HeartbeatCollector(servers={"echo": server}, clients={"probe": handler}))
    httpPort = listenMetrics(0, registry=registry, reactor=reactor)
    try:
        url = f"ws://127.0.0.1:{wsPort.getHost().port}/"
        yield connect(url, handler, reactor=reactor, pingInterval=None)
        handler.send("heartbeat")  # the seed's heartbeat: answered by the server
        handler.send("hello")
        while handler.echoes < 2:
            yield _sleep(0.01)
        response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{httpPort.getHost().port}/metrics".encode())
        text = (yield readBody(response)).decode()
    finally:
        handler.close()
        yield handler.whenClosed()
        yield wsPort.stopListening()
        yield httpPort.stopListening()
    assert response.code == 200
    assert 'txheartbeat_server_clients{server="echo"} 1.0' in text
    assert 'txheartbeat_server_heartbeats_answered_total{server="echo"} 1.0' in text
    assert 'txheartbeat_server_opened_total{server="echo"} 1.0' in text
    assert 'txheartbeat_client_opens_total{client="probe"} 1.0' in text
    assert 'txheartbeat_client_messages_sent_total{client="probe"} 2.0' in text
    assert 'txheartbeat_client_sent_bytes_total{client="probe"} 14.0' in text
    assert 'txheartbeat_client_open{client="probe"} 1.0' in text
    assert "txheartbeat_client_round_trip_seconds" not in text  # no heartbeat answered yet: left out


def _sleep(seconds):
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)


def test_without_prometheus_client_the_import_says_what_to_install():
    """Importing txheartbeat.metrics without prometheus-client raises ImportError naming the extra; txheartbeat itself imports fine."""
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "import txheartbeat\n"
        "try:\n    import txheartbeat.metrics\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install 'txheartbeat[prometheus]'" in out


def test_server_stats_snapshot():
    """factory.stats is a frozen snapshot of the server's counters."""
    import dataclasses

    import pytest

    stats = HeartbeatServerFactory().stats
    assert stats.clients == 0 and stats.opened == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.clients = 1  # type: ignore[misc]
