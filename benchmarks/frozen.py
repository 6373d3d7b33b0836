"""
Frozen at once, run after run, over ws:// and wss:// (issue 21).

    python benchmarks/frozen.py                  # 5 runs each, N = 10,000, ws:// and wss:// alternating (~20 minutes)
    python benchmarks/frozen.py --runs 2 --count 2000
    python benchmarks/frozen.py --json f.json    # also save the raw figures
    python benchmarks/frozen.py --report f.json  # reprint the tables of a saved run

Section 3 D of ``benchmarks/scale.py`` (N txheartbeat clients of one Node
``ws`` server that pings each at its own phase; the server is stopped with
SIGSTOP and every client's verdict is timed), with the clients' default
reconnects, repeated: the goal is every run on time, not the best one.  The
``wss://`` runs use a certificate made for the run (EC P-256, for IP
127.0.0.1) that the clients trust as one of the system's roots.

Every pass of Python's cyclic GC of 10 ms or more after the freeze is listed
with the CPU time the process spent in it and the time it spent waiting for
a CPU (the kernel's ``schedstat``), which tells a pass that worked from a
process that was not running.  Nothing here asserts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import scale  # benchmarks/scale.py: the workers, the node peers, the figures
import tls  # benchmarks/tls.py: the certificate
from common import machine, raiseFileLimit, reprinted, savedRuns

Result = Dict[str, Any]


def measure(runs: int, count: int, ping: float, log: Callable[[str], None] = lambda line: None) -> Result:
    """``runs`` runs each over ws:// and wss://, alternating, so that drift in load hits both alike."""
    began = time.monotonic()
    raiseFileLimit()
    node, why = scale.nodePeers()
    out: Result = {
        "count": count,
        "ping": ping,
        "runs": [],
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "versions": scale.versions(),
        "skipped": {},
    }
    if node is None:
        out["skipped"]["node"] = why
        return out
    out["versions"]["node"] = subprocess.run([node[0], "--version"], capture_output=True, text=True).stdout.strip()
    out["versions"].update(tls.tlsVersions())
    with tempfile.TemporaryDirectory(prefix="txheartbeat-frozen-") as where:
        tls.writeCertificate(where)
        for i in range(runs):
            for secure in (False, True):
                t0 = time.monotonic()
                try:
                    r = scale.frozenAtOnce(
                        count, ping, ping, node, reconnect=True, observe=0.0, tls=where if secure else ""
                    )
                except Exception as e:
                    r = {"error": str(e)[-2000:]}
                r.update(run=i + 1, tls=secure, seconds=time.monotonic() - t0)
                log(f"run {i + 1} {'wss' if secure else 'ws'}: {scale.summary(r)} ({r['seconds']:.0f} s)")
                out["runs"].append(r)
    out["wallSeconds"] = time.monotonic() - began
    return out


def passes(r: Result, least: float = 10.0) -> str:
    """GC passes of ``least`` ms or more from the freeze to the last verdict: generation, wall (CPU, waiting) ms."""
    last = max(r["at"]) - r["frozeAt"] if r.get("at") else 0.0
    shown = []
    for p in r.get("gcPauses", []):
        at, gen, wall = p[0], int(p[1]), p[2]
        if wall < least or at > last:
            continue
        detail = f" ({p[4]:,.0f} CPU, {p[5]:,.0f} waiting)" if len(p) > 5 and p[5] >= 0 else ""
        shown.append(f"gen {gen} at {at:.1f} s: {wall:,.0f}{detail}")
    return "; ".join(shown) or "none"


def markdown(results: Result, heading: str = "### Frozen at once, run after run, ws:// and wss://") -> List[str]:
    n, ping = results["count"], results["ping"]
    v = results["versions"]
    lines = [heading, ""]
    if results["skipped"]:
        return lines + [f"Skipped: {'; '.join(results['skipped'].values())}", ""]
    lines += [
        f"Measured {results['date']} by `python benchmarks/frozen.py` in {results['wallSeconds']:.0f} s on "
        f"{results['machine']}; python {v.get('python')}, twisted {v.get('twisted')}, autobahn {v.get('autobahn')}, "
        f"node {v.get('node')}, pyOpenSSL {v.get('pyOpenSSL')}, OpenSSL {v.get('OpenSSL')}, txheartbeat "
        f"{scale.checkout()}.",
        "",
        f"Section 3 D with the clients' default reconnects, every run listed: {n:,} txheartbeat clients (ping "
        f"{ping:g} s, pong {ping:g} s) of one Node `ws` server stopped with SIGSTOP; **lateness** = "
        f"`HeartbeatTimeout.idle` − {2 * ping:g} s. Targets: none early, p99 ≤ {scale.TARGET_P99:g} ms, max ≤ "
        f"{scale.TARGET_MAX:g} ms. **GC passes** = Python's cyclic GC passes of 10 ms or more from the freeze to the "
        "last verdict: wall ms (the process's CPU ms in it, ms it waited for a CPU).",
        "",
        "| run | scheme | declared | early | p50 | p99 | max | GC passes during the verdicts |",
        "|---|---|---|---|---|---|---|---|",
    ]
    met = {False: 0, True: 0}
    for r in results["runs"]:
        scheme = "wss://" if r["tls"] else "ws://"
        if "error" in r:
            lines.append(f"| {r['run']} | {scheme} | error: {scale.escape(r['error'][-200:])} | | | | | |")
            continue
        s = scale.latenessFigures(r)
        ok = s["early"] == 0 and s["p99"] <= scale.TARGET_P99 and s["max"] <= scale.TARGET_MAX and s["declared"] == n
        met[r["tls"]] += ok
        p99 = f"{s['p99']:.1f} ms" + (" (**missed**)" if s["p99"] > scale.TARGET_P99 else "")
        mx = f"{s['max']:.1f} ms" + (" (**missed**)" if s["max"] > scale.TARGET_MAX else "")
        lines.append(
            f"| {r['run']} | {scheme} | {s['declared']:,} / {n:,} | {s['early']} | {s['p50']:.1f} ms | {p99} | {mx} | "
            f"{passes(r)} |"
        )
    total = {secure: sum(1 for r in results["runs"] if r["tls"] == secure) for secure in (False, True)}
    lines += [
        "",
        f"On time in every respect: ws:// {met[False]} of {total[False]} runs, wss:// {met[True]} of {total[True]}.",
        "",
    ]
    objects = {
        secure: [r["ready"].get("gcPerClient") for r in results["runs"] if r["tls"] == secure and "ready" in r]
        for secure in (False, True)
    }
    if objects[False] and objects[True]:
        lines += [
            "Objects Python's GC tracks per client once all were open (what a full pass walks): "
            f"ws:// {objects[False][0]:.1f}, wss:// {objects[True][0]:.1f}.",
            "",
        ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per scheme (default 5)")
    parser.add_argument("--count", type=int, default=10000, help="clients (default 10,000)")
    parser.add_argument("--ping", type=float, default=5.0, help="pingInterval = pongTimeout in seconds (default 5)")
    savedRuns(parser)
    args = parser.parse_args()
    if reprinted(args, markdown):
        return
    results = measure(args.runs, args.count, args.ping, log=lambda line: print(line, file=sys.stderr, flush=True))
    if args.json:
        Path(args.json).write_text(json.dumps(results))
    print("\n".join(markdown(results)))


if __name__ == "__main__":
    main()
