"""
``txheartbeat demo``: a narrated run of every promise on loopback, in one process.

First a heartbeat story (dead peer, reconnect, queued message), then a
session resume: a stream dropped mid-flight carries on, nothing lost or
delivered twice.
"""

from __future__ import annotations

from typing import Any, List, Optional, TextIO

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from ._client import connect
from ._errors import HeartbeatTimeout
from ._handler import HeartbeatHandler
from ._resume import ServerSession
from ._server import HeartbeatServerFactory, HeartbeatServerProtocol

PING = 0.5
PONG = 0.5
#: the resume story: numbers streamed, how many per reactor turn, and how many are sent before TCP drops
TOTAL = 100
BATCH = 4
DROP_AT = 40


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
    def __init__(self, reactor: Any, out: TextIO, start: Optional[float] = None) -> None:
        super().__init__()
        self.reactor = reactor
        self.out = out
        self.start = reactor.seconds() if start is None else start
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
    resumed = await _resumeStory(reactor, out, h.start)
    ok = ok and resumed
    h.say("all promises kept" if ok else "SOMETHING WENT WRONG")
    if not ok:
        raise SystemExit(1)


# The resume story -----------------------------------------------------------------


class _SessionServer(HeartbeatServerProtocol):
    factory: _SessionFactory

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)  # in a session: numbered, kept until acknowledged, replayed
        self.factory.echoed += 1


class _SessionFactory(HeartbeatServerFactory):
    protocol = _SessionServer
    narrator: _Narrator
    echoed = 0
    replayed = 0

    def onSessionCreated(self, session: ServerSession) -> None:
        self.narrator.say(f"server: session {session.id} created")

    def onSessionResumed(self, session: ServerSession) -> None:
        # Right after a resume, what the client has not acknowledged is what was just sent again.
        self.replayed += len(session.unacked)
        self.narrator.say(f"server: session {session.id} resumed: {len(session.unacked)} echo(es) replayed")

    def onSessionExpired(self, session: ServerSession) -> None:
        self.narrator.say(f"server: session {session.id} EXPIRED")

    def onSessionClosed(self, session: ServerSession) -> None:
        self.narrator.say(f"server: session {session.id} closed by the client")
        self.narrator._done("onSessionClosed")


class _Streamer(_Narrator):
    """
    Streams the numbers 1..TOTAL, BATCH of them every reactor turn, and drops
    TCP at both ends once DROP_AT are sent and echoes are on their way back.
    """

    def __init__(self, reactor: Any, out: TextIO, start: float, server: _SessionFactory) -> None:
        super().__init__(reactor, out, start)
        self.server = server
        self.sent = 0
        self.numbers: List[int] = []
        self.dropped = False
        self._replayed = 0  # stats.replayed at the last open
        self._tick: Optional[IDelayedCall] = None

    def stream(self) -> None:
        """Send the next batch at the next reactor turn (which schedules the one after), until all are sent."""
        if self._tick is None and self.sent < TOTAL:
            self._tick = self.reactor.callLater(0, self._send)

    def _send(self) -> None:
        self._tick = None
        if not self.isOpen:
            return  # carried on by onOpen
        for _ in range(min(BATCH, TOTAL - self.sent)):
            self.sent += 1
            self.send(str(self.sent))
        # Here, at the start of a turn, the server's echoes of what it read in
        # the last one have not reached onMessage yet, and what was just sent
        # is still in the client's write buffer: an abort loses both ways.
        if not self.dropped and self.sent >= DROP_AT and self.server.echoed > len(self.numbers):
            self.drop()
            return
        self.stream()

    def drop(self) -> None:
        self.dropped = True
        self.say(
            f"network: dropped mid-stream with {len(self.unacked)} unacknowledged ({self.sent} sent, "
            f"{self.server.echoed} echoed, {len(self.numbers)} echoes received); TCP aborted at both ends"
        )
        for connection in list(self.server.clients):
            connection.transport.abortConnection()
        assert self.protocol is not None
        self.protocol.transport.abortConnection()

    def onOpen(self) -> None:
        super().onOpen()
        replayed, self._replayed = self.stats.replayed - self._replayed, self.stats.replayed
        if self.resumed:
            self.say(f"client: resumed: {replayed} replayed (what the server had not received, sent again first)")
            self.stream()

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.numbers.append(int(payload))
        if len(self.numbers) == TOTAL:
            self._done("complete")


async def _within(reactor: Any, d: Deferred[None], seconds: float) -> bool:
    """Whether ``d`` fires within ``seconds`` (a lost message must not hang the demo)."""
    try:
        await d.addTimeout(seconds, reactor)
    except TimeoutError:
        return False
    return True


async def _resumeStory(reactor: Any, out: TextIO, start: float) -> bool:
    """Stream through a drop with ``resume`` on both ends; whether nothing was lost or duplicated."""
    server = _SessionFactory(pingInterval=None, resume=True, resumeWindow=5.0, reactor=reactor)
    port = reactor.listenTCP(0, server, interface="127.0.0.1")
    url = f"ws://127.0.0.1:{port.getHost().port}/"
    h = server.narrator = _Streamer(reactor, out, start, server)
    h.say(f"server: listening on {url} with resumable sessions (kept 5 s after a drop); a new client, resume=True")
    opened = h.next("onOpen")
    connect(url, h, reactor=reactor, pingInterval=PING, pongTimeout=PONG, resume=True, initialDelay=0.2, jitter=0)
    await opened
    h.say(f"client: streaming the numbers 1..{TOTAL}, {BATCH} every reactor turn")
    complete = h.next("complete")
    h.stream()
    if not await _within(reactor, complete, 5.0):
        h.say(f"client: the stream STALLED after {len(h.numbers)} echoes")
    numbers = h.numbers
    exact = numbers == list(range(1, TOTAL + 1))
    if exact:
        h.say(f"client: all {TOTAL} numbers echoed exactly once, in order")
    else:
        missing = sorted(set(range(1, TOTAL + 1)) - set(numbers))
        twice = sorted({n for n in numbers if numbers.count(n) > 1})
        h.say(f"client: echoes WRONG: missing {missing}, duplicated {twice}, in order: {numbers == sorted(numbers)}")
    h.say("client: close()")
    closed = h.next("onClose")
    sessionClosed = h.next("onSessionClosed")
    wasOpen = h.isOpen
    unsent = h.close()
    if wasOpen:
        await closed
    ended = wasOpen and await _within(reactor, sessionClosed, 2.0)
    await h.whenClosed()
    await port.stopListening()
    s = h.stats
    h.say(
        f"summary: {s.opens} opens, {s.resumes} resumed, {s.replayed} replayed by the client and "
        f"{server.replayed} by the server, {s.sessionsLost} sessions lost, {server.expiredSessions} expired"
    )
    return (
        exact
        and ended
        and h.dropped
        and s.resumes == 1
        and s.replayed > 0
        and server.replayed > 0
        and s.sessionsLost == 0
        and server.resumedSessions == 1
        and server.expiredSessions == 0
        and not unsent
    )
