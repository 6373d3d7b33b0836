"""Interop with a peer nobody here wrote: python-websockets, in a subprocess on loopback."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet import threads

from txheartbeat import HeartbeatServerFactory, HeartbeatServerProtocol, HeartbeatTimeout, connect

from .test_integration import Waiter

PEER = str(Path(__file__).parent / "peers" / "ws_peer.py")


def spawn(*args):
    return subprocess.Popen([sys.executable, PEER, *args], stdout=subprocess.PIPE, text=True)


def stop(proc):
    os.kill(proc.pid, signal.SIGCONT)
    proc.kill()
    proc.wait(10)
    proc.stdout.close()


@pytest_twisted.ensureDeferred
async def test_client_against_websockets_server():
    """The txheartbeat client talks to a python-websockets server, gets its pings answered, and detects it when the process freezes."""
    peer = spawn("server")
    h = Waiter()
    try:
        line = await threads.deferToThread(peer.stdout.readline)
        port = int(line.split()[1])
        await connect(f"ws://127.0.0.1:{port}/", h, pingInterval=0.2, pongTimeout=0.3, initialDelay=5, maxDelay=5)
        h.send("hi")
        (payload,) = await h.next("onMessage")
        assert payload == b"hi"
        await h.next("onHeartbeat")  # RFC ping answered by python-websockets
        assert h.stats.latency is not None
        last = h.protocol.heartbeat.lastTraffic
        os.kill(peer.pid, signal.SIGSTOP)  # TCP stays open, nothing answers
        (error,) = await h.next("onError")
        assert isinstance(error, HeartbeatTimeout)
        assert _reactor.seconds() - last >= 0.5
    finally:
        h.close()
        stop(peer)
        await h.whenClosed()


class Recording(HeartbeatServerProtocol):
    opened = 0
    reaped = 0
    messages: list = []

    def onOpen(self):
        Recording.opened += 1

    def onMessage(self, payload, isBinary):
        Recording.messages.append(payload)
        self.sendMessage(payload, isBinary)

    def onPeerDead(self, failure):
        Recording.reaped += 1


@pytest_twisted.ensureDeferred
async def test_websockets_client_against_server():
    """A python-websockets client gets its 'heartbeat' answered (not forwarded) and is reaped when its process freezes."""
    Recording.messages = []
    factory = HeartbeatServerFactory(pingInterval=0.2, pongTimeout=0.3)
    factory.protocol = Recording
    port = _reactor.listenTCP(0, factory, interface="127.0.0.1")
    peer = spawn("client", f"ws://127.0.0.1:{port.getHost().port}/")
    try:
        lines = [await threads.deferToThread(peer.stdout.readline) for _ in range(3)]
        assert [x.strip() for x in lines] == ["heartbeat", "hello", "IDLE"]
        assert Recording.messages == [b"hello"]
        os.kill(peer.pid, signal.SIGSTOP)
        for _ in range(100):
            if factory.deadClients:
                break
            await threads.deferToThread(lambda: __import__("time").sleep(0.05))
        assert factory.deadClients == 1 and not factory.clients
    finally:
        stop(peer)
        await port.stopListening()


@pytest.fixture(scope="module")
def heartbeatJs(tmp_path_factory):
    """websocket-heartbeat-js 1.1.3 and ws, installed from the npm registry into a temporary folder."""
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.skip("node and npm are needed for the websocket-heartbeat-js interop test")
    where = tmp_path_factory.mktemp("js")
    try:
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(where), "websocket-heartbeat-js@1.1.3", "ws@8"],
            check=True,
            capture_output=True,
            timeout=300,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"could not install websocket-heartbeat-js from the npm registry: {e}")
    return where


def test_websocket_heartbeat_js_stays_connected_to_serve(heartbeatJs):
    """`txheartbeat serve` keeps an unmodified websocket-heartbeat-js client connected across many heartbeats."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        number = sock.getsockname()[1]
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root)}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "txheartbeat",
            "serve",
            "--port",
            str(number),
            "--ping-interval",
            "0.5",
            "--pong-timeout",
            "0.5",
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert "serving" in server.stderr.readline()
        result = subprocess.run(
            [
                "node",
                str(Path(__file__).parent / "peers" / "heartbeat_js_client.js"),
                f"ws://127.0.0.1:{number}/",
                "2500",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "NODE_PATH": str(heartbeatJs / "node_modules")},
        )
    finally:
        server.terminate()
        server.wait(10)
        server.stderr.close()
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert counts["opens"] == 1 and counts["reconnects"] == 0 and counts["closes"] == 0
    assert counts["heartbeatReplies"] >= 5  # one per 200 ms idle, answered, never forwarded
    assert counts["other"] == ["hello"]
