"""
The fault matrix: each fault of the proxy at each phase of the client, on
loopback, with the same invariants checked in every scenario.
"""

from typing import Any, List

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater

from txheartbeat import HeartbeatClientFactory, HeartbeatTimeout, NotConnected, OpenTimeout, SendQueueFull
from txheartbeat.testing import echoServerFactory

from .faultproxy import FaultProxy
from .test_integration import Waiter
from .test_stateful import checkHookOrder

PING, PONG = 0.2, 0.2
SLACK = 0.5  # scheduling slack allowed on a shared machine (the exact bound is proven on the fake clock)


class Recorder(WebSocketServerProtocol):
    received: List[bytes] = []

    def onMessage(self, payload, isBinary):
        Recorder.received.append(payload)
        self.sendMessage(payload, isBinary)


class Checked(Waiter):
    """A Waiter that checks the factory's one-connection-or-one-retry invariant at every hook."""

    factory: Any = None

    def _event(self, name, *args):
        f = self.factory
        if f is not None:
            live = f._protocol is not None
            retry = f._callID is not None
            assert not (live and retry), (name, f.state)
            if f.state == "waiting":
                assert retry and not live
        super()._event(name, *args)


def sleep(seconds):
    return deferLater(_reactor, seconds, lambda: None)


class Scenario:
    def __init__(self) -> None:
        Recorder.received = []
        self.server = _reactor.listenTCP(0, echoServerFactory(Recorder), interface="127.0.0.1")
        self.proxy = FaultProxy(self.server.getHost().port)
        self.handler = Checked()
        self.factory = HeartbeatClientFactory(
            self.proxy.url,
            self.handler,
            pingInterval=PING,
            pongTimeout=PONG,
            initialDelay=0.05,
            maxDelay=0.2,
            jitter=0,
            openTimeout=0.5,
            closeTimeout=0.3,
            minUptime=0,
            sendQueueSize=10,
        )
        self.handler.factory = self.factory
        self.sent: List[bytes] = []
        self.refused: List[bytes] = []
        self.handedBack: List[bytes] = []

    def send(self, text: str) -> None:
        try:
            self.handler.send(text)
        except (SendQueueFull, NotConnected):
            self.refused.append(text.encode())
        else:
            self.sent.append(text.encode())

    async def finish(self, sendAfterHeal: bool = True) -> None:
        self.proxy.heal()
        self.proxy.cutNextServerFrame = False
        if not self.factory.finished:
            if sendAfterHeal:
                await self.openAgain()
                await sleep(0.1)
            self.handedBack += [m.encode() for m in self.handler.close()]
        await self.handler.whenClosed()
        await self.proxy.stop()
        await self.server.stopListening()
        self.check()

    async def openAgain(self) -> None:
        for _ in range(100):
            if self.handler.isOpen and self.proxy.port.connected:
                return
            if not self.proxy.port.connected:
                self.proxy.listen()
            await sleep(0.05)
        raise AssertionError(f"never reopened: {self.handler.names()} state={self.factory.state}")

    def check(self) -> None:
        checkHookOrder(self.handler.names())
        received = set(Recorder.received)
        for message in self.sent:
            assert message in received or message in self.handedBack, (message, self.handler.names())
        for message in self.refused:
            assert message not in received
        for event in self.handler.events:
            if event[1] == "onError" and isinstance(event[2], HeartbeatTimeout):
                assert PING + PONG <= event[2].idle < PING + PONG + SLACK
        assert self.factory._protocol is None and self.factory._callID is None


async def opened(s: Scenario) -> None:
    await s.factory.connect()


# Open ----------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("direction", ["both", "toServer", "toClient"])
async def test_open_blackhole_detected_and_recovered(direction):
    """A black hole on an open connection (one or both ways) is detected within the bound and the client reconnects."""
    s = Scenario()
    await opened(s)
    s.proxy.blackhole(toServer=direction != "toClient", toClient=direction != "toServer")
    (error,) = await s.handler.next("onError")
    assert isinstance(error, HeartbeatTimeout)
    s.send("after the outage")
    await s.finish()
    assert b"after the outage" in Recorder.received


@pytest_twisted.ensureDeferred
async def test_open_reset():
    """A reset of an open connection gives onClose(1006) and a reconnect; a message queued meanwhile is delivered."""
    s = Scenario()
    await opened(s)
    s.proxy.refuse()
    s.proxy.reset()
    (clean, code) = await s.handler.next("onClose")
    assert (clean, code) == (False, 1006)
    s.send("queued")
    await s.finish()
    assert b"queued" in Recorder.received


@pytest_twisted.ensureDeferred
async def test_open_trickle_and_delay_keep_alive():
    """Slow bytes (trickled, delayed under the pong timeout) still count as life: no false dead peer."""
    s = Scenario()
    await opened(s)
    # 600 B/s and 20 ms each way: a heartbeat queued in the proxy behind these three messages
    # is answered within ~120 ms, under the 200 ms pong timeout even on a loaded machine.
    s.proxy.trickle = (3, 0.005)
    s.proxy.delay = 0.02
    for i in range(3):
        s.send(f"slow {i}")
    answered = s.handler.stats.heartbeatsAnswered
    deadline = _reactor.seconds() + 10
    while s.handler.stats.heartbeatsAnswered < answered + 2:  # two heartbeats through the slow link
        assert _reactor.seconds() < deadline and "onError" not in s.handler.names(), s.handler.names()
        await sleep(0.02)
    assert "onError" not in s.handler.names()
    await s.finish()


@pytest_twisted.ensureDeferred
async def test_open_cut_mid_frame():
    """A connection cut in the middle of a frame from the server ends in a reconnect, and the frame is not delivered half."""
    s = Scenario()
    await opened(s)
    s.proxy.cutNextServerFrame = True
    s.send("x" * 1000)
    await s.handler.next("onClose")
    assert b"x" * 1000 not in [e[2] for e in s.handler.events if e[1] == "onMessage"]
    await s.finish()


# Handshaking ------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_handshake_blackholed():
    """An upgrade answer that never arrives ends in OpenTimeout, then a retry that succeeds once healed."""
    s = Scenario()
    s.proxy.blackhole(toServer=False, toClient=True)
    d = s.factory.connect()
    (error,) = await s.handler.next("onError")
    assert isinstance(error, OpenTimeout) and error.phase == "opening handshake"
    s.proxy.heal()
    await d
    await s.finish()


@pytest_twisted.ensureDeferred
async def test_handshake_reset():
    """A reset during the opening handshake is reported and retried."""
    s = Scenario()
    s.proxy.delay = 0.2  # hold the upgrade answer
    d = s.factory.connect()
    deadline = _reactor.seconds() + 10
    while not s.proxy.accepted:  # the connection is in, its upgrade on its way
        assert _reactor.seconds() < deadline, "the client never reached the proxy"
        await sleep(0.01)
    s.proxy.refuse()
    s.proxy.reset()
    await s.handler.next("onError")
    assert "onOpen" not in s.handler.names()
    s.proxy.heal()
    s.proxy.listen()
    await d
    await s.finish()


@pytest_twisted.ensureDeferred
async def test_handshake_delayed_within_open_timeout():
    """A slow (delayed) upgrade answer within openTimeout simply opens."""
    s = Scenario()
    s.proxy.delay = 0.2
    await s.factory.connect()
    assert s.handler.names()[0] == "onOpen"
    await s.finish()


@pytest_twisted.ensureDeferred
async def test_handshake_cut_mid_response():
    """An upgrade answer cut in the middle is a failed attempt (reported, retried), never an open."""
    s = Scenario()
    s.proxy.cutNextServerFrame = True
    d = s.factory.connect()
    await s.handler.next("onError")
    assert "onOpen" not in s.handler.names()
    await d  # the retry goes through the healed proxy
    await s.finish()


@pytest_twisted.ensureDeferred
async def test_handshake_trickled():
    """An upgrade answer trickled in small pieces still opens within openTimeout."""
    s = Scenario()
    s.proxy.trickle = (16, 0.01)
    await s.factory.connect()
    assert s.handler.names()[0] == "onOpen"
    s.proxy.heal()
    await s.finish()


# Connecting and waiting to retry ----------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_refused_while_connecting_and_waiting():
    """Refused connects at the first attempt and during retries are reported each time; messages queue and arrive later."""
    s = Scenario()
    s.proxy.refuse()
    d = s.factory.connect()
    await s.handler.next("onReconnect")
    s.send("queued while refused")
    await s.handler.next("onReconnect")
    s.proxy.listen()
    await d
    await s.finish()
    assert b"queued while refused" in Recorder.received


@pytest_twisted.ensureDeferred
async def test_close_while_waiting_to_retry():
    """close() while waiting to retry stops everything and hands back the queue."""
    s = Scenario()
    s.proxy.refuse()
    d = s.factory.connect()
    d.addErrback(lambda f: f.trap(NotConnected))
    await s.handler.next("onReconnect")
    s.send("never sent")
    s.handedBack += [m.encode() for m in s.handler.close()]
    assert s.handedBack == [b"never sent"]
    await s.handler.whenClosed()
    attempts = s.handler.stats.attempts
    await sleep(0.5)
    assert s.handler.stats.attempts == attempts
    s.proxy.listen()
    await s.finish()


# Closing --------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_closing_into_blackhole_aborts():
    """close() into a black hole aborts after closeTimeout instead of waiting forever."""
    s = Scenario()
    await opened(s)
    s.proxy.blackhole()
    start = _reactor.seconds()
    s.handler.close()
    await s.handler.whenClosed()
    assert 0.3 <= _reactor.seconds() - start < 0.3 + SLACK
    assert s.handler.events[-1][1:3] == ("onClose", False)
    await s.finish()


@pytest_twisted.ensureDeferred
async def test_reset_while_closing():
    """A reset during the close handshake still ends closed, with nothing reconnecting."""
    s = Scenario()
    await opened(s)
    s.proxy.blackhole()
    s.handler.close()
    s.proxy.reset()
    await s.handler.whenClosed()
    await sleep(0.3)
    assert s.factory.state == "closed" and s.handler.stats.attempts == 1
    await s.finish()


@pytest_twisted.ensureDeferred
async def test_many_faults_in_a_row():
    """Black hole, reset, refusal and cut, one after another on one client: every message is delivered, refused or handed back."""
    s = Scenario()
    await opened(s)
    for i, fault in enumerate(["blackhole", "reset", "refuse", "cut", "blackhole"]):
        # Wait for the echo: a message written just as the network fails is
        # TCP's to lose, and WebSocket has no acknowledgements to tell.
        s.send(f"before {fault} {i}")
        await s.handler.next("onMessage")
        if fault == "blackhole":
            s.proxy.blackhole()
            await s.handler.next("onError")
        elif fault == "reset":
            s.proxy.reset()
            await s.handler.next("onClose")
        elif fault == "refuse":
            s.proxy.refuse()
            s.proxy.reset()
            await s.handler.next("onReconnect")
            s.send(f"while refused {i}")
            await s.handler.next("onReconnect")
        elif fault == "cut":
            s.proxy.cutNextServerFrame = True
            s.send("y" * 500)
            await s.handler.next("onClose")
        s.proxy.heal()
        await s.openAgain()
    await s.finish()
    assert s.handler.stats.opens >= 5
