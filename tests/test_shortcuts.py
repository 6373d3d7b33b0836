"""
The shortcuts into Autobahn's and Twisted's internals check at run time
that they stand on the code they were verified against, and fall back to
Autobahn's and Twisted's own paths (correct, only slower) otherwise.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import autobahn
import pytest
import twisted

from txheartbeat import _shortcuts
from txheartbeat._shortcuts import SHORTCUTS, VERDICTS, Shortcut, check, digest

ROOT = Path(__file__).resolve().parent.parent

#: (Autobahn, Twisted) versions CI tests: the floor, the newest on Python 3.10, the newest
VERIFIED_COMBINATIONS = {("22.4.2", "22.10.0"), ("24.4.2", "26.10.0"), ("26.11.1", "26.10.0")}

#: the protocol tests the forced fallback runs (the memory-reactor ones, the loopback, slow-link and stall ones)
PROTOCOL_TESTS = [
    "tests/test_client.py",
    "tests/test_server.py",
    "tests/test_heartbeat.py",
    "tests/test_resume.py",
    "tests/test_edges.py",
    "tests/test_reentrancy.py",
    "tests/test_lifecycle.py",
    "tests/test_integration.py",
    "tests/test_scale.py",
    "tests/test_liveness.py",
    "tests/test_hints.py",
    "tests/test_backpressure.py",
    "tests/test_stats.py",
    "tests/test_stall.py",
    "tests/test_resume_loopback.py",
]


#: (resets for 30 s: what it checks of sends and receives, the other resume tests check too)
LONG_SOAK = "tests/test_resume_loopback.py::test_resume_exactly_once_through_resets_while_plain_client_loses"


def test_every_shortcut_holds_on_the_versions_ci_tests():
    """On the floor and the newest releases CI tests, every shortcut is verified and in use."""
    here = (autobahn.__version__, twisted.__version__)
    if here not in VERIFIED_COMBINATIONS:
        pytest.skip(f"Autobahn {here[0]} with Twisted {here[1]} is not a combination CI pins")
    if os.environ.get("TXHEARTBEAT_SHORTCUTS"):
        pytest.skip("TXHEARTBEAT_SHORTCUTS is set in this run")
    needed = {s.name for s in SHORTCUTS if not VERDICTS[s.name][1].startswith(_shortcuts.NOT_NEEDED)}
    assert {name: why for name, (on, why) in VERDICTS.items() if not on and name in needed} == {}
    assert _shortcuts.ENABLED == needed
    if twisted.__version__ == "26.10.0":
        assert "tlsIdentity" in needed  # (Twisted 22.10 checks a server's identity per context itself)


def module(tmp_path, monkeypatch, name, source):
    """Write ``source`` as module ``name`` importable from ``tmp_path``."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop(name, None)
    return f"{name}:f"


def test_digest_ignores_layout_annotations_docstrings_and_message_texts(tmp_path, monkeypatch):
    """A release that only reformats the mirrored code keeps its digest; one that changes what it does gets another."""
    before = module(
        tmp_path,
        monkeypatch,
        "mirrored_a",
        """
        def f(self, data, sync=False):
            if sync or len(self.queue) > 0:
                raise Exception('bad {}'.format(len(data)))
            self.transport.write(data)  # send
        """,
    )
    reformatted = module(
        tmp_path,
        monkeypatch,
        "mirrored_b",
        '''
        def f(self, data: bytes, sync: bool = False) -> None:
            """Write it."""
            if (
                sync
                or len(self.queue) > 0
            ):
                raise Exception(f"bad {len(data)}")

            self.transport.write(data)
        ''',
    )
    changed = module(
        tmp_path,
        monkeypatch,
        "mirrored_c",
        """
        def f(self, data, sync=False):
            if sync or len(self.queue) > 1:
                raise Exception('bad {}'.format(len(data)))
            self.transport.write(data)
        """,
    )
    assert digest((before,)) == digest((reformatted,)) != digest((changed,))
    assert digest((before,)) is not None


@pytest.mark.parametrize(
    "before, after",
    [
        ("return hasattr(self, 'connector')", "return hasattr(self, '_connector')"),  # an attribute name
        ("return data.decode('utf8')", "return data.decode('latin-1')"),  # an encoding
        ("return self.headers['sec-websocket-key']", "return self.headers['sec-websocket-accept']"),  # a key
        ("return '{}'.format(self.consume())", "return '{}'.format(self.peek())"),  # .format arguments
        ("return f'{self.consume()}'", "return f'{self.peek()}'"),  # f-string expressions
        ("self.log.info('sent {n}', n=len(data))", "self.log.info('sent {n}', n=len(self.data))"),  # log fields
    ],
)
def test_digest_sees_code_written_with_strings(tmp_path, monkeypatch, before, after):
    """Strings that are code (names, keys, encodings, what a message formats) are kept: changing them changes the digest."""
    a = module(tmp_path, monkeypatch, "code_before", f"class C:\n    def f(self, data):\n        {before}\n")
    b = module(tmp_path, monkeypatch, "code_after", f"class C:\n    def f(self, data):\n        {after}\n")
    assert digest((a.replace(":f", ":C.f"),)) != digest((b.replace(":f", ":C.f"),))


@pytest.mark.parametrize(
    "before, after",
    [
        ("self.data = data[:4]", "self.data: bytes = data[:4]"),  # a variable annotation
        ("raise Exception('bad length %d' % len(data))", "raise Exception(f'bad length {len(data)}')"),
        ("self.log.debug('got {n} bytes', n=len(data))", 'self.log.debug("received {n} bytes", n=len(data))'),
        ("self._fail_connection(1002, 'bad')", "self._fail_connection(1002, f'bad: {len(data)}')"),
    ],
)
def test_digest_is_blind_to_typing_and_message_rewrites(tmp_path, monkeypatch, before, after):
    """Rewriting only an annotation or the text of a message (log, close reason, error) keeps the digest."""
    a = module(tmp_path, monkeypatch, "text_before", f"class C:\n    def f(self, data):\n        {before}\n")
    b = module(tmp_path, monkeypatch, "text_after", f"class C:\n    def f(self, data):\n        {after}\n")
    assert digest((a.replace(":f", ":C.f"),)) == digest((b.replace(":f", ":C.f"),))


def test_an_override_added_between_autobahns_base_and_ours_turns_the_shortcut_off(monkeypatch):
    """Mirrors resolve on the classes in use: a sendData added on Autobahn's Twisted adapter turns the shortcut off."""
    from autobahn.twisted.websocket import WebSocketAdapterProtocol

    def sendData(self, data, sync=False, chopsize=None):  # what a future Autobahn might add
        return super(WebSocketAdapterProtocol, self).sendData(data, sync, chopsize)

    monkeypatch.setattr(WebSocketAdapterProtocol, "sendData", sendData, raising=False)
    on, why = check({})["sendData"]
    assert not on and "differs" in why


def test_socket_writes_cover_the_write_twisteds_tcp_transports_run():
    """The socketWrites digest covers tcp.Server's and tcp.Client's own write, doWrite and writeSomeData."""
    from twisted.internet import tcp

    mirrors = next(s for s in SHORTCUTS if s.name == "socketWrites").mirrors
    for cls in (tcp.Server, tcp.Client):
        for name in ("write", "doWrite", "writeSomeData"):
            assert f"twisted.internet.tcp:{cls.__name__}.{name}" in mirrors


def test_source_changed_since_import_turns_the_shortcut_off_without_breaking_import(tmp_path, monkeypatch):
    """A source file rewritten after import (an upgrade under a running program) gives no digest instead of an error."""
    import linecache

    path = module(tmp_path, monkeypatch, "stale", "class K:\n    def f(self):\n        return 1\n")
    __import__("stale")
    (tmp_path / "stale.py").write_text('class K:\n    def f(self):\n        x = """never closed\n')
    linecache.checkcache()
    assert digest((path.replace(":f", ":K.f"),)) is None


def test_changed_or_unreadable_code_turns_a_shortcut_off(monkeypatch):
    """A shortcut whose mirrored code has another digest, or cannot be read, is off, saying why; the others stay on."""
    pong = next(s for s in SHORTCUTS if s.name == "pongFrames")
    changed = pong._replace(verified=frozenset({"0000000000000000"}))
    unreadable = Shortcut("gone", "", ("autobahn.websocket.protocol:WebSocketProtocol.noSuchMethod",), frozenset())
    others = [s for s in SHORTCUTS if s.name != "pongFrames"]
    monkeypatch.setattr(_shortcuts, "SHORTCUTS", (*others, changed, unreadable))
    verdicts = check({})
    assert verdicts["pongFrames"][0] is False and "differs from every verified version" in verdicts["pongFrames"][1]
    assert verdicts["gone"] == (False, "the code it mirrors cannot be read")
    here = (autobahn.__version__, twisted.__version__)
    if here in VERIFIED_COMBINATIONS:
        assert all(verdicts[s.name][0] or verdicts[s.name][1].startswith(_shortcuts.NOT_NEEDED) for s in others)


def test_the_environment_turns_shortcuts_off():
    """TXHEARTBEAT_SHORTCUTS=off turns every shortcut off, and '-name,-name' only those named."""
    assert not any(on for on, _ in check({"TXHEARTBEAT_SHORTCUTS": "off"}).values())
    verdicts = check({"TXHEARTBEAT_SHORTCUTS": "-pongFrames, -pingFrames"})
    assert verdicts["pongFrames"] == (False, "turned off by TXHEARTBEAT_SHORTCUTS") == verdicts["pingFrames"]
    with pytest.raises(KeyError):
        _shortcuts.enabled("noSuchShortcut")


@pytest.mark.parametrize("setting", ["-pongframes", "pongFrames", "no"])
def test_a_misspelt_setting_is_said(tmp_path, setting):
    """A TXHEARTBEAT_SHORTCUTS that turns nothing off says so in a warning naming it and the names it knows."""
    logged = [line for line in importWith(setting, tmp_path) if line.startswith("LOG")]
    assert len(logged) == 1 and repr(setting) in logged[0] and "pongFrames" in logged[0], logged


def importWith(setting, where):
    """Import txheartbeat (as installed) in a new process with TXHEARTBEAT_SHORTCUTS=setting; what it prints."""
    code = textwrap.dedent(
        """
        from twisted.logger import formatEvent, globalLogBeginner
        import txheartbeat
        from txheartbeat import _protocol, _tcpinfo, _client
        globalLogBeginner.beginLoggingTo([lambda e: print("LOG", formatEvent(e))], redirectStandardIO=False)
        print("PLAIN_TCP", len(_tcpinfo._PLAIN_TCP), "DO_CONNECT", _client._DO_CONNECT is not None)
        print("OWN_SEND", "sendData" in vars(_protocol.HeartbeatMixin))
        """
    )
    env = {**os.environ, "TXHEARTBEAT_SHORTCUTS": setting}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, cwd=where)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_fallback_is_said_in_one_log_line_and_takes_autobahns_and_twisteds_paths(tmp_path):
    """Every shortcut off: one info line names them all, and the protocol uses Autobahn's sendData and Twisted's write."""
    lines = importWith("off", tmp_path)
    logged = [line for line in lines if line.startswith("LOG")]
    assert len(logged) == 1, lines
    assert all(s.name in logged[0] for s in SHORTCUTS) and "the protocol is the same" in logged[0]
    assert "maxBuffered" in logged[0]  # (frames wait for the next reactor turn: a burst counts sooner)
    assert "PLAIN_TCP 0 DO_CONNECT False" in lines and "OWN_SEND False" in lines


def test_no_log_line_while_every_shortcut_holds(tmp_path):
    """With every shortcut verified, importing txheartbeat logs nothing."""
    if any(not on for on, _ in check({}).values()):
        pytest.skip("a shortcut is off on these versions: the fallback line is expected")
    lines = importWith("", tmp_path)
    assert [line for line in lines if line.startswith("LOG")] == []
    assert "OWN_SEND True" in lines


#: the memory-reactor and loopback tests each single shortcut off runs (what a release changing one function gives)
SINGLE_OFF_TESTS = ["tests/test_scale.py", "tests/test_client.py", "tests/test_server.py", "tests/test_heartbeat.py"]


@pytest.mark.parametrize("name", [s.name for s in SHORTCUTS])
def test_tests_pass_with_one_shortcut_off(name):
    """With only this shortcut off (the others on), the memory-reactor protocol tests and the shortcut tests pass."""
    env = {**os.environ, "TXHEARTBEAT_SHORTCUTS": f"-{name}"}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SINGLE_OFF_TESTS],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-4000:]


def test_protocol_tests_pass_with_every_shortcut_off():
    """The protocol tests (memory reactor, loopback, slow links, stalls) pass on Autobahn's and Twisted's own paths."""
    env = {**os.environ, "TXHEARTBEAT_SHORTCUTS": "off"}
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *PROTOCOL_TESTS, "--deselect", LONG_SOAK],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-4000:]
    assert " passed" in out.stdout and " failed" not in out.stdout
