"""
A resilient client: subclass HeartbeatHandler, connect, and let txheartbeat
keep the connection alive.

    python examples/client.py ws://127.0.0.1:9000/

Try it against ``txheartbeat serve`` and stop/restart the server: the
client reconnects with backoff and sends what you queued meanwhile.
"""

import sys

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react

from txheartbeat import HeartbeatHandler, connect


class Printer(HeartbeatHandler):
    def onOpen(self):
        print("open; latency so far:", self.stats.latency)
        self.send("hello from examples/client.py")

    def onMessage(self, payload, isBinary):
        print("message:", payload)

    def onHeartbeat(self, roundTrip):
        print(f"heartbeat answered in {roundTrip * 1000:.1f} ms")

    def onClose(self, wasClean, code, reason):
        print("closed:", wasClean, code)

    def onError(self, failure):
        print("error:", failure.getErrorMessage())

    def onReconnect(self, attempt, delay):
        print(f"reconnecting in {delay:.2f} s (attempt {attempt})")


async def main(reactor, url="ws://127.0.0.1:9000/"):
    handler = Printer()
    await connect(url, handler, reactor=reactor, pingInterval=5, pongTimeout=5)
    await handler.whenClosed()


if __name__ == "__main__":
    react(lambda reactor: ensureDeferred(main(reactor, *sys.argv[1:2])))
