"""
Benchmark workers, one mode per process (run by ``benchmarks/run.py``).

Each mode prints one JSON line on stdout with its figures.  Every peer is on
127.0.0.1; every loop is bounded in count and time.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Dict, List

from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
    WebSocketServerFactory,
    WebSocketServerProtocol,
    connectWS,
)
from common import cpuSeconds, pin, raiseFileLimit, say
from twisted.internet import reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.protocol import ReconnectingClientFactory
from twisted.internet.task import deferLater

from txheartbeat import HeartbeatClientFactory, HeartbeatHandler, HeartbeatTimeout


def sleep(seconds: float) -> Deferred:
    return deferLater(reactor, seconds, lambda: None)


# Server ----------------------------------------------------------------------


class BenchServer(WebSocketServerProtocol):
    """Echo; 'heartbeat' answered; 'stall' answered then the connection goes silent (TCP stays open)."""

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if payload == b"stall":
            self.sendMessage(b"stalling")
            self.transport.pauseProducing()
            self.stalled = True
            return
        if getattr(self, "stalled", False):
            return
        self.sendMessage(payload, isBinary)


def server(port: int = 0) -> None:
    raiseFileLimit()
    pin(0)
    factory = WebSocketServerFactory()
    factory.protocol = BenchServer
    factory.setProtocolOptions(autoPingInterval=0, openHandshakeTimeout=0)
    listening = reactor.listenTCP(port, factory, backlog=4096, interface="127.0.0.1")
    say(port=listening.getHost().port)
    reactor.run()


# 1. Dead-peer detection --------------------------------------------------------


def detectTxheartbeat(url: str, ping: float, pong: float) -> None:
    result: Dict[str, float] = {}

    class H(HeartbeatHandler):
        def onOpen(self) -> None:
            reactor.callLater(0.3, self.send, "stall")

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            if payload == b"stalling":
                result["last"] = time.monotonic()

        def onError(self, failure: Any) -> None:
            if failure.check(HeartbeatTimeout):
                result["detect"] = time.monotonic()
                self.close()

    async def main() -> None:
        h = H()
        HeartbeatClientFactory(url, h, pingInterval=ping, pongTimeout=pong, reactor=reactor).connect()
        await h.whenClosed()
        say(detection=result["detect"] - result["last"])
        reactor.stop()

    ensureDeferred(main())
    reactor.run()


def detectAutobahn(url: str, ping: float, pong: float) -> None:
    result: Dict[str, float] = {}

    class P(WebSocketClientProtocol):
        def onOpen(self) -> None:
            reactor.callLater(0.3, self.sendMessage, b"stall")

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            if payload == b"stalling":
                result["last"] = time.monotonic()

        def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
            if "last" not in result:
                # Declared dead while the peer was still answering (batched timers fire early).
                say(detection=None, falsePositive=True)
            else:
                say(detection=time.monotonic() - result["last"])
            reactor.stop()

    factory = WebSocketClientFactory(url)
    factory.protocol = P
    factory.setProtocolOptions(autoPingInterval=ping, autoPingTimeout=pong)
    connectWS(factory)
    reactor.run()


def detectWebsockets(url: str, ping: float, pong: float) -> None:
    import asyncio

    import websockets

    async def main() -> None:
        async with websockets.connect(url, ping_interval=ping, ping_timeout=pong) as ws:
            await asyncio.sleep(0.3)
            await ws.send("stall")
            last = None
            try:
                while True:
                    if await ws.recv() == "stalling":
                        last = time.monotonic()
            except websockets.ConnectionClosed:
                detect = time.monotonic()
        say(detection=detect - last)

    asyncio.run(main())


# 2. Hot path -------------------------------------------------------------------


def echoRate(kind: str, url: str, seconds: float) -> None:
    pin(1)
    payload = b"x" * 64
    state = {"n": 0, "end": 0.0, "cpu": 0.0}

    def next(send: Any) -> None:
        if time.monotonic() < state["end"]:
            state["n"] += 1
            send(payload)
        else:
            cpu = cpuSeconds() - state["cpu"]
            say(rate=state["n"] / seconds, cpuMicroseconds=cpu / state["n"] * 1e6)
            reactor.stop()

    def begin() -> None:
        state["end"] = time.monotonic() + seconds
        state["cpu"] = cpuSeconds()

    if kind == "txheartbeat":

        class H(HeartbeatHandler):
            def onOpen(self) -> None:
                begin()
                next(self.send)

            def onMessage(self, p: bytes, isBinary: bool) -> None:
                next(self.send)

        HeartbeatClientFactory(url, H(), pingInterval=3600, pongTimeout=10, reactor=reactor).connect()
    else:

        class P(WebSocketClientProtocol):
            def onOpen(self) -> None:
                begin()
                next(lambda m: self.sendMessage(m, True))

            def onMessage(self, p: bytes, isBinary: bool) -> None:
                next(lambda m: self.sendMessage(m, True))

        factory = WebSocketClientFactory(url)
        factory.protocol = P
        connectWS(factory)
    reactor.run()


# 3. Idle scale -------------------------------------------------------------------


class AutobahnReconnecting(WebSocketClientFactory, ReconnectingClientFactory):
    """The hand-made peer: Autobahn autoPing plus Twisted's ReconnectingClientFactory."""

    def clientConnectionLost(self, connector: Any, reason: Any) -> None:
        ReconnectingClientFactory.clientConnectionLost(self, connector, reason)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        ReconnectingClientFactory.clientConnectionFailed(self, connector, reason)


# 4. Reconnect storm ------------------------------------------------------------------
#
# Run by benchmarks/storm.py: one server process (killed, or asked to restart,
# then replaced on the same port) and one client process per client kind.
# Every process takes commands, one per line, on stdin and answers with JSON
# lines on stdout; times are time.monotonic() (CLOCK_MONOTONIC, system-wide
# on Linux, the same clock as node's process.hrtime), so the orchestrator
# compares them across processes.


def _commands(handle: Any, call: Any) -> None:
    """Read command lines from stdin in a thread; ``call(handle, words)`` hands each to the event loop."""
    import threading

    def read() -> None:
        for line in sys.stdin:
            if line.split():
                call(handle, line.split())
        os._exit(0)  # stdin closed: the orchestrator is gone, and nobody will ever ask for the figures

    threading.Thread(target=read, daemon=True).start()


def stormServer(count: int, tls: str = "", tickets: str = "on") -> None:
    """
    A txheartbeat.HeartbeatServerFactory with default options, recording every
    TCP accept (``buildProtocol``) and every open.  Commands: ``listen PORT``,
    ``restart WINDOW`` (stop listening, ``factory.restart(window=WINDOW)``,
    wait for the clients to leave, exit), ``drop`` (stop listening, abort
    every connection, stay up: the same TLS context, so the same session
    ticket key, at the next ``listen``), ``report`` (print and exit).

    With ``tls`` (a directory with ``cert.pem`` and ``key.pem``) it listens for
    ``wss://`` with ``serverTLSOptions``, or with ``tickets`` ``off`` the same
    options without session tickets (Twisted's default: every handshake full);
    it counts the opens that resumed a TLS session and the CPU seconds from
    each ``listen`` until all ``count`` are back.
    """
    raiseFileLimit()
    pin(0)
    from txheartbeat import HeartbeatServerFactory, HeartbeatServerProtocol

    accepts: List[float] = []
    opens: List[float] = []
    live: set = set()
    state: Dict[str, Any] = {"allBack": None, "port": None, "cpuAtListen": None, "cpuToBack": None, "resumed": 0}
    context = _stormTLS(tls, tickets == "on") if tls else None

    class P(HeartbeatServerProtocol):
        def onOpen(self) -> None:
            now = time.monotonic()
            opens.append(now)
            live.add(self)
            if context is not None and _sessionReused(self.transport):
                state["resumed"] += 1
            if len(live) >= count and state["allBack"] is None:
                state["allBack"] = now
                if state["cpuAtListen"] is not None:
                    state["cpuToBack"] = cpuSeconds() - state["cpuAtListen"]
                say(allBack=now)

        def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
            live.discard(self)

    class F(HeartbeatServerFactory):
        protocol = P

        def buildProtocol(self, addr: Any) -> Any:
            accepts.append(time.monotonic())
            return super().buildProtocol(addr)

    factory = F()

    def listen(port: int) -> None:
        if context is not None:
            state["port"] = reactor.listenSSL(port, factory, context, backlog=4096, interface="127.0.0.1")
        else:
            state["port"] = reactor.listenTCP(port, factory, backlog=4096, interface="127.0.0.1")
        state.update(allBack=None, cpuAtListen=cpuSeconds(), cpuToBack=None, resumed=0)
        say(listening=time.monotonic(), port=state["port"].getHost().port)

    def drop() -> None:
        def abortAll(_: Any) -> None:
            for p in list(live):
                p.transport.abortConnection()
            say(dropped=time.monotonic())

        state["port"].stopListening().addCallback(abortAll)

    def restart(window: float) -> None:
        api = hasattr(factory, "restart")
        called: Dict[str, float] = {}

        def closeAll(_: Any) -> None:
            # Not listening any more: an early reconnect is refused, never
            # served by the process that is about to exit.
            called["at"] = time.monotonic()
            if api:
                factory.restart(window=window)
            else:
                for p in list(live):
                    # Autobahn's sendClose() refuses 1012 (only 1000 and 3000-4999 from applications).
                    p.sendCloseFrame(code=1012, reasonUtf8=b"service restart", isReply=False)
            deadline = called["at"] + window + factory.closeTimeout + 1.0
            waitGone(deadline)

        def waitGone(deadline: float) -> None:
            if live and time.monotonic() < deadline:
                reactor.callLater(0.02, waitGone, deadline)
                return
            say(restartCalled=called["at"], drained=time.monotonic(), left=len(live), api=api)
            os._exit(0)

        d = state["port"].stopListening()
        d.addCallback(closeAll)
        d.addErrback(lambda f: (print(f.getTraceback(), file=sys.stderr, flush=True), os._exit(1)))

    def report() -> None:
        say(
            accepts=accepts,
            opens=opens,
            allBack=state["allBack"],
            open=len(live),
            cpuToBack=state["cpuToBack"],
            resumed=state["resumed"],
        )
        os._exit(0)  # no orderly goodbye to 1,000 clients: the orchestrator is done with them

    def handle(words: List[str]) -> None:
        if words[0] == "listen":
            listen(int(words[1]))
        elif words[0] == "restart":
            restart(float(words[1]))
        elif words[0] == "drop":
            drop()
        elif words[0] == "report":
            report()

    _commands(handle, reactor.callFromThread)
    reactor.callWhenRunning(say, started=time.monotonic())
    reactor.run()


def _stormTLS(where: str, tickets: bool) -> Any:
    """``serverTLSOptions`` for ``where``'s certificate, or (``tickets`` False) the same without session tickets."""
    cert, key = os.path.join(where, "cert.pem"), os.path.join(where, "key.pem")
    from txheartbeat import serverTLSOptions

    if tickets:
        return serverTLSOptions(cert, key)
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from cryptography.x509 import load_pem_x509_certificate
    from twisted.internet import ssl

    with open(cert, "rb") as c, open(key, "rb") as k:
        return ssl.CertificateOptions(
            privateKey=load_pem_private_key(k.read(), None),  # type: ignore[arg-type]
            certificate=load_pem_x509_certificate(c.read()),  # type: ignore[arg-type]
            acceptableProtocols=[b"http/1.1"],
        )


def _sessionReused(transport: Any) -> bool:
    """Whether the TLS connection under ``transport`` resumed a session (OpenSSL's ``SSL_session_reused``)."""
    from OpenSSL._util import lib

    return bool(lib.SSL_session_reused(transport.getHandle()._ssl))


class _StormCounts:
    """Client-side counts for the storm: attempts (TCP connects begun) and hooks, from ``ready`` on."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.recording = False
        self.attempts: List[float] = []
        self.firstOpens = 0
        self.firstOpenAt: Any = None
        self.hooks = {"opens": 0, "closes": 0, "errors": 0, "reconnects": 0}

    def hook(self, name: str) -> None:
        if self.recording:
            self.hooks[name] = self.hooks.get(name, 0) + 1

    def opened(self, first: bool, **defaults: Any) -> None:
        self.hook("opens")
        if first:
            if self.firstOpenAt is None:
                self.firstOpenAt = time.monotonic()
            self.firstOpens += 1
            if self.firstOpens == self.count:
                self.recording = True
                say(ready=time.monotonic(), firstOpen=self.firstOpenAt, defaults=defaults)

    def report(self) -> None:
        say(attempts=self.attempts, **self.hooks)


def stormTwisted(kind: str, url: str, count: int) -> None:
    """
    ``count`` Twisted clients of one kind with their library's default options:
    ``txheartbeat`` (``txheartbeat.connect(url, handler)``) or ``autobahn``
    (WebSocketClientFactory + ReconnectingClientFactory, ``resetDelay()`` on open).
    Attempts are counted where every Twisted TCP connect begins
    (``tcp.Connector._makeTransport``: first connects and ``connector.connect()`` retries alike).
    """
    import inspect

    from twisted.internet import tcp

    import txheartbeat

    raiseFileLimit()
    pin(1)
    counts = _StormCounts(count)
    makeTransport = tcp.Connector._makeTransport

    def counted(self: Any) -> Any:
        if counts.recording:
            counts.attempts.append(time.monotonic())
        return makeTransport(self)

    tcp.Connector._makeTransport = counted  # type: ignore[method-assign]
    defaults: Dict[str, Any] = {}
    if kind == "txheartbeat":
        for name, p in inspect.signature(txheartbeat.HeartbeatClientFactory.__init__).parameters.items():
            if p.default is not inspect.Parameter.empty and isinstance(p.default, (int, float)):
                defaults[name] = p.default
        defaults["restartApi"] = hasattr(txheartbeat.HeartbeatServerFactory, "restart")

        class H(HeartbeatHandler):
            def onOpen(self) -> None:
                counts.opened(self.stats.opens == 1, **defaults)

            def onClose(self, *args: Any) -> None:
                counts.hook("closes")

            def onError(self, failure: Any) -> None:
                counts.hook("errors")
                counts.hook(f"error {type(failure.value).__name__}: {str(failure.value)[:80]}")

            def onReconnect(self, *args: Any) -> None:
                counts.hook("reconnects")

        def start() -> None:
            txheartbeat.connect(url, H()).addErrback(lambda f: None)

    else:
        defaults.update(
            {k: getattr(ReconnectingClientFactory, k) for k in ("initialDelay", "factor", "jitter", "maxDelay")}
        )

        class Factory(AutobahnReconnecting):
            def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
                counts.hook("errors")
                AutobahnReconnecting.clientConnectionFailed(self, connector, reason)

            def retry(self, connector: Any = None) -> None:
                counts.hook("reconnects")
                AutobahnReconnecting.retry(self, connector)

        class P(WebSocketClientProtocol):
            def onOpen(self) -> None:
                self.factory.resetDelay()
                self.factory.opens += 1
                counts.opened(self.factory.opens == 1, **defaults)

            def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
                if self.factory.opens:
                    counts.hook("closes")

        def start() -> None:
            f = Factory(url)
            f.protocol = P
            f.opens = 0
            connectWS(f)

    async def main() -> None:
        for first in range(0, count, 250):
            for _ in range(first, min(count, first + 250)):
                start()
            await sleep(0.05)

    def handle(words: List[str]) -> None:
        if words[0] == "report":
            counts.report()
            os._exit(0)

    _commands(handle, reactor.callFromThread)
    reactor.callWhenRunning(ensureDeferred, main())
    reactor.run()


def stormWebsockets(url: str, count: int) -> None:
    """
    ``count`` python-websockets clients in the documented reconnect loop
    (``async for ws in connect(url)``), default options; attempts counted at
    ``loop.create_connection``.
    """
    import asyncio

    import websockets
    import websockets.client

    raiseFileLimit()
    pin(1)
    counts = _StormCounts(count)
    defaults = {
        k: getattr(websockets.client, "BACKOFF_" + k)
        for k in ("INITIAL_DELAY", "MIN_DELAY", "FACTOR", "MAX_DELAY")
        if hasattr(websockets.client, "BACKOFF_" + k)
    }

    async def main() -> None:
        loop = asyncio.get_running_loop()
        createConnection = loop.create_connection
        done = asyncio.Event()

        async def counted(*args: Any, **kwargs: Any) -> Any:
            if counts.recording:
                counts.attempts.append(time.monotonic())
            try:
                return await createConnection(*args, **kwargs)
            except OSError:
                counts.hook("errors")
                raise

        loop.create_connection = counted  # type: ignore[method-assign]

        async def client() -> None:
            opens = 0
            async for ws in websockets.connect(url):
                opens += 1
                counts.opened(opens == 1, **defaults)
                try:
                    async for _ in ws:
                        pass
                except websockets.ConnectionClosed:
                    pass
                counts.hook("closes")

        def handle(words: List[str]) -> None:
            if words[0] == "report":
                counts.report()
                done.set()

        _commands(handle, loop.call_soon_threadsafe)
        tasks = []
        for first in range(0, count, 250):
            tasks += [asyncio.ensure_future(client()) for _ in range(first, min(count, first + 250))]
            await asyncio.sleep(0.05)
        await done.wait()
        os._exit(0)  # 1,000 open connections need no orderly goodbye

    asyncio.run(main())


def _arg(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


if __name__ == "__main__":
    globals()[sys.argv[1]](*[_arg(a) for a in sys.argv[2:]])
