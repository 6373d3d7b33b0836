"""
Benchmark workers, one mode per process (run by ``benchmarks/run.py``).

Each mode prints one JSON line on stdout with its figures.  Every peer is on
127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from typing import Any, Dict, List

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
    connectWS,
)
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred, gatherResults
from twisted.internet.protocol import ReconnectingClientFactory
from twisted.internet.task import deferLater

from txheartbeat import HeartbeatClientFactory, HeartbeatHandler, HeartbeatTimeout


def say(**figures: Any) -> None:
    print(json.dumps(figures), flush=True)


def raiseFileLimit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pin(cpu: int) -> None:
    """Keep this process on one core so that client and server do not trade places."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})


def rssBytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpuSeconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def sleep(seconds: float) -> Deferred:
    return deferLater(reactor, seconds, lambda: None)


# Server ----------------------------------------------------------------------


class BenchServer(WebSocketServerProtocol):
    """Echo; 'heartbeat' answered; 'stall' answered then the connection goes silent (TCP stays open)."""

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if payload == b"stall":
            self.sendMessage(b"stalling")
            self.transport.pauseProducing()
            self.stalled = True
            return
        if getattr(self, "stalled", False):
            return
        self.sendMessage(payload, isBinary)


def server(port: int = 0) -> None:
    raiseFileLimit()
    pin(0)
    factory = WebSocketServerFactory()
    factory.protocol = BenchServer
    factory.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=0)
    listening = reactor.listenTCP(port, factory, backlog=4096, interface="127.0.0.1")
    say(port=listening.getHost().port)
    reactor.run()


# 1. Dead-peer detection --------------------------------------------------------


def detectTxheartbeat(url: str, ping: float, pong: float) -> None:
    result: Dict[str, float] = {}

    class H(HeartbeatHandler):
        def onOpen(self) -> None:
            reactor.callLater(0.3, self.send, "stall")

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            if payload == b"stalling":
                result["last"] = time.monotonic()

        def onError(self, failure: Any) -> None:
            if failure.check(HeartbeatTimeout):
                result["detect"] = time.monotonic()
                self.close()

    async def main() -> None:
        h = H()
        HeartbeatClientFactory(url, h, pingInterval=ping, pongTimeout=pong, reactor=reactor).connect()
        await h.whenClosed()
        say(detection=result["detect"] - result["last"])
        reactor.stop()

    ensureDeferred(main())
    reactor.run()


def detectAutobahn(url: str, ping: float, pong: float) -> None:
    result: Dict[str, float] = {}

    class P(WebSocketClientProtocol):
        def onOpen(self) -> None:
            reactor.callLater(0.3, self.sendMessage, b"stall")

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            if payload == b"stalling":
                result["last"] = time.monotonic()

        def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
            if "last" not in result:
                # Declared dead while the peer was still answering (batched timers fire early).
                say(detection=None, falsePositive=True)
            else:
                say(detection=time.monotonic() - result["last"])
            reactor.stop()

    factory = WebSocketClientFactory(url)
    factory.protocol = P
    factory.setProtocolOptions(autoPingInterval=ping, autoPingTimeout=pong)
    connectWS(factory)
    reactor.run()


def detectWebsockets(url: str, ping: float, pong: float) -> None:
    import asyncio

    import websockets

    async def main() -> None:
        async with websockets.connect(url, ping_interval=ping, ping_timeout=pong) as ws:
            await asyncio.sleep(0.3)
            await ws.send("stall")
            last = None
            try:
                while True:
                    if await ws.recv() == "stalling":
                        last = time.monotonic()
            except websockets.ConnectionClosed:
                detect = time.monotonic()
        say(detection=detect - last)

    asyncio.run(main())


# 2. Hot path -------------------------------------------------------------------


def echoRate(kind: str, url: str, seconds: float) -> None:
    pin(1)
    payload = b"x" * 64
    state = {"n": 0, "end": 0.0, "cpu": 0.0}

    def next(send: Any) -> None:
        if time.monotonic() < state["end"]:
            state["n"] += 1
            send(payload)
        else:
            cpu = cpuSeconds() - state["cpu"]
            say(rate=state["n"] / seconds, cpuMicroseconds=cpu / state["n"] * 1e6)
            reactor.stop()

    def begin() -> None:
        state["end"] = time.monotonic() + seconds
        state["cpu"] = cpuSeconds()

    if kind == "txheartbeat":

        class H(HeartbeatHandler):
            def onOpen(self) -> None:
                begin()
                next(self.send)

            def onMessage(self, p: bytes, isBinary: bool) -> None:
                next(self.send)

        HeartbeatClientFactory(url, H(), pingInterval=3600, pongTimeout=10, reactor=reactor).connect()
    else:

        class P(WebSocketClientProtocol):
            def onOpen(self) -> None:
                begin()
                next(lambda m: self.sendMessage(m, True))

            def onMessage(self, p: bytes, isBinary: bool) -> None:
                next(lambda m: self.sendMessage(m, True))

        factory = WebSocketClientFactory(url)
        factory.protocol = P
        connectWS(factory)
    reactor.run()


# 3. Idle scale -------------------------------------------------------------------


class AutobahnReconnecting(WebSocketClientFactory, ReconnectingClientFactory):
    """The hand-made peer: Autobahn autoPing plus Twisted's ReconnectingClientFactory."""

    def clientConnectionLost(self, connector: Any, reason: Any) -> None:
        ReconnectingClientFactory.clientConnectionLost(self, connector, reason)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        ReconnectingClientFactory.clientConnectionFailed(self, connector, reason)


class AutobahnIdle(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.resetDelay()
        self.factory.opened.callback(None)


def idle(kind: str, url: str, count: int, interval: float, idleSeconds: float) -> None:
    raiseFileLimit()
    n, ping, window = count, float(interval), float(idleSeconds)

    async def main() -> None:
        await sleep(0.2)
        bare = rssBytes()
        keep: List[Any] = []
        for start in range(0, n, 250):
            opened: List[Deferred] = []
            for _ in range(start, min(n, start + 250)):
                if kind == "txheartbeat":
                    h = HeartbeatHandler()
                    f = HeartbeatClientFactory(url, h, pingInterval=ping, pongTimeout=ping, reactor=reactor)
                    opened.append(f.connect())
                    keep.append(f)
                else:
                    f = AutobahnReconnecting(url)
                    f.protocol = AutobahnIdle
                    f.setProtocolOptions(autoPingInterval=ping, autoPingTimeout=ping)
                    f.opened = Deferred()
                    opened.append(f.opened)
                    connectWS(f)
                    keep.append(f)
            await gatherResults(opened)
        await sleep(ping * 1.5)  # let the first heartbeats go round
        loaded = rssBytes()
        cpu0, wall0 = cpuSeconds(), time.monotonic()
        await sleep(window)
        cpu, wall = cpuSeconds() - cpu0, time.monotonic() - wall0
        heartbeats = n * wall / ping
        say(
            connections=n,
            rssPerConnection=(loaded - bare) / n,
            cpuPerMinute=cpu * 60 / wall,
            microsecondsPerHeartbeat=cpu / heartbeats * 1e6,
        )
        reactor.stop()

    ensureDeferred(main())
    reactor.run()


# 4. Reconnect storm ------------------------------------------------------------------


def storm(url: str, count: int, maxDelay: float) -> None:
    """Open ``count`` clients, then report attempt times once every one has reopened after a loss."""
    raiseFileLimit()
    n = count
    attempts: List[float] = []
    state = {"lost": 0, "reopened": 0, "t0": 0.0, "tAll": 0.0}
    ready: Deferred = Deferred()
    back: Deferred = Deferred()

    class H(HeartbeatHandler):
        def onOpen(self) -> None:
            if self.stats.opens == 1:
                state["opened"] = state.get("opened", 0) + 1
                if state["opened"] == n:
                    ready.callback(None)
            else:
                state["reopened"] += 1
                if state["reopened"] == n:
                    state["tAll"] = time.monotonic()
                    back.callback(None)

        def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
            if state["lost"] == 0:
                state["t0"] = time.monotonic()
            state["lost"] += 1

        def onReconnect(self, attempt: int, delay: float) -> None:
            attempts.append(time.monotonic() + delay)

    async def main() -> None:
        for start in range(0, n, 250):
            for _ in range(start, min(n, start + 250)):
                HeartbeatClientFactory(
                    url, H(), pingInterval=5, pongTimeout=5, maxDelay=float(maxDelay), reactor=reactor
                ).connect()
            await sleep(0.05)
        await ready
        say(ready=True)  # the orchestrator now kills and restarts the server
        await back
        # CLOCK_MONOTONIC is system-wide on Linux: the orchestrator compares.
        say(lost=state["t0"], allBack=state["tAll"], attempts=sorted(attempts))
        reactor.stop()

    ensureDeferred(main())
    reactor.run()


def _arg(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


if __name__ == "__main__":
    globals()[sys.argv[1]](*[_arg(a) for a in sys.argv[2:]])
