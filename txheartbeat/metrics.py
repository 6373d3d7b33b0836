"""
Prometheus metrics for servers and clients (``pip install 'txheartbeat[prometheus]'``).

A :class:`HeartbeatCollector` reads the counters of the factories and
handlers it is given when Prometheus scrapes it: nothing is counted twice
and nothing costs anything between scrapes.

    collector = HeartbeatCollector(servers={"echo": factory})
    REGISTRY.register(collector)
    listenMetrics(9100, reactor=reactor)   # http://127.0.0.1:9100/metrics
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, Mapping, Optional

try:
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
except ImportError as e:  # pragma: no cover (tested in a subprocess)
    raise ImportError("txheartbeat.metrics needs prometheus-client: pip install 'txheartbeat[prometheus]'") from e

from ._handler import HeartbeatHandler
from ._server import HeartbeatServerFactory

__all__ = ["HeartbeatCollector", "listenMetrics"]

# (ServerStats field, metric name, help, counter?)
_SERVER = (
    ("clients", "server_clients", "WebSocket connections open now", False),
    ("opened", "server_opened", "connections opened", True),
    ("reaped", "server_reaped", "clients aborted because they went silent", True),
    ("heartbeatsAnswered", "server_heartbeats_answered", "application heartbeats answered", True),
    ("pingsSent", "server_pings_sent", "ping frames sent to idle clients", True),
    ("sessions", "server_sessions", "resumable sessions kept now", False),
    ("sessionsCreated", "server_sessions_created", "sessions created", True),
    ("sessionsResumed", "server_sessions_resumed", "sessions resumed by their client", True),
    ("sessionsExpired", "server_sessions_expired", "sessions whose client did not come back in time", True),
    ("sessionsClosed", "server_sessions_closed", "sessions closed by their client", True),
    ("resumesRefused", "server_resumes_refused", "resumes refused (unknown or expired session)", True),
    ("sessionsMoved", "server_sessions_moved", "sessions taken over by another process (networked store)", True),
    ("sessionsLost", "server_sessions_lost", "sessions ended because the store refused or failed", True),
    ("sessionsReleased", "server_sessions_released", "sessions left to the store when the server stopped", True),
    ("storeFailures", "server_store_failures", "connections run without a session: the store was unreachable", True),
    ("redelivered", "server_redelivered", "client messages delivered again, flagged redelivered", True),
)
# (HeartbeatStats field, metric name, help, counter?)
_CLIENT = (
    ("attempts", "client_attempts", "connection attempts started", True),
    ("opens", "client_opens", "connections opened", True),
    ("reconnects", "client_reconnects", "reconnects scheduled", True),
    ("heartbeatsSent", "client_heartbeats_sent", "heartbeats sent", True),
    ("heartbeatsAnswered", "client_heartbeats_answered", "heartbeats answered in time", True),
    ("deadPeers", "client_dead_peers", "connections dropped because the server went silent", True),
    ("messagesSent", "client_messages_sent", "messages sent", True),
    ("messagesReceived", "client_messages_received", "messages received", True),
    ("bytesSent", "client_sent_bytes", "payload bytes sent", True),
    ("bytesReceived", "client_received_bytes", "payload bytes received", True),
    ("resumes", "client_resumes", "opens that resumed the session", True),
    ("replayed", "client_replayed", "messages sent again after a resume", True),
    ("sessionsLost", "client_sessions_lost", "sessions that could not be recovered", True),
    ("queued", "client_queued", "messages waiting for the next open", False),
    ("latency", "client_round_trip_seconds", "round trip of the last answered heartbeat", False),
    ("meanLatency", "client_mean_round_trip_seconds", "mean round trip of the answered heartbeats", False),
    ("uptime", "client_uptime_seconds", "seconds the current connection has been open", False),
)


class HeartbeatCollector:
    """
    A Prometheus collector for :class:`HeartbeatServerFactory` and
    :class:`HeartbeatHandler` counters, labelled ``server="name"`` and
    ``client="name"``.  Metric names start with ``txheartbeat_``; a figure
    that is ``None`` (no round trip yet, not open) is left out.
    """

    def __init__(
        self,
        *,
        servers: Optional[Mapping[str, HeartbeatServerFactory]] = None,
        clients: Optional[Mapping[str, HeartbeatHandler]] = None,
    ) -> None:
        self.servers: Dict[str, HeartbeatServerFactory] = dict(servers or {})
        self.clients: Dict[str, HeartbeatHandler] = dict(clients or {})

    def collect(self) -> Iterator[Metric]:
        """Called by ``prometheus_client`` at each scrape."""
        yield from _families(_SERVER, "server", {name: f.stats for name, f in self.servers.items()})
        yield from _families(_CLIENT, "client", {name: h.stats for name, h in self.clients.items()})
        opened = GaugeMetricFamily(
            "txheartbeat_client_open", "whether the client is open (1) or not (0)", labels=["client"]
        )
        for name, handler in self.clients.items():
            opened.add_metric([name], 1.0 if handler.isOpen else 0.0)
        if self.clients:
            yield opened

    def describe(self) -> Iterator[Metric]:
        """Nothing to describe ahead (the metrics depend on what is registered)."""
        return iter(())


def _families(table: Any, label: str, snapshots: Mapping[str, Any]) -> Iterator[Metric]:
    if not snapshots:
        return
    for field, name, text, counter in table:
        kind = CounterMetricFamily if counter else GaugeMetricFamily
        family = kind(f"txheartbeat_{name}", text, labels=[label])
        for key, snapshot in snapshots.items():
            value = getattr(snapshot, field)
            if value is not None:
                family.add_metric([key], float(value))
        if family.samples:
            yield family


def listenMetrics(
    port: int,
    *,
    registry: Optional[CollectorRegistry] = None,
    reactor: Any = None,
    interface: str = "127.0.0.1",
    tlsOptions: Any = None,
) -> Any:
    """
    Serve ``registry`` (the default one if ``None``) over HTTP at
    ``/metrics`` (and ``/``) on ``interface:port``, on the reactor;
    over HTTPS with ``tlsOptions`` (server TLS options, e.g. the ones a
    ``wss://`` server listens with).

    :returns: the listening port (``stopListening()`` to stop).
    """
    from twisted.web.resource import Resource
    from twisted.web.server import Site

    if reactor is None:
        from twisted.internet import reactor as globalReactor

        reactor = globalReactor
    source = registry if registry is not None else REGISTRY

    class Metrics(Resource):
        # Rendered on the reactor thread (prometheus_client's own MetricsResource runs in a
        # thread pool): the counters are read between two reactor events, never torn.
        isLeaf = True

        def render_GET(self, request: Any) -> bytes:
            request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
            return generate_latest(source)  # type: ignore[no-any-return]

    metrics = Metrics()
    root = Resource()
    root.putChild(b"metrics", metrics)
    root.putChild(b"", metrics)
    if tlsOptions is not None:
        return reactor.listenSSL(port, Site(root), tlsOptions, interface=interface)
    return reactor.listenTCP(port, Site(root), interface=interface)
