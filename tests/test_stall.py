"""
A stalled reactor must not turn an answer already received into a dead-peer
verdict (issue 9, point 2), and a silent peer must still be declared dead.

The stall tests run the real reactor on loopback against a WebSocket peer in
another thread (python-websockets' sans-I/O ``ServerProtocol`` on a plain
socket, so the test decides when its pong goes out).  On the client's
heartbeat the peer makes the reactor block for :data:`STALL` seconds, and
only once the reactor is blocked does it send its pong: the pong is in the
client's socket buffer before the pong deadline passes, but the reactor can
only read it after the deadline.

The load tests run a :class:`txheartbeat.HeartbeatServerFactory` in a
subprocess (``tests/stall_load.py``) whose reactor is blocked 200 ms every
second, with heartbeated clients in this process; neither end may declare a
live peer dead.
"""

import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import pytest
import pytest_twisted
from twisted.internet import defer, protocol
from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from websockets.frames import Opcode
from websockets.http11 import Request
from websockets.server import ServerProtocol

from txheartbeat import HeartbeatClientFactory, HeartbeatTimeout, connect
from txheartbeat.testing import RecordingHandler

PING = 0.3
PONG = 0.3
STALL = 0.6  # longer than PONG: the deadline passes while the reactor is blocked
HERE = os.path.dirname(os.path.abspath(__file__))


class Waiter(RecordingHandler):
    """A :class:`RecordingHandler` on the real reactor that lets a test wait for a hook."""

    def __init__(self) -> None:
        super().__init__(_reactor)
        self._waiting: Dict[str, List[defer.Deferred]] = {}

    def _record(self, name: str, *args: Any) -> None:
        super()._record(name, *args)
        for d in self._waiting.pop(name, []):
            if not d.called:
                d.callback((name, *args))

    def next(self, *names: str, timeout: float = 10.0) -> defer.Deferred:
        """Fire with ``(name, *args)`` of the next call of any of these hooks."""
        d: defer.Deferred = defer.Deferred()
        for name in names:
            self._waiting.setdefault(name, []).append(d)
        return d.addTimeout(timeout, _reactor)

    def times(self, name: str) -> List[float]:
        return [e[0] for e in self.events if e[1] == name]


def sleep(seconds: float) -> defer.Deferred:
    return deferLater(_reactor, seconds, lambda: None)


# The stall ---------------------------------------------------------------------


class Stall:
    """
    Blocks the test's reactor for :data:`STALL` seconds when a thread asks,
    in one of the places where real applications block it.

    ``"read"``: synchronous work in another connection's ``dataReceived``
    (the peer thread writes a byte to a loopback connection served by the
    reactor).  ``"thread"``: synchronous work in a function handed over with
    ``reactor.callFromThread`` (e.g. a worker thread's result).
    ``"timer"``: synchronous work in a ``reactor.callLater`` call.

    With the default (epoll) reactor the first two let the reactor run the
    expired pong deadline before it reads again; a block inside a timed call
    does not (Twisted runs the calls that were due when the pass began, then
    polls).  asyncio's loop polls before it runs due timers.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        self.blocking = threading.Event()
        self.started: List[float] = []
        self.ended: List[float] = []
        stall = self

        class Busy(protocol.Protocol):
            def dataReceived(self, data: bytes) -> None:
                stall.block()

        self.port = _reactor.listenTCP(0, protocol.Factory.forProtocol(Busy), interface="127.0.0.1")
        self.trigger = socket.create_connection(("127.0.0.1", self.port.getHost().port))

    def block(self) -> None:
        """Run on the reactor thread: tell the peer we are blocked, then block."""
        self.started.append(time.time())
        self.blocking.set()
        time.sleep(STALL)
        self.ended.append(time.time())

    def fromThread(self) -> None:
        """Run on the peer thread: make the reactor block, and return once it is blocked."""
        if self.where == "read":
            self.trigger.sendall(b"x")
        elif self.where == "timer":
            _reactor.callFromThread(_reactor.callLater, 0, self.block)
        else:
            _reactor.callFromThread(self.block)
        if not self.blocking.wait(5):
            raise RuntimeError("the reactor never blocked")

    def close(self) -> defer.Deferred:
        self.trigger.close()
        return defer.maybeDeferred(self.port.stopListening)


# The peer in another thread ------------------------------------------------------


class ThreadPeer:
    """
    A WebSocket server for one client in a daemon thread: python-websockets'
    sans-I/O protocol on a blocking socket.  It echoes messages and answers
    pings; on each ping it first calls ``onPing(number)`` (numbered from 1),
    which may block, and sends the pong only if that returns true; otherwise
    it goes silent: it stops reading and answering, and TCP stays open.
    """

    def __init__(self, onPing: Callable[[int], bool]) -> None:
        self.onPing = onPing
        self.pings: List[float] = []  # when each ping was read (time.time())
        self.pongs: List[float] = []  # when each pong was handed to the kernel
        self.error: Optional[BaseException] = None
        self._done = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"ws://127.0.0.1:{self._listener.getsockname()[1]}/"
        self._thread = threading.Thread(target=self._run, name="ThreadPeer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self._listener.accept()
            with conn:
                self._serve(conn)
                self._done.wait(30)
        except ConnectionResetError:
            pass  # the client aborted: its verdict is what the test checks
        except BaseException as e:  # reported by stop()
            self.error = e

    def _serve(self, conn: socket.socket) -> None:
        ws = ServerProtocol()
        while not self._done.is_set():
            data = conn.recv(65536)
            if not data:
                return
            ws.receive_data(data)
            for event in ws.events_received():
                if isinstance(event, Request):
                    ws.send_response(ws.accept(event))
                elif event.opcode is Opcode.PING:
                    self.pings.append(time.time())
                    if not self.onPing(len(self.pings)):
                        return  # silent from now on: nothing read, nothing sent
                    # the pong is already queued in ws.data_to_send()
                elif event.opcode is Opcode.TEXT:
                    ws.send_text(event.data)
                elif event.opcode is Opcode.BINARY:
                    ws.send_binary(event.data)
            answersPing = bool(self.pings) and len(self.pongs) < len(self.pings)
            for chunk in ws.data_to_send():
                if chunk:
                    conn.sendall(chunk)
                else:
                    conn.shutdown(socket.SHUT_WR)
            if answersPing:
                self.pongs.append(time.time())

    def stop(self) -> None:
        self._done.set()
        self._listener.close()
        self._thread.join(5)
        if self.error is not None:
            raise self.error


# Stall tests -----------------------------------------------------------------------


@pytest.mark.parametrize("where", ["read", "thread", "timer"])
@pytest_twisted.ensureDeferred
async def test_pong_received_during_stall_is_not_a_dead_peer(where):
    """A pong that arrives while the reactor is blocked across the pong deadline keeps the connection: no HeartbeatTimeout, onHeartbeat reported."""
    stall = Stall(where)

    def onPing(number: int) -> bool:
        if number == 1:
            stall.fromThread()  # the pong goes out only once the reactor is blocked
        return True

    peer = ThreadPeer(onPing)
    h = Waiter()
    try:
        await connect(peer.url, h, reactor=_reactor, pingInterval=PING, pongTimeout=PONG, initialDelay=5)
        protocol_ = h.protocol
        # Then two more heartbeats answered on the same connection: it was kept.
        for _ in range(3):
            name, value = await h.next("onHeartbeat", "onError", timeout=5)
            assert name == "onHeartbeat", f"live peer declared dead: {value!r} (events {h.names()})"
        roundTrip = h.events[h.names().index("onHeartbeat")][2]
        assert h.protocol is protocol_ and h.isOpen
    finally:
        h.close()
        await h.whenClosed()
        await stall.close()
        peer.stop()
    # The scenario really happened: the pong reached the kernel while the
    # reactor was blocked, and the pong deadline passed during the block.
    (started,) = stall.started
    (ended,) = stall.ended
    assert started <= peer.pongs[0] <= ended
    assert ended > peer.pings[0] + PONG
    assert STALL - 0.05 <= roundTrip < STALL + 0.5  # measured across the block
    assert [e for e in h.events if e[1] == "onError"] == []
    assert h.names()[0] == "onOpen" and h.names()[-1] == "onClose"
    assert h.names().count("onOpen") == 1 and h.names().count("onClose") == 1
    assert h.events[-1][2:4] == (True, 1000)
    assert h.stats.deadPeers == 0


@pytest.mark.parametrize("where", ["read", "thread", "timer"])
@pytest_twisted.ensureDeferred
async def test_silent_peer_across_stall_still_dead(where):
    """A peer that goes silent at the heartbeat is still declared dead when the reactor is blocked across the pong deadline: after the block, within ping + pong + block."""
    stall = Stall(where)

    def onPing(number: int) -> bool:
        stall.fromThread()
        return False  # no pong, nothing read from now on

    peer = ThreadPeer(onPing)
    h = Waiter()
    try:
        await connect(peer.url, h, reactor=_reactor, pingInterval=PING, pongTimeout=PONG, initialDelay=5)
        _, error = await h.next("onError", timeout=5)
        await h.next("onReconnect", timeout=5)
    finally:
        h.close()
        await h.whenClosed()
        await stall.close()
        peer.stop()
    assert isinstance(error, HeartbeatTimeout)
    (last,) = h.times("onOpen")  # the handshake's answer was the peer's last byte
    (detected,) = h.times("onError")
    (ended,) = stall.ended
    assert peer.pongs == []
    assert len(peer.pings) == 1
    # Never early: not before ping + pong after the last inbound byte, and not
    # before the reactor could look at the socket again.
    assert detected - last >= PING + PONG
    assert detected >= ended
    # Within the bound: ping + pong + the block (generous: shared machine).
    assert detected - last < PING + PONG + STALL + 0.5
    assert "onHeartbeat" not in h.names()
    assert h.names() == ["onOpen", "onError", "onClose", "onReconnect"]
    assert h.stats.deadPeers == 1


# Load: many connections to a server process that stalls -----------------------------


def raiseFileLimit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if max(soft, hard) < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {needed}")


class LoadClient(RecordingHandler):
    """Counts what matters in a load run: dead-peer verdicts, opens and losses."""

    def __init__(self) -> None:
        super().__init__(_reactor)
        self.dead = 0
        self.otherErrors: List[Any] = []
        self.heartbeats = 0

    def _record(self, name: str, *args: Any) -> None:
        if name == "onHeartbeat":
            self.heartbeats += 1  # not kept: thousands of them
            return
        super()._record(name, *args)
        if name == "onError":
            if isinstance(args[0], HeartbeatTimeout):
                self.dead += 1
            else:
                self.otherErrors.append(args[0])


async def stallLoad(
    clients: int,
    seconds: float,
    *,
    ping: float,
    pong: float,
    stall: float = 0.2,
    period: float = 1.0,
    where: str = "read",
    serverPing: Optional[float] = None,
    serverPong: Optional[float] = None,
) -> Dict[str, Any]:
    """
    Run ``clients`` heartbeated clients against ``tests/stall_load.py`` for
    ``seconds`` once all are open; return the server's report with the
    clients' figures added.
    """
    raiseFileLimit(clients + 100)
    server = subprocess.Popen(
        [
            sys.executable,
            os.path.join(HERE, "stall_load.py"),
            f"--ping={serverPing if serverPing is not None else ping}",
            f"--pong={serverPong if serverPong is not None else pong}",
            f"--stall={stall}",
            f"--period={period}",
            f"--where={where}",
            f"--backlog={max(clients, 128)}",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    handlers = [LoadClient() for _ in range(clients)]
    try:
        assert server.stdout is not None and server.stdin is not None
        line = await deferToThread(server.stdout.readline)
        url = f"ws://127.0.0.1:{json.loads(line)['port']}/"
        t0 = time.monotonic()
        for start in range(0, clients, 100):
            opened = [
                HeartbeatClientFactory(
                    url,
                    h,
                    reactor=_reactor,
                    pingInterval=ping,
                    pongTimeout=pong,
                    initialDelay=0.5,
                    maxDelay=2,
                    openTimeout=10,
                ).connect()
                for h in handlers[start : start + 100]
            ]
            await defer.gatherResults(opened)
        openSeconds = time.monotonic() - t0
        await sleep(seconds)
        server.stdin.write("report\n")
        server.stdin.flush()
        line = await deferToThread(server.stdout.readline)
        report = json.loads(line)
    finally:
        for h in handlers:
            h.close()
        for h in handlers:
            await h.whenClosed()
        if server.stdin is not None:
            server.stdin.close()
        await deferToThread(server.wait, 10)
    report.update(
        clients=clients,
        seconds=seconds,
        openSeconds=round(openSeconds, 2),
        clientDeadPeers=sum(h.dead for h in handlers),
        clientsWithDeadPeer=sum(1 for h in handlers if h.dead),
        clientOpens=sum(h.stats.opens for h in handlers),
        clientOtherErrors=sum(len(h.otherErrors) for h in handlers),
        clientHeartbeats=sum(h.heartbeats for h in handlers),
    )
    print(f"\nstall load: {json.dumps(report)}")
    return report


def assertNoFalseVerdicts(report: Dict[str, Any], clients: int, seconds: float) -> None:
    # The scenario happened: the server stalled all along, and both ends sent heartbeats.
    assert report["stalls"] >= seconds - 1
    assert report["pingsSent"] > 0 and report["clientHeartbeats"] > 0
    # No false verdict on either end, and no connection lost for any reason.
    assert (report["clientDeadPeers"], report["deadClients"]) == (0, 0), report
    assert report["clientOtherErrors"] == 0, report
    assert report["clientOpens"] == clients and report["opened"] == clients and report["open"] == clients, report


@pytest_twisted.ensureDeferred
async def test_fifty_connections_to_a_stalling_server():
    """50 clients (heartbeat 0.5 s / pong 1 s) to a server process blocked 300 ms every second, for 8 s: no dead-peer verdict on either end.

    (Pong 1 s, not 0.5 s: with 0.3 s of slack, the server process descheduled a little longer on a shared machine was a
    verdict the library is right to give; the stall is still a third of the pong timeout, longer than a heartbeat round.)
    """
    report = await stallLoad(50, 8, ping=0.5, pong=1.0, stall=0.3)
    assertNoFalseVerdicts(report, 50, 8)


@pytest.mark.slow
@pytest_twisted.ensureDeferred
async def test_thousand_connections_to_a_stalling_server():
    """1,000 clients (heartbeat 1 s / pong 1 s) to a server process blocked 200 ms every second, for 60 s: no dead-peer verdict on either end."""
    report = await stallLoad(1000, 60, ping=1, pong=1)
    assertNoFalseVerdicts(report, 1000, 60)
