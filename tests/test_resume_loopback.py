"""
Session resume on loopback (issue 11): real sockets on 127.0.0.1 through
``tests/resetproxy.py``, which adds 50 ms each way and resets every
connection 0.3-1.0 s after it opened.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall, deferLater

from txheartbeat import (
    HeartbeatHandler,
    HeartbeatServerFactory,
    HeartbeatServerProtocol,
    SendQueueFull,
    connect,
)

from .resetproxy import ResetProxy

STREAM_SECONDS = 30.0
RATE = 300  # messages per second, each stream
TICK = 0.01
DRAIN_TIMEOUT = 8.0  # generous: a drain needs about one reconnect and a heartbeat here

# Quick reconnects and quick acknowledgements on a quiet line.
CLIENT = dict(
    pingInterval=0.5, pongTimeout=0.5, initialDelay=0.05, maxDelay=0.2, probeInterval=0.05, minUptime=0, jitter=0
)
SERVER = dict(pingInterval=0.5, pongTimeout=1.0, reactor=_reactor)


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(_reactor, seconds, lambda: None)


async def until(condition: Callable[[], bool], what: Callable[[], str], timeout: float = DRAIN_TIMEOUT) -> None:
    """Wait, looking every 20 ms on the reactor, until ``condition()``; fail the test after ``timeout`` seconds."""
    deadline = _reactor.seconds() + timeout
    while not condition():
        if _reactor.seconds() > deadline:
            raise AssertionError(f"not within {timeout} s: {what()}")
        await sleep(0.02)


def opened(d: Deferred[Any]) -> Deferred[Any]:
    """``connect()``'s Deferred, failing the test if the client is not open within ``DRAIN_TIMEOUT``."""
    return d.addTimeout(DRAIN_TIMEOUT, _reactor)


class Streamer:
    """
    Sends ``"0"``, ``"1"``, ... through ``send`` at about ``RATE`` per second
    while ``ready()``; a number refused with SendQueueFull is tried again at
    the next tick, never skipped.
    """

    def __init__(self, send: Callable[[str], None], ready: Callable[[], bool] = lambda: True) -> None:
        self.send = send
        self.ready = ready
        self.next = 0  # the next number; all below it were accepted by send()
        self.refused = 0
        self._loop = LoopingCall(self._tick)
        self._loop.clock = _reactor
        self._done: Optional[Deferred[Any]] = None

    def start(self) -> None:
        self._done = self._loop.start(TICK, now=False)

    def _tick(self) -> None:
        for _ in range(round(RATE * TICK)):
            if not self.ready():
                return
            try:
                self.send(str(self.next))
            except SendQueueFull:
                self.refused += 1
                return
            self.next += 1

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    async def stopped(self) -> None:
        """Stop; raise what a tick raised, if one did (NotConnected would be a bug)."""
        self.stop()
        if self._done is not None:
            await self._done


def lostAndDuplicated(received: List[int], sent: int) -> Tuple[int, int]:
    """How many of the numbers below ``sent`` never arrived, and how many arrived more than once."""
    return len(set(range(sent)) - set(received)), len(received) - len(set(received))


class Client(HeartbeatHandler):
    """Keeps the numbers the server sends, in arrival order, and any other message."""

    def __init__(self) -> None:
        super().__init__()
        self.numbers: List[int] = []
        self.others: List[bytes] = []
        self.lost: List[list] = []

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if payload.isdigit():
            self.numbers.append(int(payload))
        else:
            self.others.append(payload)

    def onSessionLost(self, unacked: list) -> None:
        self.lost.append(unacked)


class StreamingProtocol(HeartbeatServerProtocol):
    """Keeps what each client sends (by kind: in a session or plain); answers ``end`` with ``end``."""

    factory: StreamingFactory

    def onOpen(self) -> None:
        if self.session is None:
            self.factory.plain = self

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        kind = "plain" if self.session is None else "resume"
        if payload == b"end":
            self.sendMessage(b"end")
        else:
            self.factory.received[kind].append(int(payload))

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if self.factory.plain is self:
            self.factory.plain = None


class StreamingFactory(HeartbeatServerFactory):
    """A resume server that streams numbers to its one session (connected or not) and to its plain connection."""

    protocol = StreamingProtocol

    def __init__(self, **options: Any) -> None:
        super().__init__(resume=True, **options)
        self.received: Dict[str, List[int]] = {"resume": [], "plain": []}
        self.session: Any = None
        self.plain: Optional[StreamingProtocol] = None
        # session.send() works between connections too: the session keeps it for the resume.
        self.toResume = Streamer(lambda text: self.session.send(text), lambda: self.session is not None)
        self.toPlain = Streamer(
            lambda text: self.plain.sendMessage(text.encode()),  # type: ignore[union-attr]
            lambda: self.plain is not None and self.plain.isOpen,
        )

    def onSessionCreated(self, session: Any) -> None:
        self.session = session


@pytest_twisted.ensureDeferred
async def test_resume_exactly_once_through_resets_while_plain_client_loses():
    """Over 30 s of resets every 0.3-1.0 s, a resumed session delivers every message both ways exactly once and in order, while a plain client in the same run loses some."""
    server = StreamingFactory(**SERVER)
    port = _reactor.listenTCP(0, server, interface="127.0.0.1")
    resumeProxy = ResetProxy(port.getHost().port, seed=11)
    plainProxy = ResetProxy(port.getHost().port, seed=12)
    resumed, plain = Client(), Client()
    fromResumed = Streamer(resumed.send)
    fromPlain = Streamer(plain.send)
    streamers = [fromResumed, fromPlain, server.toResume, server.toPlain]
    try:
        await opened(connect(resumeProxy.url, resumed, resume=True, reactor=_reactor, **CLIENT))
        await opened(connect(plainProxy.url, plain, reactor=_reactor, **CLIENT))
        for streamer in streamers:
            streamer.start()
        await sleep(STREAM_SECONDS)
        for streamer in streamers:
            await streamer.stopped()

        # Drain with no more resets: everything each side accepted must arrive.
        resumeProxy.calm()
        plainProxy.calm()
        await until(
            lambda: len(server.received["resume"]) >= fromResumed.next and len(resumed.numbers) >= server.toResume.next,
            lambda: (
                f"server has {len(server.received['resume'])}/{fromResumed.next}, "
                f"client {len(resumed.numbers)}/{server.toResume.next} (state {resumed.factory.state})"
            ),
        )
        plain.send("end")  # after every number on the same connection: its echo means the rest arrived
        await until(lambda: b"end" in plain.others, lambda: f"plain client is {plain.factory.state}")
        await until(lambda: not resumed.unacked and not server.session.unacked, lambda: "acknowledgements")
    finally:
        for streamer in streamers:
            streamer.stop()
        resumed.close()
        plain.close()
        await resumed.whenClosed()
        await plain.whenClosed()
        await resumeProxy.stop()
        await plainProxy.stop()
        await port.stopListening()

    # Resume: every number each way, once, in order; the session survived every reset.
    assert server.received["resume"] == list(range(fromResumed.next))
    assert resumed.numbers == list(range(server.toResume.next))
    assert fromResumed.next >= 1000 and server.toResume.next >= 1000  # the streams did run
    stats = resumed.stats
    assert stats.resumes >= 15 and stats.opens == stats.resumes + 1, (stats, resumeProxy.resets)
    assert stats.sessionsLost == 0 and resumed.lost == [] and server.refusedResumes == 0
    assert server.closedSessions == 1  # the clean close at the end ended it

    # Plain, same run, same resets: what was in flight at a reset is gone.
    lostUp, duplicatedUp = lostAndDuplicated(server.received["plain"], fromPlain.next)
    lostDown, duplicatedDown = lostAndDuplicated(plain.numbers, server.toPlain.next)
    assert plainProxy.resets >= 15
    assert lostUp > 0 and lostDown > 0, (lostUp, lostDown, plainProxy.resets)
    assert duplicatedUp == duplicatedDown == 0


BIG = 200_000


def big(index: int) -> bytes:
    """A 200 KB message that says which one it is."""
    return bytes([index]) * BIG


class LargeProtocol(HeartbeatServerProtocol):
    """Sends four large messages to a new session; cuts the first replay it receives after one message."""

    factory: LargeFactory

    def onOpen(self) -> None:
        self.deliveredHere = 0
        if not self.resumed:
            for index in range(4):
                self.sendMessage(big(index), True)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.received.append(payload)
        self.deliveredHere += 1
        if self.resumed and self.deliveredHere == 1:
            self.factory.cutReplay("server")


class LargeFactory(HeartbeatServerFactory):
    protocol = LargeProtocol

    def __init__(self, **options: Any) -> None:
        super().__init__(resume=True, **options)
        self.received: List[bytes] = []
        self.proxy: Optional[ResetProxy] = None
        #: the side whose receipt of a replay was cut short, in order
        self.cuts: List[str] = []

    def cutReplay(self, side: str) -> None:
        """Reset the connection once per receiving side, right after it delivered the first replayed message."""
        if side not in self.cuts:
            self.cuts.append(side)
            assert self.proxy is not None
            self.proxy.reset()


class LargeClient(Client):
    """Sends four large messages at its first open; cuts the first replay it receives after one message."""

    server: LargeFactory

    def onOpen(self) -> None:
        self.deliveredHere = 0
        if not self.resumed:
            for index in range(4):
                self.send(big(index))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.others.append(payload)
        self.deliveredHere += 1
        if self.resumed and self.deliveredHere == 1:
            self.server.cutReplay("client")


@pytest_twisted.ensureDeferred
async def test_reset_during_large_replay_still_delivers_exactly_once():
    """Four 200 KB messages each way, cut off by a reset and then again in the middle of their replay (each direction once), each arrive exactly once and in order."""
    server = LargeFactory(**SERVER)
    port = _reactor.listenTCP(0, server, interface="127.0.0.1")
    proxy = server.proxy = ResetProxy(port.getHost().port, resetAfter=None)
    client = LargeClient()
    client.server = server
    try:
        await opened(connect(proxy.url, client, resume=True, reactor=_reactor, **CLIENT))
        proxy.reset()  # in the turn of the open: everything both sides just sent is still on its way
        await until(
            lambda: len(server.received) >= 4 and len(client.others) >= 4 and len(server.cuts) == 2,
            lambda: (
                f"server has {len(server.received)}, client {len(client.others)}; cuts {server.cuts}; {client.stats}"
            ),
        )
    finally:
        client.close()
        await client.whenClosed()
        await proxy.stop()
        await port.stopListening()
    assert server.received == [big(i) for i in range(4)]
    assert client.others == [big(i) for i in range(4)]
    assert sorted(server.cuts) == ["client", "server"]
    assert client.stats.resumes == 3 and client.stats.sessionsLost == 0 and client.lost == []
