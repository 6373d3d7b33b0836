"""
txheartbeat under twistd: a client that stays connected while the
application runs, and closes cleanly (code 1000) when twistd stops.

    txheartbeat serve &                                  # an echo server on :9000
    TXHEARTBEAT_URL=ws://127.0.0.1:9000/ twistd -ny examples/heartbeat.tac

Stop it with Ctrl-C or SIGTERM: twistd waits for the close handshake before
the reactor stops.  The URL defaults to ws://127.0.0.1:9000/.
"""

import os

from twisted.application import service
from twisted.logger import Logger

from txheartbeat import HeartbeatClientService, HeartbeatHandler

log = Logger(namespace="heartbeat.tac")


class Greeter(HeartbeatHandler):
    """Says hello at every open and logs what comes back."""

    def onOpen(self):
        log.info("open (connection {n}); sending hello", n=self.stats.opens)
        self.send("hello")

    def onMessage(self, payload, isBinary):
        log.info("message: {payload!r}", payload=payload)

    def onClose(self, wasClean, code, reason):
        log.info("closed (clean={clean}, code={code})", clean=wasClean, code=code)


url = os.environ.get("TXHEARTBEAT_URL", "ws://127.0.0.1:9000/")
application = service.Application("txheartbeat-example")
client = HeartbeatClientService(url, Greeter(), pingInterval=15, pongTimeout=10)
client.setServiceParent(application)
