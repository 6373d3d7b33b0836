"""The command line and the examples, run as real subprocesses."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def run(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "txheartbeat", *args], capture_output=True, text=True, timeout=60, env=ENV, **kwargs
    )


def test_demo_keeps_every_promise():
    """`txheartbeat demo` narrates open, heartbeats, dead peer, reconnect, queued delivery and close, and exits 0."""
    result = run("demo")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for needle in [
        "heartbeat answered",
        "DEAD PEER detected",
        "reconnecting in",
        "RESTARTED",
        "queued message was delivered",
        "code=1000",
        "all promises kept",
    ]:
        assert needle in out


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["bogus"],
        ["connect"],
        ["connect", "ws://127.0.0.1:1/", "--ping-interval", "0"],
        ["connect", "ws://127.0.0.1:1/", "--max-retries", "-1"],
        ["connect", "http://not-a-websocket/"],
        ["serve", "--port", "70000"],
        ["serve", "--pong-timeout", "soon"],
    ],
)
def test_bad_arguments_one_line_exit_2(args):
    """Bad arguments print one error line and exit 2, never a traceback."""
    result = run(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith("txheartbeat: error:")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_and_connect_round_trip():
    """`connect` sends stdin lines to `serve`, prints the echoes, and exits 0 after a clean close at end of input."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "txheartbeat", "serve", "--port", str(port)], stderr=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert "serving" in server.stderr.readline()
        client = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "txheartbeat",
                "connect",
                f"ws://127.0.0.1:{port}/",
                "--ping-message",
                "heartbeat",
                "--ping-interval",
                "0.2",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        client.stdin.write("first line\nsecond line\n")
        client.stdin.flush()
        time.sleep(0.8)  # let a few heartbeats go by before end of input
        out, err = client.communicate("", timeout=30)
        assert client.returncode == 0, err
        lines = out.splitlines()
        assert lines[:2] == ["first line", "second line"]
        assert "heartbeat" in lines[2:]  # the server answered the seed heartbeat
        assert "* open" in err and "closed (clean=True, code=1000)" in err
    finally:
        server.terminate()
        server.wait(10)


def test_connect_gives_up_exit_1():
    """`connect --max-retries 0` to a closed port reports the error, gives up and exits 1 with stdin still open."""
    port = free_port()
    client = subprocess.Popen(
        [sys.executable, "-m", "txheartbeat", "connect", f"ws://127.0.0.1:{port}/", "--max-retries", "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert client.wait(30) == 1
        err = client.stderr.read()
    finally:
        client.stdin.close()
        client.stdout.close()
        client.stderr.close()
    assert "refused" in err and "giving up" in err


def test_connect_eof_before_open_closes_quietly():
    """End of input before the connection opens closes for good and exits 0."""
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "txheartbeat", "connect", f"ws://127.0.0.1:{port}/"],
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr


def test_examples_run():
    """The self-contained example runs to completion and the other one imports."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "server_asks_to_close.py")],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr
    assert "('closed', True, 1000)" in result.stdout
    result = subprocess.run(
        [sys.executable, "-c", "import runpy; runpy.run_path('examples/client.py', run_name='x')"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr


def test_unit_tests_run_under_trial(tmp_path):
    """The clock-driven unit tests also pass under Twisted's trial."""
    result = subprocess.run(
        [sys.executable, "-m", "twisted.trial", "--temp-directory", str(tmp_path / "trial"), "tests.trial_unit"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "PASSED" in result.stdout


def test_readme_testing_example_runs():
    """The README's txheartbeat.testing example runs as written."""
    text = (ROOT / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    (example,) = [b for b in blocks if "MemoryReactor()" in b]
    exec(compile(example, "README.md", "exec"), {})
