"""The end-of-input wait in each state (MemoryReactor): these held."""

import pytest

from txheartbeat import HeartbeatServerFactory, HeartbeatServerProtocol
from txheartbeat.testing import echoServerFactory

from .cliharness import URL, Run


class Collector(HeartbeatServerProtocol):
    def onMessage(self, payload, isBinary):
        self.factory.got.append(payload)


def server(resume):
    s = HeartbeatServerFactory(URL, resume=resume, pingInterval=None)
    s.protocol, s.got = Collector, []
    return s


@pytest.mark.parametrize("resume", [False, True])
def test_eof_while_waiting_to_retry_then_open(monkeypatch, resume):
    """Input ending while a retry waits is sent at the next open, and the run exits 0."""
    run = Run(monkeypatch, *(["--resume"] if resume else []))
    srv = server(resume)
    link = run.reactor.accept(srv)
    run.feed("one")
    run.reactor.flush()
    link.reset()
    run.feed("two")
    run.eof()
    run.reactor.advance(3)
    run.reactor.accept(srv)
    run.reactor.advance(5)
    assert srv.got == [b"one", b"two"]
    assert run.exitCode == 0, run.err.getvalue()


def test_eof_before_open_then_timeout_exit_1(monkeypatch):
    """Input ending with nothing listening exits 1 once --open-timeout runs out, saying so, with no timer left."""
    run = Run(monkeypatch, "--open-timeout", "2")
    run.feed("x")
    run.eof()
    run.reactor.advance(2.5)
    assert run.exitCode == 1
    assert "did not open within 2 s" in run.err.getvalue()
    assert run.reactor.getDelayedCalls() == []


def test_eof_during_handshake_then_open(monkeypatch):
    """Input ending during the opening handshake is sent once it opens, and the run exits 0."""
    run = Run(monkeypatch)
    link = run.reactor.accept(echoServerFactory(), greet=False)
    run.feed("x")
    run.eof()
    link.pump()
    run.reactor.advance(5)
    assert run.exitCode == 0, run.err.getvalue()
    assert run.out.getvalue() == "x\n"


def test_give_up_during_wait_exit_1_said_once(monkeypatch):
    """Giving up during the wait exits 1 and says it once (no false 'did not open')."""
    run = Run(monkeypatch, "--max-retries", "0")
    run.feed("x")
    run.eof()
    run.reactor.refuse()
    run.reactor.advance(5)
    assert run.exitCode == 1
    err = run.err.getvalue()
    assert "giving up" in err and "did not open" not in err
