"""
A complete push server: every connected client gets a tick each second,
and what one client sends is relayed to all of them.  Silent clients are
reaped; on Ctrl-C or SIGTERM every client is asked to come back within
5 s (close 1012: a planned restart, not a storm) and the process exits once
they are all gone.

    python examples/server.py                    # ws://127.0.0.1:9000/
    python examples/server.py 0                  # any free port (it says which)
    txheartbeat connect ws://127.0.0.1:9000/     # a client: type lines, see ticks
"""

import itertools
import sys

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import LoopingCall, react

from txheartbeat import HeartbeatServerFactory, HeartbeatServerProtocol


def say(text):
    print(text, flush=True)


class Relay(HeartbeatServerProtocol):
    """One client connection; ``self.factory.clients`` holds every open one."""

    def onOpen(self):
        say(f"{self.peer} joined ({len(self.factory.clients)} connected)")

    def onMessage(self, payload, isBinary):
        for client in self.factory.clients:
            client.sendMessage(payload, isBinary)

    def onPeerDead(self, failure):
        say(f"{self.peer} went silent: reaped")

    def onClose(self, wasClean, code, reason):
        say(f"{self.peer} left (code {code})")


def broadcast(factory, text):
    for client in list(factory.clients):
        client.sendMessage(text.encode(), False)


async def main(reactor, port="9000"):
    # Ping idle clients after 15 s, reap those silent 10 s more; clients answer by default.
    factory = HeartbeatServerFactory(pingInterval=15, pongTimeout=10, reactor=reactor)
    factory.protocol = Relay
    listening = await serverFromString(reactor, f"tcp:{port}:interface=127.0.0.1").listen(factory)
    say(f"serving ws://127.0.0.1:{listening.getHost().port}/")
    numbers = itertools.count(1)
    ticks = LoopingCall(lambda: broadcast(factory, f"tick {next(numbers)}"))
    ticks.clock = reactor
    ticks.start(1.0, now=False)

    async def stop():
        ticks.stop()
        await listening.stopListening()  # no new clients while the others leave
        await factory.restart(window=5)  # close 1012: come back within 5 s; fires once all are gone
        say("every client has left; stopping")

    reactor.addSystemEventTrigger("before", "shutdown", lambda: ensureDeferred(stop()))
    await Deferred()  # serve until Ctrl-C or SIGTERM


if __name__ == "__main__":
    react(lambda reactor: ensureDeferred(main(reactor, *sys.argv[1:2])))
