"""
The browser end (issue 20): the unmodified websocket-heartbeat-js 1.1.3 (the
seed) and txheartbeat.js side by side in headless Chromium, in one run.

    python benchmarks/browser.py            # about 3 minutes
    python benchmarks/browser.py --quick    # a smoke run (~30 s): tiny counts, the seed's close awaited 5 s only

Needs Chromium (``$CHROMIUM`` or on ``PATH``, as the browser tests) and, for
part (c)'s second half, node and npm.  The seed comes
from the npm registry through ``tests/seed.py`` (checked against its
published sha512, cached); without it, only txheartbeat.js is measured.
Everything listens on 127.0.0.1.

(a) Dead peer: per trial a fresh ``txheartbeat serve`` process (its own
heartbeats every 60 s: the pages' are measured) with one seed page and one
txheartbeat.js page on it, both with pingTimeout 1 s and pongTimeout 1 s;
once both have had a heartbeat answered, the server is frozen (SIGSTOP) at
a random moment and the run waits for each page's onclose.  Measured: ms from
the freeze, and from the last message the page received, to onclose (the
seed reconnects from onclose; txheartbeat.js too).  Trials run together.

(b) Loss: 2,000 numbered messages each way (20 every 150 ms) between one page
and a loopback ``HeartbeatServerFactory`` through ``tests/resetproxy.py``
(50 ms one-way latency, every connection reset 0.3-1.0 s after it opened,
seeded).  The server sends each number to the page's open connection, or
nowhere if it has none (a plain server has nowhere to keep it); with resume,
to the session.  The page hands each number to send() once; a throw other
than SendQueueFull (the queue's documented backpressure: retried) counts as
lost.  Once every number is out the resets stop and the run drains (resume:
until all arrived; plain: an end marker each way).  Rows: the seed,
txheartbeat.js without resume (both against a server without resume), and
txheartbeat.js with ``resume: true`` against ``HeartbeatServerFactory(resume=True)``
(what ``serve --resume`` runs).  Both libraries reconnect after 100 ms
(txheartbeat.js backs off to 400 ms at most).

(c) Storm: N clients of one library with default options hold connections to
a loopback ``HeartbeatServerFactory``; the server stops listening and drops
them all, and listens again on the same port 2 s later.  Measured on the
server: TCP accepts per 100 ms after it listens again, the peak as a share of
N, and the time until all N are open again.  Run in Chromium (N pages, one
client each; --storm-pages puts them in fewer) and in one Node process (N instances of the
same file on the ``ws`` package, installed as ``benchmarks/storm.py`` does),
one kind at a time.

(d) Size: each file raw and gzipped (level 9).

Prints Markdown for section 7 of BENCHMARKS.md.  Nothing here asserts.
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))  # cdp.py, resetproxy.py, seed.py; the pages in tests/browser/
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
PAGES = ROOT / "tests" / "browser"

PING, PONG = 1000, 1000  # ms, part (a)
COUNT, BURST, PACE = 2000, 20, 0.15  # part (b)
OUTAGE, WINDOW = 2.0, 0.1  # part (c)
# Timers of pages that are not in front would be throttled (aligned to 1 s): every page here is measured.
CHROMIUM_ARGS = (
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
)

STORM_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>storm</title>
<!-- n clients of one library (lib=seed|txheartbeat) with default options; window.opens counts onopen. -->
<script src="websocket-heartbeat-js.js"></script>
<script type="module">
  const query = new URLSearchParams(location.search);
  const W = query.get("lib") === "seed" ? window.WebsocketHeartbeatJs : (await import("./txheartbeat.js")).default;
  window.opens = 0;
  window.clients = [];
  for (let i = 0; i < Number(query.get("n")); i++) {
    const c = new W({ url: query.get("url") });
    c.onopen = () => window.opens++;
    window.clients.push(c);
  }
</script>
"""

NODE_STORM = """
// n clients of one library (an ES module file) with default options, in one Node process,
// on the ws package (the folder holding node_modules/ws is argv[5]); killed when done.
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";
const [file, url, n] = [process.argv[2], process.argv[3], Number(process.argv[4])];
globalThis.WebSocket = createRequire(process.argv[5] + "/")("ws");
// The seed's ping timer outlives its socket and may send on a reconnecting one, which throws;
// a browser reports that and carries on, so does this process.
process.on("uncaughtException", () => {});
const { default: W } = await import(pathToFileURL(file).href);
for (let i = 0; i < n; i++) new W({ url });
"""

# The page's side of part (b), for either library's page (seed.html, txheartbeat.html).
PAGE_SENDER = """(() => {
  const lib = window.h || window.websocketHeartbeatJs;
  window.pageSent = 0; window.pageThrew = 0; window.pageDone = false;
  const wait = (ms) => new Promise((r) => setTimeout(r, ms));
  (async () => {
    for (let i = 0; i < %(count)d; ) {
      try { lib.send("p" + i); }
      catch (e) { if (e.name === "SendQueueFull") { await wait(20); continue; } window.pageThrew++; }
      window.pageSent = ++i;
      if (i %% %(burst)d === 0) await wait(%(pace)d);
    }
    window.pageDone = true;
  })();
  return 0;
})()"""
LIB_OPEN = "(() => { const lib = window.h || window.websocketHeartbeatJs; return !!(lib && lib.ws && lib.ws.readyState === 1); })()"


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def sleep(seconds: float) -> None:
    from twisted.internet import reactor, task

    await task.deferLater(reactor, seconds, lambda: None)


def inThread(f: Any, *args: Any) -> Any:
    """A blocking call (DevTools, subprocess) off the reactor, which meanwhile serves the pages and the proxy."""
    from twisted.internet import threads

    return threads.deferToThread(f, *args)


class Site:
    """The pages, both libraries and the storm page in a temporary folder, served over HTTP on loopback."""

    def __init__(self, seed: Optional[bytes]) -> None:
        from twisted.internet import reactor
        from twisted.web.server import Site as WebSite

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # Twisted's own, at import
            from twisted.web.static import File

        from txheartbeat._browser import SCRIPT_FILE

        self.root = Path(tempfile.mkdtemp(prefix="txheartbeat-bench-"))
        for page in ("seed.html", "txheartbeat.html"):
            shutil.copy(PAGES / page, self.root)
        shutil.copy(SCRIPT_FILE, self.root)
        (self.root / "storm.html").write_text(STORM_PAGE, encoding="utf-8")
        (self.root / "websocket-heartbeat-js.js").write_bytes(seed or b"")
        self.listening = reactor.listenTCP(0, WebSite(File(str(self.root))), interface="127.0.0.1")

    def url(self, page: str, wsPort: int, **query: Any) -> str:
        from urllib.parse import urlencode

        return f"http://127.0.0.1:{self.listening.getHost().port}/{page}?" + urlencode(
            {"url": f"ws://127.0.0.1:{wsPort}/", **query}
        )

    def close(self) -> None:
        self.listening.stopListening()
        shutil.rmtree(self.root, ignore_errors=True)


class Serve:
    """A `txheartbeat serve` process on a free port, its output in a temporary file."""

    def __init__(self) -> None:
        self.port = freePort()
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "txheartbeat", "serve", "--port", str(self.port), "--ping-interval", "60"],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
            env=ENV,
        )
        deadline = time.monotonic() + 30
        while True:  # (blocking: called in a thread) until it accepts connections
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"txheartbeat serve did not listen on {self.port}")
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.kill()  # (a stopped process dies too)
        self.proc.wait(10)
        self.log.close()


def recordingFactory(**options: Any) -> Any:
    """A HeartbeatServerFactory that records accept and open times, and what reached onMessage."""
    from txheartbeat import HeartbeatServerFactory, HeartbeatServerProtocol

    class Recorder(HeartbeatServerProtocol):
        def connectionMade(self) -> None:
            self.factory.accepts.append(time.monotonic())
            super().connectionMade()

        def onOpen(self) -> None:
            self.factory.opens.append(time.monotonic())

        def onMessage(self, payload: bytes, isBinary: bool) -> None:
            self.factory.received.append(payload)
            if payload == b"pend":
                self.sendMessage(b"send")  # part (b)'s end marker, answered on the connection it came by

    factory = HeartbeatServerFactory(**options)
    factory.protocol = Recorder
    factory.accepts, factory.opens, factory.received = [], [], []
    return factory


def numbers(items: List[str], prefix: str) -> List[int]:
    return [int(item[len(prefix) :]) for item in items if item.startswith(prefix) and item[len(prefix) :].isdigit()]


def tally(got: List[int], count: int) -> Dict[str, Any]:
    distinct = set(got)
    return {
        "lost": count - len(distinct),
        "duplicated": len(got) - len(distinct),
        "inOrder": all(a < b for a, b in zip(got, got[1:], strict=False)),
    }


# (a) Dead peer -------------------------------------------------------------------------


async def deadPeer(browser: Any, site: Site, libs: List[str], trials: int, wait: float) -> Dict[str, Any]:
    rng = random.Random(20)
    servers: List[Serve] = []
    pages: List[tuple] = []
    try:
        for _ in range(trials):
            servers.append(await inThread(Serve))
            for lib in libs:
                url = site.url(f"{lib}.html", servers[-1].port, ping=PING, pong=PONG)
                pages.append((lib, servers[-1], await inThread(browser.open, url)))
        for _, _, page in pages:
            await inThread(page.waitFor, 'events.filter(e => e.detail === "heartbeat").length >= 1', 20)
        frozen: Dict[int, float] = {}
        for server in servers:
            await sleep(rng.uniform(0, 1.0))  # a random moment of the heartbeat cycle
            frozen[server.port] = time.time() * 1000  # (the pages' Date.now() clock)
            os.kill(server.proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + wait
        closed: Dict[int, Any] = {}
        while len(closed) < len(pages) and time.monotonic() < deadline:
            for i, (_, _, page) in enumerate(pages):
                if i not in closed:
                    found = await inThread(page.evaluate, 'events.find(e => e.kind === "closed") || null')
                    if found is not None:
                        closed[i] = found
            await sleep(0.25)
        results: Dict[str, List[Dict[str, Any]]] = {lib: [] for lib in libs}
        for i, (lib, server, page) in enumerate(pages):
            if i not in closed:
                results[lib].append({"closed": False})
                continue
            at = closed[i]["time"]
            events = await inThread(page.evaluate, "events")
            last = max(e["time"] for e in events if e["kind"] == "message" and e["time"] <= at)
            results[lib].append({"closed": True, "fromFreeze": at - frozen[server.port], "fromLast": at - last})
        return {"trials": trials, "wait": wait, "results": results}
    finally:
        for _, _, page in pages:
            await inThread(page.close)
        for server in servers:
            server.stop()


# (b) Loss through resets ---------------------------------------------------------------


async def lossRun(browser: Any, site: Site, lib: str, resume: bool, count: int, seed: int) -> Dict[str, Any]:
    from resetproxy import ResetProxy
    from twisted.internet import reactor
    from twisted.internet.task import LoopingCall

    from txheartbeat import SendQueueFull

    factory = recordingFactory(resume=resume, pingInterval=1.0, pongTimeout=1.0, reactor=reactor)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    proxy = ResetProxy(port.getHost().port, latency=0.05, resetAfter=(0.3, 1.0), seed=seed)
    state = {"sent": 0, "nowhere": 0}

    def serverSends() -> None:
        for _ in range(BURST):
            if state["sent"] >= count:
                return
            message = f"s{state['sent']}"
            if resume:
                (session,) = list(factory.sessionStore)
                try:
                    session.send(message)
                except SendQueueFull:
                    return  # the same number at the next tick: a pause, never a loss
            else:
                open_ = [c for c in factory.clients if c.isOpen]
                if open_:
                    open_[0].sendMessage(message.encode())
                else:
                    state["nowhere"] += 1
            state["sent"] += 1

    query: Dict[str, Any] = {"ping": PING, "pong": PONG, "reconnect": 100}
    if lib == "txheartbeat":
        query["maxReconnect"] = 400
        if resume:
            query["resume"] = 1
    page = await inThread(browser.open, site.url(f"{lib}.html", proxy.port.getHost().port, **query))
    loop = LoopingCall(serverSends)
    began = time.monotonic()
    drained = True
    try:
        await inThread(page.waitFor, 'events.some(e => e.kind === "open")', 20)
        done = loop.start(PACE)
        await inThread(page.evaluate, PAGE_SENDER % {"count": count, "burst": BURST, "pace": PACE * 1000})
        bound = time.monotonic() + count / BURST * PACE * 4 + 60
        while not (state["sent"] >= count and await inThread(page.evaluate, "window.pageDone")):
            if time.monotonic() > bound:
                drained = False
                break
            await sleep(0.2)
        loop.stop()
        await done
        proxy.calm()
        if resume:
            need = f'events.filter(e => e.kind === "message" && /^s\\d+$/.test(e.detail)).length >= {count}'
            try:
                await inThread(page.waitFor, need, 60)
                bound = time.monotonic() + 30
                while len(numbers([p.decode() for p in factory.received], "p")) < count and time.monotonic() < bound:
                    await sleep(0.1)
            except TimeoutError:
                drained = False
        else:
            # An end marker each way, on an open connection (sent again if a connection ate it).
            for _ in range(5):
                try:
                    await inThread(page.waitFor, LIB_OPEN, 10)
                    await inThread(page.evaluate, '(window.h || window.websocketHeartbeatJs).send("pend"), 0')
                    await inThread(page.waitFor, 'events.some(e => e.detail === "send")', 3)
                    break
                except Exception:
                    pass
            else:
                drained = False
        seconds = time.monotonic() - began
        messages = await inThread(page.evaluate, 'events.filter(e => e.kind === "message").map(e => e.detail)')
        events = await inThread(page.evaluate, 'events.filter(e => e.kind !== "message").map(e => e.kind)')
        threw = await inThread(page.evaluate, "window.pageThrew")
    finally:
        if loop.running:
            loop.stop()
        await inThread(page.close)
        await proxy.stop()
        await port.stopListening()
    toPage = numbers(messages, "s")
    toServer = numbers([p.decode() for p in factory.received], "p")
    return {
        "lib": lib,
        "resume": resume,
        "toPage": tally(toPage, count),
        "toServer": tally(toServer, count),
        "nowhere": state["nowhere"],
        "threw": threw,
        "resets": proxy.resets,
        "opens": events.count("open"),
        "sessionsLost": events.count("sessionlost"),
        "resumed": getattr(factory, "resumedSessions", 0),
        "seconds": seconds,
        "drained": drained,
    }


# (c) Reconnect storm -------------------------------------------------------------------


async def storm(kind: str, n: int, start: Any, stop: Any) -> Dict[str, Any]:
    """``start(port)`` makes n clients of ``kind`` connect; the server goes away for OUTAGE s; figures."""
    from twisted.internet import reactor

    factory = recordingFactory(reactor=reactor)
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    number = port.getHost().port
    handle = await start(number)
    try:
        bound = time.monotonic() + 60 + n * 0.1
        while len(factory.opens) < n and time.monotonic() < bound:
            await sleep(0.1)
        if len(factory.opens) < n:
            return {"kind": kind, "n": n, "failed": f"only {len(factory.opens)} of {n} opened"}
        await port.stopListening()
        for client in list(factory.clients):
            client.transport.abortConnection()
        await sleep(OUTAGE)
        port = reactor.listenTCP(number, factory, interface="127.0.0.1")
        listening = time.monotonic()
        before = len(factory.opens)
        bound = listening + 60
        while len(factory.opens) - before < n and time.monotonic() < bound:
            await sleep(0.05)
        accepts = [t - listening for t in factory.accepts if t >= listening]
        back = sorted(t - listening for t in factory.opens[before:])
        buckets = [0] * (int(max(accepts, default=0) / WINDOW) + 1)
        for t in accepts:
            buckets[int(t / WINDOW)] += 1
        return {
            "kind": kind,
            "n": n,
            "back": back[n - 1] if len(back) >= n else None,
            "opened": len(back),
            "accepts": len(accepts),
            "buckets": buckets,
            "peak": max(buckets),
        }
    finally:
        await stop(handle)
        await port.stopListening()
        for client in list(factory.clients):
            client.transport.abortConnection()


def chromiumStorm(browser: Any, site: Site, lib: str, n: int, pages: int) -> tuple:
    async def start(port: int) -> List[Any]:
        opened = []
        for i in range(pages):
            share = n // pages + (i < n % pages)
            opened.append(await inThread(browser.open, site.url("storm.html", port, lib=lib, n=share)))
        return opened

    async def stop(opened: List[Any]) -> None:
        for page in opened:
            await inThread(page.close)

    return start, stop


def nodeStorm(node: str, script: Path, file: Path, n: int) -> tuple:
    from storm import cacheDir  # (ws, installed there by benchmarks/storm.py's nodeClient)

    async def start(port: int) -> subprocess.Popen:
        proc = subprocess.Popen(
            [node, str(script), str(file), f"ws://127.0.0.1:{port}/", str(n), str(cacheDir())],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return proc

    async def stop(proc: subprocess.Popen) -> None:
        proc.kill()
        await inThread(proc.wait, 10)

    return start, stop


def nodeWithWs() -> tuple:
    """(node, "Node vX with ws Y"), with ws installed in benchmarks/storm.py's cache; else (None, why not)."""
    import json

    from storm import cacheDir, nodeClient

    try:
        command = nodeClient()
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"not run (npm could not install ws: {e})"
    if command is None:
        return None, "not run (node and npm not found)"
    version = subprocess.run([command[0], "--version"], capture_output=True, text=True, timeout=30).stdout.strip()
    ws = json.loads((cacheDir() / "node_modules" / "ws" / "package.json").read_text())["version"]
    return command[0], f"Node {version} with ws {ws}"


# The run -------------------------------------------------------------------------------


def sizes(files: Dict[str, bytes]) -> Dict[str, tuple]:
    return {name: (len(data), len(gzip.compress(data, 9))) for name, data in files.items()}


async def measure(args: argparse.Namespace) -> Dict[str, Any]:
    import cdp
    from seed import SEED_SOURCE, SeedUnavailable, seedBuild

    from txheartbeat._browser import SCRIPT_FILE

    quick = args.quick
    try:
        seed: Optional[bytes] = seedBuild()
        seedSource: Optional[bytes] = seedBuild(SEED_SOURCE)
        seedMissing = None
    except SeedUnavailable as e:
        seed = seedSource = None
        seedMissing = str(e)
    libs = (["seed"] if seed else []) + ["txheartbeat"]
    out: Dict[str, Any] = {"seedMissing": seedMissing, "libs": libs}
    binary = cdp.findChromium()
    if binary is None:
        raise SystemExit("no Chromium found (set $CHROMIUM or put chromium on PATH)")
    site = Site(seed)
    browser = await inThread(cdp.Browser, binary, 30.0, CHROMIUM_ARGS)
    work = Path(tempfile.mkdtemp(prefix="txheartbeat-bench-node-"))
    try:
        out["chromium"] = (await inThread(browser.send, "Browser.getVersion"))["product"]
        out["dead"] = await deadPeer(browser, site, libs, 1 if quick else 5, 5.0 if quick else 100.0)
        count = 100 if quick else COUNT
        rows = [(lib, False) for lib in libs] + [("txheartbeat", True)]
        out["loss"] = [await lossRun(browser, site, lib, resume, count, args.seed) for lib, resume in rows]
        out["count"] = count
        n = 10 if quick else args.storm
        pages = min(n, args.storm_pages)
        out["storm"] = {"n": n, "pages": pages, "rows": []}
        for lib in libs:
            start, stop = chromiumStorm(browser, site, lib, n, pages)
            out["storm"]["rows"].append({"runtime": "Chromium", **await storm(lib, n, start, stop)})
        node, out["node"] = nodeWithWs()
        if node:
            script = work / "storm.mjs"
            script.write_text(NODE_STORM, encoding="utf-8")
            files = {"seed": seedSource, "txheartbeat": SCRIPT_FILE.read_bytes()}
            for lib in libs:
                file = work / f"{lib}.mjs"
                file.write_bytes(files[lib] or b"")
                start, stop = nodeStorm(node, script, file, n)
                out["storm"]["rows"].append({"runtime": "Node", **await storm(lib, n, start, stop)})
    finally:
        await inThread(browser.close)
        site.close()
        shutil.rmtree(work, ignore_errors=True)
    files = {"txheartbeat.js": SCRIPT_FILE.read_bytes()}
    if seed and seedSource:
        files = {"seed dist/index.js (browser build)": seed, "seed lib/index.js (ES module)": seedSource, **files}
    out["sizes"] = sizes(files)
    return out


NAMES = {"seed": "websocket-heartbeat-js 1.1.3", "txheartbeat": "txheartbeat.js"}


def ms(values: List[float]) -> str:
    return f"{statistics.median(values):,.0f} / {max(values):,.0f}" if values else "–"


def report(out: Dict[str, Any], args: argparse.Namespace, seconds: float, load: tuple) -> None:
    from common import machine
    from resume import checkout
    from run import versions

    quick = " --quick" if args.quick else ""
    print(f"## 7. Browser end (issue 20){' (--quick)' if args.quick else ''}")
    print()
    print(
        f"Measured {time.strftime('%Y-%m-%d')} by `python benchmarks/browser.py{quick}` in {seconds:.0f} s on "
        f"{machine()}; {out['chromium']} headless, {out['node']}; "
        + ", ".join(f"{k} {v}" for k, v in {**versions(), "txheartbeat": checkout()}.items())
        + f". Load average (1 min) {load[0]:.2f} before, {load[1]:.2f} after. "
        "Reproduce with that command (Chromium on `PATH` or in `$CHROMIUM`; the seed is fetched from npm and "
        "checked against its published sha512)."
    )
    if out["seedMissing"]:
        print()
        print(f"The seed was not measured: {out['seedMissing']}.")
    dead = out["dead"]
    print()
    print(
        f"(a) Dead peer: pingTimeout {PING} ms, pongTimeout {PONG} ms, {dead['trials']} trial(s) (one `txheartbeat serve` "
        "each, frozen with SIGSTOP at a random moment); time to the library's onclose (it reconnects from there), "
        f"median / max, in ms. The bound is pingTimeout + pongTimeout = {PING + PONG:,} ms after the last message "
        f"received. Waited {dead['wait']:g} s for each onclose."
    )
    print()
    print("| library | from the freeze | from the last message | bound (from the last message) | closed |")
    print("|---|---|---|---|---|")
    for lib, trials in dead["results"].items():
        closed = [t for t in trials if t["closed"]]
        bound = f"{PING + PONG:,} ms" if lib == "txheartbeat" else "none (the browser's close handshake)"
        print(
            f"| {NAMES[lib]} | {ms([t['fromFreeze'] for t in closed])} | {ms([t['fromLast'] for t in closed])} | "
            f"{bound} | {len(closed)} of {len(trials)} |"
        )
    print()
    print(
        "The seed's pong timeout calls `ws.close()`, which waits for the frozen server's close frame: onclose comes "
        "when Chromium gives the closing handshake up (60 s). txheartbeat.js drops the socket at its deadline."
    )
    count = out["count"]
    print()
    print(
        f"(b) {count:,} numbered messages each way ({BURST} every {PACE * 1000:g} ms) through `tests/resetproxy.py` "
        f"(50 ms one-way latency, every connection reset 0.3–1.0 s after it opened, seed {args.seed}); reconnect "
        "after 100 ms (txheartbeat.js: backing off to 400 ms at most). Server to page: numbers sent while the page "
        "had no connection count as lost (a plain server has nowhere to keep them)."
    )
    print()
    print(
        "| library | server → page lost | dup. | in order | page → server lost | dup. | in order | "
        "resets | opens | sends that threw | time |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in out["loss"]:
        name = NAMES[r["lib"]] + (" `resume: true`" if r["resume"] else (" (no resume)" if r["lib"] != "seed" else ""))
        a, b = r["toPage"], r["toServer"]
        yes = {True: "yes", False: "no"}
        took = f"{r['seconds']:.1f} s" + ("" if r["drained"] else " (not drained)")
        print(
            f"| {name} | {a['lost']:,} | {a['duplicated']:,} | {yes[a['inOrder']]} | {b['lost']:,} | "
            f"{b['duplicated']:,} | {yes[b['inOrder']]} | {r['resets']} | {r['opens']} | {r['threw']:,} | {took} |"
        )
    print()
    print(
        "Of the server → page losses, sent while the page had no connection: "
        + ", ".join(f"{NAMES[r['lib']]}{' resume' if r['resume'] else ''} {r['nowhere']:,}" for r in out["loss"])
        + "; the rest were in flight when a connection was reset. A send that threw (the seed's `send()` on a "
        "connecting socket) counts as lost; the seed's `send()` on a closed socket is dropped silently."
    )
    for r in out["loss"]:
        if r["resume"]:
            print()
            print(
                f"With resume: {r['resumed']} sessions resumed on the server, {r['sessionsLost']} lost (onsessionlost)."
            )
    st = out["storm"]
    print()
    print(
        f"(c) Reconnect storm: {st['n']} clients, default options, the server gone for {OUTAGE:g} s (stopped "
        f"listening, every connection dropped). Chromium: {st['n']} clients over {st['pages']} pages of one headless "
        "Chromium; Node: one process, the `ws` package as its WebSocket (Node 20's own WebSocket fires no close "
        "after a refused connect). Accepts counted on the server from the moment it listens again."
    )
    print()
    print(
        "| library | runtime | all back after | peak accepts per 100 ms | peak % of N | accepts per 100 ms after the restart |"
    )
    print("|---|---|---|---|---|---|")
    for r in st["rows"]:
        if "failed" in r:
            print(f"| {NAMES[r['kind']]} | {r['runtime']} | run failed: {r['failed']} | | | |")
            continue
        back = f"{r['back']:.2f} s" if r["back"] is not None else f"{r['opened']} of {r['n']} within 60 s"
        shape = " ".join(map(str, r["buckets"][:40])) + (" …" if len(r["buckets"]) > 40 else "")
        print(
            f"| {NAMES[r['kind']]} | {r['runtime']} | {back} | {r['peak']} | {100 * r['peak'] / r['n']:.0f} % | {shape} |"
        )
    print()
    print(
        "One Chromium opens WebSocket connections to one host and port one at a time (RFC 6455 §4.1; its "
        "WebSocketEndpointLockManager also waits 10 ms before the next), which paces any storm from one browser "
        "to about 8 per 100 ms here whatever the library: the Chromium rows show that throttle. The Node rows, "
        "independent clients as 200 separate browsers would be, show the libraries' own shape: the seed retries "
        "every reconnectTimeout (2 s) in step, txheartbeat.js spreads the first retry over [0, reconnectTimeout] "
        "and then probes every reconnectTimeout ± 10 %."
    )
    print()
    print("(d) Size (bytes; gzip level 9).")
    print()
    print("| file | raw | gzipped |")
    print("|---|---|---|")
    for name, (raw, zipped) in out["sizes"].items():
        print(f"| {name} | {raw:,} | {zipped:,} |")


def main() -> None:
    from twisted.internet import task
    from twisted.internet.defer import ensureDeferred

    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 1 trial, 100 messages, 10 storm clients")
    parser.add_argument("--seed", type=int, default=20, help="the reset proxy's seed")
    parser.add_argument("--storm", type=int, default=200, help="storm clients per library (default 200)")
    parser.add_argument(
        "--storm-pages",
        type=int,
        default=200,
        help="Chromium pages (tabs) the storm clients are spread over (default 200)",
    )
    args = parser.parse_args()
    began = time.monotonic()
    load = os.getloadavg()[0]

    async def run(reactor: Any) -> None:
        out = await measure(args)
        report(out, args, time.monotonic() - began, (load, os.getloadavg()[0]))

    task.react(lambda reactor: ensureDeferred(run(reactor)))


if __name__ == "__main__":
    main()
