"""
txheartbeat.js in a real browser: headless Chromium (``tests/cdp.py``)
against ``txheartbeat serve`` processes and a loopback
:class:`HeartbeatServerFactory`, with the page ``tests/browser/txheartbeat.html``.

Skips, saying why, without Chromium (``.ci/run`` installs Debian's).
"""

from __future__ import annotations

import os
import signal
import socket

import pytest
import pytest_twisted
from twisted.internet import threads

from .test_browser import CHROMIUM, browser, inPage, servers, site, tabs, waitInPage  # noqa: F401 (fixtures)
from .test_cli import Running

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium found; .ci/run installs Debian's chromium")

TIMINGS = {"ping": "1000", "pong": "1000", "reconnect": "1000"}


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(port: int) -> Running:
    """`txheartbeat serve --port PORT` once it listens (its own heartbeats slow: the page's are measured)."""
    server = Running("serve", "--port", str(port), "--ping-interval", "60")
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

    async def start(port=None):
        port = port or freePort()
        started.append(await threads.deferToThread(serve, port))
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
    assert 2000 <= took <= 2000 + 400, took


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
