"""
Reconnect storm: N clients of each kind lose their server and come back,
for several outage lengths and a planned restart, side by side in one run.

    python benchmarks/storm.py                      # N = 1,000; D = 0.5, 2, 8, 30 s; planned restart (~6 minutes)
    python benchmarks/storm.py --quick              # N = 200, txheartbeat and one peer: a smoke run (~12 s)
    python benchmarks/storm.py --json storm.json    # also save the raw times
    python benchmarks/storm.py --report storm.json  # reprint the tables of a saved run
    python benchmarks/storm.py --txheartbeat DIR    # measure the txheartbeat package in DIR instead of this checkout
                                                    # (e.g. git archive HEAD txheartbeat | tar -x -C DIR)

For every client kind and every outage length D, in this order and one at a
time (never two kinds at once): a fresh server process on 127.0.0.1 (a
``txheartbeat.HeartbeatServerFactory`` with default options), a fresh client
process holding N clients of that kind, all open; the server is killed
(SIGKILL) and a new server process, started beforehand and waiting, listens
on the same port D seconds later.  The planned-restart row instead asks the
server to stop listening and call ``factory.restart(window=5)`` (a close 1012
to every client), waits for the clients to leave, and exits; the new server
listens at once.

Every client uses its library's default options.  Measured on the server
side: **back**, seconds from the new server listening until all N clients
are open on it, and **peak**, the most TCP accepts in any 100 ms (sliding)
after it.  Measured on the client side: attempts made during the outage
(refused connects never reach a server).  Nothing here asserts.
"""

from __future__ import annotations

import argparse
import bisect
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKERS = str(HERE / "workers.py")

#: the targets of issue 10
GOAL_BACK = 2.0
GOAL_PEAK = 0.12
WINDOW = 0.1

KINDS: Dict[str, str] = {
    "txheartbeat": "txheartbeat",
    "autobahn": "Autobahn + ReconnectingClientFactory",
    "websockets": "python-websockets",
    "heartbeat-js": "websocket-heartbeat-js",
}

Result = Dict[str, Any]

JS_STORM = r"""
// N unmodified websocket-heartbeat-js clients (default options) in one node
// process.  Attempts are counted where each WebSocket is constructed.
const RealWebSocket = require("ws");
const now = () => Number(process.hrtime.bigint()) / 1e9; // CLOCK_MONOTONIC, as Python's time.monotonic()
let recording = false;
const attempts = [];
const hooks = { opens: 0, closes: 0, errors: 0, reconnects: 0, uncaught: 0 };
let uncaught = null;
// In a browser an exception thrown by a timer callback is reported and the
// page carries on; here it would end the process and its 1,000 clients.  The
// library throws one when its ping timer (never cleared on close) fires while
// a reconnect is CONNECTING: `ws.send()` then throws, as browsers do.
process.on("uncaughtException", (e) => { hooks.uncaught++; uncaught = String(e); });
global.WebSocket = class extends RealWebSocket {
  constructor(...args) {
    if (recording) attempts.push(now());
    super(...args);
  }
};
const mod = require("websocket-heartbeat-js");
const W = mod.default || mod;
const [url, n] = [process.argv[2], Number(process.argv[3])];
let firstOpens = 0, firstOpenAt = null, defaults = null;
const count = (name) => { if (recording) hooks[name]++; };
for (let i = 0; i < n; i++) {
  const c = new W({ url });
  defaults = defaults || {
    reconnectTimeout: c.opts.reconnectTimeout, pingTimeout: c.opts.pingTimeout,
    pongTimeout: c.opts.pongTimeout, repeatLimit: c.opts.repeatLimit,
  };
  let opened = false;
  c.onopen = () => {
    count("opens");
    if (opened) return;
    opened = true;
    if (firstOpenAt === null) firstOpenAt = now();
    if (++firstOpens === n) {
      recording = true;
      console.log(JSON.stringify({ ready: now(), firstOpen: firstOpenAt, defaults }));
    }
  };
  c.onclose = () => count("closes");
  c.onerror = () => count("errors");
  c.onreconnect = () => count("reconnects");
}
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
  input += chunk;
  if (input.includes("report")) {
    // A pipe write may be partial: exit only once all of it is out.
    process.stdout.write(JSON.stringify({ attempts, ...hooks, uncaughtExample: uncaught }) + "\n", () => process.exit(0));
  }
});
"""


def cacheDir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "txheartbeat-benchmarks" / "heartbeat-js"


def nodeClient() -> Optional[List[str]]:
    """The node command line for the websocket-heartbeat-js clients (installed once into a cache), or None."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        return None
    where = cacheDir()
    if not (where / "node_modules" / "websocket-heartbeat-js").is_dir() or not (where / "node_modules" / "ws").is_dir():
        where.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(where), "websocket-heartbeat-js@1.1.3", "ws@8"],
            check=True,
            capture_output=True,
            timeout=300,
        )
    script = where / "storm.js"
    script.write_text(JS_STORM)
    return [node, str(script)]


class Proc:
    """A worker process: commands on stdin, JSON lines from stdout gathered by a thread."""

    def __init__(self, argv: Sequence[str], env: Dict[str, str]) -> None:
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env
        )
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith("{"):
                try:
                    self.lines.put(json.loads(line))
                except ValueError:
                    self.lines.put({"badLine": line[:200]})
        self.lines.put(None)

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        except OSError as e:
            raise RuntimeError(f"{self.proc.args[1:3]}: {e}; exit status {self.proc.poll()}:\n{self.errors()}")

    def errors(self) -> str:
        """The end of what the process wrote on stderr."""
        self.stderr.seek(0)
        return self.stderr.read()[-3000:]

    def expect(self, key: str, timeout: float) -> Optional[Dict[str, Any]]:
        """The next JSON line that has ``key``; None if ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                got = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if got is None:
                raise RuntimeError(f"{self.proc.args[1:3]} exited ({self.proc.wait(10)}):\n{self.errors()}")
            if key in got:
                return got

    def need(self, key: str, timeout: float) -> Dict[str, Any]:
        got = self.expect(key, timeout)
        if got is None:
            raise RuntimeError(f"{self.proc.args[1:3]}: no {key!r} in {timeout:g} s:\n{self.errors()}")
        return got

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def trial(
    kind: str,
    count: int,
    down: Optional[float],
    window: float,
    settle: float,
    maxWait: float,
    env: Dict[str, str],
    node: Optional[List[str]],
    tls: str = "",
    drop: bool = False,
    tickets: bool = True,
) -> Result:
    """
    One storm: ``down`` seconds of outage after a SIGKILL, or (``down=None``)
    a planned restart with ``window``.  Returns raw times (monotonic) and the
    figures derived from them.

    With ``tls`` (a directory with ``cert.pem`` and ``key.pem``; the clients
    trust it through ``SSL_CERT_FILE``) the clients dial ``wss://127.0.0.1``.
    With ``drop`` the server is not killed: it stops listening and aborts
    every connection, and the same process listens again after ``down``
    (its TLS session ticket key kept, so reconnects can resume their
    sessions); ``tickets=False`` gives that server no session tickets.
    """
    server = [sys.executable, WORKERS, "stormServer", str(count)]
    if tls:
        server += [tls, "on" if tickets else "off"]
        env = {**env, "SSL_CERT_FILE": os.path.join(tls, "cert.pem")}
    procs: List[Proc] = []
    try:
        old = Proc(server, env)
        # The replacement starts now too (it waits for `listen`), so that its
        # start-up is neither part of the outage nor of the run's wall time.
        new = old if drop else Proc(server, env)
        procs += [old] if drop else [old, new]
        old.need("started", 60)
        old.send("listen 0")
        port = old.need("listening", 30)["port"]
        url = f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/"
        if kind in ("txheartbeat", "autobahn"):
            client = Proc([sys.executable, WORKERS, "stormTwisted", kind, url, str(count)], env)
        elif kind == "websockets":
            client = Proc([sys.executable, WORKERS, "stormWebsockets", url, str(count)], env)
        else:
            assert node is not None
            client = Proc([*node, url, str(count)], {**env, "NODE_PATH": str(cacheDir() / "node_modules")})
        procs.append(client)
        ready = client.need("ready", 180)
        if new is not old:
            new.need("started", 60)
        # Let every client be up for `settle` s (txheartbeat: minUptime, so
        # that this is the loss of a stable connection, not a flap).
        time.sleep(max(0.0, ready["ready"] + settle - time.monotonic()))
        planned: Optional[Dict[str, Any]] = None
        if drop:
            assert down is not None
            old.need("allBack", 30)  # (the first opens': the next one is the measured one)
            old.send("drop")
            lost = old.need("dropped", 30)["dropped"]
            time.sleep(max(0.0, lost + down - time.monotonic()))
        elif down is not None:
            old.kill()
            lost = time.monotonic()  # the process is gone, and its sockets with it
            time.sleep(max(0.0, lost + down - time.monotonic()))
        else:
            old.send(f"restart {window:g}")
            planned = old.need("restartCalled", window + 30)
            lost = planned["restartCalled"]
            old.kill()
        new.send(f"listen {port}")
        up = new.need("listening", 30)["listening"]
        new.expect("allBack", maxWait - (time.monotonic() - up))
        new.send("report")
        srv = new.need("accepts", 30)
        client.send("report")
        cli = client.need("attempts", 30)
    finally:
        for p in procs:
            p.kill()
    return {
        "kind": kind,
        "clients": count,
        "down": down,
        "window": None if down is not None else window,
        "planned": planned,
        "lost": lost,
        "up": up,
        "ready": ready,
        "maxWait": maxWait,
        "server": srv,
        "client": cli,
        **figures(count, lost, up, srv, cli),
    }


def slidingPeak(times: List[float], width: float = WINDOW) -> int:
    """The most of ``times`` (sorted) in any half-open window ``[t, t + width)``."""
    best = 0
    for i, t in enumerate(times):
        best = max(best, bisect.bisect_left(times, t + width, lo=i) - i)
    return best


def figures(count: int, lost: float, up: float, srv: Dict[str, Any], cli: Dict[str, Any]) -> Result:
    accepts = sorted(t for t in srv["accepts"] if t >= up)
    attempts = sorted(cli["attempts"])
    allBack = srv["allBack"]
    end = allBack if allBack is not None else float("inf")
    peak = slidingPeak(accepts)
    return {
        "downMeasured": up - lost,
        "back": None if allBack is None else allBack - up,
        "openAtEnd": srv["open"],
        "peak": peak,
        "peakShare": peak / count,
        "acceptsAfterRestart": len(accepts),
        # Attempts are recorded from the moment all clients were open, so every
        # one before the new server listens belongs to the outage (a client may
        # see the kill a few ms before the orchestrator's wait() returns).
        "outageAttempts": sum(1 for t in attempts if t < up),
        "attemptsUntilBack": sum(1 for t in attempts if up <= t <= end),
        # The same peak counted where the clients begin their connects: the
        # server's accept loop can only smear a burst, never sharpen it.
        "clientPeak": slidingPeak([t for t in attempts if up <= t <= end]),
    }


def sweep(
    count: int,
    outages: Sequence[float],
    kinds: Sequence[str],
    *,
    window: float = 5.0,
    planned: bool = True,
    plannedKinds: Optional[Sequence[str]] = None,
    peerOutages: Optional[Sequence[float]] = None,
    settle: float = 5.3,
    maxWait: float = 60.0,
    txheartbeat: Optional[str] = None,
    log: Callable[[str], None] = lambda line: None,
) -> Result:
    """
    Every kind through every outage (and the planned restart); kinds run one after another.

    :param plannedKinds: the kinds that get a planned-restart row (default all).
    :param peerOutages: outages for the kinds other than txheartbeat (default ``outages``).
    """
    code = str(Path(txheartbeat).resolve()) if txheartbeat else str(ROOT)
    env = {**os.environ, "PYTHONPATH": code + os.pathsep + os.environ.get("PYTHONPATH", "")}
    node = nodeClient() if "heartbeat-js" in kinds else None
    began = time.monotonic()
    trials: List[Result] = []
    skipped: Dict[str, str] = {}
    for kind in kinds:
        if kind == "heartbeat-js" and node is None:
            skipped[kind] = "node and npm not found"
            continue
        rows: List[Optional[float]] = list(outages if kind == "txheartbeat" or peerOutages is None else peerOutages)
        if planned and (plannedKinds is None or kind in plannedKinds):
            rows.append(None)
        for down in rows:
            # Only txheartbeat has a minUptime; the others reset their backoff at each open.
            wait = settle if kind == "txheartbeat" else min(settle, 0.5)
            t0 = time.monotonic()
            try:
                r = trial(kind, count, down, window, wait, maxWait, env, node)
            except Exception as e:
                r = {"kind": kind, "clients": count, "down": down, "window": window, "error": str(e)[-2000:]}
            r["seconds"] = time.monotonic() - t0
            trials.append(r)
            log(f"{KINDS[kind]}, {'planned restart' if down is None else f'D = {down:g} s'}: {cell(r)}")
    return {
        "clients": count,
        "outages": list(outages),
        "window": window,
        "kinds": list(kinds),
        "settle": settle,
        "maxWait": maxWait,
        "txheartbeat": code,
        "skipped": skipped,
        "wallSeconds": time.monotonic() - began,
        "trials": trials,
    }


def cell(r: Result) -> str:
    if "error" in r:
        return "error"
    n = r["clients"]
    back = f"{r['back']:.2f} s" if r["back"] is not None else f"> {r['maxWait']:g} s ({r['openAtEnd']}/{n} back)"
    return f"{back} / {r['peak']} ({100 * r['peakShare']:.1f} %)"


def meets(r: Result) -> bool:
    return "error" not in r and r["back"] is not None and r["back"] <= GOAL_BACK and r["peakShare"] <= GOAL_PEAK


def defaultsText(kind: str, trials: List[Result]) -> str:
    d = next((t["ready"].get("defaults", {}) for t in trials if t["kind"] == kind and "ready" in t), {})
    if kind == "txheartbeat":
        keys = [
            k
            for k in d
            if any(w in k for w in ("Delay", "factor", "jitter", "Uptime", "probe", "estart", "indow", "Retries"))
        ]
        shown = ", ".join(
            f"{k} {d[k]:g}" for k in keys if isinstance(d[k], (int, float)) and not isinstance(d[k], bool)
        )
        api = "" if d.get("restartApi") else "; no HeartbeatServerFactory.restart"
        return f"`txheartbeat.connect(url, handler)`: {shown}{api}"
    if kind == "autobahn":
        return (
            "Twisted's ReconnectingClientFactory mixed into Autobahn's WebSocketClientFactory, `resetDelay()` on open: "
            + ", ".join(f"{k} {v:.4g}" for k, v in d.items())
            + " (first retry after ≈ initialDelay, each next × factor, normal jitter compounding)"
        )
    if kind == "websockets":
        return (
            "`async for ws in websockets.connect(url)`: reconnects at once after a close, then "
            + ", ".join(f"BACKOFF_{k} {v:g}" for k, v in d.items())
            + " (first delay uniform in [0, INITIAL_DELAY], then MIN_DELAY × FACTOR^k)"
        )
    return (
        "`new WebsocketHeartbeatJs({url})` (1.1.3, on ws 8): "
        + ", ".join(f"{k} {v} ms" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in d.items())
        + " (a fixed delay, no backoff, no jitter)"
    )


def markdown(results: Result) -> List[str]:
    """The storm section's tables and notes, as markdown lines."""
    # Figures are derived again from the raw times, so that a saved run reprints with today's rules.
    trials: List[Result] = [
        t if "error" in t else {**t, **figures(t["clients"], t["lost"], t["up"], t["server"], t["client"])}
        for t in results["trials"]
    ]
    n = results["clients"]
    kinds = [k for k in results["kinds"] if any(t["kind"] == k for t in trials)]
    lines: List[str] = []
    lines.append(
        f"{n:,} clients of each kind on one server process (HeartbeatServerFactory, defaults), each kind in its own "
        "process and one kind at a time. Cells: **back** = seconds from the new server listening until all "
        f"{n:,} are open on it / **peak** = most TCP accepts in any 100 ms after it (share of N)."
    )
    lines.append("")
    lines.append("| outage D | " + " | ".join(KINDS[k] for k in kinds) + " |")
    lines.append("|---|" + "---|" * len(kinds))
    rows = [*results["outages"], None]
    for down in rows:
        cells = []
        label = f"{down:g} s" if down is not None else f"planned restart (window {results['window']:g} s)"
        if down is None and any(t["down"] is None and t.get("planned") and not t["planned"].get("api") for t in trials):
            label = label[:-1] + "; restart API missing: close 1012, no window)"
        present = False
        for k in kinds:
            r = next((t for t in trials if t["kind"] == k and t["down"] == down), None)
            if r is None:
                cells.append("–")
                continue
            present = True
            text = cell(r)
            cells.append(f"**{text}**" if down is not None and meets(r) else text)
        if present:
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"goal: all back within {GOAL_BACK:.1f} s of the restart, no 100 ms window above {100 * GOAL_PEAK:g} % of N "
        "(outage cells meeting both in bold; a planned restart is spread over its window by design)."
    )
    lines.append("")
    lines.append(
        "Client side: connects begun during the outage (between the loss and the new server listening; refused "
        "ones never reach a server) / from then until all were back / the most of those in any 100 ms:"
    )
    lines.append("")
    lines.append("| outage D | measured D | " + " | ".join(KINDS[k] for k in kinds) + " |")
    lines.append("|---|---|" + "---|" * len(kinds))
    for down in rows:
        got = [next((t for t in trials if t["kind"] == k and t["down"] == down), None) for k in kinds]
        if not any(got):
            continue
        ds = [r["downMeasured"] for r in got if r and "error" not in r]
        measured = f"{min(ds):.2f}–{max(ds):.2f} s" if ds else "–"
        label = f"{down:g} s" if down is not None else "planned restart"
        cells = [
            "–"
            if r is None or "error" in r
            else f"{r['outageAttempts']:,} / {r['attemptsUntilBack']:,} / {r['clientPeak']}"
            for r in got
        ]
        lines.append(f"| {label} | {measured} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("Defaults as measured:")
    lines.append("")
    for k in kinds:
        lines.append(f"- {KINDS[k]}: {defaultsText(k, trials)}.")
    for k, why in results.get("skipped", {}).items():
        lines.append(f"- {KINDS[k]}: not measured ({why}).")
    lines.append("")
    plannedRuns = [t for t in trials if t["down"] is None and "error" not in t]
    if plannedRuns:
        gaps = [t["up"] - t["planned"]["restartCalled"] for t in plannedRuns]
        lines.append(
            "Planned restart: the old server stops listening, calls `restart(window=…)` "
            "(without the API: a close 1012 to every client, no window), waits for its clients to leave and exits; "
            f"the new one listens {min(gaps):.2f}–{max(gaps):.2f} s after the `restart` call. "
            "The other clients just see a close."
        )
        lines.append("")
    for t in trials:
        if "error" not in t and t["client"].get("uncaught"):
            lines.append(
                f"- {KINDS[t['kind']]}, D={t['down']}: {t['client']['uncaught']} exceptions thrown from the library's "
                f"timers (counted and ignored, as a browser would), e.g. `{t['client'].get('uncaughtExample')}`."
            )
        if "error" not in t and t.get("planned") and t["planned"].get("left"):
            lines.append(f"- {KINDS[t['kind']]}, planned restart: {t['planned']['left']} clients still open at exit.")
    errors = [t for t in trials if "error" in t]
    for t in errors:
        lines.append(f"- error, {KINDS[t['kind']]} D={t['down']}: {t['error'].splitlines()[0] if t['error'] else ''}")
    if lines[-1]:
        lines.append("")
    notAll = [t for t in trials if "error" not in t and t["back"] is None]
    if notAll:
        lines.append(
            f"A run stops {results['maxWait']:g} s after the restart; `> {results['maxWait']:g} s (k/N back)` "
            "counts the clients open by then."
        )
        lines.append("")
    if not results.get("settle"):
        lines.append(
            "The server was killed right after the last client opened (no settle time: txheartbeat clients were up less than minUptime, so the loss counts as a flap)."
        )
        lines.append("")
    lines.append(f"Sweep wall time: {results['wallSeconds']:.0f} s.")
    return lines


#: the rows of the wss storm (``--tls``): name, TLS, drop (same server process), session tickets
TLS_ROWS = [
    ("ws://, same server process", False, True, True),
    ("wss://, same server process, session tickets (resumed)", True, True, True),
    ("wss://, same server process, no session tickets (full handshakes)", True, True, False),
    ("wss://, new server process (new ticket key: full handshakes)", True, False, True),
]


def tlsSweep(
    count: int,
    outages: Sequence[float],
    *,
    settle: float = 5.3,
    maxWait: float = 60.0,
    log: Callable[[str], None] = lambda line: None,
) -> Result:
    """txheartbeat clients (default options) through every row of :data:`TLS_ROWS` and outage, one at a time."""
    sys.path.insert(0, str(HERE))
    from tls import writeCertificate  # benchmarks/tls.py: the test certificate for 127.0.0.1

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    began = time.monotonic()
    trials: List[Result] = []
    with tempfile.TemporaryDirectory(prefix="txheartbeat-storm-tls-") as where:
        writeCertificate(where)
        for name, tls, drop, tickets in TLS_ROWS:
            for down in outages:
                t0 = time.monotonic()
                try:
                    r = trial(
                        "txheartbeat",
                        count,
                        down,
                        0.0,
                        settle,
                        maxWait,
                        env,
                        None,
                        tls=where if tls else "",
                        drop=drop,
                        tickets=tickets,
                    )
                except Exception as e:
                    r = {"kind": "txheartbeat", "clients": count, "down": down, "error": str(e)[-2000:]}
                r.update(row=name, seconds=time.monotonic() - t0)
                trials.append(r)
                log(f"{name}, D = {down:g} s: {cell(r)}{tlsCell(r)}")
    return {
        "clients": count,
        "outages": list(outages),
        "settle": settle,
        "maxWait": maxWait,
        "wallSeconds": time.monotonic() - began,
        "trials": trials,
    }


def tlsCell(r: Result) -> str:
    """Server CPU per reconnect and the share of reconnects that resumed a TLS session."""
    if "error" in r or r["server"].get("cpuToBack") is None:
        return ""
    srv = r["server"]
    return f", {1e6 * srv['cpuToBack'] / r['clients']:,.0f} µs CPU per reconnect, {srv['resumed']:,} resumed"


def tlsMarkdown(results: Result) -> List[str]:
    """The wss storm's table, as markdown lines."""
    n = results["clients"]
    lines = [
        f"{n:,} txheartbeat clients (`txheartbeat.connect(url, handler)`, default options) of one "
        "`HeartbeatServerFactory` process behind `serverTLSOptions` (EC P-256 certificate for 127.0.0.1, which "
        "the clients trust through `SSL_CERT_FILE`), one row at a time. *Same server process*: the server stops "
        "listening and aborts every connection, and listens again D s later with the same TLS context (its "
        "session ticket key kept); *no session tickets*: the same with Twisted's default `CertificateOptions` "
        "(tickets off); *new server process*: killed (SIGKILL) and replaced D s later, as in the storm above "
        "(a new random ticket key, so no session can resume). **back** = seconds from listening again until all "
        f"{n:,} are open / **peak** = most TCP accepts in any 100 ms (share of N); **client peak** = most connects "
        "begun by the clients in any 100 ms from then until all were back (a server busy with handshakes accepts "
        "in bursts, so its peak can exceed the clients'); **CPU per reconnect** = the "
        "server process's CPU from listening again until all were back, / N; **resumed** = opens whose TLS "
        "session was resumed (server's `SSL_session_reused`).",
        "",
        "| clients, server | outage D | back / peak | client peak | server CPU per reconnect | resumed |",
        "|---|---|---|---|---|---|",
    ]
    for t in results["trials"]:
        t = t if "error" in t else {**t, **figures(t["clients"], t["lost"], t["up"], t["server"], t["client"])}
        if "error" in t:
            lines.append(f"| {t['row']} | {t['down']:g} s | error | | | |")
            continue
        srv = t["server"]
        cpu = f"{1e6 * srv['cpuToBack'] / n:,.0f} µs" if srv.get("cpuToBack") is not None else "–"
        resumed = f"{srv['resumed']:,} / {n:,}" if "wss" in t["row"] else "–"
        text = cell(t)
        peak = f"{t['clientPeak']} ({100 * t['clientPeak'] / n:.1f} %)"
        lines.append(
            f"| {t['row']} | {t['down']:g} s | {f'**{text}**' if meets(t) else text} | {peak} | {cpu} | {resumed} |"
        )
    lines += [
        "",
        f"goal: all back within {GOAL_BACK:.1f} s, no 100 ms window above {100 * GOAL_PEAK:g} % of N (both met: bold).",
        "",
        f"Sweep wall time: {results['wallSeconds']:.0f} s.",
    ]
    for t in results["trials"]:
        if "error" in t:
            lines.append(f"- error, {t['row']} D={t['down']}: {t['error'].splitlines()[0] if t['error'] else ''}")
    return lines


def options(quick: bool) -> Dict[str, Any]:
    """The sweep's settings: the full run (about 6 minutes) or ``--quick`` (about 12 s, for run.py's smoke run)."""
    if quick:
        # A smoke run inside run.py --quick's two minutes: no settle time (txheartbeat
        # clients are under minUptime at the loss), one peer at one outage (the
        # others need 5 s waits or node), a 2 s restart window, runs stopped 6 s
        # after the restart.
        return {
            "count": 200,
            "outages": [0.5, 2.0],
            "kinds": ["txheartbeat", "autobahn"],
            "plannedKinds": ["txheartbeat"],
            "peerOutages": [0.5],
            "window": 2.0,
            "settle": 0.0,
            "maxWait": 6.0,
        }
    return {
        "count": 1000,
        "outages": [0.5, 2.0, 8.0, 30.0],
        "kinds": list(KINDS),
        "window": 5.0,
        "settle": 5.3,
        "maxWait": 60.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 200 clients, D = 0.5 and 2 s, Twisted clients"
    )
    parser.add_argument("--clients", type=int, help="clients per kind (default 1000; --quick 200)")
    parser.add_argument("--outages", help="comma-separated outage seconds (default 0.5,2,8,30; --quick 0.5,2)")
    parser.add_argument("--kinds", help="comma-separated, from " + ", ".join(KINDS))
    parser.add_argument("--window", type=float, help="planned restart window (default 5; --quick 2)")
    parser.add_argument("--no-planned", action="store_true", help="skip the planned-restart row")
    parser.add_argument("--settle", type=float, help="seconds txheartbeat clients stay open before the kill (5.3)")
    parser.add_argument("--max-wait", type=float, help="seconds after the restart before a run stops (default 60)")
    parser.add_argument("--txheartbeat", metavar="DIR", help="import txheartbeat from DIR instead of this checkout")
    parser.add_argument(
        "--tls", action="store_true", help="instead: the wss:// storm, with and without TLS session resumption"
    )
    parser.add_argument("--json", metavar="PATH", help="save the raw results here")
    parser.add_argument("--report", metavar="PATH", help="reprint the tables of saved results; measure nothing")
    args = parser.parse_args()
    # Turn SIGTERM into SystemExit, so that every trial's `finally` kills its worker processes.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        print("\n".join((tlsMarkdown if "outages" in saved and "kinds" not in saved else markdown)(saved)))
        return
    if args.tls:
        results = tlsSweep(
            args.clients or (200 if args.quick else 1000),
            [float(d) for d in args.outages.split(",")] if args.outages else [0.5, 2.0, 8.0],
            settle=args.settle if args.settle is not None else (0.0 if args.quick else 5.3),
            maxWait=args.max_wait or 60.0,
            log=lambda line: print(line, file=sys.stderr, flush=True),
        )
        if args.json:
            Path(args.json).write_text(json.dumps(results))
        print("\n".join(tlsMarkdown(results)))
        return
    o = options(args.quick)
    if args.kinds:
        o["kinds"], o["plannedKinds"], o["peerOutages"] = args.kinds.split(","), None, None
    for k in o["kinds"]:
        if k not in KINDS:
            parser.error(f"unknown kind {k!r}; choose from {', '.join(KINDS)}")
    if args.clients:
        o["count"] = args.clients
    if args.outages:
        o["outages"], o["peerOutages"] = [float(d) for d in args.outages.split(",")], None
    if args.settle is not None:
        o["settle"] = args.settle
    if args.window:
        o["window"] = args.window
    if args.max_wait:
        o["maxWait"] = args.max_wait
    count, outages, kinds = o.pop("count"), o.pop("outages"), o.pop("kinds")
    results = sweep(
        count,
        outages,
        kinds,
        planned=not args.no_planned,
        txheartbeat=args.txheartbeat,
        log=lambda line: print(line, file=sys.stderr, flush=True),
        **o,
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results))
    print("\n".join(markdown(results)))


if __name__ == "__main__":
    main()
