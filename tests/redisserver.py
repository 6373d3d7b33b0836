"""
A real ``redis-server`` for the tests: started on a free loopback port in a
temporary directory, waited for by its "Ready to accept connections" log
line (never a sleep), stopped (or killed with a real signal) by the test.

Tests that need it use the ``redis`` fixture (tests/conftest.py), which skips
with the reason when the ``redis-server`` program is missing (Debian:
``apt-get install redis-server``; ``.ci/run`` installs it).
"""

import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import List, Optional

#: what redis-server prints once it listens (Redis 5 to 7)
READY = b"Ready to accept connections"
#: how long a start may take before the test fails (a failure, not a wait: the log line ends it)
START_TIMEOUT = 20.0


def missing() -> Optional[str]:
    """Why no redis-server can be started here, or ``None``."""
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install redis-server; .ci/run installs it)"
    return None


def freePort() -> int:
    """A loopback port nothing listens on now (redis-server cannot take port 0 and say which it got)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process of the tests' own, on ``127.0.0.1:port``."""

    process: Optional["subprocess.Popen[bytes]"] = None

    def __init__(self, persistent: bool = False, password: Optional[str] = None) -> None:
        #: clients must log in with this password (``requirepass``)
        self.password = password
        #: keep the data in an append-only file (fsync every second), so that a restart keeps it
        self.persistent = persistent
        self.directory = tempfile.mkdtemp(prefix="txheartbeat-redis-")
        self.port = 0
        self.log: List[bytes] = []

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (``redis://:PASSWORD@...`` with a password)"""
        login = f":{self.password}@" if self.password is not None else ""
        return f"redis://{login}127.0.0.1:{self.port}/0"

    def start(self, port: Optional[int] = None) -> None:
        """
        Start (again, on the same port when ``port`` is given) and return once
        it accepts connections.  A port taken in between by someone else is
        retried on another, unless ``port`` was asked for.
        """
        for _ in range(5):
            self.port = port if port is not None else freePort()
            if self._spawn():
                return
            if port is not None:
                break
        raise RuntimeError("redis-server did not start:\n" + b"".join(self.log[-20:]).decode(errors="replace"))

    def _spawn(self) -> bool:
        # No snapshots, and an append-only file only if asked: the tests' Redis keeps what it has in memory.
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.directory]
        args += ["--save", "", "--appendonly", "yes" if self.persistent else "no", "--appendfsync", "everysec"]
        args += ["--daemonize", "no", "--loglevel", "notice"]
        if self.password is not None:
            args += ["--requirepass", self.password]
        process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert process.stdout is not None
        deadline = time.monotonic() + START_TIMEOUT
        pending = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([process.stdout], [], [], deadline - time.monotonic())
            if not ready:
                break
            chunk = os.read(process.stdout.fileno(), 65536)
            if not chunk:  # it exited (port taken, bad option)
                break
            self.log.append(chunk)
            pending += chunk
            if READY in pending:
                self.process = process
                return True
            pending = pending[-len(READY) :]
        process.kill()
        process.wait()
        return False

    def signal(self, number: int) -> None:
        """Send a real signal (SIGKILL, SIGSTOP, SIGCONT...) to the running server."""
        assert self.process is not None
        self.process.send_signal(number)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it lingers) and wait for it to exit."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        assert process.stdout is not None
        process.stdout.close()

    def close(self) -> None:
        """Stop the server and remove its directory."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class ReplyError(Exception):
    """Redis answered with an error (``-ERR ...``); ``args[0]`` is its text."""


class Client:
    """A blocking RESP2 client for the tests' own checks (not the library's client)."""

    def __init__(self, port: int) -> None:
        self.socket = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = self.socket.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.socket.close()

    def call(self, *words: object) -> object:
        """Send one command (words as str, bytes or int) and return its reply (bytes, int, list, None)."""
        encoded = [w if isinstance(w, bytes) else str(w).encode() for w in words]
        self.socket.sendall(b"*%d\r\n" % len(encoded) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w) for w in encoded))
        return self._reply()

    def _reply(self) -> object:
        line = self.reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("redis-server closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest
        if kind == b"-":
            raise ReplyError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            if int(rest) < 0:
                return None
            data = self.reader.read(int(rest) + 2)
            return data[:-2]
        if kind == b"*":
            return None if int(rest) < 0 else [self._reply() for _ in range(int(rest))]
        raise ValueError(f"not a RESP2 reply: {line!r}")
