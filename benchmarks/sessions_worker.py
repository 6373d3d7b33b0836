"""
One worker of ``benchmarks/sessions.py``: a resume server on the socket its
supervisor hands over (``txheartbeat._workers``), with or without the Redis
store.  Every session gets numbered messages at RATE per second; every
client message is logged on stdout as ``R <session> <n> <redelivered>
<latency ms>`` and every server message as it is numbered (``S <session> <n>``
is implied by the numbering: the client checks the sequence).

    sessions_worker.py --store redis://...|memory --rate 5 --worker N
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.task import LoopingCall

from txheartbeat import HeartbeatServerFactory, HeartbeatServerProtocol, SendQueueFull
from txheartbeat._durable import DurableSession
from txheartbeat._workers import adopt, tellReady

# Line-buffered: a line is in the pipe as soon as its message was delivered (a worker killed
# with SIGKILL or stopped with SIGSTOP holds no unwritten lines back).
out = open(sys.stdout.fileno(), "w", buffering=1, closefd=False)


class Bench(HeartbeatServerProtocol):
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        n, _, stamp = payload.partition(b":")
        session = self.session
        sid = session.address[:16] if session is not None else "-"
        latency = (time.time() - float(stamp)) * 1000
        out.write(f"R {sid} {int(n)} {int(self.redelivered)} {latency:.2f}\n")


class BenchFactory(HeartbeatServerFactory):
    protocol = Bench

    def __init__(self, rate: float, **options: Any) -> None:
        super().__init__(resume=True, **options)
        self.rate = rate
        self.refused = 0

    def tick(self) -> None:
        stamp = f"{time.time():.6f}"
        for client in list(self.clients):
            session = client.session
            if session is None or not client.isOpen:
                continue
            stream = session.stream
            n = stream.sent + (len(session._inflight) if isinstance(session, DurableSession) else 0)
            try:
                session.send(f"{n}:{stamp}")
            except SendQueueFull:
                self.refused += 1
            except Exception:
                pass


async def main(args: argparse.Namespace) -> None:
    store = None
    if args.store != "memory":
        from txheartbeat.stores import RedisSessionStore

        store = RedisSessionStore(args.store, durability=args.durability, reactor=reactor)
        await store.start()
    factory = BenchFactory(
        args.rate, pingInterval=5.0, pongTimeout=3.0, resumeWindow=30.0, sessionStore=store, reactor=reactor
    )
    adopt(reactor, factory, "127.0.0.1")
    loop = LoopingCall(factory.tick)
    loop.clock = reactor
    loop.start(1.0 / args.rate, now=False)
    flush = LoopingCall(out.flush)
    flush.clock = reactor
    flush.start(0.1)

    def stopping() -> Deferred[Any]:
        loop.stop()
        d = factory.restart(args.window)
        if store is not None:
            d.addBoth(lambda _: store.stop())
        return DeferredList([d]).addBoth(lambda _: out.flush())

    reactor.addSystemEventTrigger("before", "shutdown", stopping)
    tellReady()
    await Deferred()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", default="memory")
    parser.add_argument("--durability", default="write")
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=5.0)
    parser.add_argument("--worker", type=int, default=0)
    arguments = parser.parse_args()
    ensureDeferred(main(arguments)).addErrback(lambda f: (f.printTraceback(), reactor.stop()))
    reactor.run()
