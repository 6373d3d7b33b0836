"""
A heartbeating server whose reactor is blocked by synthetic work, for the
load tests in ``tests/test_stall.py``.

    stall_load.py [--ping S] [--pong S] [--stall S] [--period S] [--where read|timer] [--backlog N]

Runs a :class:`txheartbeat.HeartbeatServerFactory` (echo) on 127.0.0.1:0 and
prints ``{"port": n}``.  Every ``period`` seconds the reactor is blocked for
``stall`` seconds with ``time.sleep``: ``--where read`` (the default) does
the work in a reader callback (a ``reactor.callLater`` loop writes a byte to
a pipe whose reader sleeps), as an application doing synchronous work on
incoming data would; ``--where timer`` sleeps in the ``callLater`` call
itself.  Each ``report`` line on stdin is answered with one JSON line
(``deadClients``: clients reaped as dead, ``open``, ``opened``,
``pingsSent``, ``stalls``, ``stalledSeconds``, ``longestStall``); end of
input stops the server.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from typing import Any

from twisted.internet import reactor, stdio
from twisted.internet.abstract import FileDescriptor
from twisted.protocols.basic import LineReceiver

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from txheartbeat import HeartbeatServerFactory, HeartbeatServerProtocol  # noqa: E402


class Echo(HeartbeatServerProtocol):
    def onOpen(self) -> None:
        self.factory.opened += 1

    def heartbeatSent(self) -> None:
        super().heartbeatSent()
        self.factory.pingsSent += 1

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)


class Work:
    """Blocks the reactor for ``stall`` seconds every ``period`` seconds."""

    def __init__(self, stall: float, period: float, where: str) -> None:
        self.stall = stall
        self.period = period
        self.where = where
        self.count = 0
        self.seconds = 0.0
        self.longest = 0.0
        if where == "read":
            self._r, self._w = os.pipe()
            os.set_blocking(self._r, False)
            self._reader = _PipeReader(self._r, self.block)
            self._reader.startReading()
        self._next = time.monotonic() + period
        reactor.callLater(period, self._tick)

    def _tick(self) -> None:
        # Fixed rate: the next tick is scheduled from the plan, not from now.
        self._next += self.period
        reactor.callLater(max(0.0, self._next - time.monotonic()), self._tick)
        if self.where == "read":
            os.write(self._w, b"x")
        else:
            self.block()

    def block(self) -> None:
        t0 = time.monotonic()
        time.sleep(self.stall)
        took = time.monotonic() - t0
        self.count += 1
        self.seconds += took
        self.longest = max(self.longest, took)


class _PipeReader(FileDescriptor):
    def __init__(self, fd: int, work: Any) -> None:
        super().__init__(reactor)
        self._fd = fd
        self._work = work

    def fileno(self) -> int:
        return self._fd

    def doRead(self) -> None:
        os.read(self._fd, 4096)
        self._work()


class Control(LineReceiver):
    delimiter = b"\n"

    def __init__(self, factory: HeartbeatServerFactory, work: Work) -> None:
        self.factory = factory
        self.work = work

    def lineReceived(self, line: bytes) -> None:
        if line.strip() == b"report":
            figures = {
                "deadClients": self.factory.deadClients,
                "open": len(self.factory.clients),
                "opened": self.factory.opened,
                "stalls": self.work.count,
                "stalledSeconds": round(self.work.seconds, 3),
                "longestStall": round(self.work.longest, 3),
                "pingsSent": self.factory.pingsSent,
            }
            self.transport.write(json.dumps(figures).encode() + b"\n")

    def connectionLost(self, reason: Any) -> None:
        if reactor.running:
            reactor.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ping", type=float, default=1.0)
    parser.add_argument("--pong", type=float, default=1.0)
    parser.add_argument("--stall", type=float, default=0.2)
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--where", choices=("read", "timer"), default="read")
    parser.add_argument("--backlog", type=int, default=1024)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    factory = HeartbeatServerFactory(pingInterval=args.ping, pongTimeout=args.pong, reactor=reactor)
    factory.protocol = Echo
    factory.opened = 0
    factory.pingsSent = 0
    port = reactor.listenTCP(0, factory, backlog=args.backlog, interface="127.0.0.1")
    work = Work(args.stall, args.period, args.where)
    stdio.StandardIO(Control(factory, work))
    print(json.dumps({"port": port.getHost().port}), flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
