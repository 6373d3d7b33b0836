"""
Session resume (issue 11): what resets do to a stream of messages with
resume off and on, and what resume costs on the hot path.

    python benchmarks/resume.py            # about a minute
    python benchmarks/resume.py --quick    # under 40 s: shorter hot-path runs

(a) Reset run: a client sends 2,000 numbered messages at about 400/s to an
echo server (a ``HeartbeatServerFactory(resume=True)`` whose protocol echoes
every message) through ``tests/resetproxy.py``: 50 ms one-way latency, each
connection reset at a random time 0.3-1.0 s after it opened (seeded).  Once
all are sent the proxy stops resetting and the run waits for the last echo
(with resume off: the echo of an end marker sent after the last number).
Client, proxy and server share one process; each mode runs in its own.

(b) Hot path: 64-byte echo round trips per second over loopback, no proxy,
one client sending the next message when the echo arrives (as
``benchmarks/workers.py echoRate``), resume off and on alternating against
the same resume server (a plain client is served plainly), server and client
in their own processes pinned to their own CPUs.

Prints markdown for the "Session resume" section of BENCHMARKS.md.  Nothing
here asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))  # resetproxy.py
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}

COUNT, RATE, TICK = 2000, 400, 0.01
DRAIN_TIMEOUT = 30.0
# Quick reconnects (the proxy resets every connection within a second).
CLIENT = dict(
    pingInterval=0.5, pongTimeout=0.5, initialDelay=0.05, maxDelay=0.2, probeInterval=0.05, minUptime=0, jitter=0
)


# Workers (one per process) ----------------------------------------------------------


def echoFactory(reactor: Any) -> Any:
    from txheartbeat import HeartbeatServerFactory, HeartbeatServerProtocol

    class Echo(HeartbeatServerProtocol):
        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            self.sendMessage(payload, isBinary)

    factory = HeartbeatServerFactory(resume=True, pingInterval=0.5, pongTimeout=1.0, reactor=reactor)
    factory.protocol = Echo
    return factory


def resetRun(resume: int, seed: int) -> None:
    """(a) in this process: echo server, reset proxy, one client; prints one JSON line."""
    from common import say
    from resetproxy import ResetProxy
    from twisted.internet import reactor
    from twisted.internet.defer import ensureDeferred
    from twisted.internet.task import LoopingCall, deferLater

    from txheartbeat import HeartbeatHandler, SendQueueFull, connect

    class Counter(HeartbeatHandler):
        def __init__(self) -> None:
            super().__init__()
            self.echoes: List[int] = []
            self.ended = False

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            if payload == b"end":
                self.ended = True
            else:
                self.echoes.append(int(payload))

    state = {"next": 0, "refused": 0}

    def tick(h: Counter) -> None:
        for _ in range(round(RATE * TICK)):
            if state["next"] >= COUNT:
                return
            try:
                h.send(str(state["next"]))
            except SendQueueFull:
                state["refused"] += 1  # the same number again at the next tick
                return
            state["next"] += 1

    async def main() -> None:
        port = reactor.listenTCP(0, echoFactory(reactor), interface="127.0.0.1")
        proxy = ResetProxy(port.getHost().port, seed=seed, reactor=reactor)
        h = Counter()
        await connect(proxy.url, h, resume=bool(resume), reactor=reactor, **CLIENT)
        start = time.monotonic()
        loop = LoopingCall(tick, h)
        loop.clock = reactor
        done = loop.start(TICK)
        while state["next"] < COUNT:
            await deferLater(reactor, 0.05, lambda: None)
        loop.stop()
        await done
        proxy.calm()
        if not resume:
            h.send("end")  # after every number: its echo means every surviving echo is in
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while not (h.ended if not resume else len(h.echoes) >= COUNT) and time.monotonic() < deadline:
            await deferLater(reactor, 0.01, lambda: None)
        elapsed = time.monotonic() - start
        h.close()
        await h.whenClosed()
        await proxy.stop()
        await port.stopListening()
        distinct = set(h.echoes)
        say(
            sent=COUNT,
            echoes=len(h.echoes),
            lost=COUNT - len(distinct),
            duplicated=len(h.echoes) - len(distinct),
            inOrder=h.echoes == sorted(distinct),
            resets=proxy.resets,
            resumes=h.stats.resumes,
            replayed=h.stats.replayed,
            sessionsLost=h.stats.sessionsLost,
            refused=state["refused"],
            seconds=elapsed,
            drained=time.monotonic() < deadline,
        )

    def finish(result: Any) -> Any:
        reactor.stop()
        return result

    ensureDeferred(main()).addBoth(finish)
    reactor.run()


def server() -> None:
    """(b) the echo server, pinned to CPU 0; prints its port."""
    from common import pin, say
    from twisted.internet import reactor

    pin(0)
    port = reactor.listenTCP(0, echoFactory(reactor), interface="127.0.0.1")
    say(port=port.getHost().port)
    reactor.run()


def echoRate(resume: int, url: str, seconds: float) -> None:
    """(b) round trips for ``seconds``, pinned to CPU 1; prints rate and client CPU per round trip."""
    from common import cpuSeconds, pin, say
    from twisted.internet import reactor

    from txheartbeat import HeartbeatClientFactory, HeartbeatHandler

    pin(1)
    payload = b"x" * 64
    state = {"n": 0, "end": 0.0, "cpu": 0.0}

    class H(HeartbeatHandler):
        def onOpen(self) -> None:
            state["end"] = time.monotonic() + seconds
            state["cpu"] = cpuSeconds()
            self.next()

        def onMessage(self, p: bytes, isBinary: bool) -> None:
            self.next()

        def next(self) -> None:
            if time.monotonic() < state["end"]:
                state["n"] += 1
                self.send(payload)
            elif state["n"]:
                cpu = cpuSeconds() - state["cpu"]
                say(rate=state["n"] / seconds, cpuMicroseconds=cpu / state["n"] * 1e6)
                state["n"] = 0
                reactor.stop()

    HeartbeatClientFactory(url, H(), pingInterval=3600, pongTimeout=10, resume=bool(resume), reactor=reactor).connect()
    reactor.run()


WORKERS: Dict[str, Callable[..., None]] = {"resetRun": resetRun, "server": server, "echoRate": echoRate}


# The run -------------------------------------------------------------------------------


def worker(*args: Any, timeout: float = 120) -> Dict[str, Any]:
    from common import runWorker

    return runWorker(__file__, *args, timeout=timeout, env=ENV)


def hotPath(runs: int, seconds: float) -> Dict[str, List[Dict[str, float]]]:
    proc = subprocess.Popen([sys.executable, __file__, "server"], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout is not None
    url = f"ws://127.0.0.1:{json.loads(proc.stdout.readline())['port']}/"
    results: Dict[str, List[Dict[str, float]]] = {"off": [], "on": []}
    try:
        for run in range(runs):
            # Alternate, in turn off-on and on-off, so that drift in machine load hits both alike.
            for mode in ("off", "on") if run % 2 == 0 else ("on", "off"):
                results[mode].append(worker("echoRate", int(mode == "on"), url, seconds))
    finally:
        proc.kill()
        proc.wait(10)
    return results


def checkout() -> str:
    """txheartbeat's version and commit, from this checkout (the installed metadata may be older)."""
    import txheartbeat

    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{txheartbeat.__version__} (this checkout{', ' + commit if commit else ''})"


def main() -> None:
    from common import machine
    from run import versions  # benchmarks/run.py

    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter hot-path runs (under 40 s in all)")
    parser.add_argument("--seed", type=int, default=11, help="the reset proxy's seed")
    args = parser.parse_args()
    began = time.monotonic()
    loadBefore = os.getloadavg()[0]
    seconds = 1.5 if args.quick else 5.0

    reset = {mode: worker("resetRun", int(mode == "on"), args.seed) for mode in ("off", "on")}
    hot = hotPath(3, seconds)

    print(f"## Session resume{' (--quick)' if args.quick else ''}")
    print()
    print(
        f"Measured {time.strftime('%Y-%m-%d')} by `python benchmarks/resume.py{' --quick' if args.quick else ''}` "
        f"in {time.monotonic() - began:.0f} s on {machine()}; "
        + ", ".join(f"{k} {v}" for k, v in {**versions(), "txheartbeat": checkout()}.items())
        + f". Load average (1 min) {loadBefore:.2f} before, {os.getloadavg()[0]:.2f} after: "
        "other work on the machine makes the round-trip rates drift, hence the alternation."
    )
    print()
    print(
        f"(a) {COUNT:,} numbered messages at {RATE}/s from one client to an echo server through `tests/resetproxy.py` "
        f"(50 ms one-way latency; every connection reset 0.3–1.0 s after it opened, seed {args.seed}); "
        "once all are sent the resets stop and the run waits for the last echo. Client options: "
        + ", ".join(f"{k}={v}" for k, v in CLIENT.items())
        + "; server `HeartbeatServerFactory(resume=True, pingInterval=0.5, pongTimeout=1.0)`."
    )
    print()
    print("| resume | sent | echoes received | lost | duplicated | in order | resets | resumes | time to last echo |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, r in reset.items():
        time_ = f"{r['seconds']:.1f} s" + ("" if r["drained"] else f" (gave up after {DRAIN_TIMEOUT:g} s)")
        print(
            f"| {mode} | {r['sent']:,} | {r['echoes']:,} | {r['lost']:,} | {r['duplicated']:,} | "
            f"{'yes' if r['inOrder'] else 'no'} | {r['resets']} | {r['resumes']} | {time_} |"
        )
    on = reset["on"]
    print()
    print(
        f"With resume on: {on['replayed']:,} messages replayed by the client, {on['sessionsLost']} sessions lost, "
        f"{on['refused'] + reset['off']['refused']} sends refused with SendQueueFull (retried, never skipped)."
    )
    print()
    print(f"(b) Hot path: 64-byte echo round trips per second, one connection, no proxy, {seconds:g} s per run.")
    print()
    rate = {k: statistics.median(v["rate"] for v in vs) for k, vs in hot.items()}
    cpu = {k: statistics.median(v["cpuMicroseconds"] for v in vs) for k, vs in hot.items()}
    print("| resume | median round trips/s | runs | client CPU µs per round trip |")
    print("|---|---|---|---|")
    for mode, values in hot.items():
        runsText = ", ".join(f"{v['rate']:,.0f}" for v in values)
        print(f"| {mode} | {rate[mode]:,.0f} | {runsText} | {cpu[mode]:.1f} |")
    print()
    print(
        f"Ratio on / off: **{rate['on'] / rate['off']:.3f}** in round trips (target ≥ 0.95); "
        f"client CPU per round trip {cpu['on'] / cpu['off']:.3f}×."
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in WORKERS:
        from workers import _arg

        WORKERS[sys.argv[1]](*[_arg(a) for a in sys.argv[2:]])
    else:
        main()
