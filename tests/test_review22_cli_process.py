"""The connect CLI as a real process against real `txheartbeat serve` processes on loopback."""

import signal
import subprocess
import sys
import threading

import pytest

from .test_cli import ENV, Server, free_port


def notSent(err):
    return sum(line.startswith("* not sent") for line in err.splitlines())


def connect(url, *extra, **kw):
    return [sys.executable, "-m", "txheartbeat", "connect", url, *extra]


def test_piped_input_larger_than_the_send_queue_is_all_sent_or_exit_nonzero(tmp_path):
    """
    3,000 lines in a file (read before the open): the send queue (1,000) fills,
    ~2,000 lines print "not sent", yet exit status is 0, which the help text
    says means "what was read was sent". (100,000 lines: 4,136 lost, exit 0.)
    """
    path = tmp_path / "lines.txt"
    path.write_text("".join(f"{i}\n" for i in range(3000)))
    with Server() as server, open(path) as stdin:
        result = subprocess.run(connect(server.url), stdin=stdin, capture_output=True, text=True, timeout=60, env=ENV)
    sent = result.stdout.splitlines()
    assert result.returncode == 0 and sent == [str(i) for i in range(3000)], (
        f"exit {result.returncode} with {len(sent)} of 3000 lines echoed, "
        f"{notSent(result.stderr)} 'not sent' lines on stderr"
    )


def test_resume_piped_input_is_all_sent_or_exit_nonzero():
    """
    `seq 1 20000 | txheartbeat connect --resume` against `serve --resume`: the
    replay buffer (1,000 unacked) fills while stdin is read as fast as it
    comes; thousands of lines are "not sent", exit 0.  (100,000: 49,240 lost.)
    """
    data = "".join(f"{i}\n" for i in range(20000))
    with Server("--resume") as server:
        result = subprocess.run(
            connect(server.url, "--resume"), input=data, capture_output=True, text=True, timeout=60, env=ENV
        )
    sent = result.stdout.splitlines()
    assert result.returncode == 0 and sent == [str(i) for i in range(20000)], (
        f"exit {result.returncode} with {len(sent)} of 20000 lines echoed, "
        f"{notSent(result.stderr)} 'not sent' lines on stderr"
    )


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_the_open_wait_exits_nonzero(sig):
    """
    `echo hi | txheartbeat connect ws://down/`, then Ctrl-C (or SIGTERM) while
    it waits for the open: the line was never sent, yet the exit status is 0
    and nothing says the queued line was dropped.
    """
    port = free_port()
    p = subprocess.Popen(
        connect(f"ws://127.0.0.1:{port}/", "--open-timeout", "30"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    p.stdin.write("hi\n")
    p.stdin.close()
    err = ""
    watchdog = threading.Timer(20, p.kill)  # (readline waits for the line: the event, bounded)
    watchdog.start()
    while "waiting up to" not in err:
        line = p.stderr.readline()
        assert line, f"it never said it waits for the open: {err}"
        err += line
    watchdog.cancel()
    p.send_signal(sig)
    code = p.wait(20)
    err += p.stderr.read()
    p.stdout.close()
    p.stderr.close()
    assert code == 1 and "1 message(s) read were not sent" in err, f"exit {code} after {sig.name}; stderr:\n{err}"


def test_stdout_closed_early_does_not_print_a_traceback_per_message():
    """`... | txheartbeat connect URL | head -1`: every later message raises BrokenPipeError in
    onMessage, logged as a full traceback each (998 tracebacks for 1,000 lines)."""
    with Server() as server:
        p = subprocess.Popen(
            connect(server.url),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        p.stdin.write("".join(f"{i}\n" for i in range(200)))
        p.stdin.close()
        p.stdout.readline()
        p.stdout.close()  # like head -1
        err = p.stderr.read()
        p.wait(30)
    assert err.count("Traceback") <= 1, f"{err.count('Traceback')} tracebacks"
