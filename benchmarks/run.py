"""
Benchmarks: txheartbeat against its peers, measured side by side in one run.

    python benchmarks/run.py            # full: 10,000 idle connections on each end, 5 runs each
    python benchmarks/run.py --quick    # under two minutes: smaller counts, 3 runs

Prints a table and writes BENCHMARKS.md (machine, versions, medians, ratios).
Every peer runs on 127.0.0.1 in its own process; nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional

import scale  # benchmarks/scale.py, next to this file
import storm  # benchmarks/storm.py, next to this file
from common import machine, runWorker

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKERS = str(HERE / "workers.py")
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def worker(*args: Any, timeout: float = 300) -> Dict[str, Any]:
    return runWorker(WORKERS, *args, timeout=timeout, env=ENV)


class Server:
    """The benchmark echo server in its own process."""

    def __init__(self, port: int = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, WORKERS, "server", str(port)], stdout=subprocess.PIPE, text=True, env=ENV
        )
        assert self.proc.stdout is not None
        self.port = json.loads(self.proc.stdout.readline())["port"]
        self.url = f"ws://127.0.0.1:{self.port}/"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


def med(values: List[float]) -> float:
    return statistics.median(values)


def detection(runs: int, withJs: bool) -> Dict[str, List[float]]:
    server = Server()
    results: Dict[str, List[float]] = {"txheartbeat": [], "Autobahn autoPing": [], "python-websockets": []}
    modes = {
        "txheartbeat": "detectTxheartbeat",
        "Autobahn autoPing": "detectAutobahn",
        "python-websockets": "detectWebsockets",
    }
    falsePositives = {name: 0 for name in modes}
    try:
        for _ in range(runs):
            for name, mode in modes.items():
                for _try in range(10):
                    got = worker(mode, server.url, 0.5, 0.5, timeout=120)
                    if got["detection"] is not None:
                        results[name].append(got["detection"])
                        break
                    falsePositives[name] += 1
        detection.falsePositives = falsePositives  # type: ignore[attr-defined]
        if withJs:
            js = jsDetection(server.url)
            if js is not None:
                results["websocket-heartbeat-js"] = [js]
    finally:
        server.kill()
    return results


JS_CLIENT = r"""
global.WebSocket = require("ws");
const mod = require("websocket-heartbeat-js");
const W = mod.default || mod;
let last = null;
const c = new W({ url: process.argv[2], pingTimeout: 500, pongTimeout: 500 });
c.onopen = () => setTimeout(() => c.send("stall"), 300);
c.onmessage = (e) => { if (e.data === "stalling") last = process.hrtime.bigint(); };
c.onclose = () => {
  console.log(JSON.stringify({ detection: Number(process.hrtime.bigint() - last) / 1e9 }));
  process.exit(0);
};
"""


def jsDetection(url: str) -> Optional[float]:
    """websocket-heartbeat-js 1.1.3 in node, if node and npm are here (about 30 s: it waits for a close handshake)."""
    npm, node = shutil.which("npm"), shutil.which("node")
    if not npm or not node:
        return None
    with tempfile.TemporaryDirectory() as where:
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", where, "websocket-heartbeat-js@1.1.3", "ws@8"],
            check=True,
            capture_output=True,
            timeout=300,
        )
        script = Path(where) / "client.js"
        script.write_text(JS_CLIENT)
        out = subprocess.run(
            [node, str(script), url],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "NODE_PATH": str(Path(where) / "node_modules")},
        )
        return json.loads(out.stdout.strip().splitlines()[-1])["detection"]


def hotPath(runs: int, seconds: float) -> Dict[str, List[Dict[str, float]]]:
    server = Server()
    results: Dict[str, List[Dict[str, float]]] = {"txheartbeat": [], "plain Autobahn": []}
    try:
        for _ in range(runs):
            # Alternate so that drift in machine load hits both alike.
            results["txheartbeat"].append(worker("echoRate", "txheartbeat", server.url, seconds))
            results["plain Autobahn"].append(worker("echoRate", "autobahn", server.url, seconds))
    finally:
        server.kill()
    return results


def versions() -> Dict[str, str]:
    from importlib.metadata import version

    out = {"python": platform.python_version()}
    for name in ("twisted", "autobahn", "txaio", "websockets", "txheartbeat"):
        try:
            out[name] = version(name)
        except Exception:
            out[name] = "?"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts and fewer runs (under two minutes)")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args()
    quick = args.quick
    runs = 3 if quick else 5
    lines: List[str] = []

    def show(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    show(f"# Benchmarks{' (--quick)' if quick else ''}")
    show()
    show(f"Machine: {machine()}. Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + ".")
    show(
        f"Medians of {runs} runs unless said; every peer measured in this same run, each in its own process, on 127.0.0.1."
    )
    show()

    show("## 1. Dead-peer detection (ping 0.5 s, pong 0.5 s; bound 1.000 s)")
    show()
    show(
        "Seconds from the last inbound byte to the client reporting the peer dead; the peer stops reading and answering, TCP stays open."
    )
    show()
    det = detection(runs, withJs=not quick)
    show("| client | median | min | max | vs bound 1.000 s |")
    show("|---|---|---|---|---|")
    for name, values in det.items():
        if not values:
            # (every try declared the peer dead while it still answered: Autobahn's batched timers, see below)
            show(f"| {name} | – | – | – | no valid run |")
            continue
        note = "early" if min(values) < 1.0 else ("within +20 ms" if max(values) <= 1.02 else "late")
        show(f"| {name} | {med(values):.3f} | {min(values):.3f} | {max(values):.3f} | {note} |")
    show()
    fp = {k: v for k, v in getattr(detection, "falsePositives", {}).items() if v}
    if fp:
        show(
            "Runs discarded because the client declared the peer dead while it was still answering: "
            + ", ".join(f"{k} {v}" for k, v in fp.items())
            + "."
        )
        show()

    show("## 2. Hot-path overhead (64-byte echo round trips per second, one connection)")
    show()
    hot = hotPath(runs, 2.0 if quick else 5.0)
    rate = {k: med([v["rate"] for v in vs]) for k, vs in hot.items()}
    cpu = {k: med([v["cpuMicroseconds"] for v in vs]) for k, vs in hot.items()}
    show("| client | median round trips/s | runs | client CPU µs per round trip |")
    show("|---|---|---|---|")
    for name, values in hot.items():
        runsText = ", ".join(f"{v['rate']:,.0f}" for v in values)
        show(f"| {name} | {rate[name]:,.0f} | {runsText} | {cpu[name]:.1f} |")
    show()
    show(
        f"Ratio txheartbeat / plain Autobahn: **{rate['txheartbeat'] / rate['plain Autobahn']:.3f}** "
        f"in round trips (target ≥ 0.97); client CPU per round trip "
        f"{cpu['txheartbeat'] / cpu['plain Autobahn']:.3f}×."
    )
    show()

    # Section 3 is benchmarks/scale.py (run alone for the breakdown and cProfile options).
    for line in scale.markdown(
        scale.measure(**scale.options(quick), log=lambda line: print(f"  {line}", file=sys.stderr, flush=True))
    ):
        show(line)  # (its last line is blank)

    settings = storm.options(quick)
    count, outages, kinds = settings.pop("count"), settings.pop("outages"), settings.pop("kinds")
    show(
        f"## 4. Reconnect storm ({count:,} clients per kind; server killed, restarted after "
        + ", ".join(f"{d:g}" for d in outages)
        + " s; planned restart)"
    )
    show()
    for line in storm.markdown(storm.sweep(count, outages, kinds, **settings)):
        show(line)
    show()
    Path(args.output).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
