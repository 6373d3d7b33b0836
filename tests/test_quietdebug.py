"""The "debugFormatting" shortcut: Autobahn's per-connection debug lines cost nothing unless they are logged."""

from __future__ import annotations

import os
import subprocess
import sys
from pprint import pformat

import pytest
import txaio
from autobahn.websocket import protocol as autobahnProtocol
from twisted.logger import globalLogPublisher

import txheartbeat._quietdebug as quietdebug
from txheartbeat import HeartbeatClientFactory, HeartbeatServerFactory
from txheartbeat.testing import MemoryReactor, RecordingHandler

from .conftest import URL, needsShortcut


def opened(monkeypatch: pytest.MonkeyPatch) -> list:
    """Open one connection on a memory reactor, counting the pformat calls txheartbeat's formatter makes."""
    calls: list = []
    monkeypatch.setattr(quietdebug, "pformat", lambda *a, **k: calls.append(a) or pformat(*a, **k))
    reactor = MemoryReactor()
    server = HeartbeatServerFactory(URL, pingInterval=None, reactor=reactor)
    handler = RecordingHandler(reactor)
    HeartbeatClientFactory(URL, handler, reactor=reactor, pingInterval=None).connect()
    link = reactor.accept(server)
    link.pump()
    assert handler.protocol is not None and handler.protocol.isOpen
    return calls


@needsShortcut("debugFormatting")
def test_a_connection_formats_no_debug_line_while_debug_is_off(monkeypatch):
    """Both ends open without formatting Autobahn's configuration or transport details (one pformat each, without it)."""
    assert autobahnProtocol.pformat is not pformat
    assert opened(monkeypatch) == []


@needsShortcut("debugFormatting")
def test_debug_lines_are_as_autobahn_formats_them_when_logged(monkeypatch):
    """With debug logging on, the lines carry pformat's text, as without the shortcut."""
    events: list = []
    globalLogPublisher.addObserver(events.append)
    level = txaio.get_global_log_level()
    txaio.set_global_log_level("debug")
    try:
        calls = opened(monkeypatch)
    finally:
        txaio.set_global_log_level(level)
        globalLogPublisher.removeObserver(events.append)
    attrs = [e["attrs"] for e in events if "attrs" in e]
    details = [e["transport_details"] for e in events if "transport_details" in e]
    assert len(attrs) == 2 and len(details) == 1  # server and client; the client's handshake
    assert all(isinstance(text, str) for text in attrs + details)
    assert len(calls) == 3


def test_deferred_text_is_pformats():
    """A Formatted value formats, prints and reprs as pformat's text of its value."""
    value = [("openHandshakeTimeout", 5, "Factory"), ("maxFramePayloadSize", 0, "Factory")] * 10
    lazy = quietdebug.Formatted(value)
    assert str(lazy) == repr(lazy) == format(lazy, "") == f"{lazy}" == pformat(value)
    assert "{attrs}".format_map({"attrs": lazy}) == pformat(value)  # (as a log event is formatted)


def test_other_callers_get_pformat_itself():
    """Autobahn's other uses of pformat (Timings as text) still get a string."""
    timings = autobahnProtocol.Timings()
    timings.track("x")
    assert isinstance(str(timings), str) and str(timings) == pformat(timings._timings)
    assert autobahnProtocol.pformat({"a": 1}, width=10) == pformat({"a": 1}, width=10)
    assert autobahnProtocol.pformat(object={"a": 1}) == pformat({"a": 1})  # (pprint's own parameter name)


def test_off_leaves_autobahn_as_it_is():
    """With the shortcut off (or its code unverified), Autobahn's module keeps pprint.pformat."""
    code = (
        "import pprint, txheartbeat, txheartbeat._protocol\n"
        "from autobahn.websocket import protocol\n"
        "print(protocol.pformat is pprint.pformat)\n"
    )
    env = {**os.environ, "TXHEARTBEAT_SHORTCUTS": "-debugFormatting"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.stdout.strip() == "True", out.stderr
