"""
``txheartbeat serve --workers 2 --resume --session-store redis://...`` as
real processes (issue 18): a resumable client streams numbered messages
to the echo server while the worker that holds its session is killed
(SIGKILL), stopped (SIGSTOP, then SIGCONT) or restarted on purpose (SIGHUP:
a rolling restart).  Its session moves to the other worker every time:
nothing is lost, nothing arrives twice unless the server flagged it as
redelivered, and the order holds.
"""

from __future__ import annotations

import os
import signal
from typing import Any, List

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.task import LoopingCall

from txheartbeat import HeartbeatHandler, connect

from .redisserver import RedisServer
from .serveprocess import ServeProcess
from .test_resume_loopback import opened, until

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")

COUNT = 300  # numbered messages, at about 100/s
CLIENT = dict(
    pingInterval=0.3, pongTimeout=0.6, initialDelay=0.05, maxDelay=0.3, jitter=0, minUptime=0, probeInterval=0.05
)


class Numbers(HeartbeatHandler):
    def __init__(self) -> None:
        super().__init__()
        self.echoes: List[int] = []
        self.lost: List[Any] = []
        self.localPorts: List[int] = []

    def onOpen(self) -> None:
        self.localPorts.append(self.protocol.transport.getHost().port)  # type: ignore[union-attr]

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.echoes.append(int(payload))

    def onSessionLost(self, unacked: Any) -> None:
        self.lost.append(unacked)


async def serving(redis: RedisServer) -> ServeProcess:
    serve = ServeProcess(
        "--port",
        "0",
        "--resume",
        "--session-store",
        redis.url,
        "--workers",
        "2",
        "--ping-interval",
        "0.3",
        "--pong-timeout",
        "0.6",
        "--restart-window",
        "0.3",
    )
    await serve.line(r"all 2 workers ready")
    return serve


def urlOf(serve: ServeProcess) -> str:
    for text in serve.lines:
        if "with 2 workers" in text:
            return text.split()[2]
    raise AssertionError("no serving line")


async def holder(serve: ServeProcess, client: Numbers, after: int) -> int:
    """The worker the client's current connection is on (its "open" line names the client's port)."""
    match = await serve.line(rf"\[worker (\d+)\] tcp4:127\.0\.0\.1:{client.localPorts[-1]}: open", after)
    return int(match.group(1))


async def stream(serve: ServeProcess, disturb: Any) -> Numbers:
    client = Numbers()
    await opened(connect(urlOf(serve), client, resume=True, reactor=_reactor, **CLIENT))
    sent = [0]

    def tick() -> None:
        if sent[0] < COUNT:
            client.send(str(sent[0]))
            sent[0] += 1

    loop = LoopingCall(tick)
    loop.clock = _reactor
    loop.start(0.01)
    try:
        await disturb(client)
        await until(lambda: sent[0] >= COUNT, lambda: f"sent {sent[0]}", timeout=30)
        await until(
            lambda: set(client.echoes) >= set(range(COUNT)), lambda: f"{len(set(client.echoes))} echoed", timeout=30
        )
    finally:
        if loop.running:
            loop.stop()
    client.close()
    return client


def check(client: Numbers, serve: ServeProcess, duplicatesAllowed: bool) -> None:
    firsts = sorted(set(client.echoes), key=client.echoes.index)
    assert firsts == list(range(COUNT)), "out of order"
    assert client.lost == []
    duplicates = len(client.echoes) - COUNT
    flagged = sum("delivered again, flagged" in text for text in serve.lines)
    assert duplicates <= (flagged if duplicatesAllowed else 0), (duplicates, flagged)


@pytest_twisted.ensureDeferred
async def test_sigkill_of_the_worker_holding_the_session_twice(redis: RedisServer) -> None:
    """kill -9 of the worker holding the session, then of the one it moved to: nothing lost, order kept, duplicates only flagged ones."""
    serve = await serving(redis)
    moves: List[int] = []

    async def disturb(client: Numbers) -> None:
        for _ in range(2):
            await until(lambda: len(client.echoes) >= 50 * (len(moves) + 1), lambda: "echoes", timeout=30)
            start = len(serve.lines)
            worker = await holder(serve, client, 0)
            opens = len(client.localPorts)
            os.kill(serve.workers()[worker], signal.SIGKILL)
            await serve.line(rf"worker {worker} killed by signal 9", start)
            await until(lambda opens=opens: len(client.localPorts) > opens, lambda: "reconnect", timeout=30)
            moves.append(worker)

    try:
        client = await stream(serve, disturb)
    finally:
        await serve.stop()
    check(client, serve, duplicatesAllowed=True)
    assert sum("resumed" in text for text in serve.lines) >= 2


@pytest_twisted.ensureDeferred
async def test_sigstop_moves_the_session_and_fences_the_sleeper(redis: RedisServer) -> None:
    """SIGSTOP of the worker holding the session: the client moves to the other worker; at SIGCONT the sleeper learns it lost the session and writes nothing."""
    serve = await serving(redis)

    async def disturb(client: Numbers) -> None:
        await until(lambda: len(client.echoes) >= 50, lambda: "echoes", timeout=30)
        worker = await holder(serve, client, 0)
        opens = len(client.localPorts)
        pid = serve.workers()[worker]
        os.kill(pid, signal.SIGSTOP)
        try:
            await until(lambda: len(client.localPorts) > opens, lambda: "reconnect", timeout=30)
            assert await holder(serve, client, 0) != worker  # (the stopped one cannot accept)
        finally:
            start = len(serve.lines)
            os.kill(pid, signal.SIGCONT)
        await serve.line(rf"\[worker {worker}\] session \w+ taken over by another process", start)

    try:
        client = await stream(serve, disturb)
    finally:
        await serve.stop()
    check(client, serve, duplicatesAllowed=False)


@pytest_twisted.ensureDeferred
async def test_rolling_restart_exactly_once(redis: RedisServer) -> None:
    """SIGHUP restarts both workers one after the other (each hands its sessions over, then 1012): every message once, in order."""
    serve = await serving(redis)

    async def disturb(client: Numbers) -> None:
        await until(lambda: len(client.echoes) >= 50, lambda: "echoes", timeout=30)
        start = len(serve.lines)
        serve.signal(signal.SIGHUP)
        for worker in (1, 2):
            await serve.line(rf"worker {worker} exited", start)
        await serve.line(r"\[worker 2\] serving", start)

    try:
        client = await stream(serve, disturb)
    finally:
        await serve.stop()
    check(client, serve, duplicatesAllowed=False)
    assert len(client.localPorts) >= 2


@pytest_twisted.ensureDeferred
async def test_the_redis_password_is_on_no_command_line_and_in_no_output() -> None:
    """serve --workers with a password in the store's URL: the workers get it in their environment, never on their command lines (ps), and nothing prints it."""
    from .redisserver import missing

    if missing() is not None:
        pytest.skip(str(missing()))
    if not os.path.exists("/proc/self/cmdline"):
        pytest.skip("reads the workers' command lines in /proc (Linux)")
    secret = "s3cret-in-url"
    redis = RedisServer(password=secret)
    redis.start()
    serve = ServeProcess("--port", "0", "--resume", "--session-store", redis.url, "--workers", "2")
    try:
        await serve.line(r"all 2 workers ready")
        for pid in serve.workers().values():
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                words = cmdline.read().split(b"\0")
            assert b"--worker" in words and not any(secret.encode() in word for word in words)
        client = Numbers()
        await opened(connect(urlOf(serve), client, resume=True, reactor=_reactor, **CLIENT))
        await until(lambda: client.sessionAddress is not None, lambda: "a session kept in Redis")
        client.close()
    finally:
        await serve.stop()
        redis.close()
    assert not any(secret in line for line in serve.lines)
