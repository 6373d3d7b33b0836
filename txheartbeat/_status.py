"""
The status page of ``txheartbeat serve``.

A plain ``GET /`` (no upgrade) answers a small self-contained HTML page; the
page opens a WebSocket to the same server at ``/_status`` and draws what a
:class:`StatusFeed` pushes there once a second: the connected clients and
the heartbeats and connection opens of the last five minutes.  Status
viewers are not clients: they are not counted, listed, pinged or echoed.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import deque
from dataclasses import asdict
from typing import Any, Deque, Dict, Optional, Set, Tuple
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.protocol import WebSocketProtocol, parseHttpHeader
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.task import LoopingCall

from ._browser import response as browserScript
from ._protocol import HandshakeLog
from ._server import HeartbeatServerFactory, HeartbeatServerProtocol

#: the path status viewers open their WebSocket on (reserved: such connections are never clients)
STATUS_PATH = "/_status"
#: samples a feed keeps: one a second, five minutes
HISTORY = 300
#: clients listed in a snapshot, longest connected first (all are counted)
LISTED = 100
#: unsent bytes past which a viewer is dropped (it is gone, or cannot keep up)
VIEWER_BACKLOG = 256 * 1024


class StatusFeed:
    """
    Samples a server factory's counters every ``interval`` seconds on the
    factory's reactor and pushes a JSON snapshot (:meth:`snapshot`) to every
    status viewer.

    :param size: samples kept (the chart's history).
    """

    def __init__(self, factory: HeartbeatServerFactory, *, interval: float = 1.0, size: int = HISTORY) -> None:
        self.factory = factory
        self.interval = interval
        #: the open status viewers
        self.viewers: Set[StatusServerProtocol] = set()
        #: server pings the clients answered (application heartbeats are in ``factory.stats``)
        self.pingsAnswered = 0
        #: heartbeats and connection opens in each interval, oldest first
        self.heartbeats: Deque[int] = deque(maxlen=size)
        self.opens: Deque[int] = deque(maxlen=size)
        #: samples taken since :meth:`start` (numbers them, so the page's buckets stay put)
        self.samples = 0
        self._totals = self._count()
        self._loop: Optional[LoopingCall] = None

    def _count(self) -> Tuple[int, int]:
        stats = self.factory.stats
        return stats.heartbeatsAnswered + self.pingsAnswered, stats.opened

    def start(self) -> None:
        """Sample (and push) every ``interval`` seconds until :meth:`stop`."""
        if self._loop is not None:
            return
        self._totals = self._count()
        self._loop = LoopingCall(self.sample)
        self._loop.clock = self.factory.reactor
        self._loop.start(self.interval, now=False)

    def stop(self) -> Deferred[None]:
        """
        Stop sampling and close the viewers (1001, going away).

        :returns: a Deferred that fires once every viewer connection is closed.
        """
        if self._loop is not None:
            self._loop.stop()
            self._loop = None
        viewers = [viewer for viewer in self.viewers if viewer.isOpen]
        for viewer in viewers:
            viewer.closeGracefully(1001, "server stopping")
        return DeferredList([viewer.whenGone() for viewer in viewers]).addCallback(lambda _: None)

    def sample(self) -> None:
        """Record the heartbeats and opens since the last sample, and push a snapshot."""
        totals = self._count()
        self.heartbeats.append(totals[0] - self._totals[0])
        self.opens.append(totals[1] - self._totals[1])
        self._totals = totals
        self.samples += 1
        if self.viewers:
            self.push()

    def snapshot(self) -> Dict[str, Any]:
        """
        What a viewer gets, as a JSON-ready dict: ``stats`` (the factory's
        :class:`ServerStats`), ``heartbeats`` (total), ``clients`` (at most
        :data:`LISTED`: ``peer``, ``connectedFor`` and ``roundTrip`` in
        seconds, ``roundTrip`` ``None`` until a ping is answered, ``session``:
        the public session id or ``None``), and ``history`` (per interval:
        ``heartbeats`` and ``opens``, oldest first; ``first`` numbers the
        oldest sample).  Never a session token.
        """
        now = self.factory.reactor.seconds()
        opened = [(getattr(c, "openedAt", None), c) for c in self.factory.clients if c.isOpen]
        clients = [c for _, c in sorted(opened, key=lambda pair: now if pair[0] is None else pair[0])][:LISTED]
        return {
            "interval": self.interval,
            "stats": asdict(self.factory.stats),
            "heartbeats": self._count()[0],
            "clients": [_describe(client, now) for client in clients],
            "history": {
                "first": self.samples - len(self.heartbeats),
                "heartbeats": list(self.heartbeats),
                "opens": list(self.opens),
            },
        }

    def push(self) -> None:
        """Send the current snapshot to every viewer; one that fell too far behind is dropped."""
        payload = json.dumps(self.snapshot()).encode("utf-8")
        for viewer in list(self.viewers):
            self._send(viewer, payload)

    def add(self, viewer: StatusServerProtocol) -> None:
        """A viewer opened: it gets a snapshot now, and then at every sample."""
        self.viewers.add(viewer)
        self._send(viewer, json.dumps(self.snapshot()).encode("utf-8"))

    def discard(self, viewer: StatusServerProtocol) -> None:
        """A viewer is gone."""
        self.viewers.discard(viewer)

    def _send(self, viewer: StatusServerProtocol, payload: bytes) -> None:
        if not viewer.isOpen:
            return
        if viewer.bufferedAmount > VIEWER_BACKLOG:
            self.viewers.discard(viewer)
            viewer.abort()
            return
        viewer.sendMessage(payload, False)


def _describe(client: HeartbeatServerProtocol, now: float) -> Dict[str, Any]:
    openedAt = getattr(client, "openedAt", None)
    session = client.session
    peer = client.peer or "?"
    return {
        "peer": peer.split(":", 1)[1] if peer.startswith(("tcp4:", "tcp6:")) else peer,
        "connectedFor": None if openedAt is None else now - openedAt,
        "roundTrip": getattr(client, "lastRoundTrip", None),
        "session": session.id if session is not None else None,  # the public id, never the token
    }


class StatusServerProtocol(HeartbeatServerProtocol):
    """
    A server connection that answers ``GET /`` with the status page, and a
    WebSocket on :data:`STATUS_PATH` as a status viewer; any other WebSocket
    is a client, as for :class:`HeartbeatServerProtocol`, that also keeps
    :attr:`openedAt` and :attr:`lastRoundTrip`.

    The status feed is for this server's own page: a browser's viewer
    connection must come from the origin the page was served from (the
    ``Host`` it asked), whatever ``allowedOrigins`` says.
    """

    factory: StatusServerFactory
    #: whether this connection is a status viewer (a WebSocket on ``/_status``)
    viewer = False
    #: when the client's connection opened (reactor seconds)
    openedAt: Optional[float] = None
    #: the round trip of the last ping the client answered (seconds), or ``None``
    lastRoundTrip: Optional[float] = None

    def processHandshake(self) -> None:
        """Tell status viewers from clients; a viewer from another origin gets 403."""
        end = self.data.find(b"\r\n\r\n") if self.state == WebSocketProtocol.STATE_CONNECTING else -1
        head = _parseRequest(self.data[:end]) if end >= 0 else None
        if head is None or urlsplit(head[0]).path != STATUS_PATH:
            super().processHandshake()
            return
        self.viewer = True
        if not _sameOrigin(head[1]):
            self.failHandshake("the status feed is for this server's own page", 403)
            return
        # Not the factory's origin policy or overload refusal: those are for clients.
        WebSocketServerProtocol.processHandshake(self)

    def succeedHandshake(self, res: Any) -> None:
        """Complete the upgrade; a viewer gets no resumable session, whatever it asks."""
        if self.viewer:
            WebSocketServerProtocol.succeedHandshake(self, res)
        else:
            super().succeedHandshake(res)

    def sendServerStatus(self, redirectUrl: Optional[str] = None, redirectAfter: int = 0) -> None:
        """A plain GET: the status page at ``/``, txheartbeat.js, 404 elsewhere (instead of Autobahn's page)."""
        answer = browserScript(self.http_request_path, self.http_headers)
        if answer is not None:
            status, headers, body = answer
            lines = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'Not Modified'}"]
            lines += [f"{name}: {value}" for name, value in headers.items()]
            lines.append(f"Content-Length: {len(body)}")
            self.sendData(("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body)
            return
        if self.http_request_path != "/":
            self.sendHttpErrorResponse(404, "Not Found")
            return
        body = PAGE.encode("utf-8")
        head = (
            "HTTP/1.1 200 OK\r\n"
            "Content-Type: text/html; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\n"
            "X-Content-Type-Options: nosniff\r\n"
            f"Content-Security-Policy: {CSP}\r\n"
            "\r\n"
        )
        self.sendData(head.encode("ascii") + body)

    def sendRedirect(self, url: str) -> None:
        """``/?redirect=URL`` gets the page too: this server redirects nobody anywhere."""
        self.sendServerStatus()

    def _onOpen(self) -> None:
        if self.viewer:
            HandshakeLog.restore(self)
            self.factory.statusFeed.add(self)
            return
        self.openedAt = self.clock.seconds()
        super()._onOpen()

    def _onMessage(self, payload: bytes, isBinary: bool) -> None:
        if not self.viewer:  # what a viewer sends is ignored
            super()._onMessage(payload, isBinary)

    def _onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        if not self.viewer:
            super()._onClose(wasClean, code, reason)
            return
        self.stopTimers()
        self.factory.statusFeed.discard(self)

    def heartbeatAnswered(self, roundTrip: float) -> None:
        """Keep the round trip for the page, and count the answer."""
        self.lastRoundTrip = roundTrip
        self.factory.statusFeed.pingsAnswered += 1


class StatusServerFactory(HeartbeatServerFactory):
    """A :class:`HeartbeatServerFactory` with a :class:`StatusFeed` (``statusFeed``; start it when listening)."""

    protocol = StatusServerProtocol  # type: ignore[assignment]

    def __init__(self, url: Optional[str] = None, **options: Any) -> None:
        options.setdefault("webStatus", True)  # plain GET / is this page (sendServerStatus), not a 426
        super().__init__(url, **options)
        self.statusFeed = StatusFeed(self)


def _parseRequest(head: bytes) -> Optional[Tuple[str, Dict[str, str]]]:
    """The request target and headers (keys lowercased), or ``None`` if malformed (Autobahn refuses it)."""
    try:
        requestLine, headers, _ = parseHttpHeader(head)
        return requestLine.split()[1], headers
    except Exception:
        return None


def _sameOrigin(headers: Dict[str, str]) -> bool:
    """Whether a browser's request comes from the server it is sent to; requests with no ``Origin`` do."""
    origin = headers.get("origin")
    if origin is None:
        return True
    host = headers.get("host", "").strip().lower()
    if not host or origin.strip().lower() not in (f"http://{host}", f"https://{host}"):
        return False
    # A name could be rebound by DNS to this server (a page of evil.example reading the
    # feed): only an address or localhost is the server itself.
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]")
    return name == "localhost" or isIPAddress(name) or isIPv6Address(name)


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


_STYLE = """
:root { --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --hb: #2f6fde; --op: #e8833a; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
       margin: 24px auto; max-width: 960px; padding: 0 16px; }
header { display: flex; align-items: baseline; gap: 12px; }
h1 { font-size: 20px; margin: 0; }
h2 { font-size: 14px; margin: 24px 0 8px; color: var(--muted); font-weight: 600; }
#state { font-size: 12px; padding: 2px 10px; border-radius: 10px; background: #fde2e1; color: #b42318; }
#state.live { background: #dcfae6; color: #067647; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin-top: 16px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; min-width: 120px; }
.card b { display: block; font-size: 26px; font-variant-numeric: tabular-nums; }
.card span { color: var(--muted); font-size: 12px; }
svg { width: 100%; height: auto; display: block; border: 1px solid var(--line); border-radius: 8px; }
svg text { font-size: 11px; fill: var(--muted); }
svg line { stroke: var(--line); }
.hb { fill: var(--hb); background: var(--hb); }
.op { fill: var(--op); background: var(--op); }
.legend { color: var(--muted); font-size: 12px; margin-top: 6px; }
.legend i { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin: 0 4px 0 12px; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); font-variant-numeric: tabular-nums; }
th { color: var(--muted); font-weight: 600; font-size: 12px; }
td.mono { font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: 13px; }
.note { color: var(--muted); }
"""

_SCRIPT = """
"use strict";
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const BARS = 30;       // bars in the chart
const PER_BAR = 10;    // samples (intervals) per bar
let retry = 1000;

function connect() {
  const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/_status");
  ws.onopen = () => { retry = 1000; setState("live", "live"); };
  ws.onmessage = (event) => render(JSON.parse(event.data));
  ws.onclose = () => {
    setState("", "disconnected: retrying");
    setTimeout(connect, retry);
    retry = Math.min(retry * 2, 10000);
  };
}

function setState(cls, text) { $("state").className = cls; $("state").textContent = text; }

function duration(s) {
  if (s == null) return "\\u2014";
  s = Math.floor(s);
  const h = Math.floor(s / 3600), m = Math.floor(s / 60) % 60, r = s % 60;
  return h ? h + " h " + m + " min" : m ? m + " min " + r + " s" : r + " s";
}

function millis(s) { return s == null ? "\\u2014" : (s * 1000).toFixed(1) + " ms"; }

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;  // as text, never as HTML: peers are not ours to trust
  if (cls) td.className = cls;
}

function render(snap) {
  const stats = snap.stats;
  $("clients").textContent = stats.clients;
  $("opened").textContent = stats.opened;
  $("heartbeats").textContent = snap.heartbeats;
  $("reaped").textContent = stats.reaped;
  $("sessions").textContent = stats.sessions;
  const rows = $("rows");
  rows.replaceChildren();
  for (const c of snap.clients) {
    const row = rows.insertRow();
    cell(row, String(c.peer), "mono");
    cell(row, duration(c.connectedFor));
    cell(row, millis(c.roundTrip));
    cell(row, c.session == null ? "\\u2014" : String(c.session), "mono");
  }
  $("empty").hidden = snap.clients.length > 0;
  const more = stats.clients - snap.clients.length;
  $("more").hidden = more <= 0;
  $("more").textContent = "and " + more + " more";
  const minutes = BARS * PER_BAR * snap.interval / 60;
  $("per").textContent = "per " + PER_BAR * snap.interval + " s, last " + minutes + " min";
  chart(snap.history, snap.interval);
}

function el(name, attrs, text) {
  const e = document.createElementNS(SVG, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text != null) e.textContent = text;
  return e;
}

function chart(h, interval) {
  // Bars sum PER_BAR samples, numbered from the feed's start, so they do not shift as samples arrive.
  const n = h.heartbeats.length;
  const last = Math.floor((h.first + n - 1) / PER_BAR);
  const bars = [];
  for (let b = 0; b < BARS; b++) bars.push([0, 0]);
  for (let i = 0; i < n; i++) {
    const b = Math.floor((h.first + i) / PER_BAR) - last + BARS - 1;
    if (b >= 0) { bars[b][0] += h.heartbeats[i]; bars[b][1] += h.opens[i]; }
  }
  let top = 1;
  for (const [hb, op] of bars) top = Math.max(top, hb, op);
  const W = 900, H = 180, left = 40, bottom = 20, plot = H - bottom - 10;
  const svg = $("chart");
  svg.replaceChildren();
  for (const f of [0, 0.5, 1]) {
    const y = 10 + plot * (1 - f);
    svg.append(el("line", {x1: left, x2: W, y1: y, y2: y}));
    svg.append(el("text", {x: left - 6, y: y + 4, "text-anchor": "end"}, String(Math.round(top * f * 10) / 10)));
  }
  const slot = (W - left) / BARS, bar = slot * 0.38;
  bars.forEach(([hb, op], b) => {
    const x = left + b * slot + slot * 0.1;
    const hh = plot * hb / top, oh = plot * op / top;
    svg.append(el("rect", {x: x, y: 10 + plot - hh, width: bar, height: hh, class: "hb"}));
    svg.append(el("rect", {x: x + bar, y: 10 + plot - oh, width: bar, height: oh, class: "op"}));
  });
  svg.append(el("text", {x: left, y: H - 4}, "-" + BARS * PER_BAR * interval / 60 + " min"));
  svg.append(el("text", {x: W - 4, y: H - 4, "text-anchor": "end"}, "now"));
}

connect();
"""

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>txheartbeat serve: status</title>
<style>{_STYLE}</style>
</head>
<body>
<header><h1>txheartbeat serve</h1><span id="state">connecting</span></header>
<div class="cards">
  <div class="card"><b id="clients">-</b><span>clients connected</span></div>
  <div class="card"><b id="opened">-</b><span>connections opened</span></div>
  <div class="card"><b id="heartbeats">-</b><span>heartbeats answered</span></div>
  <div class="card"><b id="reaped">-</b><span>silent clients reaped</span></div>
  <div class="card"><b id="sessions">-</b><span>resumable sessions</span></div>
</div>
<h2>Heartbeats and connection opens (connects and reconnects), <span id="per">per 10 s</span></h2>
<svg id="chart" viewBox="0 0 900 180" role="img" aria-label="heartbeats and opens over time"></svg>
<div class="legend"><i class="hb"></i>heartbeats answered <i class="op"></i>connections opened</div>
<h2>Clients</h2>
<table>
<thead><tr><th>peer</th><th>connected for</th><th>last round trip</th><th>session</th></tr></thead>
<tbody id="rows"></tbody>
</table>
<p id="more" class="note" hidden></p>
<p id="empty" class="note">No client connected.</p>
<p class="note">Browser client: <a href="/txheartbeat.js">/txheartbeat.js</a> (ES module) or
<a href="/txheartbeat.classic.js">/txheartbeat.classic.js</a>, a drop-in for websocket-heartbeat-js.</p>
<script>{_SCRIPT}</script>
</body>
</html>
"""

#: the page runs only its own script and style, and connects only to this server
CSP = (
    f"default-src 'none'; script-src {_hash(_SCRIPT)}; style-src {_hash(_STYLE)}; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
