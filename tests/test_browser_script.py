"""
txheartbeat.js, the browser end: served by ``txheartbeat serve`` as an ES
module and as a classic script, and its unit tests on Node's test runner
(``tests/js/``, a fake clock and fake sockets).
"""

import ast
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from txheartbeat._browser import SCRIPT_FILE, script

from .test_cli import Server

ROOT = Path(__file__).resolve().parent.parent
NODE = shutil.which("node")


def get(url, **headers):
    """Status, headers (lowercased names) and body of a GET with ``headers``, never through a proxy."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def test_serve_answers_the_module_and_the_classic_script_cacheable():
    """GET /txheartbeat.js is the module, /txheartbeat.classic.js the same without its export line; JavaScript, cacheable, readable from any origin, 304 when unchanged."""
    with Server() as server:
        base = f"http://127.0.0.1:{server.port}"
        status, headers, body = get(base + "/txheartbeat.js")
        classic = get(base + "/txheartbeat.classic.js")
        again = get(base + "/txheartbeat.js", **{"If-None-Match": headers["etag"]})
    assert status == 200 and body == SCRIPT_FILE.read_bytes()
    assert headers["content-type"] == "text/javascript; charset=utf-8"
    assert headers["cache-control"] == "public, max-age=3600"
    assert headers["access-control-allow-origin"] == "*" and headers["x-content-type-options"] == "nosniff"
    assert classic[0] == 200 and classic[2] == body.replace(b"export default WebsocketHeartbeat;\n", b"")
    assert b"export " not in classic[2] and classic[1]["etag"] != headers["etag"]
    assert again[0] == 304 and again[2] == b""


@pytest.mark.skipif(
    NODE is None, reason="no node on PATH: the JavaScript unit tests need Node's test runner (node --test)"
)
def test_javascript_unit_tests_pass_on_node():
    """The module's own tests (tests/js/, Node's built-in runner, fake clock and sockets) pass."""
    env = {**os.environ, "TXHEARTBEAT_JS": str(SCRIPT_FILE)}  # (the module as installed: from the wheel in CI)
    out = subprocess.run([NODE, "--test", "tests/js/"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "# fail 0" in out.stdout and "# pass 0" not in out.stdout


@pytest.mark.skipif(NODE is None, reason="no node on PATH")
def test_classic_script_sets_the_global_and_the_module_exports_it():
    """The classic form runs as a plain script and sets WebsocketHeartbeat; the module's default export is the same constructor."""
    code = (
        "const vm = require('vm'); const ctx = {}; ctx.globalThis = ctx;"
        "vm.runInNewContext(require('fs').readFileSync(0, 'utf8'), ctx);"
        "console.log(typeof ctx.WebsocketHeartbeat, typeof ctx.WebsocketHeartbeat.miniProgram);"
    )
    out = subprocess.run(
        [NODE, "-e", code], input=script(classic=True).decode(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["function", "function"]
    module = subprocess.run(
        [
            NODE,
            "--input-type=module",
            "-e",
            f"import W from {str(SCRIPT_FILE)!r}; console.log(W.name, globalThis.WebsocketHeartbeat === W)",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert module.stdout.split() == ["WebsocketHeartbeat", "true"], module.stderr


def test_wire_constants_agree_with_the_server():
    """The script's subprotocol names, acknowledgement pace and abandon close code are the server's (docs/wire.md)."""
    from txheartbeat import _resume, _wire

    text = SCRIPT_FILE.read_text(encoding="utf-8")

    def const(name):
        match = re.search(rf"^const {name} = (.+?);", text, re.MULTILINE)
        assert match, name
        return ast.literal_eval(match.group(1))

    assert const("SUBPROTOCOL") == _wire.SUBPROTOCOL
    assert const("PLAIN_SUBPROTOCOL") == _wire.PLAIN_SUBPROTOCOL
    assert const("ABANDON_CODE") == _wire.ABANDON_CODE
    assert const("ACK_EVERY") == _resume.ACK_EVERY


def nodeWebSocket():
    """The node command line with a global WebSocket (Node 22, or Node 20 with its flag), or None."""
    for flags in ([], ["--experimental-websocket", "--no-warnings"]):
        check = [NODE, *flags, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"]
        if subprocess.run(check, capture_output=True, timeout=60).returncode == 0:
            return [NODE, *flags]
    return None


class Peer:
    """tests/js/wxpeer.mjs: its JSON event lines gathered by a thread; :meth:`expect` waits for one."""

    def __init__(self, node, url):
        self.proc = subprocess.Popen(
            [*node, str(ROOT / "tests" / "js" / "wxpeer.mjs"), str(SCRIPT_FILE), url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def expect(self, kind, timeout=15.0):
        """The next event of ``kind`` (those before it are kept in ``seen``)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {kind!r} within {timeout} s; seen {self.seen}")
            assert event is not None, f"the peer exited: {self.proc.stderr.read()[-2000:]}; seen {self.seen}"
            self.seen.append(event)
            if event["kind"] == kind:
                return event

    def send(self, line):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self):
        self.proc.kill()
        self.proc.wait(10)


@pytest.mark.skipif(NODE is None, reason="no node on PATH")
def test_mini_program_resume_survives_a_frozen_server():
    """Through the mini-program adapter (a wx.connectSocket shim giving res.header as WeChat does), resume: true with `txheartbeat serve --resume`: the connection to a SIGSTOPped server is given up with 4990, and after SIGCONT the session resumes, what was sent while down echoed once."""
    node = nodeWebSocket()
    if node is None:
        pytest.skip(f"{NODE} has no WebSocket (Node 22, or Node 20.10 with --experimental-websocket)")
    with Server("--resume", "--ping-interval", "60") as server:
        peer = Peer(node, server.url)
        try:
            assert peer.expect("open") == {"kind": "open", "resumed": False}
            peer.send("one")
            assert peer.expect("message")["data"] == "one"
            os.kill(server.proc.pid, signal.SIGSTOP)
            try:
                assert peer.expect("closed")["heartbeatTimeout"] is True
                # Just before onclose: the open SocketTask closed with 4990, the session kept.
                assert peer.seen[-2] == {"kind": "taskclose", "code": 4990, "open": True}, peer.seen
                peer.send("two")  # while down: kept for the session
            finally:
                os.kill(server.proc.pid, signal.SIGCONT)
            assert peer.expect("open", timeout=30) == {"kind": "open", "resumed": True}
            assert peer.expect("message")["data"] == "two"
            peer.send("three")
            assert peer.expect("message")["data"] == "three"
        finally:
            peer.stop()
    kinds = [e["kind"] for e in peer.seen]
    assert "sessionlost" not in kinds and "gaveup" not in kinds, peer.seen
    assert [e["data"] for e in peer.seen if e["kind"] == "message"] == ["one", "two", "three"]
