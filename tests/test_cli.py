"""The command line and the examples, run as real subprocesses."""

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import pytest_twisted
from twisted.internet import defer, protocol

from txheartbeat import HeartbeatHandler, connect

from .faultproxy import FaultProxy

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "txheartbeat", *args], capture_output=True, text=True, timeout=60, env=ENV, **kwargs
    )


def test_demo_keeps_every_promise():
    """`txheartbeat demo` narrates heartbeats, a dead peer, reconnects, queued delivery and a session resumed through a drop, and exits 0."""
    result = run("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for needle in [
        "heartbeat answered",
        "DEAD PEER detected",
        "reconnecting in",
        "RESTARTED",
        "queued message was delivered",
        "code=1000",
        "created",
        "all 100 numbers echoed exactly once, in order",
        "closed by the client",
    ]:
        assert needle in out
    (unacked,) = re.findall(r"dropped mid-stream with (\d+) unacknowledged", out)
    (replayed,) = re.findall(r"client: resumed: (\d+) replayed", out)
    (echoes,) = re.findall(r"session \w+ resumed: (\d+) echo\(es\) replayed", out)
    assert int(unacked) > 0 and int(replayed) > 0 and int(echoes) > 0, out
    assert out.index("dropped mid-stream") < out.index("resumed:") < out.index("exactly once")
    assert out.splitlines()[-1].endswith("] all promises kept")


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["bogus"],
        ["connect"],
        ["connect", "ws://127.0.0.1:1/", "--ping-interval", "0"],
        ["connect", "ws://127.0.0.1:1/", "--max-retries", "-1"],
        ["connect", "http://not-a-websocket/"],
        ["serve", "--port", "70000"],
        ["serve", "--pong-timeout", "soon"],
        ["serve", "--resume", "--resume-window", "0"],
        ["serve", "--resume", "--resume-window", "inf"],
        ["serve", "--resume", "--resume-window", "soon"],
        ["serve", "--resume-window", "5"],
    ],
)
def test_bad_arguments_one_line_exit_2(args):
    """Bad arguments print one error line and exit 2, never a traceback."""
    result = run(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("txheartbeat: error:")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_and_connect_round_trip():
    """`connect` sends stdin lines to `serve`, prints the echoes, and exits 0 after a clean close at end of input."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "txheartbeat", "serve", "--port", str(port)], stderr=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert "serving" in server.stderr.readline()
        client = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "txheartbeat",
                "connect",
                f"ws://127.0.0.1:{port}/",
                "--ping-message",
                "heartbeat",
                "--ping-interval",
                "0.2",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        client.stdin.write("first line\nsecond line\n")
        client.stdin.flush()
        time.sleep(0.8)  # let a few heartbeats go by before end of input
        out, err = client.communicate("", timeout=30)
        assert client.returncode == 0, err
        lines = out.splitlines()
        assert lines[:2] == ["first line", "second line"]
        assert "heartbeat" in lines[2:]  # the server answered the seed heartbeat
        assert "* open" in err and "closed (clean=True, code=1000)" in err
    finally:
        server.terminate()
        server.wait(10)


def test_connect_gives_up_exit_1():
    """`connect --max-retries 0` to a closed port reports the error, gives up and exits 1 with stdin still open."""
    port = free_port()
    client = subprocess.Popen(
        [sys.executable, "-m", "txheartbeat", "connect", f"ws://127.0.0.1:{port}/", "--max-retries", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert client.wait(30) == 1
        err = client.stderr.read()
    finally:
        client.stdin.close()
        client.stdout.close()
        client.stderr.close()
    assert "refused" in err and "giving up" in err


def test_connect_eof_before_open_closes_quietly():
    """End of input before the connection opens closes for good and exits 0."""
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "txheartbeat", "connect", f"ws://127.0.0.1:{port}/"],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr


def test_examples_run():
    """The self-contained example runs to completion and the other one imports."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "server_asks_to_close.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr
    assert "('closed', True, 1000)" in result.stdout
    result = subprocess.run(
        [sys.executable, "-c", "import runpy; runpy.run_path('examples/client.py', run_name='x')"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr


def test_unit_tests_run_under_trial(tmp_path):
    """The clock-driven unit tests also pass under Twisted's trial."""
    result = subprocess.run(
        [sys.executable, "-m", "twisted.trial", "--temp-directory", str(tmp_path / "trial"), "tests.trial_unit"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "PASSED" in result.stdout


def test_readme_testing_example_runs():
    """The README's txheartbeat.testing example runs as written."""
    text = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    (example,) = [b for b in blocks if "MemoryReactor()" in b]
    exec(compile(example, "README.md", "exec"), {})


def test_resume_window_needs_resume():
    """`serve --resume-window` without `--resume` says what to add instead of silently ignoring the window."""
    result = run("serve", "--resume-window", "5")
    assert result.returncode == 2
    assert "--resume-window needs --resume" in result.stderr


# Session resume through the command line ------------------------------------------------


class Process(protocol.ProcessProtocol):
    """A subprocess's stdout (fd 1) and stderr (fd 2) as lines; tests wait for the lines they expect."""

    def __init__(self) -> None:
        self.lines: Dict[int, List[str]] = {1: [], 2: []}
        self._partial: Dict[int, bytes] = {1: b"", 2: b""}
        self._waiting: List[Tuple[int, str, int, defer.Deferred]] = []
        self.ended: defer.Deferred = defer.Deferred()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        *lines, self._partial[fd] = (self._partial[fd] + data).split(b"\n")
        self.lines[fd].extend(line.decode("utf-8", "replace") for line in lines)
        for waiter in list(self._waiting):
            if self._count(*waiter[:2]) >= waiter[2]:
                self._waiting.remove(waiter)
                if not waiter[3].called:  # (timed out already)
                    waiter[3].callback(None)

    def _count(self, fd: int, needle: str) -> int:
        return sum(needle in line for line in self.lines[fd])

    def output(self) -> str:
        return "\n".join(["stdout:", *self.lines[1], "stderr:", *self.lines[2]])

    async def expect(self, fd: int, needle: str, count: int = 1, timeout: float = 15.0) -> None:
        """Wait until ``count`` lines of ``fd`` contain ``needle``."""
        from twisted.internet import reactor

        if self._count(fd, needle) >= count:
            return
        d: defer.Deferred = defer.Deferred()
        self._waiting.append((fd, needle, count, d))
        try:
            await d.addTimeout(timeout, reactor)
        except defer.TimeoutError:
            raise AssertionError(f"no {needle!r} (x{count}) on fd {fd} within {timeout} s:\n{self.output()}") from None

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value)


def spawn(*args: str) -> Tuple[Process, object]:
    from twisted.internet import reactor

    process = Process()
    transport = reactor.spawnProcess(process, sys.executable, [sys.executable, "-m", "txheartbeat", *args], env=ENV)
    return process, transport


async def stop(process: Process, transport) -> None:
    """End a spawned process (SIGTERM, SIGKILL after 10 s) and wait for it."""
    from twisted.internet import reactor
    from twisted.internet.error import ProcessExitedAlready

    if process.ended.called:
        return
    try:
        transport.signalProcess("TERM")
    except ProcessExitedAlready:
        pass
    killer = reactor.callLater(10, transport.signalProcess, "KILL")
    try:
        await process.ended
    finally:
        if killer.active():
            killer.cancel()


class Client(HeartbeatHandler):
    """A resume client in the test process: records echoes; ``next(hook)`` fires at the next such hook."""

    def __init__(self) -> None:
        super().__init__()
        self.echoes: List[bytes] = []
        self._waiting: Dict[str, List[defer.Deferred]] = {}

    def next(self, hook: str) -> defer.Deferred:
        from twisted.internet import reactor

        d: defer.Deferred = defer.Deferred()
        self._waiting.setdefault(hook, []).append(d)
        return d.addTimeout(15, reactor)

    def _event(self, hook: str) -> None:
        for d in self._waiting.pop(hook, []):
            d.callback(None)

    def onOpen(self) -> None:
        self._event("onOpen")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.echoes.append(payload)
        self._event("onMessage")

    def onClose(self, wasClean, code, reason) -> None:
        self._event("onClose")


@pytest_twisted.ensureDeferred
async def test_serve_resume_narrates_sessions():
    """`serve --resume` says on stderr when a session is created, resumed after an abrupt drop, closed and expired, by its public id and never its token."""
    from twisted.internet import reactor

    port = free_port()
    url = f"ws://127.0.0.1:{port}/"
    server, transport = spawn("serve", "--port", str(port), "--resume", "--resume-window", "2")
    try:
        await server.expect(2, "resume: sessions kept 2 s")
        h = Client()
        await connect(
            url, h, reactor=reactor, resume=True, pingInterval=None, initialDelay=0.1, jitter=0, probeInterval=None
        )
        (token,) = re.findall(r"session=([^;\s]+)", h.protocol.http_headers["txheartbeat-resume"])
        echoed = h.next("onMessage")
        h.send("one")
        await echoed
        # Dropped with a message still in the client's write buffer: the server never gets it.
        reopened, echoed = h.next("onOpen"), h.next("onMessage")
        h.send("lost in the drop")
        h.protocol.transport.abortConnection()
        await reopened
        assert h.resumed and h.stats.replayed == 1
        await echoed
        assert h.echoes == [b"one", b"lost in the drop"]
        closed = h.next("onClose")
        h.close()
        await closed
        await server.expect(2, "closed by the client")

        # A client that never comes back: its session expires after the window.
        gone = Client()
        await connect(url, gone, reactor=reactor, resume=True, pingInterval=None)
        lost = gone.next("onClose")
        gone.protocol.transport.abortConnection()
        await lost
        gone.close()
        await server.expect(2, "expired")
    finally:
        await stop(server, transport)
    err = "\n".join(server.lines[2])
    ids = re.findall(r"session (\w+) created", err)
    assert len(ids) == 2 and all(re.fullmatch(r"[0-9a-f]{12}", i) for i in ids), err
    first, second = ids
    assert f"session {first} resumed, 0 message(s) replayed" in err
    assert f"session {first} closed by the client" in err
    assert f"session {second} expired (0 message(s) never acknowledged)" in err
    assert token not in err


class SwallowingProxy(FaultProxy):
    """A FaultProxy whose ``swallowed`` Deferred fires when it drops bytes bound for the server."""

    swallowed = None

    def _forward(self, source, data: bytes) -> None:
        if source.toServer and self.dropToServer and self.swallowed is not None:
            self.swallowed, d = None, self.swallowed
            d.callback(None)
        super()._forward(source, data)


@pytest_twisted.ensureDeferred
async def test_connect_resume_replays_what_a_drop_lost():
    """`connect --resume` comes back from a drop into the same session, says how many messages it replayed, and every line is echoed exactly once."""
    from twisted.internet import reactor
    from twisted.internet.error import ProcessDone

    port = free_port()
    server, serverTransport = spawn("serve", "--port", str(port), "--resume")
    client = clientTransport = proxy = None
    try:
        await server.expect(2, "serving")
        proxy = SwallowingProxy(port)
        client, clientTransport = spawn("connect", proxy.url, "--resume")
        await client.expect(2, "* open")
        clientTransport.write(b"before\n")
        await client.expect(1, "before")
        # The next line reaches the proxy and goes no further; then the connection is reset.
        proxy.swallowed = defer.Deferred()
        proxy.blackhole()
        clientTransport.write(b"during\n")
        await proxy.swallowed.addTimeout(15, reactor)
        proxy.heal()
        proxy.reset()
        await client.expect(2, "session resumed, 1 message(s) replayed")
        await client.expect(1, "during")
        clientTransport.closeStdin()
        assert isinstance(await client.ended, ProcessDone), client.output()
        await server.expect(2, "closed by the client")
    finally:
        if client is not None:
            await stop(client, clientTransport)
        await stop(server, serverTransport)
        if proxy is not None:
            await proxy.stop()
    assert client.lines[1] == ["before", "during"], client.output()
    assert client.lines[2].count("* open") == 2
    assert "session lost" not in client.output()
    err = "\n".join(server.lines[2])
    (sid,) = re.findall(r"session (\w+) created", err)
    assert f"session {sid} resumed, 0 message(s) replayed" in err
