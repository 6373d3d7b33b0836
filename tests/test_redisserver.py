"""
The tests' own redis-server (tests/redisserver.py): it really starts,
answers, restarts on its port, and is gone (process and directory) after.
"""

import os
import signal
import socket

import pytest

from tests.redisserver import RedisServer, missing


def command(port: int, *words: str) -> bytes:
    """Send one RESP command to 127.0.0.1:port and return the first reply line."""
    request = b"*%d\r\n" % len(words) + b"".join(b"$%d\r\n%s\r\n" % (len(w), w.encode()) for w in words)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            reply += chunk
    return reply


def refused(port: int) -> bool:
    """Whether nothing accepts on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_missingSaysWhatToInstall(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without redis-server on PATH the skip reason names the package to install."""
    monkeypatch.setenv("PATH", "/nonexistent")
    reason = missing()
    assert reason is not None and "apt-get install redis-server" in reason


def test_answersThenGoneWithItsDirectory(redis: RedisServer) -> None:
    """The fixture's server answers PING on its own port and keeps its files in its own directory."""
    assert command(redis.port, "PING") == b"+PONG\r\n"
    assert command(redis.port, "CONFIG", "GET", "dir").startswith(b"*2\r\n")
    assert os.path.isdir(redis.directory)
    assert redis.url == f"redis://127.0.0.1:{redis.port}/0"


def test_closeStopsTheProcessAndRemovesTheDirectory() -> None:
    """close() ends the process (its port refuses) and removes the temporary directory."""
    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    server = RedisServer()
    server.start()
    process = server.process
    assert process is not None
    server.close()
    assert process.returncode is not None
    assert refused(server.port)
    assert not os.path.exists(server.directory)


def test_killedThenRestartedOnItsPortIsEmpty(redis: RedisServer) -> None:
    """After SIGKILL the port refuses; started again on the same port it answers, with nothing kept (no persistence)."""
    assert command(redis.port, "SET", "k", "v") == b"+OK\r\n"
    port = redis.port
    process = redis.process
    assert process is not None
    redis.signal(signal.SIGKILL)
    process.wait(10)
    assert refused(port)
    redis.stop()
    redis.start(port)
    assert redis.port == port
    assert command(port, "GET", "k") == b"$-1\r\n"


def test_stoppedServerStillStops(redis: RedisServer) -> None:
    """A SIGSTOPped server is still ended by stop() (it is sent SIGCONT first)."""
    redis.signal(signal.SIGSTOP)
    process = redis.process
    assert process is not None
    redis.stop()
    assert process.returncode is not None
