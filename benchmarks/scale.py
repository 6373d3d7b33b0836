"""
Idle connections at scale on both ends, and a frozen server's clients all at once (issue 12).

    python benchmarks/scale.py                    # N = 10,000, 30 s idle windows, the memory breakdown (~6 minutes)
    python benchmarks/scale.py --quick            # N = 1,000, ping 1 s, 2 s windows, no breakdown (~30 s)
    python benchmarks/scale.py --count 2000       # another N
    python benchmarks/scale.py --profile frozen   # D once, its client under cProfile: top 30 by tottime
    python benchmarks/scale.py --profile frozen-reconnect   # the same with the default reconnects
    python benchmarks/scale.py --profile server   # (or client) A's (B's) txheartbeat process over its idle window
    python benchmarks/scale.py --json scale.json  # also save the raw figures
    python benchmarks/scale.py --report scale.json   # reprint the tables of a saved run

A. Server end: one Python server process holds N idle connections from N
   Node ``ws`` clients (one node process; ``ws`` answers pings by itself):
   txheartbeat ``HeartbeatServerFactory(pingInterval=P, pongTimeout=P)``
   against Autobahn's ``WebSocketServerFactory`` with ``autoPingInterval=P,
   autoPingTimeout=P``.
B. Client end: one Python process holds N clients of one node ``ws`` server:
   N txheartbeat ``HeartbeatHandler`` + ``HeartbeatClientFactory(...).connect()``;
   N Autobahn autoPing factories with Twisted's ReconnectingClientFactory; one
   plain Autobahn factory with autoPing and N ``connectWS``.
C. Where the memory goes: tracemalloc allocation sites per connection on both
   ends, for txheartbeat as it is here, txheartbeat 0.2.0 (extracted with
   ``git archive``) and Autobahn.
D. Frozen at once: N txheartbeat clients of one node ``ws`` server that pings
   each client every P seconds at its own phase; the server is stopped
   (SIGSTOP: its kernel keeps every TCP connection up, nothing answers) and
   each client's verdict is compared with ``pingInterval + pongTimeout``
   after its last inbound byte (``HeartbeatTimeout.idle``).  Once without
   reconnecting, once with the default reconnects (which then meet a server
   whose kernel still completes TCP handshakes up to its listen backlog).

Per connection: RSS (after all are open and the first heartbeats went round,
minus before, after ``gc.collect()``, over N), CPU seconds per minute over an
idle window (``getrusage``), and CPU µs per heartbeat (CPU over N × window / P).
Each peer runs in its own process on 127.0.0.1; the process measured is
pinned to one core and its node peer to the other.  Nothing here asserts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import storm  # benchmarks/storm.py, next to this file: the node cache and the worker-process plumbing
from common import cpuSeconds, machine, raiseFileLimit, reprinted, rssBytes, savedRuns, say

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SCALE = str(HERE / "scale.py")

#: txheartbeat 0.2.0, the "before" of the memory breakdown
BEFORE = "3212859"

#: the targets of issue 12, as txheartbeat / Autobahn ratios (lower is better)
TARGETS = {
    "serverMemory": 0.75,
    "serverCpu": 0.70,
    "clientMemory": 1.00,
    "clientCpu": 0.70,
}
#: frozen at once: lateness past pingInterval + pongTimeout, in ms
TARGET_P99 = 50.0
TARGET_MAX = 100.0

SERVERS = {
    "txheartbeat": "txheartbeat `HeartbeatServerFactory`",
    "fallback": "txheartbeat, every shortcut off (`TXHEARTBEAT_SHORTCUTS=off`)",
    "autobahn": "Autobahn `WebSocketServerFactory`, autoPing",
}
CLIENTS = {
    "txheartbeat": "txheartbeat: `HeartbeatHandler` + `HeartbeatClientFactory` each",
    "fallback": "txheartbeat, every shortcut off (`TXHEARTBEAT_SHORTCUTS=off`)",
    "autobahn": "Autobahn autoPing + ReconnectingClientFactory, one factory each",
    "shared": "plain Autobahn: one shared `WebSocketClientFactory`, autoPing",
}

Result = Dict[str, Any]


# Node peers ------------------------------------------------------------------

NODE_PEERS = r"""
// Node peers for benchmarks/scale.py (ws 8), one JSON line per event on stdout.
//   clients URL N BATCH      open N idle clients, BATCH at a time (each batch all open before the next)
//   server PING_MS BACKLOG   listen on 127.0.0.1; with PING_MS > 0 ping every client every
//                            PING_MS, each at its own random phase
// ws answers pings by itself.  "report" on stdin prints the counts.  With TLS_CERT and
// TLS_KEY the server is wss:// (https); with TLS_CA the clients trust that CA for wss:// URLs.
const WebSocket = require("ws");
const fs = require("fs");
const ca = process.env.TLS_CA ? fs.readFileSync(process.env.TLS_CA) : undefined;
const now = () => Number(process.hrtime.bigint()) / 1e9; // CLOCK_MONOTONIC, as Python's time.monotonic()
const say = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const [mode, ...args] = process.argv.slice(2);
const counts = { opened: 0, failed: 0, closed: 0 };
const keep = [];
if (mode === "clients") {
  const [url, n, batch] = [args[0], Number(args[1]), Number(args[2])];
  const one = () =>
    new Promise((resolve) => {
      const ws = new WebSocket(url, { perMessageDeflate: false, ca });
      keep.push(ws);
      ws.on("open", () => { counts.opened++; resolve(); });
      ws.on("error", () => { counts.failed++; resolve(); });
      ws.on("close", () => { counts.closed++; resolve(); });
    });
  (async () => {
    for (let i = 0; i < n; i += batch) {
      await Promise.all(Array.from({ length: Math.min(batch, n - i) }, one));
    }
    say({ allOpen: now(), ...counts });
  })();
} else {
  const [pingMs, backlog] = [Number(args[0]), Number(args[1])];
  let wss;
  if (process.env.TLS_CERT) {
    const server = require("https").createServer({
      cert: fs.readFileSync(process.env.TLS_CERT), key: fs.readFileSync(process.env.TLS_KEY),
    });
    wss = new WebSocket.Server({ server, perMessageDeflate: false, clientTracking: false });
    server.listen(0, "127.0.0.1", backlog, () => say({ port: server.address().port }));
  } else {
    wss = new WebSocket.Server({
      host: "127.0.0.1", port: 0, backlog, perMessageDeflate: false, clientTracking: false,
    });
    wss.on("listening", () => say({ port: wss.address().port }));
  }
  wss.on("connection", (ws) => {
    counts.opened++;
    let timer = null;
    if (pingMs > 0) {
      timer = setTimeout(() => {
        ws.ping();
        timer = setInterval(() => ws.ping(), pingMs);
      }, Math.random() * pingMs);
    }
    ws.on("error", () => {});
    ws.on("close", () => { counts.closed++; clearTimeout(timer); clearInterval(timer); });
  });
}
let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
  input += chunk;
  if (input.includes("report")) {
    input = "";
    say({ report: now(), ...counts });
  }
});
process.stdin.on("end", () => process.exit(0)); // the orchestrator is gone
"""


def nodePeers() -> Tuple[Optional[List[str]], str]:
    """
    The node command line for the peers, with ``ws`` from the benchmarks' cache
    (installed there by npm, as for the storm, when missing), or ``None`` and why not.
    """
    if not shutil.which("node"):
        return None, "node is not installed"
    modules = storm.cacheDir() / "node_modules"
    if not (modules / "ws").is_dir():
        try:
            if storm.nodeClient() is None:
                return None, "npm is not installed (needed once to fetch ws into the cache)"
        except Exception as e:
            return None, f"npm could not install ws: {str(e)[-300:]}"
    script = storm.cacheDir() / "scale.js"
    script.write_text(NODE_PEERS)
    return [shutil.which("node") or "node", str(script)], ""


def wsVersion() -> str:
    try:
        return json.loads((storm.cacheDir() / "node_modules" / "ws" / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return "?"


class Peer(storm.Proc):
    """A peer process (JSON lines on stdout, commands on stdin), optionally pinned to a core."""

    def __init__(self, argv: Sequence[str], env: Dict[str, str], cpu: Optional[int] = None) -> None:
        if cpu is not None and shutil.which("taskset") and (os.cpu_count() or 1) > 1:
            argv = ["taskset", "-c", str(cpu % (os.cpu_count() or 1)), *argv]
        super().__init__(argv, env)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)


def pythonEnv(code: Optional[str] = None, kind: str = "") -> Dict[str, str]:
    """
    The environment of a Python worker: txheartbeat from ``code`` (default this
    checkout); for ``kind="fallback"`` with every shortcut into Autobahn and
    Twisted off (their own code paths, as on a release txheartbeat was not verified on).
    """
    env = {**os.environ, "PYTHONPATH": (code or str(ROOT)) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    if kind == "fallback":
        env["TXHEARTBEAT_SHORTCUTS"] = "off"
    return env


def nodeEnv(**tls: str) -> Dict[str, str]:
    """The node peers' environment; ``TLS_CERT``/``TLS_KEY`` (a wss server) or ``TLS_CA`` (clients) from ``tls``."""
    return {**os.environ, "NODE_PATH": str(storm.cacheDir() / "node_modules"), **tls}


def pythonWorker(mode: str, env: Dict[str, str], **kwargs: Any) -> Peer:
    return Peer([sys.executable, SCALE, "worker", mode, json.dumps(kwargs)], env)


# Orchestration -----------------------------------------------------------------


def serverEnd(kind: str, count: int, ping: float, settle: float, window: float, node: List[str], **kw: Any) -> Result:
    """One server process of ``kind`` and one node process with ``count`` clients; the server's figures."""
    return idleEnd("server", kind, count, ping, settle, window, node, **kw)


def clientEnd(kind: str, count: int, ping: float, settle: float, window: float, node: List[str], **kw: Any) -> Result:
    """One node server and one client process holding ``count`` clients of ``kind``; the clients' figures."""
    return idleEnd("client", kind, count, ping, settle, window, node, **kw)


def fallbackRatios(t: Result, off: Result) -> str:
    """The table row comparing txheartbeat with itself, every shortcut off (what an unverified Autobahn gets)."""
    return (
        f"| txheartbeat, every shortcut off | {t['rssPerConnection'] / off['rssPerConnection']:.2f}× "
        f"| {t['cpuPerMinute'] / off['cpuPerMinute']:.2f}× |"
    )


def idleEnd(
    end: str,
    kind: str,
    count: int,
    ping: float,
    settle: float,
    window: float,
    node: List[str],
    *,
    code: Optional[str] = None,
    trace: int = 0,
    profile: str = "",
    tls: str = "",
) -> Result:
    """
    A (``end="server"``) or B (``"client"``): the Python process's figures, and its node peer's report.

    With ``tls`` (a directory holding ``cert.pem`` and ``key.pem``, see
    ``benchmarks/tls.py``) every connection is ``wss://`` to ``127.0.0.1``,
    verified against that certificate.
    """
    procs: List[Peer] = []
    openFor = 30 + count / 100
    measured = dict(
        kind="txheartbeat" if kind == "fallback" else kind,
        count=count,
        ping=ping,
        settle=settle,
        window=window,
        cpu=0,
        trace=trace,
        openFor=openFor,
        profile=profile,
    )
    scheme = "wss" if tls else "ws"
    if tls and end == "server":
        measured["tls"] = tls
    cert = {"cert": os.path.join(tls, "cert.pem"), "key": os.path.join(tls, "key.pem")}
    try:
        if end == "server":
            python = pythonWorker("serve", pythonEnv(code, kind), **measured)
            procs.append(python)
            port = python.need("bare", 60)["port"]
            env = nodeEnv(TLS_CA=cert["cert"]) if tls else nodeEnv()
            peer = Peer([*node, "clients", f"{scheme}://127.0.0.1:{port}/", str(count), "250"], env, cpu=1)
            procs.append(peer)
        else:
            env = nodeEnv(TLS_CERT=cert["cert"], TLS_KEY=cert["key"]) if tls else nodeEnv()
            peer = Peer([*node, "server", "0", "4096"], env, cpu=1)
            procs.append(peer)
            port = peer.need("port", 30)["port"]
            # The clients trust the test certificate as one of the system's roots
            # (SSL_CERT_FILE: roots.pem, the system's bundle and it, where
            # benchmarks/tls.py found the bundle): each kind's default verified
            # context is measured, as it loads on a real machine.
            roots = os.path.join(tls, "roots.pem")
            roots = roots if os.path.exists(roots) else cert["cert"]
            env = {**pythonEnv(code, kind), **({"SSL_CERT_FILE": roots} if tls else {})}
            python = pythonWorker("clients", env, url=f"{scheme}://127.0.0.1:{port}/", **measured)
            procs.append(python)
        got = python.need("connections", openFor + settle + window + 120)
        peer.send("report")
        return {**got, "peer": peer.expect("report", 10) or {}}
    finally:
        for p in procs:
            p.kill()


def ss(*args: str) -> Optional[List[str]]:
    """Lines of ``ss -H -tn ARGS`` (sockets as the kernel sees them), or None without ss."""
    if not shutil.which("ss"):
        return None
    try:
        out = subprocess.run(["ss", "-H", "-tn", *args], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return [line for line in out.stdout.splitlines() if line.strip()]


def frozenAtOnce(
    count: int,
    ping: float,
    pong: float,
    node: List[str],
    *,
    reconnect: bool,
    observe: float = 0.0,
    profile: Optional[str] = None,
    freezeGc: bool = False,
    tls: str = "",
) -> Result:
    """
    ``count`` txheartbeat clients of a node server that pings each at its own
    phase; the server is stopped (SIGSTOP) and every client's verdict recorded.
    With ``reconnect`` the clients keep their default retries, and ``observe``
    seconds after the last verdict the sockets to the frozen server are counted.
    With ``freezeGc`` the client process calls ``gc.freeze()`` once all are open.
    With ``tls`` (a directory holding ``cert.pem``, ``key.pem`` and
    ``roots.pem``, see ``benchmarks/tls.py``) the server is ``wss://`` and
    the clients verify it with their default context.
    """
    procs: List[Peer] = []
    server: Optional[Peer] = None
    openFor = 30 + count / (30 if tls else 100)
    files = {name: os.path.join(tls, f"{name}.pem") for name in ("cert", "key", "roots")}
    try:
        env = nodeEnv(TLS_CERT=files["cert"], TLS_KEY=files["key"]) if tls else nodeEnv()
        server = Peer([*node, "server", str(int(ping * 1000)), "511"], env, cpu=1)
        procs.append(server)
        port = server.need("port", 30)["port"]
        client = pythonWorker(
            "frozenClients",
            {**pythonEnv(), **({"SSL_CERT_FILE": files["roots"]} if tls else {})},
            url=f"{'wss' if tls else 'ws'}://127.0.0.1:{port}/",
            count=count,
            ping=ping,
            pong=pong,
            reconnect=reconnect,
            cpu=0,
            openFor=openFor,
            profile=profile or "",
            freezeGc=freezeGc,
        )
        procs.append(client)
        ready = client.need("ready", openFor + 60)
        # Every client has had at least one ping from the server, at its own phase.
        time.sleep(max(0.0, ready["ready"] + ping + 1.0 - time.monotonic()))
        server.signal(signal.SIGSTOP)
        frozeAt = time.monotonic()
        client.send(f"freeze {frozeAt!r}")
        done = client.expect("done", 2 * (ping + pong) + 20)
        sockets: Dict[str, Any] = {}
        if reconnect:
            time.sleep(max(0.0, (done or {}).get("done", time.monotonic()) + observe - time.monotonic()))
            listen = ss("-l", f"sport = :{port}")
            established = ss("state", "established", f"dport = :{port}")
            synSent = ss("state", "syn-sent", f"dport = :{port}")
            if listen is not None:
                words = listen[0].split() if listen else []
                sockets = {
                    "acceptQueue": int(words[1]) if len(words) > 2 else None,
                    "backlog": int(words[2]) if len(words) > 2 else None,
                    "established": len(established or []),
                    "synSent": len(synSent or []),
                }
            sockets["observedFor"] = time.monotonic() - frozeAt
        client.send("report")
        got = client.need("lateness", 60)
        return {
            **got,
            "frozeAt": frozeAt,
            "ready": ready,
            "allDeclared": done is not None,
            "sockets": sockets,
            "reconnect": reconnect,
            "freezeGc": freezeGc,
            "tls": bool(tls),
        }
    finally:
        if server is not None:
            server.signal(signal.SIGCONT)
        for p in procs:
            p.kill()


def extractBefore(commit: str, where: str) -> str:
    """``git archive COMMIT txheartbeat | tar -x -C WHERE``; returns WHERE."""
    archive = subprocess.Popen(["git", "-C", str(ROOT), "archive", commit, "txheartbeat"], stdout=subprocess.PIPE)
    try:
        subprocess.run(["tar", "-x", "-C", where], stdin=archive.stdout, check=True, timeout=60)
    finally:
        assert archive.stdout is not None
        archive.stdout.close()
        if archive.wait(60) != 0:
            raise RuntimeError(f"git archive {commit} failed")
    return where


def options(quick: bool) -> Dict[str, Any]:
    """The settings: the full run (about 6 minutes) or ``--quick`` (about 30 s, for run.py's smoke run)."""
    if quick:
        # Inside run.py --quick's two minutes: a 1 s heartbeat, so that the
        # first heartbeats go round in 1.5 s, 2 s windows, no breakdown and
        # no reconnecting frozen run.
        return {
            "count": 1000,
            "ping": 1.0,
            "window": 2.0,
            "runs": 1,
            "breakdown": 0,
            "frozenReconnect": False,
        }
    return {"count": 10000, "ping": 5.0, "window": 30.0, "runs": 1, "breakdown": 2000, "frozenReconnect": True}


def measure(
    count: int,
    ping: float,
    window: float,
    runs: int = 1,
    breakdown: int = 0,
    frozenReconnect: bool = True,
    only: Sequence[str] = ("server", "client", "breakdown", "frozen"),
    before: str = BEFORE,
    log: Callable[[str], None] = lambda line: None,
) -> Result:
    """Every part, one process pair at a time; peers alternate run by run so that drift in load hits all alike."""
    began = time.monotonic()
    raiseFileLimit()  # inherited by every worker (each raises its own as well)
    settle = 1.5 * ping  # after the last open: every connection has had its first heartbeat answered
    node, why = nodePeers()
    out: Result = {
        "count": count,
        "ping": ping,
        "window": window,
        "settle": settle,
        "runs": runs,
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "versions": versions(),
        "skipped": {},
        "server": {k: [] for k in SERVERS},
        "client": {k: [] for k in CLIENTS},
        "breakdown": {},
        "frozen": [],
    }
    if node is None:
        out["skipped"]["node"] = why
        log(f"skipped (every part needs a node ws peer): {why}")
        out["wallSeconds"] = time.monotonic() - began
        return out
    out["versions"]["node"] = subprocess.run([node[0], "--version"], capture_output=True, text=True).stdout.strip()
    out["versions"]["ws"] = wsVersion()

    def attempt(what: str, call: Callable[[], Result]) -> Result:
        t0 = time.monotonic()
        try:
            r = call()
        except Exception as e:
            r = {"error": str(e)[-2000:]}
        r["seconds"] = time.monotonic() - t0
        log(f"{what}: {summary(r)} ({r['seconds']:.0f} s)")
        return r

    for _ in range(runs):
        if "server" in only:
            for kind in SERVERS:
                out["server"][kind].append(
                    attempt(f"server {kind}", lambda k=kind: serverEnd(k, count, ping, settle, window, node))
                )
        if "client" in only:
            for kind in CLIENTS:
                out["client"][kind].append(
                    attempt(f"client {kind}", lambda k=kind: clientEnd(k, count, ping, settle, window, node))
                )
    if breakdown and "breakdown" in only:
        with tempfile.TemporaryDirectory(prefix="txheartbeat-before-") as where:
            try:
                old: Optional[str] = extractBefore(before, where)
            except Exception as e:
                old = None
                out["skipped"]["before"] = f"could not extract {before}: {e}"
            runs_ = [("server", "txheartbeat", None), ("server", "autobahn", None)]
            runs_ += [("client", "txheartbeat", None), ("client", "shared", None)]
            if old is not None:
                runs_ += [("server", "txheartbeat", old), ("client", "txheartbeat", old)]
            for end, kind, code in runs_:
                key = f"{end} {kind}{' before' if code else ''}"
                call = serverEnd if end == "server" else clientEnd
                out["breakdown"][key] = attempt(
                    f"breakdown {key}",
                    lambda c=call, k=kind, o=code: c(k, breakdown, ping, settle, 0.0, node, code=o, trace=40),
                )
        out["breakdownCount"] = breakdown
        out["before"] = before
    if "frozen" in only:
        for reconnect, freezeGc in (
            ((False, False), (True, False), (True, True)) if frozenReconnect else ((False, False),)
        ):
            r = attempt(
                f"frozen at once, reconnect {'on' if reconnect else 'off'}{', gc.freeze()' if freezeGc else ''}",
                lambda r=reconnect, g=freezeGc: frozenAtOnce(
                    count, ping, ping, node, reconnect=r, observe=12.0, freezeGc=g
                ),
            )
            r.update(reconnect=reconnect, freezeGc=freezeGc)
            out["frozen"].append(r)
    out["wallSeconds"] = time.monotonic() - began
    return out


def summary(r: Result) -> str:
    if "error" in r:
        return "error: " + r["error"].strip().splitlines()[-1][:200] if r["error"].strip() else "error"
    if "lateness" in r:
        s = latenessFigures(r)
        return f"{s['declared']} declared, p99 {s['p99']:.1f} ms, max {s['max']:.1f} ms"
    if "sites" in r:
        return f"{r['tracedPerConnection']:.0f} traced bytes per connection"
    return (
        f"{r['rssPerConnection'] / 1024:.2f} KiB/conn, {r['cpuPerMinute']:.2f} CPU s/min, "
        f"{r['microsecondsPerHeartbeat']:.1f} µs/heartbeat, {r['openAtEnd']}/{r['connections']} open"
    )


def profiled(part: str, count: int, ping: float, window: float, node: List[str], top: int = 30) -> List[str]:
    """
    One txheartbeat run of ``part`` with the process measured under cProfile:
    ``frozen`` (D without reconnects, from the freeze to the last verdict;
    ``frozen-reconnect`` with them),
    ``server`` or ``client`` (A or B, over the idle window).  Markdown lines.
    """
    import pstats

    with tempfile.TemporaryDirectory() as where:
        path = os.path.join(where, f"{part}.prof")
        if part.startswith("frozen"):
            r = frozenAtOnce(count, ping, ping, node, reconnect=part == "frozen-reconnect", profile=path)
            s = latenessFigures(r)
            what = (
                f"the client process from the freeze to the last verdict ({s['declared']:,} of {count:,} declared "
                f"dead; under the profiler p50 {s['p50']:.1f} ms, p99 {s['p99']:.1f} ms, max {s['max']:.1f} ms late)"
            )
        else:
            call = serverEnd if part == "server" else clientEnd
            r = call("txheartbeat", count, ping, 1.5 * ping, window, node, profile=path)
            what = f"the txheartbeat {part} process over a {r['window']:.0f} s idle window ({summary(r)} under the profiler)"
        stats = pstats.Stats(path)
    entries = stats.stats.items()  # type: ignore[attr-defined]
    # Time spent waiting in epoll is the reactor idle, not work: left out, and said.
    waiting = sum(tt for (_, _, name), (_, _, tt, _, _) in entries if "select.epoll" in name)
    busy = stats.total_tt - waiting  # type: ignore[attr-defined]
    rows = sorted(
        ((key, value) for key, value in entries if "select.epoll" not in key[2]), key=lambda kv: kv[1][2], reverse=True
    )[:top]
    lines = [
        f"cProfile of {what}; {count:,} connections, ping {ping:g} s: {busy:.2f} s busy, {waiting:.2f} s waiting "
        "in epoll (left out below). Profiling slows every call, so these figures are not the benchmark's.",
        "",
        "| tottime s | share of busy | cumtime s | calls | function |",
        "|---|---|---|---|---|",
    ]
    for (path_, line, name), (cc, nc, tt, ct, _callers) in rows:
        calls = f"{nc:,}" if cc == nc else f"{nc:,}/{cc:,}"
        name = re.sub(r" at 0x[0-9a-f]+", "", name)
        where_ = f"{shortPath(path_)}:{line}({name})" if line else name
        lines.append(f"| {tt:.3f} | {100 * tt / busy:.1f} % | {ct:.3f} | {calls} | `{escape(where_)}` |")
    return lines


# Reporting ----------------------------------------------------------------------


def med(values: List[float]) -> float:
    return statistics.median(values)


def good(runs: List[Result]) -> List[Result]:
    return [r for r in runs if "error" not in r]


def figuresOf(runs: List[Result]) -> Optional[Dict[str, float]]:
    ok = good(runs)
    if not ok:
        return None
    return {
        key: med([r[key] for r in ok])
        for key in ("rssPerConnection", "cpuPerMinute", "microsecondsPerHeartbeat", "openAtEnd", "connections")
    }


def latenessFigures(r: Result) -> Dict[str, Any]:
    late = sorted(r["lateness"])
    n = len(late)

    def pct(p: float) -> float:
        return late[min(n - 1, int(p / 100 * n))] if n else float("nan")

    at = sorted(t - r["frozeAt"] for t in r["at"])
    return {
        "declared": n,
        "early": sum(1 for x in late if x < 0),
        "p50": pct(50),
        "p99": pct(99),
        "max": late[-1] if n else float("nan"),
        "first": at[0] if at else float("nan"),
        "last": at[-1] if at else float("nan"),
        "peakPerSecond": storm.slidingPeak(at, 1.0) if at else 0,
    }


def ratioCell(value: float, target: Optional[float]) -> str:
    if target is None:
        return f"{value:.2f}"
    verdict = "met" if value <= target else "**missed**"
    return f"**{value:.2f}** (≤ {target:.2f}: {verdict})"


def escape(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")


def markdown(results: Result, heading: str = "## 3. Idle scale (both ends) and frozen-at-once detection") -> List[str]:
    """The section's tables and notes, as markdown lines."""
    n, ping, window = results["count"], results["ping"], results["window"]
    v = results["versions"]
    lines = [heading, ""]
    by = f" by `{results['command']}`" if results.get("command") else ""
    lines.append(
        f"Measured {results['date']}{by} in {results.get('wallSeconds', 0):.0f} s on {results['machine']}; "
        + ", ".join(f"{k} {val}" for k, val in v.items())
        + "."
    )
    lines.append("")
    if "node" in results["skipped"]:
        lines += [f"Skipped: {results['skipped']['node']} (every part here has a Node `ws` peer).", ""]
        return lines
    lines.append(
        f"N = {n:,} idle connections in the process measured, each peer in its own process on 127.0.0.1 "
        f"(the process measured pinned to one core, its Node `ws` peer to the other); ping every {ping:g} s, "
        f"pong timeout {ping:g} s. **RSS per connection** = (RSS once all N are open and {results['settle']:g} s "
        f"more have passed, so that every connection's first heartbeat went round, − RSS before the first, both "
        f"after `gc.collect()`) / N. **CPU** from `getrusage` over the {window:g} s idle window that follows; "
        f"**µs per heartbeat** = that CPU / (N × window / {ping:g} s). Every Python process logs to a null "
        f"observer (else Twisted keeps every log event until logging starts). "
        + (f"Medians of {results['runs']} runs." if results["runs"] > 1 else "One run each.")
    )
    lines.append("")

    # A
    server = {k: figuresOf(rs) for k, rs in results["server"].items()}
    if any(results["server"].values()):
        lines += [
            f"### A. Server end: one Python server, {n:,} Node `ws` clients",
            "",
            "| server | RSS per connection | CPU s per minute idle | CPU µs per heartbeat | open at the end |",
            "|---|---|---|---|---|",
        ]
        for kind, f in server.items():
            lines.append(row(SERVERS[kind] + f" {ping:g}/{ping:g}", f, results["server"][kind]))
        lines.append("")
        t, a, off = server["txheartbeat"], server["autobahn"], server.get("fallback")
        if t and a:
            lines += [
                "| txheartbeat / … | memory | CPU |",
                "|---|---|---|",
                f"| Autobahn | {ratioCell(t['rssPerConnection'] / a['rssPerConnection'], TARGETS['serverMemory'])} "
                f"| {ratioCell(t['cpuPerMinute'] / a['cpuPerMinute'], TARGETS['serverCpu'])} |",
            ]
            if off:
                lines.append(fallbackRatios(t, off))
            lines.append("")

    # B
    client = {k: figuresOf(rs) for k, rs in results["client"].items()}
    if any(results["client"].values()):
        lines += [
            f"### B. Client end: {n:,} Python clients in one process, one Node `ws` server",
            "",
            "| clients | RSS per connection | CPU s per minute idle | CPU µs per heartbeat | open at the end |",
            "|---|---|---|---|---|",
        ]
        for kind, f in client.items():
            lines.append(row(CLIENTS[kind] + f" {ping:g}/{ping:g}", f, results["client"][kind]))
        lines.append("")
        t = client["txheartbeat"]
        peers = [("plain Autobahn, one shared factory", client["shared"], True)]
        peers.append(("Autobahn + ReconnectingClientFactory", client["autobahn"], False))
        if t and any(p for _, p, _ in peers):
            lines += ["| txheartbeat / … | memory | CPU |", "|---|---|---|"]
            for name, p, targeted in peers:
                if p:
                    mem = ratioCell(
                        t["rssPerConnection"] / p["rssPerConnection"], TARGETS["clientMemory"] if targeted else None
                    )
                    cpu = ratioCell(t["cpuPerMinute"] / p["cpuPerMinute"], TARGETS["clientCpu"] if targeted else None)
                    lines.append(f"| {name} | {mem} | {cpu} |")
            if client.get("fallback"):
                lines.append(fallbackRatios(t, client["fallback"]))
            lines.append("")

    # C
    if results["breakdown"]:
        lines += breakdownMarkdown(results)

    # D
    if results["frozen"]:
        lines += frozenMarkdown(results)

    for what, why in results["skipped"].items():
        if what != "node":
            lines += [f"Skipped ({what}): {why}.", ""]
    errors = [
        (part, kind, r["error"])
        for part in ("server", "client")
        for kind, rs in results[part].items()
        for r in rs
        if "error" in r
    ]
    errors += [("breakdown", k, r["error"]) for k, r in results["breakdown"].items() if "error" in r]
    errors += [("frozen", "", r["error"]) for r in results["frozen"] if "error" in r]
    for part, kind, error in errors:
        last = error.strip().splitlines()[-1] if error.strip() else "?"
        lines += [f"Run failed ({part} {kind}): `{escape(last[:300])}`.", ""]
    return lines


def row(name: str, f: Optional[Dict[str, float]], runs: List[Result]) -> str:
    if f is None:
        return f"| {name} | error | | | |"
    runsText = ""
    if len(good(runs)) > 1:
        runsText = " (" + ", ".join(f"{r['rssPerConnection'] / 1024:.2f}" for r in good(runs)) + ")"
    return (
        f"| {name} | {f['rssPerConnection'] / 1024:.2f} KiB{runsText} | {f['cpuPerMinute']:.2f} | "
        f"{f['microsecondsPerHeartbeat']:.1f} | {f['openAtEnd']:,.0f} / {f['connections']:,.0f} |"
    )


def breakdownMarkdown(results: Result, top: int = 12) -> List[str]:
    b = results["breakdown"]
    n = results["breakdownCount"]
    before = results.get("before", BEFORE)
    lines = [
        f"### C. Where the memory goes (tracemalloc, N = {n:,})",
        "",
        f"The same runs as A and B with N = {n:,} under `tracemalloc`: bytes still allocated per connection once all "
        "are open and their first heartbeats went round, by allocation site (the innermost Python frame; "
        "C allocations outside Python's allocator, such as kernel socket buffers, are not seen; an object's "
        "`__dict__` is charged to the attribute assignment that last made it grow). "
        f"txheartbeat 0.2.0 is commit {before}, extracted with `git archive` and run with `PYTHONPATH` on it.",
        "",
        "| traced bytes per connection | txheartbeat 0.2.0 | txheartbeat now | Autobahn |",
        "|---|---|---|---|",
    ]

    def traced(key: str) -> str:
        r = b.get(key)
        if r is None:
            return "–"
        if "error" in r:
            return "error"
        return f"{r['tracedPerConnection']:,.0f}"

    lines.append(
        f"| server end | {traced('server txheartbeat before')} | {traced('server txheartbeat')} | {traced('server autobahn')} |"
    )
    lines.append(
        f"| client end | {traced('client txheartbeat before')} | {traced('client txheartbeat')} | "
        f"{traced('client shared')} (one shared factory) |"
    )
    lines.append("")
    for end in ("server", "client"):
        now, old = b.get(f"{end} txheartbeat"), b.get(f"{end} txheartbeat before")
        if now and "error" not in now:
            lines += [
                f"{end.capitalize()} end, txheartbeat 0.2.0 → now: the top sites of either, matched by file and source text "
                "(a line that changed shows on two rows):",
                "",
                "| 0.2.0 B/conn | now B/conn | site (now, else 0.2.0) | source |",
                "|---|---|---|---|",
            ]
            lines += beforeAfterRows(old if old and "error" not in old else None, now, top)
            lines.append("")
        peer = b.get(f"{end} {'autobahn' if end == 'server' else 'shared'}")
        if peer and "error" not in peer:
            name = "Autobahn server" if end == "server" else "plain Autobahn client (one shared factory)"
            lines += [
                f"{end.capitalize()} end, {name}, top sites:",
                "",
                "| B/conn | objects/conn | site | source |",
                "|---|---|---|---|",
            ]
            for s in peer["sites"][:top]:
                lines.append(
                    f"| {s['bytes'] / n:,.0f} | {s['count'] / n:.2f} | `{escape(s['file'])}:{s['line']}` | `{escape(s['source'][:90])}` |"
                )
            lines.append("")
    return lines


def beforeAfterRows(old: Optional[Result], now: Result, top: int) -> List[str]:
    n = now["connections"]

    def index(r: Optional[Result]) -> Dict[Tuple[str, str], Dict[str, Any]]:
        out: Dict[Tuple[str, str], Dict[str, Any]] = {}
        for s in (r or {}).get("sites", []):
            key = (s["file"], s["source"])
            if key in out:
                out[key] = {
                    **out[key],
                    "bytes": out[key]["bytes"] + s["bytes"],
                    "line": f"{out[key]['line']},{s['line']}",
                }
            else:
                out[key] = dict(s)
        return out

    a, b = index(old), index(now)
    keys = sorted(b, key=lambda k: -b[k]["bytes"])[:top]
    keys += [k for k in sorted(a, key=lambda k: -a[k]["bytes"])[:top] if k not in keys]
    keys.sort(key=lambda k: -max(a.get(k, {}).get("bytes", 0), b.get(k, {}).get("bytes", 0)))
    rows = []
    for key in keys:
        site = b.get(key) or a[key]
        before = f"{a[key]['bytes'] / n:,.0f}" if key in a else ("–" if old else "?")
        after = f"{b[key]['bytes'] / n:,.0f}" if key in b else "–"
        rows.append(
            f"| {before} | {after} | `{escape(site['file'])}:{site['line']}` | `{escape(site['source'][:90])}` |"
        )
    return rows


def frozenMarkdown(results: Result) -> List[str]:
    n, ping = results["count"], results["ping"]
    lines = [
        f"### D. Frozen at once: {n:,} txheartbeat clients, their server stops",
        "",
        f"One Node `ws` server pings each of its {n:,} txheartbeat clients (ping {ping:g} s, pong {ping:g} s) every "
        f"{ping:g} s at the client's own random phase, so their last inbound bytes are spread over {ping:g} s; then it "
        "is stopped with SIGSTOP (its kernel keeps every TCP connection up and acknowledges; nothing answers). "
        f"**Lateness** = `HeartbeatTimeout.idle` − {2 * ping:g} s: how long past pingInterval + pongTimeout after "
        "its last inbound byte each client declared the peer dead. Targets: none early, p99 ≤ "
        f"{TARGET_P99:g} ms, max ≤ {TARGET_MAX:g} ms.",
        "",
        "| after the verdict | declared dead | early (< 0) | p50 | p99 | max | verdicts from the freeze | peak verdicts in 1 s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["frozen"]:
        name = frozenName(r)
        if "error" in r:
            lines.append(f"| {name} | error | | | | | | |")
            continue
        s = latenessFigures(r)
        p99 = f"{s['p99']:.1f} ms" + (" (**missed**)" if s["p99"] > TARGET_P99 else "")
        mx = f"{s['max']:.1f} ms" + (" (**missed**)" if s["max"] > TARGET_MAX else "")
        early = f"{s['early']}" + (" (**missed**)" if s["early"] else "")
        declared = f"{s['declared']:,} / {n:,}" + (
            f", {r['beforeFreeze']} before the freeze" if r["beforeFreeze"] else ""
        )
        lines.append(
            f"| {name} | {declared} | {early} | {s['p50']:.1f} ms | {p99} | {mx} | "
            f"{s['first']:.2f}–{s['last']:.2f} s | {s['peakPerSecond']:,} |"
        )
    lines.append("")
    for r in results["frozen"]:
        if "error" not in r and r.get("gcPauses") is not None:
            lines += gcText(r, results["count"])
    for r in results["frozen"]:
        if r.get("reconnect") and "error" not in r:
            lines += reconnectText(r)
    return lines


def frozenName(r: Result) -> str:
    """How a frozen-at-once run's clients were set up."""
    name = "reconnect (defaults)" if r.get("reconnect") else "no reconnect (`shouldRetry` → False)"
    return name + (", `gc.freeze()` once all were open" if r.get("freezeGc") else "")


def gcText(r: Result, n: int, late: float = 20.0, long: float = 10.0) -> List[str]:
    """Python's GC passes after the freeze, and how many late verdicts were due during one."""
    pauses = r["gcPauses"]
    name = frozenName(r)[0].upper() + frozenName(r)[1:]
    objects = r.get("ready", {}).get("gcObjects")
    text = (
        f"{name}: " if not objects else f"{name}: the client process's GC tracked {objects:,} objects before the freeze"
    )
    types, perClient = r.get("ready", {}).get("gcTypes"), r.get("ready", {}).get("gcPerClient")
    if objects and types and perClient:
        text += f", {perClient:.1f} per client (" + ", ".join(f"{name_} {c / n:.1f}" for name_, c in types) + ", …)"
    text += "; " if objects else ""
    if not pauses:
        return [text + "no pass of Python's cyclic GC took 2 ms or more after the freeze.", ""]
    byGen: Dict[int, List[List[float]]] = {}
    for p in pauses:
        byGen.setdefault(int(p[1]), []).append(p)
    parts = [
        f"generation {g}: {len(ps)} (longest {max(p[2] for p in ps):,.0f} ms)"
        for g, ps in sorted(byGen.items())
        if g < 2
    ]
    if byGen.get(2):
        parts.append(
            "generation 2 (a full pass): "
            + ", ".join(f"{p[2]:,.0f} ms at {p[0]:.2f} s ({p[3]:,} objects collected)" for p in byGen[2])
        )
    text += "GC passes of 2 ms or more after the freeze: " + "; ".join(parts)
    spans = [(p[0] - 0.1, p[0] + p[2] / 1000) for p in pauses if p[2] >= long]
    lateOnes = [(t - r["frozeAt"] - x / 1000) for t, x in zip(r["at"], r["lateness"], strict=True) if x > late]
    during = sum(1 for due in lateOnes if any(a <= due <= b for a, b in spans))
    text += "."
    if lateOnes:
        text += (
            f" Of the {len(lateOnes):,} verdicts more than {late:g} ms late, {during:,} fell due during a GC pass "
            f"of {long:g} ms or more (or in the 100 ms before it)."
        )
    return [text, ""]


def reconnectText(r: Result) -> List[str]:
    k = r["sockets"]
    errors = ", ".join(f"{name} {count:,}" for name, count in sorted(r["errors"].items(), key=lambda kv: -kv[1]))
    text = (
        f"With the default reconnects, in the {k.get('observedFor', 0):.0f} s from the freeze: "
        f"{r['reconnects']:,} reconnects scheduled, {r['attempts']:,} connection attempts begun, "
        f"{r['opensAfterFreeze']:,} opened; errors other than the heartbeat timeouts: {errors or 'none'}. "
    )
    if "acceptQueue" in k and k["acceptQueue"] is not None:
        text += (
            "The frozen server's kernel still completed TCP handshakes up to its listen backlog, so the first "
            "retries that got in sent their upgrade request and waited for an answer that never came; the others' "
            "SYNs were dropped once the accept queue was full. At the end the queue held "
            f"{k['acceptQueue']:,} connections nobody will accept (backlog {k['backlog']:,}), and the clients had "
            f"{k['established']:,} sockets established to the server and {k['synSent']:,} in SYN-SENT. Each attempt "
            "ends with an `OpenTimeout` after `openTimeout` (10 s), then the next retry."
        )
    return [text, ""]


# Workers (each in its own process) ------------------------------------------------


def shortPath(path: str) -> str:
    """A source path as ``package/module.py`` (site-packages, the txheartbeat tree, the standard library)."""
    import sysconfig

    p = path.replace("\\", "/")
    if "/site-packages/" in p:
        return p.split("/site-packages/", 1)[1]
    if "/txheartbeat/" in p:
        return "txheartbeat/" + p.rsplit("/txheartbeat/", 1)[1]
    if p.startswith(str(HERE) + "/"):
        return "benchmarks/" + p[len(str(HERE)) + 1 :]
    stdlib = sysconfig.get_paths()["stdlib"].replace("\\", "/")
    if p.startswith(stdlib + "/"):
        return p[len(stdlib) + 1 :]
    return p


def _prologue(cpu: int) -> None:
    """Every worker: its own file limit, one core, and Twisted logging to nowhere from the start."""
    raiseFileLimit()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})
    from twisted.logger import globalLogBeginner

    # Until logging begins Twisted keeps every event in memory: that would be
    # counted as per-connection memory.
    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    # The orchestrator gone (stdin closed): nobody will read the figures.
    threading.Thread(target=_watchStdin, daemon=True).start()


_commands: List[Callable[[List[str]], None]] = []


def _watchStdin() -> None:
    from twisted.internet import reactor

    for line in sys.stdin:
        if line.split():
            for handle in _commands:
                reactor.callFromThread(handle, line.split())
    os._exit(0)


def _gcPauses(since: Callable[[], Optional[float]], least: float = 0.002) -> List[List[float]]:
    """
    Record Python's cyclic-GC passes of ``least`` seconds or more once ``since()``
    is a time: ``[seconds after it, generation, duration ms, objects collected,
    ms of this thread's CPU, ms waiting for a CPU]`` (the last two tell a pass
    that worked from one whose process was not running: the kernel's
    ``schedstat`` of this thread, where it has one, else ``-1``).
    """
    import gc

    pauses: List[List[float]] = []
    began = [0.0, 0.0, 0]
    try:
        fd: Optional[int] = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
    except OSError:
        fd = None

    def waited() -> int:
        # schedstat: "ns on a CPU, ns runnable but waiting for one, timeslices"
        return int(os.pread(fd, 100, 0).split()[1]) if fd is not None else 0

    def watch(phase: str, info: Dict[str, int]) -> None:
        if phase == "start":
            began[:] = [time.monotonic(), time.thread_time(), waited()]
            return
        start = since()
        took = time.monotonic() - began[0]
        if start is not None and took >= least:
            cpu = (time.thread_time() - began[1]) * 1000
            wait = (waited() - began[2]) / 1e6 if fd is not None else -1
            pauses.append(
                [round(began[0] - start, 4), info["generation"], round(took * 1000, 1), info["collected"]]
                + [round(cpu, 1), round(wait, 1)]
            )

    gc.callbacks.append(watch)
    return pauses


def _version() -> Dict[str, Any]:
    if "txheartbeat" not in sys.modules:
        return {}
    import txheartbeat

    return {"txheartbeat": txheartbeat.__version__, "txheartbeatFrom": os.path.dirname(txheartbeat.__file__)}


class _Tracer:
    """tracemalloc over the part that grows with the connections (``depth`` 0: off)."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.first: Any = None

    def begin(self) -> None:
        if self.top:
            import tracemalloc

            tracemalloc.start()
            self.first = tracemalloc.take_snapshot()

    def end(self, count: int) -> Dict[str, Any]:
        if not self.top:
            return {}
        import linecache
        import tracemalloc

        snapshot = tracemalloc.take_snapshot()
        tracemalloc.stop()
        ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
        stats = snapshot.filter_traces(ignore).compare_to(self.first.filter_traces(ignore), "lineno")
        total = sum(s.size_diff for s in stats)
        sites = []
        for s in sorted(stats, key=lambda s: s.size_diff, reverse=True)[: self.top]:
            frame = s.traceback[0]
            sites.append(
                {
                    "file": shortPath(frame.filename),
                    "line": frame.lineno,
                    "bytes": s.size_diff,
                    "count": s.count_diff,
                    "source": linecache.getline(frame.filename, frame.lineno).strip(),
                }
            )
        return {"tracedPerConnection": total / count, "sites": sites}


def mallocInUse() -> Optional[int]:
    """
    Bytes the C allocator (glibc ``mallinfo2``) has handed out and not had back:
    OpenSSL's allocations and Python objects over 512 bytes, not pymalloc's
    arenas; None where there is no ``mallinfo2``.
    """
    import ctypes

    class Info(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
        ]

    try:
        call = ctypes.CDLL(None).mallinfo2
    except (AttributeError, OSError):
        return None
    call.restype = Info
    info = call()
    return int(info.uordblks + info.hblkhd)


def _idleRun(
    count: int,
    ping: float,
    settle: float,
    window: float,
    trace: int,
    openFor: float,
    openAll: Callable[[], Any],
    openNow: Callable[[], int],
    closedNow: Callable[[], int],
    port: Optional[int] = None,
    profile: str = "",
) -> None:
    """
    The measurement both ends share: baseline, open all (``openAll``; a
    server announces its ``port`` with the baseline and waits for its
    clients), settle, idle window, figures.
    """
    import gc

    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred
    from twisted.internet.task import deferLater

    def sleep(seconds: float) -> Any:
        return deferLater(reactor, seconds, lambda: None)

    tracer = _Tracer(trace)

    async def main() -> None:
        try:
            await sleep(0.2)
            gc.collect()
            bare, bareMalloc = rssBytes(), mallocInUse()
            tracer.begin()
            say(bare=bare, port=port)
            deadline = time.monotonic() + openFor
            await openAll()
            while openNow() < count and time.monotonic() < deadline:
                await sleep(0.05)
            if openNow() < count:
                raise RuntimeError(f"only {openNow()} of {count} connections opened in {openFor:g} s")
            await sleep(settle)  # every connection's first heartbeat goes round
            gc.collect()
            traced = tracer.end(count)
            loaded, loadedMalloc = rssBytes(), mallocInUse()
            profiler: Any = None
            if profile:
                import cProfile

                profiler = cProfile.Profile()
                profiler.enable()
            cpu0, wall0 = cpuSeconds(), time.monotonic()
            if window > 0:
                await sleep(window)
            cpu, wall = cpuSeconds() - cpu0, time.monotonic() - wall0
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(profile)
            say(
                connections=count,
                openAtEnd=openNow() - closedNow(),
                rssPerConnection=(loaded - bare) / count,
                mallocPerConnection=(loadedMalloc - bareMalloc) / count if bareMalloc is not None else None,
                cpuPerMinute=cpu * 60 / wall if window > 0 else 0.0,
                microsecondsPerHeartbeat=cpu / (count * wall / ping) * 1e6 if window > 0 else 0.0,
                window=wall,
                **traced,
                **_version(),
            )
        except Exception as e:
            print(repr(e), file=sys.stderr, flush=True)
        os._exit(0)  # no orderly goodbye to N connections: the orchestrator is done with them

    reactor.callWhenRunning(ensureDeferred, main())


def serve(
    kind: str,
    count: int,
    ping: float,
    settle: float,
    window: float,
    cpu: int,
    trace: int = 0,
    openFor: float = 130,
    profile: str = "",
    tls: str = "",
) -> None:
    """
    One server of ``kind`` listening on 127.0.0.1 (its port in the first line), measured as its clients come.

    With ``tls`` (a directory with ``cert.pem`` and ``key.pem``): ``wss://``,
    txheartbeat with ``serverTLSOptions``, Autobahn with Twisted's
    ``CertificateOptions`` as an ``ssl:`` endpoint string makes them.
    """
    _prologue(cpu)
    from twisted.internet import reactor

    counts = {"opens": 0, "closes": 0}

    def opened() -> None:
        counts["opens"] += 1

    def closed() -> None:
        counts["closes"] += 1

    if kind == "txheartbeat":
        from txheartbeat import HeartbeatServerFactory, HeartbeatServerProtocol

        class P(HeartbeatServerProtocol):
            def onOpen(self) -> None:
                opened()

            def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
                closed()

        factory: Any = HeartbeatServerFactory(pingInterval=ping, pongTimeout=ping, reactor=reactor)
    else:
        from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol

        class P(WebSocketServerProtocol):  # type: ignore[no-redef]
            def onOpen(self) -> None:
                opened()

            def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
                closed()

        factory = WebSocketServerFactory()
        factory.setProtocolOptions(autoPingInterval=ping, autoPingTimeout=ping)
    factory.protocol = P
    if tls:
        cert, key = os.path.join(tls, "cert.pem"), os.path.join(tls, "key.pem")
        if kind == "txheartbeat":
            from txheartbeat import serverTLSOptions

            context: Any = serverTLSOptions(cert, key)
        else:
            from twisted.internet import ssl

            context = ssl.PrivateCertificate.loadPEM(Path(cert).read_text() + Path(key).read_text()).options()
        port = reactor.listenSSL(0, factory, context, backlog=1024, interface="127.0.0.1")
    else:
        port = reactor.listenTCP(0, factory, backlog=1024, interface="127.0.0.1")

    async def nothing() -> None:
        """The clients are the node peer's: started by the orchestrator once it has the port."""

    _idleRun(
        count,
        ping,
        settle,
        window,
        trace,
        openFor,
        nothing,
        lambda: counts["opens"],
        lambda: counts["closes"],
        port=port.getHost().port,
        profile=profile,
    )
    reactor.run()


def clients(
    kind: str,
    url: str,
    count: int,
    ping: float,
    settle: float,
    window: float,
    cpu: int,
    trace: int = 0,
    openFor: float = 130,
    profile: str = "",
) -> None:
    """
    ``count`` clients of ``kind`` (txheartbeat, autobahn + RCF, shared) to ``url``, 250 at a time.

    For a ``wss://`` URL each kind verifies the server against the system's
    roots (the orchestrator sets ``SSL_CERT_FILE``): txheartbeat by default,
    Autobahn (whose ``connectWS`` would not verify) with Twisted's
    ``optionsForClientTLS(host)``, one per factory (the shared factory: one).
    """
    _prologue(cpu)
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    counts = {"opens": 0, "closes": 0}
    batch: Dict[str, Any] = {"left": 0, "d": None}

    def opened() -> None:
        counts["opens"] += 1
        batch["left"] -= 1
        if batch["left"] == 0 and batch["d"] is not None:
            d, batch["d"] = batch["d"], None
            d.callback(None)

    def closed() -> None:
        counts["closes"] += 1

    keep: List[Any] = []

    def verified(factory: Any) -> Any:
        if not factory.isSecure:
            return None
        from twisted.internet.ssl import optionsForClientTLS

        return optionsForClientTLS(factory.host)

    if kind == "txheartbeat":
        from txheartbeat import HeartbeatClientFactory, HeartbeatHandler

        class H(HeartbeatHandler):
            def onOpen(self) -> None:
                opened()

            def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
                closed()

        def start() -> None:
            f = HeartbeatClientFactory(url, H(), pingInterval=ping, pongTimeout=ping, reactor=reactor)
            f.connect()
            keep.append(f)

    else:
        from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
        from twisted.internet.protocol import ReconnectingClientFactory

        class P(WebSocketClientProtocol):
            def onOpen(self) -> None:
                if kind == "autobahn":
                    self.factory.resetDelay()
                opened()

            def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
                closed()

        if kind == "autobahn":

            class AutobahnReconnecting(WebSocketClientFactory, ReconnectingClientFactory):
                """The hand-made peer: Autobahn autoPing plus Twisted's ReconnectingClientFactory."""

                protocol = P

                def clientConnectionLost(self, connector: Any, reason: Any) -> None:
                    ReconnectingClientFactory.clientConnectionLost(self, connector, reason)

                def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
                    ReconnectingClientFactory.clientConnectionFailed(self, connector, reason)

            def start() -> None:
                f = AutobahnReconnecting(url)
                f.setProtocolOptions(autoPingInterval=ping, autoPingTimeout=ping)
                connectWS(f, contextFactory=verified(f))
                keep.append(f)

        else:
            shared = WebSocketClientFactory(url)
            shared.protocol = P
            shared.setProtocolOptions(autoPingInterval=ping, autoPingTimeout=ping)
            sharedContext = verified(shared)

            def start() -> None:
                keep.append(connectWS(shared, contextFactory=sharedContext))

    async def openAll() -> None:
        deadline = time.monotonic() + openFor
        for first in range(0, count, 250):
            d = batch["d"] = Deferred()
            batch["left"] = min(count, first + 250) - first
            for _ in range(batch["left"]):
                start()
            d.addTimeout(max(0.1, deadline - time.monotonic()), reactor)
            await d

    _idleRun(
        count,
        ping,
        settle,
        window,
        trace,
        openFor,
        openAll,
        lambda: counts["opens"],
        lambda: counts["closes"],
        profile=profile,
    )
    reactor.run()


def frozenClients(
    url: str,
    count: int,
    ping: float,
    pong: float,
    reconnect: bool,
    cpu: int,
    openFor: float = 130,
    profile: str = "",
    freezeGc: bool = False,
) -> None:
    """
    ``count`` txheartbeat clients of ``url``; after ``freeze T`` (T: when the
    server was stopped) each verdict is recorded; ``report`` prints them all.
    """
    _prologue(cpu)
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, ensureDeferred

    from txheartbeat import HeartbeatClientFactory, HeartbeatHandler, HeartbeatTimeout, OpenTimeout

    bound = ping + pong
    rec: Dict[str, Any] = {
        "frozeAt": None,
        "lateness": [],
        "at": [],
        "beforeFreeze": 0,
        "errors": {},
        "reconnects": 0,
        "opens": 0,
        "opensAfterFreeze": 0,
    }
    batch: Dict[str, Any] = {"left": 0, "d": None}
    profiler: Any = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
    rec["gcPauses"] = _gcPauses(lambda: rec["frozeAt"])

    class H(HeartbeatHandler):
        def onOpen(self) -> None:
            rec["opens"] += 1
            if rec["frozeAt"] is not None:
                rec["opensAfterFreeze"] += 1
            batch["left"] -= 1
            if batch["left"] == 0 and batch["d"] is not None:
                d, batch["d"] = batch["d"], None
                d.callback(None)

        def onError(self, failure: Any) -> None:
            if failure.check(HeartbeatTimeout):
                now = time.monotonic()
                rec["lateness"].append(round((failure.value.idle - bound) * 1000, 3))
                rec["at"].append(now)
                if rec["frozeAt"] is None or now < rec["frozeAt"]:
                    rec["beforeFreeze"] += 1
                if len(rec["lateness"]) == count:
                    if profiler is not None:
                        profiler.disable()
                    say(done=now)
                return
            name = type(failure.value).__name__
            if failure.check(OpenTimeout):
                name += f" ({failure.value.phase})"
            rec["errors"][name] = rec["errors"].get(name, 0) + 1

        def onReconnect(self, attempt: int, delay: float, reason: Any = None) -> None:
            if rec["frozeAt"] is not None:
                rec["reconnects"] += 1

    extra: Dict[str, Any] = {} if reconnect else {"shouldRetry": lambda failure: False}
    handlers: List[Any] = []

    def attempts() -> int:
        return sum(h.stats.attempts for h in handlers)

    def handle(words: List[str]) -> None:
        if words[0] == "freeze":
            rec["frozeAt"] = float(words[1])
            if profiler is not None:
                profiler.enable()
        elif words[0] == "report":
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(profile)
            figures = {k: v for k, v in rec.items() if k != "attemptsAtFreeze"}
            say(**figures, attempts=attempts() - rec.get("attemptsAtFreeze", 0), **_version())
            os._exit(0)

    _commands.append(handle)

    def trackedTypes() -> Dict[str, int]:
        """Objects the cyclic GC tracks (what a full pass walks), by type, after a collection."""
        import gc

        gc.collect()
        out: Dict[str, int] = {}
        for o in gc.get_objects():
            out[type(o).__qualname__] = out.get(type(o).__qualname__, 0) + 1
        return out

    async def main() -> None:
        bare = trackedTypes()
        deadline = time.monotonic() + openFor
        for first in range(0, count, 250):
            d = batch["d"] = Deferred()
            batch["left"] = min(count, first + 250) - first
            for _ in range(batch["left"]):
                h = H()
                handlers.append(h)
                HeartbeatClientFactory(url, h, pingInterval=ping, pongTimeout=pong, reactor=reactor, **extra).connect()
            d.addTimeout(max(0.1, deadline - time.monotonic()), reactor)
            await d
        after = trackedTypes()
        grown = {k: v - bare.get(k, 0) for k, v in after.items()}
        top = sorted(grown.items(), key=lambda kv: -kv[1])[:8]
        if freezeGc:
            import gc

            gc.freeze()  # (README "At scale": measured, not recommended)
        # Counted now, not at the freeze: a snapshot of every client's stats
        # stalls the reactor for tens of ms at N = 10,000, and heartbeats
        # sent late then make verdicts late 10 s later (measured).
        rec["attemptsAtFreeze"] = attempts()
        say(ready=time.monotonic(), gcObjects=sum(after.values()), gcPerClient=sum(grown.values()) / count, gcTypes=top)

    def failed(f: Any) -> None:
        print(f.getTraceback(), file=sys.stderr, flush=True)
        os._exit(1)

    reactor.callWhenRunning(lambda: ensureDeferred(main()).addErrback(failed))
    reactor.run()


# Command line --------------------------------------------------------------------


def versions() -> Dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for name in ("twisted", "autobahn", "txaio"):
        try:
            out[name] = version(name)
        except Exception:
            out[name] = "?"
    out["txheartbeat"] = checkout()
    return out


def checkout() -> str:
    """This checkout's txheartbeat: version, commit, and whether txheartbeat/ differs from it."""
    text = "?"
    try:
        init = (ROOT / "txheartbeat" / "__init__.py").read_text()
        text = next(line.split('"')[1] for line in init.splitlines() if line.startswith("__version__"))
    except (OSError, StopIteration, IndexError):
        pass
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "txheartbeat"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        if head:
            text += f" (this checkout, {head}{' with uncommitted changes in txheartbeat/' if dirty else ''})"
    except (OSError, subprocess.SubprocessError):
        pass
    return text


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        globals()[sys.argv[2]](**json.loads(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1,000, ping 1 s, 2 s windows, no breakdown")
    parser.add_argument("--count", type=int, help="connections per process (default 10,000; 1,000 with --quick)")
    parser.add_argument("--window", type=float, help="seconds of idle window (default 30; 2 with --quick)")
    parser.add_argument("--ping", type=float, help="pingInterval = pongTimeout in seconds (default 5; 1 with --quick)")
    parser.add_argument("--runs", type=int, help="runs of A and B per peer (medians; default 1)")
    parser.add_argument("--breakdown", type=int, help="N of the memory breakdown (default 2,000; 0: skip it)")
    parser.add_argument(
        "--only", action="append", choices=["server", "client", "breakdown", "frozen"], help="parts to run (repeatable)"
    )
    parser.add_argument("--before", default=BEFORE, help="the commit measured as 'before' in the breakdown")
    parser.add_argument(
        "--profile",
        choices=["frozen", "frozen-reconnect", "server", "client"],
        help="instead: one txheartbeat run of D, A or B with the process measured under cProfile (top 15 by tottime)",
    )
    savedRuns(parser)
    args = parser.parse_args()
    if reprinted(args, markdown):
        return
    settings = options(args.quick)
    for name in ("count", "window", "ping", "runs", "breakdown"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if args.profile:
        raiseFileLimit()
        node, why = nodePeers()
        if node is None:
            print(f"skipped: {why}")
            return
        print("\n".join(profiled(args.profile, settings["count"], settings["ping"], settings["window"], node)))
        return
    results = measure(
        **settings,
        only=args.only or ("server", "client", "breakdown", "frozen"),
        before=args.before,
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    shown = [
        f"--{k} {getattr(args, k)}"
        for k in ("count", "window", "ping", "runs", "breakdown")
        if getattr(args, k) is not None
    ]
    shown = (["--quick"] if args.quick else []) + shown + [f"--only {part}" for part in args.only or ()]
    results["command"] = "python benchmarks/scale.py" + "".join(" " + a for a in shown)
    if args.json:
        Path(args.json).write_text(json.dumps(results))
    print("\n".join(markdown(results)))


if __name__ == "__main__":
    main()
