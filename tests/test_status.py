"""The status page of `txheartbeat serve`: the feed on a clock, the page over HTTP, and the page in headless Chromium."""

import json
import os
import re
import struct
import subprocess
from pathlib import Path
from typing import Any, List

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from txheartbeat._status import HISTORY, LISTED, STATUS_PATH, VIEWER_BACKLOG, StatusServerFactory

from .test_cli import Running, Server, handshake, httpGet, wsconnect

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOT = ROOT / "docs" / "status.png"


# The feed, on a clock --------------------------------------------------------------------


class FakeSession:
    def __init__(self, ident: str) -> None:
        self.id = ident
        self.token = "secret-token"


class FakeClient:
    """Stands for an open client connection in ``factory.clients``."""

    def __init__(self, peer: str, openedAt: float, roundTrip=None, session=None) -> None:
        self.peer = peer
        self.openedAt = openedAt
        self.lastRoundTrip = roundTrip
        self.session = session
        self.isOpen = True


class FakeViewer:
    """Stands for a status viewer connection: records what it is sent."""

    def __init__(self, backlog: int = 0) -> None:
        self.isOpen = True
        self.bufferedAmount = backlog
        self.sent: List[Any] = []
        self.aborted = False
        self.closedWith = None
        self.is_closed: Deferred = Deferred()

    def whenGone(self) -> Deferred:
        return self.is_closed

    def sendMessage(self, payload: bytes, isBinary: bool) -> None:
        assert not isBinary
        self.sent.append(json.loads(payload))

    def abort(self) -> None:
        self.aborted = True

    def closeGracefully(self, code: int, reason: str) -> None:
        self.closedWith = code


def feedOnClock():
    clock = Clock()
    factory = StatusServerFactory(reactor=clock, pingInterval=None)
    return clock, factory, factory.statusFeed


def test_feed_samples_heartbeats_and_opens_each_second_and_stops():
    """The feed records the heartbeats (answered application heartbeats and pings) and opens of each second on the factory's reactor, and leaves no timer once stopped."""
    clock, factory, feed = feedOnClock()
    feed.start()
    clock.advance(1)
    factory.heartbeatsAnswered += 2
    feed.pingsAnswered += 1
    factory.openedClients += 1
    clock.advance(1)
    clock.advance(1)
    assert list(feed.heartbeats) == [0, 3, 0]
    assert list(feed.opens) == [0, 1, 0]
    assert feed.samples == 3
    assert feed.snapshot()["heartbeats"] == 3
    feed.stop()
    assert clock.getDelayedCalls() == []


def test_feed_history_is_bounded():
    """The feed keeps the last HISTORY samples, and numbers the oldest so the page's bars stay put."""
    clock, factory, feed = feedOnClock()
    feed.start()
    for _ in range(HISTORY + 5):
        factory.openedClients += 1
        clock.advance(1)
    history = feed.snapshot()["history"]
    assert len(history["opens"]) == HISTORY and set(history["opens"]) == {1}
    assert history["first"] == 5
    feed.stop()


def test_snapshot_lists_clients_oldest_first_with_public_session_ids():
    """A snapshot lists open clients oldest first (peer without the transport prefix, seconds connected, last round trip, public session id), never a token, at most LISTED."""
    clock, factory, feed = feedOnClock()
    clock.advance(100)
    factory.clients.add(FakeClient("tcp4:127.0.0.1:2000", 90.0, 0.002, FakeSession("ab12cd34ef56")))
    factory.clients.add(FakeClient("tcp4:127.0.0.1:1000", 40.0))
    snapshot = feed.snapshot()
    assert snapshot["clients"] == [
        {"peer": "127.0.0.1:1000", "connectedFor": 60.0, "roundTrip": None, "session": None},
        {"peer": "127.0.0.1:2000", "connectedFor": 10.0, "roundTrip": 0.002, "session": "ab12cd34ef56"},
    ]
    assert "secret-token" not in json.dumps(snapshot)
    for i in range(LISTED + 10):
        factory.clients.add(FakeClient(f"tcp4:127.0.0.1:{3000 + i}", 95.0))
    assert len(feed.snapshot()["clients"]) == LISTED


def test_viewers_get_a_snapshot_at_once_then_every_second():
    """A viewer gets a snapshot when it opens and one at every sample; one that fell too far behind is dropped, and stop() closes the rest with 1001."""
    clock, factory, feed = feedOnClock()
    feed.start()
    viewer, slow = FakeViewer(), FakeViewer()
    feed.add(viewer)
    feed.add(slow)
    assert len(viewer.sent) == 1 and viewer.sent[0]["stats"]["clients"] == 0
    slow.bufferedAmount = VIEWER_BACKLOG + 1
    clock.advance(1)
    assert len(viewer.sent) == 2
    assert slow.aborted and len(slow.sent) == 1 and slow not in feed.viewers
    feed.stop()
    assert viewer.closedWith == 1001
    assert clock.getDelayedCalls() == []


# The page and the feed over the network ------------------------------------------------


def test_get_slash_answers_the_page():
    """A plain GET / answers 200 with a self-contained HTML page (inline script and style only, under a CSP); other paths 404, and ?redirect= redirects nowhere."""
    with Server() as server:
        status, headers, page = httpGet(f"http://127.0.0.1:{server.port}/")
        missing, _, _ = httpGet(f"http://127.0.0.1:{server.port}/nothing-here")
        redirect, _, again = httpGet(f"http://127.0.0.1:{server.port}/?redirect=https://example.com/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in headers["content-security-policy"]
    assert 'id="clients"' in page and 'id="rows"' in page and 'id="chart"' in page
    assert STATUS_PATH in page
    assert not re.search(r"\bsrc\s*=", page)  # loads nothing from anywhere
    assert set(re.findall(r'\bhref\s*=\s*"([^"]*)"', page)) == {"/txheartbeat.js", "/txheartbeat.classic.js"}
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", page)  # data shown as text only
    assert missing == 404
    assert redirect == 200 and again == page


def test_status_viewer_gets_json_snapshots_and_is_no_client():
    """A WebSocket on /_status receives JSON snapshots with the client count; the viewer is not counted, and what it sends is neither echoed nor answered."""
    with Server() as server:
        with wsconnect(server.url + "_status") as viewer:
            first = json.loads(viewer.recv(timeout=10))
            assert first["stats"]["clients"] == 0 and first["clients"] == []
            with Running("connect", server.url, stdin=subprocess.PIPE) as client:
                client.expect("* open")
                snapshot = first
                for _ in range(30):  # one a second
                    if snapshot["stats"]["clients"] == 1:
                        break
                    snapshot = json.loads(viewer.recv(timeout=10))
                (listed,) = snapshot["clients"]
                assert re.fullmatch(r"127\.0\.0\.1:\d+", listed["peer"])
                assert listed["session"] is None
                viewer.send("heartbeat")
                viewer.send("hello")
                for _ in range(2):  # the next messages are snapshots, not echoes or answers
                    assert json.loads(viewer.recv(timeout=10))["stats"]["clients"] == 1
                server.expect(": open")
    assert sum(line.endswith(": open") for line in server.lines[2]) == 1  # the client, not the viewer


def test_a_viewer_gets_no_session():
    """A viewer that asks `serve --resume` for a resumable session gets none, and no session is kept for it."""
    with Server("--resume") as server:
        with wsconnect(server.url + "_status", additional_headers={"Txheartbeat-Resume": "1"}) as viewer:
            assert "txheartbeat-resume" not in {k.lower() for k in viewer.response.headers}
            assert json.loads(viewer.recv(timeout=10))["stats"]["sessionsCreated"] == 0


def test_stopping_serve_closes_viewers_going_away():
    """When `serve` stops (SIGTERM), status viewers are closed with 1001 (going away) and it exits."""
    from websockets.exceptions import ConnectionClosed

    with Server() as server:
        with wsconnect(server.url + "_status") as viewer:
            viewer.recv(timeout=10)
            server.proc.terminate()
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    viewer.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        assert server.proc.wait(15) == 0


def test_status_feed_is_for_the_servers_own_page():
    """A browser's viewer connection from another origin is refused with 403; one from the page's own origin opens, whatever --allowed-origin says."""
    with Server("--allowed-origin", "https://app.example.com") as server:
        own = f"http://127.0.0.1:{server.port}"
        assert handshake(server.port, "https://evil.example.com", STATUS_PATH).startswith("HTTP/1.1 403")
        assert handshake(server.port, "https://app.example.com", STATUS_PATH).startswith("HTTP/1.1 403")
        assert handshake(server.port, own, STATUS_PATH).startswith("HTTP/1.1 101")
        assert handshake(server.port, None, STATUS_PATH).startswith("HTTP/1.1 101")  # not a browser
        assert handshake(server.port, own, "/").startswith("HTTP/1.1 403")  # clients: the policy applies


# The page in a browser -------------------------------------------------------------------


@pytest.fixture
def browser():
    from .cdp import Browser, findChromium

    binary = findChromium()
    if binary is None:
        pytest.skip("no Chromium on PATH (set $CHROMIUM)")
    browser = Browser(binary)
    try:
        yield browser
    finally:
        browser.close()


def pngSize(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_page_shows_clients_live_in_chromium(browser, tmp_path):
    """In headless Chromium the page shows the 2 connected clients (not itself), their round trip and session, and a chart with bars; the screenshot is docs/status.png (refreshed with TXHEARTBEAT_UPDATE_SCREENSHOT=1)."""
    with Server("--ping-interval", "0.5", "--resume") as server:
        # One sends the seed's heartbeats (answered); the other is quiet, so the server pings it (a round trip).
        chatty = Running(
            "connect", server.url, "--ping-message", "heartbeat", "--ping-interval", "0.3", stdin=subprocess.PIPE
        )
        quiet = Running("connect", server.url, "--resume", "--ping-interval", "60", stdin=subprocess.PIPE)
        with chatty, quiet:
            chatty.expect("* open")
            quiet.expect("* open")
            page = browser.open(f"http://127.0.0.1:{server.port}/")
            page.send(
                "Emulation.setDeviceMetricsOverride",
                {"width": 1000, "height": 640, "deviceScaleFactor": 1, "mobile": False},
            )
            page.waitFor("document.getElementById('clients').textContent === '2'", timeout=20)
            assert page.evaluate("document.querySelectorAll('#rows tr').length") == 2
            page.waitFor("[...document.querySelectorAll('#rows td')].some(td => td.textContent.endsWith(' ms'))", 20)
            page.waitFor("[...document.querySelectorAll('#chart rect.op')].some(r => +r.getAttribute('height') > 0)")
            assert page.evaluate("document.getElementById('state').textContent") == "live"
            sessions = page.evaluate("[...document.querySelectorAll('#rows tr')].map(r => r.cells[3].textContent)")
            assert sum(bool(re.fullmatch(r"[0-9a-f]{12}", s)) for s in sessions) == 1, sessions
            png = page.screenshot()
            assert pngSize(png) == (1000, 640)
            # docs/status.png is refreshed on request only, so a test run leaves the tree clean.
            (SCREENSHOT if os.environ.get("TXHEARTBEAT_UPDATE_SCREENSHOT") else tmp_path / "status.png").write_bytes(
                png
            )

            # Whatever a snapshot holds is shown as text, never parsed as HTML.
            hostile = "<img src=x onerror=\"document.title='pwned'\">"
            shown = page.evaluate(
                "render({interval: 1, heartbeats: 0, history: {first: 0, heartbeats: [], opens: []},"
                " stats: {clients: 1, opened: 1, reaped: 0, sessions: 0},"
                f" clients: [{{peer: {json.dumps(hostile)}, connectedFor: 1, roundTrip: null, session: null}}]}});"
                " [document.querySelector('#rows td').textContent, document.querySelectorAll('#rows img').length]"
            )
            assert shown == [hostile, 0]
            assert page.evaluate("document.title") != "pwned"
