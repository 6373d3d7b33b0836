"""
txheartbeat.js in a real browser: headless Chromium (``tests/cdp.py``)
against ``txheartbeat serve`` processes and a loopback
:class:`HeartbeatServerFactory`, with the page ``tests/browser/txheartbeat.html``.

Skips, saying why, without Chromium (``.ci/run`` installs Debian's).
"""

from __future__ import annotations

import os
import re
import signal
import socket
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from txheartbeat import SendQueueFull

from .resetproxy import ResetProxy
from .test_browser import CHROMIUM, browser, inPage, servers, site, tabs, until, waitInPage  # noqa: F401 (fixtures)
from .test_cli import Running

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found; .ci/run installs Debian's chromium")

TIMINGS = {"ping": "1000", "pong": "1000", "reconnect": "1000"}


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(port: int, *options: str) -> Running:
    """`txheartbeat serve --port PORT` once it listens (its own heartbeats slow: the page's are measured)."""
    server = Running("serve", "--port", str(port), "--ping-interval", "60", *options)
    try:
        server.expect("serving")
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture
def serving():
    """Start `txheartbeat serve` with ``await serving(port)`` (a free port if none): ``(port, server)``; all stop at the end."""
    started = []

    async def start(port=None, *options):
        port = port or freePort()
        started.append(await threads.deferToThread(serve, port, *options))
        return port, started[-1]

    yield start
    for server in started:
        server.stop()


def kinds(events):
    return [e["kind"] for e in events if e["kind"] != "message"]


@pytest_twisted.ensureDeferred
async def test_module_served_by_txheartbeat_serve_runs_cross_origin(browser, site, tabs):  # noqa: F811
    """A page on another origin imports /txheartbeat.js from `txheartbeat serve` (CORS, JavaScript type) and stays open through answered heartbeats."""
    port = freePort()
    server = await threads.deferToThread(serve, port)
    try:
        page = await tabs(
            site.http("txheartbeat.html", port, script=f"http://127.0.0.1:{port}/txheartbeat.js", **TIMINGS)
        )
        await waitInPage(page, 'events.filter(e => e.detail === "heartbeat").length >= 3', timeout=15)
        events = await inPage(page, "events")
        assert kinds(events) == ["open"], events
    finally:
        server.stop()


@pytest_twisted.ensureDeferred
async def test_hours_of_idle_at_the_exact_bound_keep_one_connection(browser, site, servers, tabs):  # noqa: F811
    """On a page clock moved by the test, four hours of idle line (576 heartbeats, each answered pongTimeout - 1 ms late) keep one connection."""
    server = servers(pingInterval=None)
    opened = server.timeline.next("open")
    page = await tabs(site.http("txheartbeat.html", server.port, fake="1", ping="15000", pong="10000"))
    await opened
    await waitInPage(page, 'events.some(e => e.detail === "hello" || e.kind === "open")', timeout=10)
    rounds = 4 * 3600 // 25
    answered = await threads.deferToThread(
        page.evaluate,
        f"""(async () => {{
            let answered = 0;
            for (let i = 0; i < {rounds}; i++) {{
                const before = events.length;
                // (the clock stands at the last message: its answer, or the open)
                clock.advance(15000);   // idle for pingTimeout: the heartbeat goes out
                clock.advance(9999);    // its answer is read 1 ms before the deadline
                while (events.length === before) await new Promise(r => setTimeout(r, 1));
                if (events[events.length - 1].detail === "heartbeat") answered++;
            }}
            return answered;
        }})()""",
        120,
    )
    assert answered == rounds
    assert server.factory.heartbeatsAnswered == rounds and server.factory.openedClients == 1
    assert kinds(await inPage(page, "events")) == ["open"]
    # One more heartbeat, unanswered in time (answered 1 ms after the deadline): declared dead at the bound.
    await inPage(page, "clock.advance(15000); clock.advance(10000); 0")
    events = await inPage(page, "events")
    assert kinds(events)[:2] == ["open", "closed"] and events[-2]["detail"]["heartbeatTimeout"] is True


@pytest_twisted.ensureDeferred
async def test_frozen_server_detected_at_ping_plus_pong_timeout(browser, site, tabs, serving):  # noqa: F811
    """A SIGSTOPped `txheartbeat serve` is declared dead pingTimeout + pongTimeout after its last message (not when the browser's close handshake times out)."""
    port, server = await serving()
    page = await tabs(site.http("txheartbeat.html", port, **TIMINGS))
    await waitInPage(page, 'events.filter(e => e.detail === "heartbeat").length >= 1', timeout=15)
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        await waitInPage(page, 'events.some(e => e.kind === "closed")', timeout=10)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    events = await inPage(page, "events")
    closed = next(e for e in events if e["kind"] == "closed")
    last = max(e["time"] for e in events if e["kind"] == "message" and e["time"] <= closed["time"])
    took = closed["time"] - last
    assert closed["detail"]["heartbeatTimeout"] is True
    # Both times are the page's Date.now() (whole milliseconds), and the message's is
    # taken in its handler, just after the script noted the arrival: 1 ms of rounding.
    # The ceiling leaves the browser's timers 1 s on a shared machine; a close handshake timing out is told
    # apart by heartbeatTimeout above (and would take the close timeout on top).
    assert 2000 - 1 <= took <= 2000 + 1000, took


@pytest_twisted.ensureDeferred
async def test_back_within_the_probe_pace_after_a_restart(browser, site, tabs, serving):  # noqa: F811
    """Killed (SIGKILL) and started again on the same port, `txheartbeat serve` has the page back within reconnectTimeout (+10 %) of listening."""
    port, server = await serving()
    page = await tabs(site.http("txheartbeat.html", port, **TIMINGS))
    await waitInPage(page, 'events.some(e => e.kind === "open")', timeout=15)
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(10)
    await waitInPage(page, 'events.filter(e => e.kind === "reconnecting").length >= 3', timeout=10)
    await serving(port)
    listening = await inPage(page, "Date.now()")
    await waitInPage(page, 'events.filter(e => e.kind === "open").length >= 2', timeout=10)
    events = await inPage(page, "events")
    back = [e for e in events if e["kind"] == "open"][1]["time"]
    assert back - listening <= 1100 + 300, back - listening
    assert "gaveup" not in kinds(events)


STREAM = 2000
PACE = 0.15  # seconds between bursts of 20 messages, each way: the streams last 15 s, over many resets


def numbered(items, prefix):
    """The numbers of the ``prefix``-numbered messages in ``items``, in the order they came."""
    return [int(item[len(prefix) :]) for item in items if item.startswith(prefix) and item[len(prefix) :].isdigit()]


@pytest_twisted.ensureDeferred
async def test_resume_streams_2000_each_way_through_random_resets(browser, site, servers, tabs):  # noqa: F811
    """With resume: true, 2,000 numbered messages each way between the page and HeartbeatServerFactory(resume=True), through a proxy with 50 ms latency resetting every connection at random: none lost, none duplicated, in order."""
    server = servers(resume=True)
    proxy = ResetProxy(server.port, latency=0.05, resetAfter=(0.3, 1.0), seed=20)
    sent = 0
    call = None

    def stream():
        # The server's side: the session keeps what it cannot send now; SendQueueFull is a pause, never a loss.
        nonlocal sent, call
        call = None
        (session,) = list(server.factory.sessionStore)
        try:
            for _ in range(20):
                if sent == STREAM:
                    return
                session.send(f"s{sent}")
                sent += 1
        except SendQueueFull:
            pass
        call = reactor.callLater(PACE, stream)

    try:
        page = await tabs(
            site.http(
                "txheartbeat.html",
                proxy.port.getHost().port,
                resume="1",
                ping="1000",
                pong="1000",
                reconnect="100",
                maxReconnect="400",
            )
        )
        await waitInPage(page, 'events.some(e => e.kind === "open")', timeout=15)
        stream()
        await inPage(
            page,
            f"""window.sent = 0; (async () => {{
                for (let i = 0; i < {STREAM}; ) {{
                    try {{ h.send("p" + i); window.sent = ++i; }}
                    catch (e) {{ if (e.name !== "SendQueueFull") throw e; await new Promise(r => setTimeout(r, 20)); }}
                    if (i % 20 === 0) await new Promise(r => setTimeout(r, {PACE * 1000:g}));
                }}
            }})(); 0""",
        )
        await waitInPage(
            page,
            f'window.sent === {STREAM} && events.filter(e => e.kind === "message" && /^s\\d+$/.test(e.detail)).length >= {STREAM}',
            timeout=240,
        )
        await until(
            lambda: len(numbered([p.decode() for p in server.received], "p")) >= STREAM, 60, "the server's count"
        )
        got = [p.decode() for p in server.received]
        events = await inPage(page, "events")
    finally:
        if call is not None and call.active():
            call.cancel()
        await proxy.stop()
    toPage = numbered([e["detail"] for e in events if e["kind"] == "message"], "s")
    toServer = numbered(got, "p")
    assert toPage == list(range(STREAM)), (len(toPage), len(set(toPage)))
    assert toServer == list(range(STREAM)), (len(toServer), len(set(toServer)))
    assert "sessionlost" not in kinds(events) and server.factory.createdSessions == 1
    assert proxy.resets >= 5 and server.factory.resumedSessions >= 5, (proxy.resets, server.factory.resumedSessions)
    print(
        f"resume through resets: {proxy.resets} resets, {server.factory.resumedSessions} resumes, "
        f"{len(toPage)} to the page and {len(toServer)} to the server, 0 lost, 0 duplicated, in order"
    )


def docsPage(name: str, heading: str) -> str:
    """The first HTML block after ``heading`` in docs/NAME."""
    text = (Path(__file__).parent.parent / "docs" / name).read_text(encoding="utf-8")
    after = text[text.index(heading) :]
    return after[after.index("```html\n") + 8 : after.index("```\n", after.index("```html\n") + 8)]


@pytest_twisted.ensureDeferred
async def test_docs_resume_page_resumes_with_serve_resume_after_a_reset(browser, site, tabs, serving):  # noqa: F811
    """docs/browser.md's resume page, against `txheartbeat serve --resume` through a proxy that is reset once, says it resumed and its echoes go on with no number missing or repeated."""
    port, _ = await serving(None, "--resume")
    proxy = ResetProxy(port, latency=0.05, resetAfter=None)
    html = docsPage("browser.md", "## Session resume")
    html = html.replace("http://127.0.0.1:9000/txheartbeat.js", f"http://127.0.0.1:{port}/txheartbeat.js")
    html = html.replace("ws://127.0.0.1:9000/", proxy.url)
    (site.root / "resume-doc.html").write_text(html, encoding="utf-8")
    log = 'document.getElementById("log").textContent'
    try:
        page = await tabs(f"http://127.0.0.1:{site.port}/resume-doc.html")
        await waitInPage(page, f'{log}.includes("echo: message 2\\n")', timeout=15)
        proxy.reset()
        await waitInPage(page, f'{log}.includes("dropped")', timeout=15)
        await waitInPage(page, f'{log}.includes("resumed: nothing lost")', timeout=15)
        last = max(int(m) for m in re.findall(r"echo: message (\d+)", await inPage(page, log)))
        await waitInPage(page, f'{log}.includes("echo: message {last + 2}\\n")', timeout=15)
        text = await inPage(page, log)
    finally:
        await proxy.stop()
    lines = text.splitlines()
    assert lines[0] == "open: a new session" and "session lost" not in text, text
    echoes = [int(line.rsplit(" ", 1)[1]) for line in lines if line.startswith("echo: message ")]
    assert echoes == list(range(1, len(echoes) + 1)), text


@pytest_twisted.ensureDeferred
async def test_resume_page_on_a_server_without_resume_runs_plain(browser, site, servers, tabs):  # noqa: F811
    """With resume: true against a server without resume, which selects txheartbeat.plain (Chromium fails a connection whose offered subprotocols all go unanswered), the page runs plain: its messages arrive unframed, heartbeats answered."""
    server = servers(resume=False)
    page = await tabs(site.http("txheartbeat.html", server.port, resume="1", ping="1000", pong="1000"))
    await waitInPage(page, 'events.filter(e => e.detail === "heartbeat").length >= 1', timeout=15)
    assert server.received == [b"hello"] and server.factory.heartbeatsAnswered >= 1
    assert await inPage(page, "h.ws.protocol") == "txheartbeat.plain"
    assert kinds(await inPage(page, "events")) == ["open"]
