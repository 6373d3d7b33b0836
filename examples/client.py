"""
A resilient client that prints every event: subclass HeartbeatHandler,
connect, and let txheartbeat keep the connection alive.

    txheartbeat serve &                          # an echo server on :9000
    python examples/client.py ws://127.0.0.1:9000/

Stop and restart the server: the client says why it reconnects and when,
and sends what was queued meanwhile.  Ctrl-C closes it cleanly.
"""

import sys

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react

from txheartbeat import HeartbeatHandler, connect


class Printer(HeartbeatHandler):
    def __init__(self):
        super().__init__()
        self.hello = 0

    def onOpen(self):
        print(f"open (connection {self.stats.opens})", flush=True)
        self.hello += 1
        self.send(f"hello {self.hello} from examples/client.py")

    def onMessage(self, payload, isBinary):
        print("message:", payload.hex() if isBinary else payload.decode(), flush=True)

    def onHeartbeat(self, roundTrip):
        # Only on an idle line: any traffic from the server already proves it alive.
        print(f"heartbeat answered in {roundTrip * 1000:.1f} ms", flush=True)

    def onClose(self, wasClean, code, reason):
        print(f"closed (clean={wasClean}, code={code})", flush=True)

    def onError(self, failure):
        print("error:", failure.getErrorMessage(), flush=True)

    def onReconnect(self, attempt, delay, reason):
        print(f"reconnecting in {delay:.2f} s (attempt {attempt}): {reason.getErrorMessage()}", flush=True)

    def onGiveUp(self, reason):
        print("giving up:", reason.getErrorMessage(), flush=True)


async def main(reactor, url="ws://127.0.0.1:9000/"):
    handler = Printer()

    def stop():  # Ctrl-C, SIGTERM: a clean close (1000) before the process ends
        handler.close()
        return handler.whenClosed()

    reactor.addSystemEventTrigger("before", "shutdown", stop)
    await connect(url, handler, reactor=reactor, pingInterval=5, pongTimeout=5)
    await handler.whenClosed()


if __name__ == "__main__":
    react(lambda reactor: ensureDeferred(main(reactor, *sys.argv[1:2])))
