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

#: (Autobahn, Twisted) versions CI tests (.ci/constraints-*.txt): every shortcut verified on them
VERIFIED_COMBINATIONS = {("22.4.2", "22.10.0"), ("26.11.1", "26.10.0")}

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
    assert {name: why for name, (on, why) in VERDICTS.items() if not on} == {}
    assert _shortcuts.ENABLED == {s.name for s in SHORTCUTS}


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
        assert all(verdicts[s.name][0] for s in others)


def test_the_environment_turns_shortcuts_off():
    """TXHEARTBEAT_SHORTCUTS=off turns every shortcut off, and '-name,-name' only those named."""
    assert not any(on for on, _ in check({"TXHEARTBEAT_SHORTCUTS": "off"}).values())
    verdicts = check({"TXHEARTBEAT_SHORTCUTS": "-pongFrames, -pingFrames"})
    assert verdicts["pongFrames"] == (False, "turned off by TXHEARTBEAT_SHORTCUTS") == verdicts["pingFrames"]
    with pytest.raises(KeyError):
        _shortcuts.enabled("noSuchShortcut")


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
    assert all(s.name in logged[0] for s in SHORTCUTS) and "the behaviour is the same, only slower" in logged[0]
    assert "PLAIN_TCP 0 DO_CONNECT False" in lines and "OWN_SEND False" in lines


def test_no_log_line_while_every_shortcut_holds(tmp_path):
    """With every shortcut verified, importing txheartbeat logs nothing."""
    if any(not on for on, _ in check({}).values()):
        pytest.skip("a shortcut is off on these versions: the fallback line is expected")
    lines = importWith("", tmp_path)
    assert [line for line in lines if line.startswith("LOG")] == []
    assert "OWN_SEND True" in lines


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
