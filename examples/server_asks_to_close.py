"""
The seed's convention for a server that wants a client gone: it sends an
agreed message ("close"), and the client answers by calling close() - a
close event alone could not say why.  Runs on loopback and exits.

    python examples/server_asks_to_close.py
"""

from twisted.internet.defer import ensureDeferred
from twisted.internet.task import react

from txheartbeat import HeartbeatHandler, HeartbeatServerFactory, HeartbeatServerProtocol, connect


class Server(HeartbeatServerProtocol):
    def onMessage(self, payload, isBinary):
        if payload == b"logout please":
            self.requestLeave("close")  # closed from here if the client ignores it
        else:
            self.sendMessage(payload, isBinary)


class Client(HeartbeatHandler):
    def __init__(self):
        super().__init__()
        self.log = []

    def onMessage(self, payload, isBinary):
        self.log.append(payload)
        if payload == b"close":  # the agreed message
            self.close()

    def onClose(self, wasClean, code, reason):
        self.log.append(("closed", wasClean, code))


async def main(reactor):
    factory = HeartbeatServerFactory(reactor=reactor)
    factory.protocol = Server
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    client = Client()
    await connect(f"ws://127.0.0.1:{port.getHost().port}/", client, reactor=reactor)
    client.send("logout please")
    await client.whenClosed()
    await port.stopListening()
    print(client.log)
    assert client.log == [b"close", ("closed", True, 1000)]
    return client.log


if __name__ == "__main__":
    react(lambda reactor: ensureDeferred(main(reactor)))
