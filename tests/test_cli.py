"""The command line and the examples, run as real subprocesses."""

import base64
import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import pytest_twisted
from twisted.internet import defer, protocol

from txheartbeat import HeartbeatHandler, HeartbeatServerFactory, HeartbeatServerProtocol, connect

from .faultproxy import FaultProxy

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
TRIAL = "import sys; from twisted.scripts.trial import run; sys.argv[0] = 'trial'; run()"


def run(*args, env=ENV, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "txheartbeat", *args], capture_output=True, text=True, timeout=60, env=env, **kwargs
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
        ["connect", "ws://127.0.0.1:1/", "--open-timeout", "0"],
        ["connect", "http://not-a-websocket/"],
        ["serve", "--port", "70000"],
        ["serve", "--pong-timeout", "soon"],
        ["serve", "--resume", "--resume-window", "0"],
        ["serve", "--resume", "--resume-window", "inf"],
        ["serve", "--resume", "--resume-window", "soon"],
        ["serve", "--resume-window", "5"],
        ["serve", "--allowed-origin", " "],
        ["serve", "--metrics-port", "70000"],
        ["serve", "--metrics-port", "many"],
        ["serve", "--session-store", "redis://127.0.0.1:6379/0"],
        ["serve", "--resume", "--session-store", "http://127.0.0.1:6379/0"],
        ["serve", "--resume", "--session-store", "redis://:pw@127.0.0.1:6379/db"],
        ["serve", "--durability", "batched"],
        ["serve", "--resume", "--session-store", "redis://h/0", "--durability", "fast"],
        ["serve", "--workers", "0"],
        ["serve", "--workers", "2", "--metrics-port", "9100"],
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
        # End of input once a heartbeat went by and was answered (read, not slept for).
        watchdog = threading.Timer(30, client.kill)
        watchdog.start()
        lines = []
        while "heartbeat" not in lines[2:]:
            line = client.stdout.readline()
            assert line, f"no heartbeat answer within 30 s: {lines}"
            lines.append(line.rstrip("\n"))
        watchdog.cancel()
        out, err = client.communicate("", timeout=30)
        assert client.returncode == 0, err
        lines += out.splitlines()
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


@pytest.mark.parametrize(
    "lines, said",
    [("", "nothing was sent"), ("one\ntwo\n", "2 queued message(s) were not sent")],
)
def test_connect_eof_and_never_opens_says_so_exit_1(lines, said):
    """Input that ends while nothing listens waits --open-timeout for the open, then closes for good, says what was not sent, and exits 1."""
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "txheartbeat", "connect", f"ws://127.0.0.1:{port}/", "--open-timeout", "0.5"],
        input=lines,
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
    )
    assert result.returncode == 1, result.stderr
    err = result.stderr.splitlines()
    assert err[0] == f"* connecting to ws://127.0.0.1:{port}/"
    assert "* input ended; waiting up to 0.5 s for the open" in err
    assert err[-1] == f"* the connection did not open within 0.5 s of the end of input; {said}"
    assert result.stdout == ""


@pytest.mark.parametrize("via", ["pipe", "file"])
def test_connect_sends_input_that_ended_before_the_open_exit_0(tmp_path, via):
    """Input that ends before the connection opens (`echo ... | txheartbeat connect URL`, or `< file`) is sent at the open, then the client closes cleanly and exits 0."""
    lines = "hello\nworld\n"
    path = tmp_path / "lines.txt"
    path.write_text(lines)
    with Server() as server, open(path) as file:
        stdin = {"input": lines} if via == "pipe" else {"stdin": file}
        result = subprocess.run(
            [sys.executable, "-m", "txheartbeat", "connect", server.url],
            capture_output=True,
            text=True,
            timeout=30,
            env=ENV,
            **stdin,
        )
        server.expect("closed (clean=True, code=1000)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["hello", "world"]
    err = result.stderr.splitlines()
    assert err[-1] == "* closed (clean=True, code=1000)", result.stderr
    assert "* open" in err and "not sent" not in result.stderr


def test_connect_says_where_without_credentials():
    """`connect` first says where it connects, with the URL's credentials and query left out."""
    port = free_port()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "txheartbeat",
            "connect",
            f"ws://alice:s3cret@127.0.0.1:{port}/feed?token=t0ken",
            "--max-retries",
            "0",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
    )
    assert result.returncode == 1
    assert result.stderr.splitlines()[0] == f"* connecting to ws://127.0.0.1:{port}/feed"
    for secret in ("alice", "s3cret", "t0ken"):
        assert secret not in result.stdout + result.stderr


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
        # (trial's own entry point, which Twisted before 23 finds through pkg_resources)
        [sys.executable, "-c", TRIAL, "--temp-directory", str(tmp_path / "trial"), "tests.trial_unit"],
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
    """`python -m txheartbeat ARGS`, or with ``args[0]`` a path ending in ``.py``, `python PATH ARGS...`."""
    from twisted.internet import reactor

    process = Process()
    command = list(args) if args and args[0].endswith(".py") else ["-m", "txheartbeat", *args]
    transport = reactor.spawnProcess(process, sys.executable, [sys.executable, *command], env=ENV, path=str(ROOT))
    return process, transport


async def serving(process: Process, fd: int) -> str:
    """The ``ws://`` URL a server process says it serves (on ``fd``), once it says so."""
    await process.expect(fd, "serving ws://")
    line = next(line for line in process.lines[fd] if "serving ws://" in line)
    return re.search(r"ws://[^/\s]+/", line).group(0)


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
        #: ``(wasClean, code)`` of every connection that closed, in order
        self.closes: List[Tuple[bool, int]] = []
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
        self.closes.append((wasClean, code))
        self._event("onClose")


@pytest_twisted.ensureDeferred
async def test_serve_resume_narrates_sessions(monkeypatch):
    """`serve --resume` says on stderr when a session is created, resumed after an abrupt drop, closed and expired, by its public id and never its token."""
    from twisted.internet import reactor

    import txheartbeat._protocol

    # Frames wait in Twisted's write buffer (as without writeNow), so that the drop below really loses one.
    monkeypatch.setattr(txheartbeat._protocol, "_PLAIN_TCP", ())

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


# connect --json ------------------------------------------------------------------------


class Greeter(HeartbeatServerProtocol):
    """Greets each client with a text and a binary message, then echoes."""

    def onOpen(self) -> None:
        self.sendMessage(b"hello", False)
        self.sendMessage(b"\x00\xffbinary", True)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)


JSON_EVENTS = [
    "connecting",
    "open",
    "message",
    "heartbeat",
    "close",
    "error",
    "reconnect",
    "sessionLost",
    "giveUp",
    "notSent",
    "inputEnded",
]


def events(lines: List[str]) -> List[dict]:
    return [json.loads(line) for line in lines]


@pytest_twisted.ensureDeferred
async def test_connect_json_prints_every_event_as_a_json_line():
    """`connect --json` prints each event as one JSON line on stdout (text messages as text, binary as base64) and nothing on stderr."""
    from twisted.internet import reactor
    from twisted.internet.error import ProcessDone

    factory = HeartbeatServerFactory(pingInterval=None)
    factory.protocol = Greeter
    listening = reactor.listenTCP(0, factory, interface="127.0.0.1")
    url = f"ws://127.0.0.1:{listening.getHost().port}/"
    client, transport = spawn("connect", url, "--json", "--ping-interval", "0.2")
    try:
        await client.expect(1, '"event": "heartbeat"')
        transport.write(b"hi\n")
        await client.expect(1, '"text": "hi"')
        transport.closeStdin()
        assert isinstance(await client.ended, ProcessDone), client.output()
    finally:
        await stop(client, transport)
        await listening.stopListening()
    got = events(client.lines[1])
    assert got[:2] == [{"event": "connecting", "url": url}, {"event": "open", "resumed": False}]
    assert {"event": "message", "text": "hello"} in got
    assert {"event": "message", "binary": base64.b64encode(b"\x00\xffbinary").decode()} in got
    assert {"event": "message", "text": "hi"} in got
    beats = [e for e in got if e["event"] == "heartbeat"]
    assert beats and all(set(e) == {"event", "roundTrip"} and e["roundTrip"] >= 0 for e in beats)
    assert got[-2:] == [
        {"event": "inputEnded", "beforeOpen": False, "unsent": 0},
        {"event": "close", "clean": True, "code": 1000, "reason": None},
    ]
    assert client.lines[2] == [], client.output()


def test_connect_json_reports_retries_and_giving_up():
    """`connect --json --max-retries 1` to a closed port prints error, reconnect, error and giveUp lines and exits 1."""
    port = free_port()
    with Running("connect", f"ws://127.0.0.1:{port}/", "--json", "--max-retries", "1", stdin=subprocess.PIPE) as client:
        client.proc.stdin.write("queued\n")  # read long before the retry, about a second later, fails
        client.proc.stdin.flush()
        assert client.proc.wait(30) == 1
    got = events(client.finished(1))
    assert [e["event"] for e in got] == ["connecting", "error", "reconnect", "error", "giveUp"], got
    assert got[2]["attempt"] == 1 and got[2]["delay"] > 0
    assert "refused" in got[1]["error"] and "refused" in got[4]["reason"]
    assert got[4]["unsent"] == 1
    assert client.lines[2] == []


def test_connect_help_documents_the_json_events():
    """`connect --help` names every event `--json` prints, and the exit statuses."""
    result = run("connect", "--help")
    assert result.returncode == 0
    for event in JSON_EVENTS:
        assert re.search(rf"^  {event} ", result.stdout, re.M), event
    assert "exit status" in result.stdout


@pytest_twisted.ensureDeferred
async def test_connect_json_reports_a_lost_session():
    """`connect --resume --json` reports a session the restarted server no longer knows as sessionLost, then opens afresh."""
    from twisted.internet import reactor

    first = HeartbeatServerFactory(resume=True, pingInterval=None)
    listening = reactor.listenTCP(0, first, interface="127.0.0.1")
    port = listening.getHost().port
    client, transport = spawn("connect", f"ws://127.0.0.1:{port}/", "--resume", "--json")
    try:
        await client.expect(1, '"event": "open"')
        # The server restarts: the new one, on the same port, knows nothing of the session.
        await listening.stopListening()
        for connection in list(first.clients):
            connection.transport.abortConnection()
        listening = reactor.listenTCP(port, HeartbeatServerFactory(resume=True), interface="127.0.0.1")
        await client.expect(1, '"event": "open"', count=2)
        transport.closeStdin()
        await client.ended
    finally:
        await stop(client, transport)
        await listening.stopListening()
    got = events(client.lines[1])
    assert {"event": "sessionLost", "unacked": 0} in got
    names = [e["event"] for e in got]
    assert names.index("close") < names.index("sessionLost") < len(names) - 1 - names[::-1].index("open")
    assert [e for e in got if e["event"] == "open"] == [{"event": "open", "resumed": False}] * 2


# serve: origins and metrics ---------------------------------------------------------------


class Running:
    """A `txheartbeat` subprocess whose output lines threads collect; :meth:`expect` waits for one (with a deadline)."""

    def __init__(self, *args: str, stdin=subprocess.DEVNULL, env=None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "txheartbeat", *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env or ENV,
        )
        self.lines: Dict[int, List[str]] = {1: [], 2: []}
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(fd, stream), daemon=True)
            for fd, stream in ((1, self.proc.stdout), (2, self.proc.stderr))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, fd: int, stream) -> None:
        for line in stream:
            with self._changed:
                self.lines[fd].append(line.rstrip("\n"))
                self._changed.notify_all()

    def expect(self, needle: str, fd: int = 2, timeout: float = 15.0) -> str:
        """The first line of ``fd`` that contains ``needle``, once there is one."""
        with self._changed:
            line = self._changed.wait_for(lambda: next((x for x in self.lines[fd] if needle in x), None), timeout)
        if line is None:
            raise AssertionError(f"no {needle!r} on fd {fd} within {timeout} s: {self.lines}")
        return line

    def finished(self, fd: int) -> List[str]:
        """All of ``fd``'s lines, once the process has ended."""
        self.proc.wait(30)
        self._readers[fd - 1].join(10)
        return self.lines[fd]

    def stop(self) -> None:
        """End the process (SIGTERM, SIGKILL after 10 s) and wait for it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        for reader in self._readers:
            reader.join(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class Server(Running):
    """`txheartbeat serve --port 0 ARGS`, once it listens: ``port``, ``url``, ``banner`` (its first line), ``metricsPort``."""

    def __init__(self, *args: str, **kwargs) -> None:
        super().__init__("serve", "--port", "0", *args, **kwargs)
        try:
            self.banner = self.expect("serving")
            scheme, port = re.search(r"(wss?)://127\.0\.0\.1:(\d+)/", self.banner).groups()
            self.port = int(port)
            self.url = f"{scheme}://127.0.0.1:{self.port}/"
            self.expect("status page:")
            self.metricsPort = None
            if "--metrics-port" in args:
                self.metricsPort = int(re.search(r":(\d+)/metrics", self.expect("metrics:")).group(1))
        except BaseException:
            self.stop()
            raise


def wsconnect(url: str, **kwargs):
    """A blocking WebSocket client (python-websockets), never through a proxy."""
    from websockets.sync.client import connect as wsConnect

    return wsConnect(url, proxy=None, open_timeout=10, **kwargs)


def httpGet(url: str) -> Tuple[int, Dict[str, str], str]:
    """Status, headers (lowercased names) and body of a GET, never through a proxy; error statuses included."""
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read().decode()


def handshake(port: int, origin=None, path: str = "/") -> str:
    """The status line a raw WebSocket upgrade request (with that ``Origin``, if any) is answered with."""
    from .test_origins import request

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request(port, origin, path))
        return s.makefile("rb").readline().decode().strip()


def test_serve_metrics_port_is_scraped():
    """`serve --metrics-port` serves the server's counters at /metrics: a connected client counts, a status viewer does not."""
    with Server("--metrics-port", "0") as server:
        with wsconnect(server.url) as client, wsconnect(server.url + "_status") as viewer:
            client.send("heartbeat")
            assert client.recv(timeout=10) == "heartbeat"
            viewer.recv(timeout=10)  # (open)
            status, headers, text = httpGet(f"http://127.0.0.1:{server.metricsPort}/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert 'txheartbeat_server_clients{server="serve"} 1.0' in text
    assert 'txheartbeat_server_opened_total{server="serve"} 1.0' in text
    assert 'txheartbeat_server_heartbeats_answered_total{server="serve"} 1.0' in text


def test_serve_metrics_port_without_prometheus_client_exit_2(tmp_path):
    """`serve --metrics-port` without prometheus-client says which extra to install, in one line, and exits 2."""
    fake = tmp_path / "prometheus_client"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('No module named prometheus_client')\n")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    result = run("serve", "--port", "0", "--metrics-port", "0", env=env)
    assert result.returncode == 2
    assert result.stderr == (
        "txheartbeat: error: --metrics-port needs prometheus-client: pip install 'txheartbeat[prometheus]'\n"
    )


def test_serve_metrics_port_in_use_exit_1():
    """`serve --metrics-port` on a port already taken says so and exits 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("serve", "--port", "0", "--metrics-port", str(port))
    assert result.returncode == 1
    assert f"txheartbeat: error: cannot listen on 127.0.0.1:{port} for metrics" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_allowed_origin_refuses_others_with_403():
    """`serve --allowed-origin` (repeatable) lets pages from those origins open a WebSocket and refuses others with 403."""
    args = ["--allowed-origin", "https://app.example.com", "--allowed-origin", "http://localhost:*"]
    with Server(*args) as server:
        assert "origins: https://app.example.com, http://localhost:* only" in server.banner
        assert handshake(server.port, "https://app.example.com").startswith("HTTP/1.1 101")
        assert handshake(server.port, "http://localhost:8080").startswith("HTTP/1.1 101")
        assert handshake(server.port).startswith("HTTP/1.1 101")  # no Origin: not a browser
        assert handshake(server.port, "https://evil.example.com").startswith("HTTP/1.1 403")
        assert handshake(server.port, "null").startswith("HTTP/1.1 403")
        server.expect("refused: origin 'https://evil.example.com' not allowed")


def test_serve_allows_every_origin_by_default():
    """Without `--allowed-origin`, `serve` says every origin is allowed, and opens for any, null included."""
    with Server() as server:
        assert "origins: any, null included" in server.banner
        assert handshake(server.port, "https://evil.example.com").startswith("HTTP/1.1 101")
        assert handshake(server.port, "null").startswith("HTTP/1.1 101")


# The examples -------------------------------------------------------------------------------

EXAMPLES = ROOT / "examples"


def test_every_example_is_run_by_a_test():
    """Each file in examples/ is named by a test that runs it (or imports and drives it)."""
    tests = "\n".join(path.read_text() for path in (ROOT / "tests").glob("test_*.py"))
    for example in sorted(EXAMPLES.iterdir()):
        assert f'"{example.name}"' in tests, f"no test runs examples/{example.name}"


@pytest_twisted.ensureDeferred
async def test_server_example_pushes_relays_and_restarts_gracefully():
    """examples/server.py pushes ticks to every client, relays what one sends, and on SIGTERM closes them with 1012 and exits 0 once they are gone."""
    from twisted.internet import reactor
    from twisted.internet.error import ProcessDone

    server, transport = spawn(str(EXAMPLES / "server.py"), "0")
    client = Client()
    try:
        url = await serving(server, 1)
        await connect(url, client, reactor=reactor, pingInterval=None, maxRetries=0)
        while not any(echo.startswith(b"tick ") for echo in client.echoes):
            await client.next("onMessage")
        relayed = client.next("onMessage")
        client.send("to everyone")
        await relayed
        while b"to everyone" not in client.echoes:
            await client.next("onMessage")
        closed = client.next("onClose")
        transport.signalProcess("TERM")
        await closed
        assert client.closes == [(True, 1012)]
        assert isinstance(await server.ended, ProcessDone), server.output()
    finally:
        client.close()
        await stop(server, transport)
    out = server.lines[1]
    assert any(line.endswith("joined (1 connected)") for line in out), server.output()
    assert out[-1] == "every client has left; stopping", server.output()


@pytest_twisted.ensureDeferred
async def test_client_example_prints_events_and_says_why_it_reconnects():
    """examples/client.py against `txheartbeat serve`: says hello at the open, prints the echo, and when the server restarts says why it reconnects (close 1012); SIGTERM ends it cleanly."""
    from twisted.internet.error import ProcessDone

    server, serverTransport = spawn("serve", "--port", "0")
    client = clientTransport = None
    try:
        url = await serving(server, 2)
        client, clientTransport = spawn(str(EXAMPLES / "client.py"), url)
        await client.expect(1, "message: hello 1 from examples/client.py")
        await stop(server, serverTransport)  # SIGTERM: serve closes its clients with 1012
        await client.expect(1, "closed (clean=True, code=1012)")
        await client.expect(1, "reconnecting in")
        clientTransport.signalProcess("TERM")
        assert isinstance(await client.ended, ProcessDone), client.output()
    finally:
        if client is not None:
            await stop(client, clientTransport)
        await stop(server, serverTransport)
    reconnect = next(line for line in client.lines[1] if line.startswith("reconnecting in"))
    assert re.fullmatch(r"reconnecting in \d+\.\d\d s \(attempt 1\): connection closed \(code 1012: .*\)", reconnect)


def test_serve_with_redis_down_is_one_line_exit_1_without_the_password():
    """serve --session-store with no Redis there exits 1 with one line naming where, credentials redacted."""
    result = run("serve", "--port", "0", "--resume", "--session-store", f"redis://u:hunter2@127.0.0.1:{free_port()}/0")
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("txheartbeat: error:")]
    assert len(lines) == 1 and "cannot use Redis at redis://***@127.0.0.1" in lines[0]
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr
