"""
Soak test (slow, excluded from the default run): ``python -m pytest -m slow``.

A server flaps (up a few hundred ms, down a few hundred ms) for
SOAK_SECONDS (default 60) under 100 heartbeated clients; memory and the
number of pending delayed calls must stay flat and nothing may be logged as
a failure.
"""

import gc
import os
from typing import List

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater
from twisted.logger import LogLevel, globalLogPublisher

from txheartbeat import HeartbeatClientFactory, HeartbeatHandler
from txheartbeat.testing import EchoServerProtocol, echoServerFactory

SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
CLIENTS = 100


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Talker(HeartbeatHandler):
    def onOpen(self):
        self.send("hello")


class Tracked(EchoServerProtocol):
    live: List["Tracked"] = []

    def onOpen(self):
        Tracked.live.append(self)

    def onClose(self, *args):
        if self in Tracked.live:
            Tracked.live.remove(self)


def sleep(seconds):
    return deferLater(_reactor, seconds, lambda: None)


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_flapping_server_soak():
    """100 clients against a server flapping every 300 ms: memory and delayed calls stay flat, no failure logged."""
    failures = []

    def observe(event):
        if event.get("log_failure") is not None or event.get("log_level") in (LogLevel.error, LogLevel.critical):
            failures.append(event)

    globalLogPublisher.addObserver(observe)
    factory = echoServerFactory(Tracked)
    port = _reactor.listenTCP(0, factory, interface="127.0.0.1", backlog=1024)
    number = port.getHost().port
    handlers = [Talker() for _ in range(CLIENTS)]
    for h in handlers:
        HeartbeatClientFactory(
            f"ws://127.0.0.1:{number}/",
            h,
            reactor=_reactor,
            pingInterval=0.5,
            pongTimeout=0.5,
            initialDelay=0.05,
            maxDelay=0.5,
            minUptime=0.2,
        ).connect().addErrback(lambda f: None)
    samples = []
    try:
        end = _reactor.seconds() + SECONDS
        while _reactor.seconds() < end:
            await sleep(0.3)
            await port.stopListening()
            for p in list(Tracked.live):
                p.transport.abortConnection()
            await sleep(0.3)
            port = _reactor.listenTCP(number, factory, interface="127.0.0.1", backlog=1024)
            gc.collect()
            samples.append((rss(), len(_reactor.getDelayedCalls())))
    finally:
        for h in handlers:
            h.close()
        for h in handlers:
            await h.whenClosed()
        await port.stopListening()
        globalLogPublisher.removeObserver(observe)
    opens = sum(h.stats.opens for h in handlers)
    assert opens > CLIENTS * 2  # they did reconnect, again and again
    half = len(samples) // 2
    firstMem = max(m for m, _ in samples[1:half])
    lastMem = max(m for m, _ in samples[half:])
    print(
        f"\nsoak: {SECONDS:g} s, {len(samples)} flaps, {opens} opens; RSS max first half {firstMem / 2**20:.1f} MiB, "
        f"second half {lastMem / 2**20:.1f} MiB; delayed calls max {max(c for _, c in samples)}"
    )
    assert lastMem < firstMem * 1.10 + 2 * 1024 * 1024, (firstMem, lastMem)
    assert max(c for _, c in samples) <= CLIENTS * 3 + 10  # about one or two timers per client, never growing
    assert failures == [], failures[:3]
