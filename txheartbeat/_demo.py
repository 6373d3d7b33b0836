"""
``txheartbeat demo``: a narrated run of every promise on loopback, in one process.
"""

from __future__ import annotations

from typing import Any, List, Optional, TextIO

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from ._client import connect
from ._errors import HeartbeatTimeout
from ._handler import HeartbeatHandler
from ._server import HeartbeatServerFactory, HeartbeatServerProtocol

PING = 0.5
PONG = 0.5


class _Server(HeartbeatServerProtocol):
    live: List[_Server] = []

    def onOpen(self) -> None:
        _Server.live.append(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(b"echo: " + payload, isBinary)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        if self in _Server.live:
            _Server.live.remove(self)


class _Narrator(HeartbeatHandler):
    def __init__(self, reactor: Any, out: TextIO) -> None:
        super().__init__()
        self.reactor = reactor
        self.out = out
        self.start = reactor.seconds()
        self.detection: Optional[float] = None
        self.lastInbound = 0.0
        self.echoes: List[bytes] = []
        self._waiting: dict = {}

    def say(self, text: str) -> None:
        self.out.write(f"[{self.reactor.seconds() - self.start:6.3f}s] {text}\n")
        self.out.flush()

    def next(self, hook: str) -> Deferred[None]:
        d: Deferred[None] = Deferred()
        self._waiting.setdefault(hook, []).append(d)
        return d

    def _done(self, hook: str) -> None:
        for d in self._waiting.pop(hook, []):
            d.callback(None)

    def onOpen(self) -> None:
        self.say(f"client: open (connection #{self.stats.opens}, attempt #{self.stats.attempts})")
        self._done("onOpen")

    def onHeartbeat(self, roundTrip: float) -> None:
        self.say(f"client: heartbeat answered, round trip {roundTrip * 1000:.2f} ms")
        self._done("onHeartbeat")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.say(f"client: received {payload.decode()!r}")
        self.echoes.append(payload)
        self._done("onMessage")

    def onError(self, failure: Failure) -> None:
        if failure.check(HeartbeatTimeout):
            self.detection = self.reactor.seconds() - self.lastInbound
            self.say(
                f"client: DEAD PEER detected {self.detection:.3f} s after the last inbound byte "
                f"(bound: ping {PING} + pong {PONG} = {PING + PONG:.3f} s); TCP aborted, no close handshake wait"
            )
        else:
            self.say(f"client: attempt failed: {failure.getErrorMessage()}")
        self._done("onError")

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.say(f"client: closed (clean={wasClean}, code={code})")
        self._done("onClose")

    def onReconnect(self, attempt: int, delay: float, reason: Optional[Failure] = None) -> None:
        why = type(reason.value).__name__ if reason is not None else "?"
        self.say(f"client: reconnecting in {delay:.3f} s (attempt {attempt}, after {why})")
        self._done("onReconnect")


async def demo(reactor: Any, out: TextIO) -> None:
    """Run the narrated timeline; raise SystemExit(1) if a promise was not kept."""
    _Server.live = []
    server = HeartbeatServerFactory(pingInterval=None, reactor=reactor)
    server.protocol = _Server
    port = reactor.listenTCP(0, server, interface="127.0.0.1")
    number = port.getHost().port
    url = f"ws://127.0.0.1:{number}/"
    h = _Narrator(reactor, out)
    h.say(f"server: listening on {url} (answers heartbeats, echoes messages)")

    opened = h.next("onOpen")
    connect(
        url, h, reactor=reactor, pingInterval=PING, pongTimeout=PONG, initialDelay=0.25, maxDelay=2.0, minUptime=0.5
    )
    await opened
    h.send("hello")
    await h.next("onMessage")
    for _ in range(2):
        await h.next("onHeartbeat")

    h.say("server: STALLS (stops reading and answering; TCP stays open) and stops accepting")
    protocol = h.protocol
    assert protocol is not None and protocol.heartbeat is not None
    h.lastInbound = protocol.heartbeat.lastTraffic
    for stalled in _Server.live:
        stalled.transport.pauseProducing()
    await port.stopListening()
    await h.next("onReconnect")
    h.send("queued while the server was down")
    h.say(f"client: send() while disconnected queued 1 message (queue: {h.queued})")
    await h.next("onError")  # the refused attempt
    await deferLater(reactor, 0.3, lambda: None)
    for stalled in list(_Server.live):
        stalled.transport.abortConnection()
    port = reactor.listenTCP(number, server, interface="127.0.0.1")
    h.say(f"server: RESTARTED on the same port {number}")
    await h.next("onOpen")
    while b"echo: queued while the server was down" not in h.echoes:
        await h.next("onMessage")
    h.say("client: the queued message was delivered after the reconnect")
    h.say("client: close()")
    closed = h.next("onClose")
    unsent = h.close()
    await closed
    await h.whenClosed()
    await port.stopListening()
    s = h.stats
    h.say(
        f"summary: {s.opens} opens, {s.attempts} attempts, {s.heartbeatsSent} heartbeats "
        f"({s.heartbeatsAnswered} answered), {s.deadPeers} dead peer, {s.messagesSent} messages sent, "
        f"{len(unsent)} unsent"
    )
    ok = (
        h.detection is not None
        and PING + PONG <= h.detection + 1e-6
        and s.opens == 2
        and b"echo: queued while the server was down" in h.echoes
        and not unsent
    )
    h.say("all promises kept" if ok else "SOMETHING WENT WRONG")
    if not ok:
        raise SystemExit(1)
