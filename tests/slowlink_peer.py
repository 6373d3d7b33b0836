"""
Slow-link scenarios on a real kernel shaper, for the tests and the benchmark.

Every scenario runs inside a private network namespace (``unshare -n``)
whose loopback has MTU 1500 and a token-bucket shaper at 1 Mbit/s, so
both ends see real TCP backpressure: a full send buffer, a closing window,
a ping stuck behind a megabyte of our own data.  Use it from Python::

    from slowlink_peer import run, unavailable
    reason = unavailable()          # None, or why no namespace can be made here
    result = run("txheartbeat", "upload")

or from the command line (``python tests/slowlink_peer.py run LIB SCENARIO``,
one JSON line).  LIB is ``txheartbeat``, ``websockets`` (python-websockets,
asyncio) or ``autobahn`` (Autobahn's autoPing); SCENARIO is

``upload``
    the client under test (ping 1 s / pong 2 s) sends one 1 MB binary
    message to a server that reads everything and never sends anything of
    its own; it answers RFC pings, but only once it has read the data
    queued before them;
``download``
    the server under test (ping 1 s / pong 2 s) sends one 1 MB message to a
    plain client of the same library (keepalive off);
``freeze``
    as ``upload``, but the server stops reading its socket (a wedged
    process: its kernel still acknowledges until the window closes) once
    ``FREEZE_AT`` bytes have arrived; its SO_RCVBUF is ``FROZEN_RCVBUF``,
    so the window closes within half a second of the freeze;
``freeze-autotuned``
    the same with Linux's receive-buffer autotuning, which has grown the
    server's buffer past 1 MB by then: its kernel takes (and acknowledges)
    the rest of the message, seconds after the process froze.

Inside the namespace the process given ``scenario`` starts the two roles as
child processes (same namespace), reads their events (JSON lines stamped
with CLOCK_MONOTONIC, which is system wide) and prints one JSON line: times
are seconds after the sender's WebSocket opened.  The sending side samples
its socket every 50 ms (``TCP_INFO`` bytes acknowledged and not yet sent,
``SIOCOUTQ``, the library's own userspace buffer), so the result also says
where the megabyte was waiting.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import itertools
import json
import os
import queue
import shlex
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(HERE))

LIBS = ("txheartbeat", "websockets", "autobahn")
SCENARIOS = ("upload", "download", "freeze", "freeze-autotuned")

#: heartbeat settings of the side under test
PING = 1.0
PONG = 2.0
#: the message, random so that no compression can shrink it
SIZE = 1_000_000
#: bytes the frozen server reads before it stops reading (half the message)
FREEZE_AT = 500_000
#: SO_RCVBUF of the frozen server in ``freeze`` (the kernel doubles it): its window
#: closes soon after it stops reading, so acknowledgements stop mid-message
FROZEN_RCVBUF = 16384
#: a delivered message must be followed by this long without a verdict to count as kept
HOLD = PING + PONG + 1.0
#: how long after the sender's open a run may last
DEADLINE = 30.0
#: how long to wait for late events once the sender's connection is gone
SETTLE = 1.0

RATE = "1mbit"
MTU = 1500
#: tbf: a 4 KB bucket; the queue holds 400 ms of traffic (50 KB) before dropping
SHAPER = f"tc qdisc add dev lo root tbf rate {RATE} burst 32kbit latency 400ms"
SETUP = f"ip link set lo up && ip link set lo mtu {MTU} && {SHAPER}"


# Outside the namespace ------------------------------------------------------------


_unavailable: Dict[str, Optional[str]] = {}


def unavailable() -> Optional[str]:
    """Return ``None`` if a shaped namespace can be made here, else why not (unshare's or tc's stderr)."""
    if "reason" not in _unavailable:
        try:
            out = subprocess.run(
                ["unshare", "-n", "sh", "-c", SETUP + " && tc qdisc show dev lo"],
                capture_output=True,
                text=True,
                timeout=20,
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            _unavailable["reason"] = f"unshare -n: {e}"
        else:
            if out.returncode != 0 or "tbf" not in out.stdout:
                why = (out.stderr or out.stdout).strip() or f"exit status {out.returncode}"
                _unavailable["reason"] = f"no private shaped network namespace ({SETUP!r}): {why}"
            else:
                _unavailable["reason"] = None
    return _unavailable["reason"]


def run(lib: str, scenario: str, timeout: float = 70.0) -> Dict[str, Any]:
    """
    Run one scenario in a fresh shaped namespace and return its result.

    :raises RuntimeError: if the run produced no result (stderr attached).
    """
    if lib not in LIBS or scenario not in SCENARIOS:
        raise ValueError(f"lib in {LIBS}, scenario in {SCENARIOS}; got {lib!r}, {scenario!r}")
    command = SETUP + " && exec " + shlex.join([sys.executable, HERE, "scenario", lib, scenario])
    proc = subprocess.Popen(
        ["unshare", "-n", "sh", "-c", command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        start_new_session=True,  # so a timeout can take the roles down with it
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise RuntimeError(f"{lib} {scenario}: no result within {timeout} s\n{err[-3000:]}") from None
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{lib} {scenario}: exit status {proc.returncode}\n{err[-3000:]}")
    return json.loads(lines[-1])


def _env() -> Dict[str, str]:
    # SLOWLINK_TXHEARTBEAT: a directory holding another txheartbeat package to
    # measure (e.g. an older release unpacked with ``git archive``).
    paths = [os.environ.get("SLOWLINK_TXHEARTBEAT"), ROOT, os.environ.get("PYTHONPATH")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


# The scenario, inside the namespace ----------------------------------------------


def scenario(lib: str, name: str) -> None:
    """Run both roles of one scenario and print the result as one JSON line."""
    if name == "download":
        serverArgs, clientRole = ["serveSend", lib], "clientPlain"
    else:
        freezeAt = 0 if name == "upload" else FREEZE_AT
        rcvbuf = FROZEN_RCVBUF if name == "freeze" else 0
        serverArgs, clientRole = ["serveRaw", str(freezeAt), str(rcvbuf)], "clientUpload"
    events: queue.Queue[Tuple[str, Dict[str, Any]]] = queue.Queue()
    stderr: Dict[str, List[str]] = {"server": [], "client": []}
    procs: Dict[str, subprocess.Popen] = {}

    def start(role: str, args: List[str]) -> None:
        proc = subprocess.Popen(
            [sys.executable, HERE, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        procs[role] = proc

        def read(stream: Any, into: Optional[List[str]]) -> None:
            for line in stream:
                if into is not None:
                    into.append(line)
                    del into[:-40]
                elif line.startswith("{"):
                    events.put((role, json.loads(line)))
            if into is None:
                events.put((role, {"ev": "exit", "t": time.monotonic()}))

        threading.Thread(target=read, args=(proc.stdout, None), daemon=True).start()
        threading.Thread(target=read, args=(proc.stderr, stderr[role]), daemon=True).start()

    sender = "server" if name == "download" else "client"
    receiver = "client" if sender == "server" else "server"
    log: List[Tuple[str, Dict[str, Any]]] = []
    try:
        start("server", serverArgs)
        while True:
            role, event = events.get(timeout=20)
            log.append((role, event))
            if event["ev"] == "listening":
                break
            if event["ev"] == "exit":
                procs["server"].wait(5)
                time.sleep(0.2)  # let the stderr reader catch up
                raise RuntimeError(f"server did not start: {''.join(stderr['server'])}")
        start("client", [clientRole, lib, f"ws://127.0.0.1:{event['port']}/"])
        began = time.monotonic()
        opened = lostAt = deliveredAt = None
        while True:
            now = time.monotonic()
            if opened is None and now > began + 20:
                break
            if opened is not None and now > opened + DEADLINE:
                break
            if lostAt is not None and now > lostAt + SETTLE:
                break
            if deliveredAt is not None and lostAt is None and now > deliveredAt + HOLD:
                break
            try:
                role, event = events.get(timeout=0.05)
            except queue.Empty:
                continue
            log.append((role, event))
            ev = event["ev"]
            if role == sender and ev == "open" and opened is None:
                opened = event["t"]
            elif role == sender and ev in ("lost", "exit") and lostAt is None:
                lostAt = event["t"]
            elif role == receiver and ev == "message" and deliveredAt is None:
                deliveredAt = event["t"]
            elif role == receiver and ev == "exit":
                lostAt = lostAt or event["t"]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        for proc in procs.values():
            proc.wait(10)
    # Events already queued when the run ended still count.
    while True:
        try:
            log.append(events.get_nowait())
        except queue.Empty:
            break
    result = summarize(lib, name, sender, log)
    result["stderr"] = {role: "".join(lines)[-1500:] for role, lines in stderr.items() if lines}
    print(json.dumps(result), flush=True)


def summarize(lib: str, name: str, sender: str, log: List[Tuple[str, Dict[str, Any]]]) -> Dict[str, Any]:
    """Turn the two roles' events into one result (times relative to the sender's open)."""
    receiver = "client" if sender == "server" else "server"
    mine = [e for r, e in log if r == sender]
    theirs = [e for r, e in log if r == receiver]
    t0 = next((e["t"] for e in mine if e["ev"] == "open"), None)

    def rel(t: Optional[float]) -> Optional[float]:
        return None if t is None or t0 is None else round(t - t0, 3)

    def first(events: List[Dict[str, Any]], ev: str) -> Optional[Dict[str, Any]]:
        return next((e for e in events if e["ev"] == ev), None)

    messages = [e for e in theirs if e["ev"] == "message"]
    verdict, lost, theirLost = first(mine, "verdict"), first(mine, "lost"), first(theirs, "lost")
    freeze = first(theirs, "freeze")
    samples = [e for e in mine if e["ev"] == "sample"]
    inq = [e for e in theirs if e["ev"] == "inq"]
    result: Dict[str, Any] = {
        "lib": lib,
        "scenario": name,
        "side": sender,
        "opened": t0 is not None,
        "messageSize": SIZE,
        "delivered": sum(1 for e in messages if e["size"] == SIZE),
        "wrongSize": [e["size"] for e in messages if e["size"] != SIZE],
        "deliveredAt": [rel(e["t"]) for e in messages],
        "verdictAt": rel(verdict["t"]) if verdict else None,
        "verdict": verdict.get("why") if verdict else None,
        "lostAt": rel(lost["t"]) if lost else None,
        "lost": {k: lost.get(k) for k in ("code", "reason", "clean")} if lost else None,
        "peerLostAt": rel(theirLost["t"]) if theirLost else None,
        "reopened": sum(1 for e in mine if e["ev"] == "open") - 1 if t0 is not None else 0,
        "errors": [e.get("why") for e in mine + theirs if e["ev"] == "error"],
        "samples": [[rel(e["t"]), e["acked"], e["notsent"], e["outq"], e["user"], e["sndbuf"]] for e in samples],
        "sampleFields": ["t", "bytesAcked", "notsent", "siocoutq", "userspace", "sndbuf"],
    }
    lastAck = max((e["lastAck"] for e in mine if e.get("lastAck") is not None), default=None)
    result["lastAckAt"] = rel(lastAck)
    result["txheartbeat"] = next((e["path"] for r, e in log if e["ev"] == "using"), None)
    ended = [t for t in (result["verdictAt"], result["lostAt"]) if t is not None]
    result["endedAt"] = min(ended) if ended else None
    if name.startswith("freeze"):
        for key in ("freezeAt", "frozenAfterBytes", "frozenRcvbuf", "frozenInq", "windowClosedAt", "detection"):
            result[key] = None
        result["detectionAfterLastAck"] = None
    if freeze is not None:
        result["freezeAt"] = rel(freeze["t"])
        result["frozenAfterBytes"] = freeze["bytes"]
        result["frozenRcvbuf"] = freeze.get("rcvbuf")
        result["frozenInq"] = [[rel(e["t"]), e["bytes"], e.get("rcvbuf"), e.get("rcvWnd")] for e in inq]
        grown = [e["t"] for prev, e in itertools.pairwise(inq) if e["bytes"] > prev["bytes"]]
        result["windowClosedAt"] = rel(max(grown)) if grown else result["freezeAt"]
        end = result["endedAt"]
        result["detection"] = None if end is None else round(end - result["freezeAt"], 3)
        result["detectionAfterLastAck"] = (
            None if end is None or result["lastAckAt"] is None else round(end - result["lastAckAt"], 3)
        )
    # Kept: delivered once, and neither a verdict nor a loss on the sender's connection.
    result["kept"] = (
        result["delivered"] == 1 and not result["wrongSize"] and verdict is None and lost is None and theirLost is None
    )
    return result


# Role helpers ---------------------------------------------------------------------


def emit(ev: str, **fields: Any) -> None:
    print(json.dumps({"ev": ev, "t": time.monotonic(), **fields}), flush=True)


def watchdog(seconds: float = 90.0) -> None:
    """End this role even if its parent is gone."""
    timer = threading.Timer(seconds, lambda: os._exit(3))
    timer.daemon = True
    timer.start()


def payload() -> bytes:
    return os.urandom(SIZE)


_TCP_INFO_LEN = 232


class Sampler:
    """
    Watch how far a socket's data has got: acknowledged by the peer's TCP,
    in our kernel send queue, in the library's userspace buffer.

    ``tick()`` every 50 ms from the event loop (never from a thread: the
    socket must not be touched once the loop has closed it); a ``sample``
    event every 250 ms.
    """

    def __init__(self, sock: Any, userBuffered: Callable[[], int]) -> None:
        self.sock = sock
        self.userBuffered = userBuffered
        self.acked = 0
        self.lastAck: Optional[float] = None
        self.nextEmit = 0.0
        self.stopped = False

    def read(self) -> Dict[str, int]:
        info = self.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_LEN)
        (acked,) = struct.unpack_from("=Q", info, 120)
        (notsent,) = struct.unpack_from("=I", info, 144)
        outq = struct.unpack("i", fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
        try:
            user = self.userBuffered()
        except Exception:
            user = -1
        sndbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        return {"acked": acked, "notsent": notsent, "outq": outq, "user": user, "sndbuf": sndbuf}

    def tick(self) -> None:
        if self.stopped:
            return
        try:
            figures = self.read()
        except OSError:
            self.stopped = True
            return
        now = time.monotonic()
        if figures["acked"] != self.acked:
            self.acked = figures["acked"]
            self.lastAck = now
        if now >= self.nextEmit:
            self.nextEmit = now + 0.25
            emit("sample", lastAck=self.lastAck, **figures)


def twistedBuffered(transport: Any) -> Callable[[], int]:
    """Bytes written to a Twisted TCP transport and not yet handed to the kernel."""

    def buffered() -> int:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen

    return buffered


def startTwistedSampler(transport: Any) -> Sampler:
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall

    sampler = Sampler(transport.getHandle(), twistedBuffered(transport))
    loop = LoopingCall(sampler.tick)
    loop.clock = reactor
    loop.start(0.05)
    sampler.loop = loop  # type: ignore[attr-defined]
    return sampler


def stopTwistedSampler(sampler: Optional[Sampler]) -> None:
    if sampler is not None:
        sampler.tick()
        sampler.stopped = True
        loop = sampler.loop  # type: ignore[attr-defined]
        if loop.running:
            loop.stop()
        emit("acked", lastAck=sampler.lastAck, acked=sampler.acked)


async def asyncioSampler(ws: Any) -> None:
    """Sample a python-websockets connection; report the moment it leaves OPEN (its verdict)."""
    import asyncio

    from websockets.protocol import State

    sampler = Sampler(ws.transport.get_extra_info("socket"), ws.transport.get_write_buffer_size)
    reported = False
    while ws.state is not State.CLOSED:
        sampler.tick()
        if not reported and ws.state is not State.OPEN:
            reported = True
            sent = ws.protocol.close_sent
            why = f"{sent.code} {sent.reason}" if sent is not None else "peer closed first"
            if sent is not None and ws.protocol.close_rcvd is None:
                emit("verdict", why=why)
        await asyncio.sleep(0.05)
    emit("acked", lastAck=sampler.lastAck, acked=sampler.acked)


def failureText(failure: Any) -> str:
    return f"{type(failure.value).__name__}: {failure.getErrorMessage()}"


# Roles -----------------------------------------------------------------------------


def serveRaw(freezeAt: str, rcvbuf: str = "0") -> None:
    """
    A WebSocket server on plain sockets: reads every frame, answers pings and
    closes, never sends anything of its own.  With ``freezeAt`` > 0 it stops
    reading the first connection for good once that many bytes arrived, and
    reports how its kernel receive queue fills (until the window closes).
    ``rcvbuf`` > 0 fixes SO_RCVBUF (no autotuning) on every connection.
    """
    watchdog()
    limit = int(freezeAt)
    srv = socket.socket()
    if int(rcvbuf):
        # On the listening socket, so that the window scale is chosen for it.
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, int(rcvbuf))
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    emit("listening", port=srv.getsockname()[1])
    first = True
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=_rawConnection, args=(conn, limit if first else 0), daemon=True).start()
        first = False


class _Frozen(Exception):
    pass


def _rawConnection(conn: socket.socket, freezeAt: int) -> None:
    state = {"bytes": 0}
    buf = bytearray()

    def fill() -> None:
        if freezeAt and state["bytes"] >= freezeAt:
            raise _Frozen()
        data = conn.recv(65536)
        if not data:
            raise EOFError()
        state["bytes"] += len(data)
        buf.extend(data)

    def take(n: int) -> bytes:
        while len(buf) < n:
            fill()
        out = bytes(buf[:n])
        del buf[:n]
        return out

    def skip(n: int) -> None:
        while n:
            if not buf:
                fill()
            k = min(n, len(buf))
            del buf[:k]
            n -= k

    try:
        while b"\r\n\r\n" not in buf:
            fill()
        head, _, rest = bytes(buf).partition(b"\r\n\r\n")
        buf[:] = rest
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        accept = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        emit("open")
        size = 0
        while True:
            b0, b1 = take(2)
            opcode, fin, n = b0 & 0x0F, b0 & 0x80, b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", take(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", take(8))
            mask = take(4) if b1 & 0x80 else b"\0\0\0\0"
            if opcode >= 8:
                data = bytes(c ^ mask[i % 4] for i, c in enumerate(take(n)))
                if opcode == 9:
                    conn.sendall(bytes([0x8A, len(data)]) + data)
                    emit("pingAnswered", afterBytes=state["bytes"])
                elif opcode == 8:
                    conn.sendall(bytes([0x88, len(data)]) + data)
                    # The server closes TCP first (RFC 6455 7.1.1), after the
                    # client saw the close frame: no RST for unread bytes.
                    conn.shutdown(socket.SHUT_WR)
                    conn.settimeout(2)
                    try:
                        while conn.recv(65536):
                            pass
                    except OSError:
                        pass
                    conn.close()
                    emit("lost", code=struct.unpack("!H", data[:2])[0] if len(data) >= 2 else None, clean=True)
                    return
                continue
            skip(n)
            size += n
            if fin:
                emit("message", size=size)
                size = 0
    except _Frozen:
        emit("freeze", bytes=state["bytes"], **_receiveWindow(conn))
        last = -1
        while True:  # never read again; watch the receive queue fill up
            inq = struct.unpack("i", fcntl.ioctl(conn.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
            if inq != last:
                emit("inq", bytes=inq, **_receiveWindow(conn))
                last = inq
            time.sleep(0.05)
    except (EOFError, OSError) as e:
        emit("lost", code=None, clean=False, reason=repr(e))


def _receiveWindow(conn: socket.socket) -> Dict[str, int]:
    """The receiving socket's buffer size and the window it advertises (``tcpi_rcv_wnd``, Linux 6.2+)."""
    info = conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 240)
    figures = {"rcvbuf": conn.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)}
    if len(info) >= 236:
        figures["rcvWnd"] = struct.unpack_from("=I", info, 232)[0]
    return figures


def serveSend(lib: str) -> None:
    """The server under test: keepalive ping 1 s / pong 2 s, sends the message to each client as it opens."""
    watchdog()
    if lib == "websockets":
        _websocketsServeSend()
    else:
        _twistedServeSend(lib)


def _twistedServeSend(lib: str) -> None:
    from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
    from twisted.internet import reactor

    import txheartbeat
    from txheartbeat import HeartbeatServerFactory, HeartbeatServerProtocol

    if lib == "txheartbeat":
        emit("using", path=os.path.dirname(txheartbeat.__file__))
    data = payload()
    base: Any = HeartbeatServerProtocol if lib == "txheartbeat" else WebSocketServerProtocol

    class Sender(base):  # type: ignore[misc, valid-type]
        sampler: Optional[Sampler] = None

        def onOpen(self) -> None:
            emit("open")
            self.sendMessage(data, isBinary=True)
            self.sampler = startTwistedSampler(self.transport)

        def onPeerDead(self, failure: Any) -> None:  # txheartbeat
            emit("verdict", why=failureText(failure))

        def onAutoPingTimeout(self) -> None:  # Autobahn
            emit("verdict", why="autoPing timeout")
            super().onAutoPingTimeout()

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            emit("message", size=len(payload))

        def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
            stopTwistedSampler(self.sampler)
            emit("lost", clean=wasClean, code=code, reason=reason)

    if lib == "txheartbeat":
        factory: Any = HeartbeatServerFactory(pingInterval=PING, pongTimeout=PONG, reactor=reactor)
    else:
        factory = WebSocketServerFactory()
        factory.setProtocolOptions(autoPingInterval=PING, autoPingTimeout=PONG)
    factory.protocol = Sender
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    emit("listening", port=port.getHost().port)  # type: ignore[attr-defined]
    reactor.run()


def _websocketsServeSend() -> None:
    import asyncio

    import websockets

    data = payload()

    async def handler(ws: Any) -> None:
        emit("open")
        sampling = asyncio.ensure_future(asyncioSampler(ws))
        try:
            await ws.send(data)
        except websockets.ConnectionClosed:
            pass
        await ws.wait_closed()
        await sampling
        emit("lost", code=ws.close_code, reason=ws.close_reason, clean=ws.close_code == 1000)

    async def main() -> None:
        async with websockets.serve(
            handler, "127.0.0.1", 0, ping_interval=PING, ping_timeout=PONG, compression=None, max_size=None
        ) as server:
            emit("listening", port=server.sockets[0].getsockname()[1])
            await asyncio.Future()

    asyncio.run(main())


def clientUpload(lib: str, url: str) -> None:
    """The client under test: keepalive ping 1 s / pong 2 s, sends the message once, at the first open."""
    watchdog()
    data = payload()
    if lib == "websockets":
        import asyncio

        import websockets

        async def main() -> None:
            async with websockets.connect(
                url, ping_interval=PING, ping_timeout=PONG, compression=None, max_size=None, open_timeout=10
            ) as ws:
                emit("open")
                sampling = asyncio.ensure_future(asyncioSampler(ws))
                try:
                    await ws.send(data)
                    emit("sendReturned")
                    await ws.wait_closed()
                except websockets.ConnectionClosed:
                    pass
                await sampling
            emit("lost", code=ws.close_code, reason=ws.close_reason, clean=ws.close_code == 1000)

        asyncio.run(main())
        return

    from twisted.internet import reactor

    if lib == "txheartbeat":
        import txheartbeat
        from txheartbeat import HeartbeatHandler, HeartbeatTimeout, connect

        emit("using", path=os.path.dirname(txheartbeat.__file__))

        class Uploader(HeartbeatHandler):
            sampler: Optional[Sampler] = None

            def onOpen(self) -> None:
                emit("open")
                if self.stats.opens == 1:
                    self.send(data)
                    assert self.protocol is not None
                    self.sampler = startTwistedSampler(self.protocol.transport)

            def onError(self, failure: Any) -> None:
                if failure.check(HeartbeatTimeout):
                    emit("verdict", why=failureText(failure))
                    self.close()  # report the verdict, not what reconnecting does next
                else:
                    emit("error", why=failureText(failure))

            def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
                stopTwistedSampler(self.sampler)
                self.sampler = None
                emit("lost", clean=wasClean, code=code, reason=reason)

        connect(url, Uploader(), reactor=reactor, pingInterval=PING, pongTimeout=PONG).addErrback(
            lambda f: emit("error", why=failureText(f))
        )
    else:
        from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS

        class AutobahnUploader(WebSocketClientProtocol):  # type: ignore[misc]
            sampler: Optional[Sampler] = None

            def onOpen(self) -> None:
                emit("open")
                self.sendMessage(data, isBinary=True)
                self.sampler = startTwistedSampler(self.transport)

            def onAutoPingTimeout(self) -> None:
                emit("verdict", why="autoPing timeout")
                super().onAutoPingTimeout()

            def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
                stopTwistedSampler(self.sampler)
                emit("lost", clean=wasClean, code=code, reason=reason)

        factory = WebSocketClientFactory(url)
        factory.protocol = AutobahnUploader
        factory.setProtocolOptions(autoPingInterval=PING, autoPingTimeout=PONG)
        connectWS(factory)
    reactor.run()


def clientPlain(lib: str, url: str) -> None:
    """The receiving peer for ``download``: the same library, keepalive off, never reconnects."""
    watchdog()
    if lib == "websockets":
        import asyncio

        import websockets

        async def main() -> None:
            async with websockets.connect(
                url, ping_interval=None, compression=None, max_size=None, open_timeout=10
            ) as ws:
                emit("open")
                try:
                    async for message in ws:
                        emit("message", size=len(message))
                except websockets.ConnectionClosed:
                    pass
            emit("lost", code=ws.close_code, reason=ws.close_reason, clean=ws.close_code == 1000)

        asyncio.run(main())
        return

    from twisted.internet import reactor

    if lib == "txheartbeat":
        from txheartbeat import HeartbeatHandler, connect

        class Receiver(HeartbeatHandler):
            def onOpen(self) -> None:
                emit("open")

            def onMessage(self, payload: bytes, isBinary: bool) -> None:
                emit("message", size=len(payload))

            def onError(self, failure: Any) -> None:
                emit("error", why=failureText(failure))

            def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
                emit("lost", clean=wasClean, code=code, reason=reason)
                self.close()

        connect(url, Receiver(), reactor=reactor, pingInterval=None).addErrback(
            lambda f: emit("error", why=failureText(f))
        )
    else:
        from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS

        class AutobahnReceiver(WebSocketClientProtocol):  # type: ignore[misc]
            def onOpen(self) -> None:
                emit("open")

            def onMessage(self, payload: bytes, isBinary: bool) -> None:
                emit("message", size=len(payload))

            def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
                emit("lost", clean=wasClean, code=code, reason=reason)

        factory = WebSocketClientFactory(url)
        factory.protocol = AutobahnReceiver
        connectWS(factory)
    reactor.run()


def main(argv: List[str]) -> None:
    command, args = argv[0], argv[1:]
    if command == "run":
        reason = unavailable()
        if reason is not None:
            sys.exit(reason)
        lib, name = args
        print(json.dumps(run(lib, name)))
        return
    roles: Dict[str, Callable[..., None]] = {
        "scenario": scenario,
        "serveRaw": serveRaw,
        "serveSend": serveSend,
        "clientUpload": clientUpload,
        "clientPlain": clientPlain,
    }
    roles[command](*args)


if __name__ == "__main__":
    main(sys.argv[1:])
