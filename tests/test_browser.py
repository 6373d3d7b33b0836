"""
Real browser interop: headless Chromium (driven over the DevTools protocol,
``tests/cdp.py``) against a loopback :class:`HeartbeatServerFactory`.

The pages (``tests/browser/``) are served by a twisted.web static site on
another loopback port (or opened from disk, for the ``Origin: null`` check).
One runs the unmodified websocket-heartbeat-js 1.1.3 (the client
txheartbeat's server side follows), fetched from the npm registry (no npm
needed: ``tests/seed.py`` downloads the tarball, checks its sha512 integrity and
caches it); the other uses the browser's own WebSocket.  Every
check is made from the server side, the page's own record only confirms it.

The module skips, saying why, when no Chromium is found or it cannot start;
the seed's tests skip when the registry cannot be reached and nothing is
cached.  ``.ci/run`` installs Debian's ``chromium``.
"""

from __future__ import annotations

import os
import shutil
import signal
import urllib.parse
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pytest
import pytest_twisted
from twisted.internet import reactor, task, threads
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web.server import Site

with warnings.catch_warnings():
    # Twisted's own module-level use of its deprecated resources, at import: nothing to change here.
    warnings.simplefilter("ignore", DeprecationWarning)
    from twisted.web.static import File

from txheartbeat import HeartbeatServerFactory, HeartbeatServerProtocol
from txheartbeat._browser import SCRIPT_FILE

from . import cdp
from .seed import SeedUnavailable, seedBuild
from .test_integration import Timeline

CHROMIUM = cdp.findChromium()
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason=f"no Chromium found (looked for $CHROMIUM and {', '.join(cdp.NAMES)}); .ci/run installs Debian's chromium",
)

PAGES = Path(__file__).parent / "browser"
NETWORK_SERVICE = "--utility-sub-type=network.mojom.NetworkService"

# Server timings (seconds) and the seed's (ms): one heartbeat period is about a second.
PING_INTERVAL = 1.0
PONG_TIMEOUT = 1.0
LEAVE_TIMEOUT = 5.0
SEED_TIMINGS = {"ping": "1000", "pong": "1000"}
SEED_RECONNECT = 2.0  # websocket-heartbeat-js's default reconnectTimeout, left as it is


class Pages:
    """The test pages in a folder, served over HTTP on loopback (and reachable as file:// URLs)."""

    def __init__(self, root: Path, port: int, seedMissing: Optional[str]) -> None:
        self.root = root
        self.port = port
        self.seedMissing = seedMissing

    @staticmethod
    def _query(wsPort: int, query: Dict[str, str]) -> str:
        return urllib.parse.urlencode({"url": f"ws://127.0.0.1:{wsPort}/", **query})

    def http(self, page: str, wsPort: int, **query: str) -> str:
        """The page's URL on the HTTP site (origin ``http://127.0.0.1:<port>``), talking to ``wsPort``."""
        return f"http://127.0.0.1:{self.port}/{page}?{self._query(wsPort, query)}"

    def file(self, page: str, wsPort: int, **query: str) -> str:
        """The page's file:// URL, talking to ``wsPort``."""
        return f"{(self.root / page).as_uri()}?{self._query(wsPort, query)}"

    def requireSeed(self) -> None:
        """Skip the test when websocket-heartbeat-js is not there."""
        if self.seedMissing is not None:
            pytest.skip(self.seedMissing)


class Recorder(HeartbeatServerProtocol):
    """Records its hooks on the factory's timeline, and what reached the application."""

    def onConnect(self, request):
        self.factory.timeline.event("connect", request.headers.get("origin"))

    def onOpen(self):
        self.factory.timeline.event("open", self)

    def onMessage(self, payload, isBinary):
        self.factory.received.append(payload)
        self.factory.timeline.event("message", self, payload)

    def onClose(self, wasClean, code, reason):
        self.factory.timeline.event("close", self, wasClean, code, self.closedByMe)

    def onPeerDead(self, failure):
        self.factory.timeline.event("dead", self)

    def failHandshake(self, reason, code=400, responseHeaders=None):
        super().failHandshake(reason, code, responseHeaders)
        self.factory.timeline.event("refused", code, reason)


class Server:
    """A HeartbeatServerFactory of :class:`Recorder` listening on 127.0.0.1."""

    def __init__(self, **options: Any) -> None:
        options.setdefault("pingInterval", PING_INTERVAL)
        options.setdefault("pongTimeout", PONG_TIMEOUT)
        options.setdefault("leaveTimeout", LEAVE_TIMEOUT)
        self.factory = HeartbeatServerFactory(**options)
        self.factory.protocol = Recorder
        self.factory.timeline = self.timeline = Timeline()
        self.factory.received = self.received = []  # what reached onMessage, in order
        self.listening = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.port = self.listening.getHost().port

    def names(self) -> List[str]:
        return [event[1] for event in self.timeline.events]

    def stop(self):
        """Stop listening and drop every connection (no close handshake)."""
        stopped = self.listening.stopListening()
        for client in list(self.factory.clients):
            client.transport.abortConnection()
        return stopped

    def listenAgain(self) -> None:
        self.listening = reactor.listenTCP(self.port, self.factory, interface="127.0.0.1")


@pytest.fixture(scope="module")
def browser():
    try:
        started = cdp.Browser(CHROMIUM)
    except Exception as e:
        pytest.skip(f"Chromium ({CHROMIUM}) did not start: {e}")
    yield started
    started.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("pages")
    for page in PAGES.glob("*.html"):
        shutil.copy(page, root)
    shutil.copy(SCRIPT_FILE, root)  # txheartbeat.js, as a page's own copy of it
    try:
        (root / "websocket-heartbeat-js.js").write_bytes(seedBuild())
        missing = None
    except SeedUnavailable as e:
        missing = str(e)
    listening = reactor.listenTCP(0, Site(File(str(root))), interface="127.0.0.1")
    yield Pages(root, listening.getHost().port, missing)
    listening.stopListening()


@pytest.fixture
def servers():
    """Make servers with ``servers(**options)``; all stop at the end of the test."""
    made: List[Server] = []

    def make(**options: Any) -> Server:
        made.append(Server(**options))
        return made[-1]

    yield make
    for server in made:
        server.stop()


@pytest.fixture
def tabs(browser):
    """Open pages with ``await tabs(url)``; all close at the end of the test."""
    opened: List[cdp.Page] = []

    async def open(url: str) -> cdp.Page:
        page = await threads.deferToThread(browser.open, url)
        opened.append(page)
        return page

    yield open
    for page in opened:
        page.close()


def inPage(page: cdp.Page, expression: str) -> Any:
    """Evaluate in the page from a thread, so the reactor serves the page meanwhile."""
    return threads.deferToThread(page.evaluate, expression)


def waitInPage(page: cdp.Page, condition: str, timeout: float = 10.0) -> Any:
    return threads.deferToThread(page.waitFor, condition, timeout)


async def sleep(seconds: float) -> None:
    await task.deferLater(reactor, seconds, lambda: None)


async def until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll a server-side counter that no Deferred reports."""
    deadline = reactor.seconds() + timeout
    while not predicate():
        assert reactor.seconds() < deadline, f"{what}: not within {timeout} s"
        await sleep(0.05)


async def openSeed(server: Server, tabs: Any, url: str) -> tuple:
    """Open the seed page at ``url``; return it and its server connection once its first message (onopen's "hello") arrived."""
    message = server.timeline.next("message")
    page = await tabs(url)
    client, payload = await message
    assert payload == b"hello"
    return page, client


def kinds(events: List[Dict[str, Any]]) -> List[str]:
    return [event["kind"] for event in events if event["kind"] != "message"]


@pytest_twisted.ensureDeferred
async def test_seed_heartbeats_are_answered_and_never_reach_the_application(browser, site, servers, tabs):
    """websocket-heartbeat-js in Chromium stays on one connection for several heartbeats, each answered by the server and none seen by onMessage."""
    site.requireSeed()
    server = servers()
    page, client = await openSeed(server, tabs, site.http("seed.html", server.port, **SEED_TIMINGS))
    start = reactor.seconds()
    # The seed sends "heartbeat" after pingTimeout (1 s) without a message; each answer restarts that.
    await waitInPage(page, 'events.filter(e => e.detail === "heartbeat").length >= 4', timeout=10)
    replies = await inPage(page, 'events.filter(e => e.detail === "heartbeat").length')
    assert reactor.seconds() - start >= 3.0  # several heartbeat periods went by
    assert server.factory.heartbeatsAnswered in (replies, replies + 1)  # (one may be on its way)
    assert server.received == [b"hello"]  # the page's own message, and no heartbeat
    assert server.names() == ["connect", "open", "message"]  # same connection throughout
    assert server.factory.clients == {client} and client.isOpen and server.factory.openedClients == 1
    assert kinds(await inPage(page, "events")) == ["open"]

    png = await threads.deferToThread(page.screenshot)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR"
    width, height = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    assert width > 0 and height > 0
    assert await inPage(page, 'document.getElementById("state").textContent') == "open"


@pytest_twisted.ensureDeferred
async def test_request_leave_closes_the_seed_for_good(browser, site, servers, tabs):
    """requestLeave() sends "close"; the seed calls close(), a clean close it starts itself, and never reconnects."""
    site.requireSeed()
    server = servers()
    page, client = await openSeed(server, tabs, site.http("seed.html", server.port, **SEED_TIMINGS))
    closed = server.timeline.next("close")
    asked = reactor.seconds()
    client.requestLeave()
    who, wasClean, code, closedByMe = await closed
    assert who is client and wasClean and not closedByMe
    print("CLOSECODE", code)
    assert reactor.seconds() - asked < LEAVE_TIMEOUT  # the client left: the server's fallback close never ran
    # Past the seed's reconnect delay (2 s) and a few heartbeat periods: nobody came back.
    await sleep(SEED_RECONNECT + 1.5)
    assert server.factory.openedClients == 1 and not server.factory.clients
    assert server.names() == ["connect", "open", "message", "close"]
    events = await inPage(page, "events")
    assert kinds(events) == ["open", "closed"]
    assert [e["detail"] for e in events if e["kind"] == "message"][-1] == "close"


@pytest_twisted.ensureDeferred
async def test_seed_reconnects_when_the_server_comes_back(browser, site, servers, tabs):
    """When the server stops listening and drops the connection, the seed keeps trying and opens again once it listens on the same port."""
    site.requireSeed()
    server = servers()
    page, first = await openSeed(server, tabs, site.http("seed.html", server.port, **SEED_TIMINGS))
    await server.stop()
    # At least one attempt (after the seed's 2 s reconnectTimeout) finds nobody listening.
    await waitInPage(page, 'events.some(e => e.kind === "error")', timeout=SEED_RECONNECT + 5)
    assert server.factory.openedClients == 1
    opened = server.timeline.next("open", timeout=SEED_RECONNECT + 5)
    server.listenAgain()
    message = server.timeline.next("message")
    (second,) = await opened
    assert second is not first and server.factory.clients == {second}
    assert server.factory.openedClients == 2
    assert await message == (second, b"hello")  # the page's onopen ran again
    seen = kinds(await inPage(page, "events"))
    assert seen[:3] == ["open", "closed", "reconnecting"] and seen[-1] == "open" and seen.count("open") == 2


@pytest_twisted.ensureDeferred
async def test_frozen_browser_is_reaped_by_the_server_heartbeat(browser, site, servers, tabs):
    """A native WebSocket, alive while its browser answers pings, is reaped within pingInterval + pongTimeout once the browser freezes."""
    server = servers()
    opened = server.timeline.next("open")
    page = await tabs(site.http("native.html", server.port))
    (client,) = await opened
    pings = server.factory.pingsSent
    await until(lambda: server.factory.pingsSent >= pings + 2, 3 * (PING_INTERVAL + PONG_TIMEOUT), "two pings")
    assert server.factory.deadClients == 0 and client.isOpen  # the browser answered them
    # Chrome answers pings in its network service process, not in the page.
    # Tried on Chromium 156, an open WebSocket kept answering every ping for
    # 4 s both with the page's JavaScript paused (Debugger.pause: timers
    # stopped) and with Network.emulateNetworkConditions(offline=True), which
    # only affects new requests.  Stopping that process (SIGSTOP) freezes the
    # connection as a hung or suspended machine would: the kernel keeps the
    # TCP connection up and acknowledges bytes, nothing answers the pings.
    service = browser.processWith(NETWORK_SERVICE)
    if service is None:
        pytest.skip(f"no Chromium process with {NETWORK_SERVICE} (network service in the browser process?)")
    dead = server.timeline.next("dead", timeout=PING_INTERVAL + PONG_TIMEOUT + 5)
    closed = server.timeline.next("close")
    frozen = reactor.seconds()
    os.kill(service, signal.SIGSTOP)
    try:
        (who,) = await dead
        took = reactor.seconds() - frozen
    finally:
        os.kill(service, signal.SIGCONT)
    assert who is client
    assert took <= PING_INTERVAL + PONG_TIMEOUT + 0.75
    _, wasClean, code, _ = await closed  # aborted right after onPeerDead
    assert not wasClean and code == 1006 and "no traffic from the peer" in client.wasNotCleanReason
    assert not server.factory.clients and server.factory.deadClients == 1
    # Thawed, the browser finds the connection gone (the server aborted it).
    await waitInPage(page, 'events.some(e => e.kind === "closed")', timeout=5)
    assert kinds(await inPage(page, "events")) == ["open", "closed"]


@pytest_twisted.ensureDeferred
async def test_file_page_sends_origin_null_and_is_allowed_by_default(browser, site, servers, tabs):
    """A page opened from disk sends Origin: null, and a server with the default policy lets it open."""
    site.requireSeed()
    server = servers()
    connected = server.timeline.next("connect")
    _, client = await openSeed(server, tabs, site.file("seed.html", server.port, **SEED_TIMINGS))
    assert await connected == ("null",)
    assert client.isOpen and server.factory.openedClients == 1


@pytest_twisted.ensureDeferred
async def test_allowed_origins_refuses_the_file_page_and_lets_the_http_page_in(browser, site, servers, tabs):
    """With allowedOrigins=["http://127.0.0.1:*"], the file:// page is refused with 403 before onConnect, and the http page opens."""
    site.requireSeed()
    server = servers(allowedOrigins=["http://127.0.0.1:*"])
    logged: List[str] = []

    def observe(event: Dict[str, Any]) -> None:
        if "allowedOrigins" in formatEvent(event):
            logged.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    try:
        refused = server.timeline.next("refused")
        filePage = await tabs(site.file("seed.html", server.port, **SEED_TIMINGS))
        assert await refused == (403, "origin 'null' not allowed")
        await waitInPage(filePage, 'events.some(e => e.kind === "closed")', timeout=5)
        # (Autobahn still calls onClose for a connection it refused; onConnect and onOpen never ran.)
        assert server.names()[0] == "refused" and not {"connect", "open"} & set(server.names())
        assert server.factory.openedClients == 0

        connected, opened = server.timeline.next("connect"), server.timeline.next("open")
        await tabs(site.http("seed.html", server.port, **SEED_TIMINGS))
        assert await connected == (f"http://127.0.0.1:{site.port}",)
        await opened
    finally:
        globalLogPublisher.removeObserver(observe)
    assert server.factory.openedClients == 1
    # One line per refused attempt (the file page may have tried again meanwhile), none for the http page.
    assert set(logged) == {"txheartbeat: upgrade from origin 'null' refused (not in allowedOrigins)"}
    events = await inPage(filePage, "events")
    closes = [e["detail"] for e in events if e["kind"] == "closed"]
    assert "open" not in kinds(events) and closes[0] == 1006  # all a page learns of a refused upgrade
