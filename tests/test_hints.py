"""Server hints on loopback, both ends: restart(window) with close 1012, overloaded() with 503 + Retry-After, and `txheartbeat serve` on SIGTERM."""

import signal
import subprocess
import sys
from typing import List

import pytest_twisted
from autobahn.websocket.protocol import WebSocketProtocol
from twisted.internet import defer
from twisted.internet import reactor as _reactor

from txheartbeat import ConnectionClosed, HandshakeError, HeartbeatServerFactory, connect

from .test_cli import ENV, free_port
from .test_integration import Waiter


class Hinted(Waiter):
    """A Waiter that keeps the reason of every reconnect."""

    def onReconnect(self, attempt, delay, reason=None):
        self._event("onReconnect", attempt, delay, reason.value if reason is not None else None)


def test_autobahn_internals_used_for_close_codes_exist():
    """The frame-level close txheartbeat uses for 1012/1013 and the is_closed future still exist in Autobahn."""
    assert callable(getattr(WebSocketProtocol, "sendCloseFrame", None))
    assert "isReply" in WebSocketProtocol.sendCloseFrame.__code__.co_varnames


@pytest_twisted.ensureDeferred
async def test_restart_spreads_clients_over_the_window():
    """factory.restart(window=2) closes every client with 1012; each reconnects after a delay within 2 s, all come back, and restart() fires once they are closed."""
    server = HeartbeatServerFactory()
    port = _reactor.listenTCP(0, server, interface="127.0.0.1")
    url = f"ws://127.0.0.1:{port.getHost().port}/"
    clients: List[Hinted] = [Hinted() for _ in range(20)]
    try:
        await defer.gatherResults([connect(url, h, minUptime=0) for h in clients])
        reopened = defer.gatherResults([h.next("onOpen", timeout=10) for h in clients])
        closed = server.restart(window=2.0)
        assert server.retryAfter == 2.0  # a server about to stop refuses clients that come back early
        server.overloaded(None)  # here the same server stands in for the restarted one
        await closed.addTimeout(5, _reactor)
        await reopened
        reconnects = [e for h in clients for e in h.events if e[1] == "onReconnect"]
        assert len(reconnects) == 20
        assert all(isinstance(e[4], ConnectionClosed) and e[4].code == 1012 for e in reconnects)
        delays = [e[3] for e in reconnects]
        assert all(0 <= d <= 2.0 for d in delays) and max(delays) - min(delays) > 0.5
        closes = [e for h in clients for e in h.events if e[1] == "onClose"]
        assert all(e[2:] == (True, 1012) for e in closes)
    finally:
        for h in clients:
            h.close()
        await defer.gatherResults([h.whenClosed() for h in clients])
        await port.stopListening()


@pytest_twisted.ensureDeferred
async def test_overloaded_refuses_with_retry_after_and_clients_wait():
    """While overloaded(retryAfter=1), upgrades get 503 with Retry-After: 1; the client waits about that long and opens once the server accepts again."""
    server = HeartbeatServerFactory()
    server.overloaded(retryAfter=1)
    port = _reactor.listenTCP(0, server, interface="127.0.0.1")
    h = Waiter()
    try:
        d = connect(f"ws://127.0.0.1:{port.getHost().port}/", h)
        (error,) = await h.next("onError")
        assert isinstance(error, HandshakeError) and error.status == 503 and error.retryAfter == 1.0
        (attempt, delay) = (await h.next("onReconnect"))[:2]
        assert 1.0 <= delay <= 1.1
        server.overloaded(None)
        await d
        assert h.names().count("onError") == 1
    finally:
        h.close()
        await h.whenClosed()
        await port.stopListening()


def test_serve_sigterm_closes_clients_with_1012():
    """`txheartbeat serve` on SIGTERM closes its clients with 1012 and the window, then exits."""
    import json

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "txheartbeat", "serve", "--port", str(port), "--restart-window", "3"],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    script = f"""
import json, sys
from twisted.internet import reactor
from txheartbeat import HeartbeatHandler, connect
class H(HeartbeatHandler):
    def onOpen(self):
        print("open", flush=True)
    def onClose(self, wasClean, code, reason):
        print(json.dumps([wasClean, code, reason]), flush=True)
        reactor.stop()
connect("ws://127.0.0.1:{port}/", H())
reactor.callLater(20, reactor.stop)
reactor.run()
"""
    try:
        assert "serving" in server.stderr.readline()
        client = subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV
        )
        assert client.stdout.readline().strip() == "open"
        server.send_signal(signal.SIGTERM)
        closed = json.loads(client.stdout.readline())
        client.wait(10)
        assert closed[:2] == [True, 1012] and "retry-window=3" in closed[2]
        server.wait(10)
    finally:
        for p in (server,):
            if p.poll() is None:
                p.kill()
