"""
Slow link: txheartbeat, python-websockets and Autobahn's autoPing on a real
1 Mbit/s link, side by side in one run.

    python benchmarks/slowlink.py               # every scenario once per library (~3 minutes)
    python benchmarks/slowlink.py --jobs 4      # independent namespaces in parallel (~1 minute)
    python benchmarks/slowlink.py --runs 3      # three runs of each, medians
    python benchmarks/slowlink.py --json all.json --txheartbeat DIR

Each run is a fresh private network namespace (``unshare -n``, so root or
CAP_SYS_ADMIN + CAP_NET_ADMIN) whose loopback has MTU 1500 and a ``tc tbf``
shaper at 1 Mbit/s; the scenarios are in ``tests/slowlink_peer.py``.
``--txheartbeat DIR`` measures the txheartbeat package found in DIR instead
of this checkout (e.g. ``git archive v0.2.0 txheartbeat | tar -x -C DIR``).

Prints markdown for the "Slow link" section of BENCHMARKS.md: what happened
to each connection, when a frozen peer was declared dead, and where the
megabyte waited.  Nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import slowlink_peer as link  # noqa: E402

NAMES = {"txheartbeat": "txheartbeat", "websockets": "python-websockets", "autobahn": "Autobahn autoPing"}
ROWS = {
    "upload": "(a) client uploads 1 MB to a server that never speaks",
    "download": "(b) server sends 1 MB to a plain client",
    "freeze": "(c) server stops reading mid-upload; its window closes",
    "freeze-autotuned": "(c′) the same, Linux's autotuned receive buffer",
}
SHORT = {"txheartbeat": "HeartbeatTimeout", "websockets": "keepalive ping timeout", "autobahn": "autoPing timeout"}

Result = Dict[str, Any]


def med(values: List[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def s(value: Optional[float]) -> str:
    return "–" if value is None else f"{value:.1f} s"


def outcome(r: Result) -> str:
    """Classify one run: kept, closed after delivery, aborted, or for a freeze how it was declared dead."""
    if "error" in r:
        return "error"
    if r["scenario"].startswith("freeze"):
        if r["endedAt"] is None:
            return "undetected"
        if r["freezeAt"] is None or r["endedAt"] < r["freezeAt"]:
            return "beforeFreeze"
        if r["lastAckAt"] is not None and r["endedAt"] < r["lastAckAt"]:
            return "whileAcking"
        return "detected"
    if r["kept"]:
        return "kept"
    return "closedAfter" if r["delivered"] else "aborted"


def cell(runs: List[Result], killsLive: bool = False) -> str:
    """
    One table cell for the runs of one library in one scenario.

    :param killsLive: the library also ended the live upload of (a), so a
        verdict after a freeze is no evidence that it saw the freeze.
    """
    kinds = [outcome(r) for r in runs]
    # Every outcome that happened, the most frequent first.
    order = sorted(set(kinds), key=lambda k: (-kinds.count(k), kinds.index(k)))
    return "; ".join(
        single(kind, [r for r, k in zip(runs, kinds, strict=True) if k == kind], len(runs), killsLive) for kind in order
    )


def single(kind: str, same: List[Result], total: int, killsLive: bool) -> str:
    """The cell text for the runs that had one outcome (medians)."""
    n = f" ({len(same)}/{total} runs)" if total > 1 else ""
    if kind == "error":
        return f"error: {same[0]['error'].splitlines()[0][:80]}{n}"
    lib = same[0]["lib"]

    def at(key: str) -> Optional[float]:
        return med([r[key] for r in same])

    delivered = med([r["deliveredAt"][0] if r["deliveredAt"] else None for r in same])
    gone = med([r["lostAt"] for r in same])
    if kind == "kept":
        return f"**kept**, delivered once in {s(delivered)}{n}"
    if kind == "closedAfter":
        return f"delivered in {s(delivered)}, then **closed** ({SHORT[lib]} at {s(at('verdictAt'))}){n}"
    if kind == "aborted":
        return f"**aborted** at {s(at('endedAt'))} ({SHORT[lib]}), not delivered{n}"
    if kind == "undetected":
        left = med([r["samples"][-1][4] / 1e3 for r in same if r.get("samples")])
        held = "" if not left else f", {left:.0f} KB still in its userspace write buffer"
        return f"**not detected** within {link.DEADLINE:.0f} s{held}{n}"
    if kind == "beforeFreeze":
        return f"aborted at {s(at('endedAt'))}, **before the freeze** (as in (a)){n}"
    ended = at("endedAt") or 0.0
    late = "" if gone is None or gone - ended < 0.5 else f"; TCP gone {gone - ended:.1f} s later"
    if kind == "whileAcking":
        return (
            f"declared dead {s(at('detection'))} after the freeze, **while the peer's kernel was still "
            f"acknowledging** (a ping stuck behind the upload, as in (a)){late}{n}"
        )
    if killsLive:
        return (
            f"declared dead {s(at('detection'))} after the freeze ({s(at('detectionAfterLastAck'))} after its "
            f"last acknowledgement), but by the same ping timeout that ends the live upload in (a){late}{n}"
        )
    return (
        f"**dead {s(at('detection'))} after the freeze**, "
        f"{s(at('detectionAfterLastAck'))} after its last acknowledgement{late}{n}"
    )


def versions() -> str:
    import autobahn
    import twisted
    import websockets

    return (
        f"Python {platform.python_version()}, Twisted {twisted.__version__}, Autobahn {autobahn.__version__}, "
        f"python-websockets {websockets.__version__}"
    )


def txheartbeatUnder(results: List[Result]) -> str:
    path = next((r.get("txheartbeat") for r in results if r.get("txheartbeat")), None)
    if path is None:
        return "txheartbeat: not measured"
    where = Path(path).parent
    if where == ROOT:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "txheartbeat"], capture_output=True, text=True
        ).stdout.strip()
        return f"txheartbeat from this checkout ({head}{', with uncommitted changes' if dirty else ''})"
    return f"txheartbeat from {where}"


def bufferRow(r: Result) -> Optional[str]:
    """Where an upload waited: userspace buffer vs kernel send queue, from the sender's samples."""
    samples = [dict(zip(r["sampleFields"], row, strict=True)) for row in r.get("samples") or []]
    if not samples:
        return None
    early = next((x for x in samples if x["t"] is not None and x["t"] >= 1.0), samples[-1])
    emptyAt = next((x["t"] for x in samples if x["userspace"] == 0 and x["t"] and x["t"] > 0), None)
    peakKernel = max(samples, key=lambda x: x["siocoutq"])
    atEmpty = next((x for x in samples if x["t"] == emptyAt), None)
    acked = "" if atEmpty is None else " ({:.0f} KB acknowledged)".format(atEmpty["bytesAcked"] / 1e3)
    return (
        f"| {NAMES[r['lib']]} | {s(early['t'])}: {early['userspace'] / 1e3:.0f} KB / {early['notsent'] / 1e3:.0f} KB / "
        f"{(early['siocoutq'] - early['notsent']) / 1e3:.0f} KB | {s(emptyAt)}{acked} | "
        f"{peakKernel['siocoutq'] / 1e3:.0f} KB at {s(peakKernel['t'])} | {samples[-1]['sndbuf'] / 1e3:.0f} KB |"
    )


def report(results: List[Result], command: str, seconds: float) -> str:
    by: Dict[Tuple[str, str], List[Result]] = {}
    for r in results:
        by.setdefault((r["lib"], r["scenario"]), []).append(r)
    out = [
        "## Slow link",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} by `{command}` in {seconds:.0f} s "
        f"on Linux {platform.release()}, {os.cpu_count()} CPUs; {versions()}; {txheartbeatUnder(results)}.",
        "",
        f"Every run is a fresh network namespace whose loopback has MTU {link.MTU} and a kernel shaper "
        f"(`{link.SHAPER}`): 1 MB takes about 8.7 s. The one shaper carries both directions, so the "
        f"peer's ACKs and pongs queue behind the data as on a half-duplex link. The side under test uses "
        f"ping {link.PING:g} s / pong {link.PONG:g} s (txheartbeat `pingInterval`/`pongTimeout`, "
        f"python-websockets `ping_interval`/`ping_timeout`, Autobahn `autoPingInterval`/`autoPingTimeout`) "
        f"and sends one 1,000,000-byte binary message (random bytes). In (a) and (c) the server is the same "
        f"plain-socket WebSocket server for all three clients: it reads, answers pings once it has read what "
        f"came before them, and never sends anything else; in (b) the server under test sends to a client of "
        f"the same library with keepalive off. In (c) the server stops reading after "
        f"{link.FREEZE_AT // 1000} KB: with SO_RCVBUF {link.FROZEN_RCVBUF // 1024} KB its window closes within "
        f"half a second; in (c′) its kernel, whose receive buffer Linux had grown past 1 MB, takes the rest of "
        f"the message, so the last acknowledgement comes seconds after the freeze. Times are seconds after "
        f"the sender's WebSocket opened, or after the freeze.",
        "",
        "| 1 MB at 1 Mbit/s | " + " | ".join(NAMES.values()) + " |",
        "|---|" + "---|" * len(NAMES),
    ]
    for scenario, label in ROWS.items():
        cells = [
            cell(by[(lib, scenario)], killsLive=any(outcome(r) != "kept" for r in by.get((lib, "upload"), [])))
            if (lib, scenario) in by
            else "–"
            for lib in NAMES
        ]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    out += [
        "",
        f"Frozen peer: txheartbeat documents dead at most 2 × pongTimeout ({2 * link.PONG:g} s) after the "
        f"last acknowledged byte, so within pingInterval + 2 × pongTimeout ({link.PING + 2 * link.PONG:g} s) "
        f"of a freeze that closes the window at once. Medians:",
        "",
        "| client | frozen server | freeze at | last ack at | declared dead at | after the freeze | after the last ack | TCP gone at |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scenario in ("freeze", "freeze-autotuned"):
        for lib in NAMES:
            rs = [r for r in by.get((lib, scenario), []) if "error" not in r]
            if not rs:
                continue
            m = {
                k: med([r[k] for r in rs])
                for k in ("freezeAt", "lastAckAt", "endedAt", "detection", "detectionAfterLastAck", "lostAt")
            }
            note = {"beforeFreeze": " (before the freeze)", "whileAcking": " (while still acknowledged)"}.get(
                outcome(rs[0]), ""
            )
            out.append(
                f"| {NAMES[lib]} | {ROWS[scenario].split()[0]} | {s(m['freezeAt'])} | {s(m['lastAckAt'])} | "
                f"{s(m['endedAt'])}{note} | {s(m['detection'])} | {s(m['detectionAfterLastAck'])} | {s(m['lostAt'])} |"
            )
    out += [
        "",
        "Where the uploading client's megabyte waited (first run of (a); from `TCP_INFO` and `SIOCOUTQ` every "
        "50 ms; default `net.ipv4.tcp_wmem` "
        f"{_sysctl('net/ipv4/tcp_wmem')}, `tcp_rmem` {_sysctl('net/ipv4/tcp_rmem')}):",
        "",
        "| client | after about 1 s: userspace / kernel unsent / kernel in flight | userspace buffer empty at | kernel send queue peak | SO_SNDBUF at the end |",
        "|---|---|---|---|---|",
    ]
    for lib in NAMES:
        rs = [r for r in by.get((lib, "upload"), []) if "error" not in r]
        row = bufferRow(rs[0]) if rs else None
        if row:
            out.append(row)
    return "\n".join(out) + "\n"


def _sysctl(name: str) -> str:
    try:
        return "`" + " ".join(Path("/proc/sys", name).read_text().split()) + "`"
    except OSError:
        return "?"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="runs of each scenario per library (default 1)")
    parser.add_argument("--jobs", type=int, default=1, help="namespaces run at once (default 1)")
    parser.add_argument("--json", help="also write every result (with its samples) to this file")
    parser.add_argument("--txheartbeat", help="a directory holding the txheartbeat package to measure")
    parser.add_argument("--only", choices=link.LIBS, action="append", help="measure only this library (repeatable)")
    parser.add_argument("--report", metavar="JSON", help="print the report of a --json file again, measuring nothing")
    args = parser.parse_args(argv)
    if args.report:
        saved = json.loads(Path(args.report).read_text())
        print(report(saved["results"], saved["command"], saved["seconds"]))
        return 0
    reason = link.unavailable()
    if reason is not None:
        print(f"slowlink: cannot run: {reason}", file=sys.stderr)
        return 2
    if args.txheartbeat:
        os.environ["SLOWLINK_TXHEARTBEAT"] = str(Path(args.txheartbeat).resolve())
    libs = args.only or list(link.LIBS)
    work = [(lib, scenario) for _ in range(args.runs) for scenario in link.SCENARIOS for lib in libs]

    def one(item: Tuple[str, str]) -> Result:
        lib, scenario = item
        try:
            r = link.run(lib, scenario)
        except Exception as e:
            r = {"lib": lib, "scenario": scenario, "error": str(e)}
        print(f"  {lib:12} {scenario:17} {outcome(r)}", file=sys.stderr, flush=True)
        return r

    started = time.monotonic()
    print(f"slowlink: {len(work)} runs, {args.jobs} at a time", file=sys.stderr)
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        results = list(pool.map(one, work))
    seconds = time.monotonic() - started
    command = " ".join(["python benchmarks/slowlink.py", *(sys.argv[1:] if argv is None else argv)])
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "seconds": seconds, "results": results}))
    print(report(results, command, seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
