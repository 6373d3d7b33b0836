"""
A fleet of resumable clients for ``benchmarks/sessions.py``: each sends
``<n>:<time>`` at RATE per second for DURATION seconds, then waits until
the server has acknowledged everything (or DRAIN seconds), and prints one
JSON line: per client what it sent, what it was told was lost, the server
numbers it received per session, resume times and latencies.

    sessions_clients.py URL COUNT --rate 5 --duration 60
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from typing import Any, Dict, List, Optional

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import LoopingCall, deferLater

from txheartbeat import HeartbeatHandler, connect


class Fleet(HeartbeatHandler):
    def __init__(self) -> None:
        super().__init__()
        self.sent = 0
        self.lostReported = 0
        self.lostSessions = 0
        self.received: Dict[str, List[int]] = {}
        self.latencies: List[float] = []
        self.resumeTimes: List[float] = []
        self.drops = 0
        self.resumed_ = 0
        self.opens = 0
        self._down: Optional[float] = None
        self.addresses: List[str] = []

    def onOpen(self) -> None:
        address = self.sessionAddress
        if address is not None and (not self.addresses or self.addresses[-1] != address):
            self.addresses.append(address)
        if self.opens:  # (every open after the first follows a drop)
            self.drops += 1
            if self.resumed:
                self.resumed_ += 1
                if self._down is not None:
                    self.resumeTimes.append(time.monotonic() - self._down)
        self.opens += 1
        self._down = None

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if self._down is None:
            self._down = time.monotonic()

    def onSessionLost(self, unacked: list) -> None:
        self.lostSessions += 1
        self.lostReported += len(unacked)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        n, _, stamp = payload.partition(b":")
        self.received.setdefault(self.sessionAddress or "-", []).append(int(n))
        if len(self.latencies) < 2000:
            self.latencies.append((time.time() - float(stamp)) * 1000)

    def tick(self) -> None:
        self.send(f"{self.sent}:{time.time():.6f}")
        self.sent += 1


async def main(args: argparse.Namespace) -> None:
    fleet = [Fleet() for _ in range(args.count)]
    for client in fleet:
        connect(args.url, client, resume=True, reactor=reactor, pingInterval=2.0, pongTimeout=2.0, maxDelay=5.0)
    await deferLater(reactor, 3.0, lambda: None)
    loops = []
    for client in fleet:
        loop = LoopingCall(client.tick)
        loop.clock = reactor
        reactor.callLater(random.random() / args.rate, loop.start, 1.0 / args.rate)
        loops.append(loop)
    sys.stdout.write(json.dumps({"event": "streaming"}) + "\n")
    sys.stdout.flush()
    await deferLater(reactor, args.duration, lambda: None)
    for loop in loops:
        if loop.running:
            loop.stop()
    deadline = time.monotonic() + args.drain
    while time.monotonic() < deadline and any(c.unacked for c in fleet):
        await deferLater(reactor, 0.2, lambda: None)
    await deferLater(reactor, 2.0, lambda: None)  # (the last server messages: numbered at 5/s, the run has ended)
    result = [
        {
            "sent": c.sent,
            "unacked": len(c.unacked),
            "lostReported": c.lostReported,
            "lostSessions": c.lostSessions,
            "received": c.received,
            "latencies": c.latencies,
            "resumeTimes": c.resumeTimes,
            "drops": c.drops,
            "addresses": [a[:16] for a in c.addresses],
            "resumed": c.resumed_,
        }
        for c in fleet
    ]
    sys.stdout.write(json.dumps({"event": "result", "clients": result}) + "\n")
    sys.stdout.flush()
    for client in fleet:
        client.close()
    await deferLater(reactor, 1.0, lambda: None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("count", type=int)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--drain", type=float, default=20.0)
    arguments = parser.parse_args()
    ensureDeferred(main(arguments)).addBoth(
        lambda r: (r.printTraceback() if hasattr(r, "printTraceback") else None, reactor.stop())
    )
    reactor.run()
