"""
Sessions that outlive the process (issue 18): two worker processes on one
shared listening socket (``txheartbeat._workers``, as ``serve --workers
2``: the kernel hands each connection to whichever worker accepts first),
N resumable clients each streaming numbered messages both ways at RATE per
second for DURATION seconds, while one thing goes wrong at 1/3 of the run:

- ``rolling``: SIGHUP to the supervisor: both workers restarted one after
  the other, each with ``restart(window=5)`` (SIGTERM);
- ``kill9``: SIGKILL of worker 1 (the supervisor starts it again);
- ``sigstop``: SIGSTOP of worker 1 for 5 s (its clients move), then SIGCONT;
- ``redis``: Redis restarted (SIGTERM, then started again on its port; it
  keeps its data in an append-only file).

Each with the memory store (what a user has today: sessions per worker)
and the Redis store (``durability="write"``, and ``"batched"``).  Per run
and direction: messages lost (silently / reported by ``onSessionLost``),
duplicated (flagged ``redelivered`` / not), out of order; sessions that
dropped and came back resumed (%); resume time p50/p99; latency per
message p50/p99; Redis commands and bytes per message.

Server→client messages are numbered per session by the store, so a gap in
what a client received is a loss; a message the application gave to
``send()`` that was not yet stored when its worker was killed is not
counted (it never got a number).

    python benchmarks/sessions.py                      # N=1000, 60 s per run: about 20 minutes
    python benchmarks/sessions.py --clients 100 --duration 20 --quick   # a few minutes

Prints Markdown for BENCHMARKS.md.  Nothing here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
from tests.redisserver import Client, RedisServer  # noqa: E402

PY = sys.executable
SCENARIOS = ("rolling", "kill9", "sigstop", "redis")


def percentile(values: List[float], p: float) -> Optional[float]:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


class Lines(threading.Thread):
    """Reads a pipe line by line in a thread; lines matching ``keep`` are kept."""

    def __init__(self, pipe: Any, keep: Optional[str] = None) -> None:
        super().__init__(daemon=True)
        self.pipe, self.keep = pipe, keep
        self.lines: List[str] = []
        self.start()

    def run(self) -> None:
        for raw in self.pipe:
            line = raw.decode(errors="replace").rstrip("\n")
            if self.keep is None or line.startswith(self.keep):
                self.lines.append(line)

    def waitFor(self, pattern: str, after: int = 0, timeout: float = 60) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                match = re.search(pattern, line)
                if match:
                    return match
            time.sleep(0.05)
        raise RuntimeError(f"no {pattern!r}: " + "\n".join(self.lines[-20:]))


def redisStats(port: int) -> Tuple[int, int]:
    """Commands the clients sent (script runs count once; the commands inside a script are not round trips) and bytes both ways."""
    client = Client(port)
    try:
        stats = client.call("INFO", "stats")
        commands = client.call("INFO", "commandstats")
    finally:
        client.close()
    fields = dict(line.split(":", 1) for line in _text(stats).splitlines() if ":" in line)
    sent = 0
    for line in _text(commands).splitlines():
        match = re.match(r"cmdstat_(\w+):calls=(\d+)", line)
        if match and match.group(1) in ("evalsha", "eval", "publish", "ping", "subscribe", "select", "auth", "script"):
            sent += int(match.group(2))
    return sent, int(fields["total_net_input_bytes"]) + int(fields["total_net_output_bytes"])


def _text(reply: Any) -> str:
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def run(store: str, scenario: str, args: argparse.Namespace, redis: RedisServer) -> Dict[str, Any]:
    client = Client(redis.port)
    client.call("FLUSHALL")
    client.close()
    storeArgs = ["--store", redis.url, "--durability", store.split("-")[1]] if store != "memory" else []
    supervisor = subprocess.Popen(
        [PY, str(HERE / "sessions_supervisor.py"), "2", *storeArgs, "--rate", str(args.rate)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    said = Lines(supervisor.stderr)
    received = Lines(supervisor.stdout, keep="R ")
    port = int(said.waitFor(r"port (\d+)").group(1))
    said.waitFor(r"^\* ready")
    url = f"ws://127.0.0.1:{port}/"
    fleets = []
    per = [args.clients // args.fleets + (1 if i < args.clients % args.fleets else 0) for i in range(args.fleets)]
    for count in per:
        fleets.append(
            subprocess.Popen(
                [
                    PY,
                    str(HERE / "sessions_clients.py"),
                    url,
                    str(count),
                    "--rate",
                    str(args.rate),
                    "--duration",
                    str(args.duration),
                ],
                stdout=subprocess.PIPE,
                env=dict(os.environ, PYTHONUNBUFFERED="1"),
            )
        )
    outputs = [Lines(f.stdout) for f in fleets]
    for out in outputs:
        out.waitFor('"streaming"', timeout=120)
    before = redisStats(redis.port)
    time.sleep(args.duration / 3)
    workers = {
        int(m.group(1)): int(m.group(2))
        for m in re.finditer(r"worker (\d+) \(pid (\d+)\) started", "\n".join(said.lines))
    }
    if scenario == "rolling":
        supervisor.send_signal(signal.SIGHUP)
    elif scenario == "kill9":
        os.kill(workers[1], signal.SIGKILL)
    elif scenario == "sigstop":
        os.kill(workers[1], signal.SIGSTOP)
        time.sleep(5)
        os.kill(workers[1], signal.SIGCONT)
    elif scenario == "redis":
        redis.stop()
        redis.start(redis.port)
    results: List[Dict[str, Any]] = []
    for fleet, out in zip(fleets, outputs, strict=True):
        fleet.wait(timeout=args.duration * 3 + 120)
        for line in out.lines:
            if '"result"' in line:
                results.extend(json.loads(line)["clients"])
    after = redisStats(redis.port) if scenario != "redis" else None
    supervisor.send_signal(signal.SIGTERM)
    supervisor.wait(timeout=60)
    time.sleep(0.5)
    return analyse(results, received.lines, before, after, store)


def analyse(clients: List[Dict[str, Any]], lines: List[str], before: Any, after: Any, store: str) -> Dict[str, Any]:
    byAddress: Dict[str, List[Tuple[int, bool, float]]] = defaultdict(list)
    for line in lines:
        _, sid, n, flag, latency = line.split()
        byAddress[sid].append((int(n), flag == "1", float(latency)))
    up: Dict[str, Any] = Counter()
    down: Dict[str, Any] = Counter()
    upLatency: List[float] = []
    downLatency: List[float] = []
    resumeTimes: List[float] = []
    for c in clients:
        seen: List[Tuple[int, bool]] = []
        for address in c["addresses"]:
            for n, flag, latency in byAddress.get(address, []):
                seen.append((n, flag))
                if len(upLatency) < 200000:
                    upLatency.append(latency)
        counts = Counter(n for n, _ in seen)
        delivered = set(counts)
        lost = sum(1 for n in range(c["sent"]) if n not in delivered) - c["unacked"]
        up["lost"] += max(0, lost)
        up["reported"] += c["lostReported"]
        up["sent"] += c["sent"]
        # A duplicate is flagged when a copy says so: two workers' lines interleave in the pipe
        # in the order they were read, not delivered, so which copy came first is not known here.
        unflagged = Counter(n for n, flag in seen if not flag)
        for n, copies in counts.items():
            if copies > 1:
                silent = max(0, unflagged[n] - 1)
                up["dupUnflagged"] += silent
                up["dupFlagged"] += copies - 1 - silent
        firstSeen = set()
        last = -1
        for n, _ in seen:
            if n in firstSeen:
                continue
            firstSeen.add(n)
            if n < last:
                up["disorder"] += 1
            last = max(last, n)
        for numbers in c["received"].values():
            down["received"] += len(numbers)
            counts2 = Counter(numbers)
            down["dup"] += sum(v - 1 for v in counts2.values())
            down["lost"] += (max(numbers) + 1 - len(counts2)) if numbers else 0
            down["disorder"] += sum(1 for a, b in zip(numbers, numbers[1:], strict=False) if b < a)
        downLatency.extend(c["latencies"])
        resumeTimes.extend(c["resumeTimes"])
        up["drops"] += c["drops"]
        up["resumed"] += c["resumed"]
        up["lostSessions"] += c["lostSessions"]
    up["lost"] -= min(up["lost"], up["reported"])  # (what onSessionLost reported is not silent)
    messages = up["sent"] + down["received"]
    commands = bytes_ = None
    if after is not None and messages:
        commands = (after[0] - before[0]) / messages
        bytes_ = (after[1] - before[1]) / messages
    return {
        "store": store,
        "up": dict(up),
        "down": dict(down),
        "recovered": (up["resumed"] / up["drops"] * 100) if up["drops"] else None,
        "resume": (percentile(resumeTimes, 50), percentile(resumeTimes, 99)),
        "latencyUp": (percentile(upLatency, 50), percentile(upLatency, 99)),
        "latencyDown": (percentile(downLatency, 50), percentile(downLatency, 99)),
        "commands": commands,
        "bytes": bytes_,
    }


def fmt(value: Optional[float], unit: str = "", digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}{unit}"


def table(rows: List[Tuple[str, Dict[str, Any]]]) -> str:
    head = (
        "| scenario | store | client→server: lost silently / reported | dup flagged / unflagged | out of order "
        "| server→client: lost / dup / out of order | sessions dropped → resumed | resume p50 / p99 "
        "| latency c→s p50 / p99 | latency s→c p50 / p99 | Redis round trips / bytes per msg |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    body = []
    for scenario, r in rows:
        up, down = r["up"], r["down"]
        body.append(
            f"| {scenario} | {r['store']} | {up.get('lost', 0)} / {up.get('reported', 0)} "
            f"| {up.get('dupFlagged', 0)} / {up.get('dupUnflagged', 0)} | {up.get('disorder', 0)} "
            f"| {down.get('lost', 0)} / {down.get('dup', 0)} / {down.get('disorder', 0)} "
            f"| {up.get('drops', 0)} → {up.get('resumed', 0)} ({fmt(r['recovered'], ' %', 0)}) "
            f"| {fmt(r['resume'][0] and r['resume'][0] * 1000, ' ms', 0)} / {fmt(r['resume'][1] and r['resume'][1] * 1000, ' ms', 0)} "
            f"| {fmt(r['latencyUp'][0], ' ms')} / {fmt(r['latencyUp'][1], ' ms')} "
            f"| {fmt(r['latencyDown'][0], ' ms')} / {fmt(r['latencyDown'][1], ' ms')} "
            f"| {fmt(r['commands'], '', 2)} / {fmt(r['bytes'], '', 0)} |"
        )
    return head + "\n".join(body) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--fleets", type=int, default=2, help="client processes")
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--stores", default="memory,redis-write,redis-batched")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--quick", action="store_true", help="one scenario (kill9), memory and redis-write")
    args = parser.parse_args()
    stores = args.stores.split(",")
    scenarios = args.scenarios.split(",")
    if args.quick:
        stores, scenarios = ["memory", "redis-write"], ["kill9"]
    redis = RedisServer(persistent=True)
    redis.start()
    rows = []
    try:
        for scenario in scenarios:
            for store in stores:
                if scenario == "redis" and store == "memory":
                    continue  # (no Redis in it)
                started = time.monotonic()
                result = run(store, scenario, args, redis)
                rows.append((scenario, result))
                print(f"# {scenario} {store}: {time.monotonic() - started:.0f} s", file=sys.stderr)
    finally:
        redis.close()
    print(
        f"{args.clients} clients in {args.fleets} processes, {args.rate:g} messages/s each way, "
        f"{args.duration:g} s per run; two workers; Redis {redisVersion()} (append-only file, fsync every second)\n"
    )
    print(table(rows))


def redisVersion() -> str:
    try:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
        return re.search(r"v=(\S+)", out).group(1)  # type: ignore[union-attr]
    except Exception:
        return "?"


if __name__ == "__main__":
    main()
