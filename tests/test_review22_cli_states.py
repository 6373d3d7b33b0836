"""Found by the review of issue 22: the end-of-input wait of `connect`, state by state, on a MemoryReactor (exact)."""

from txheartbeat.testing import echoServerFactory

from .cliharness import Run


def test_input_ending_while_the_server_closes_waits_for_the_reconnect(monkeypatch):
    """
    The server begins a close (1012, a restart) and input ends before TCP goes
    down: the factory is still OPEN, so whenOpen() fires at once and the CLI
    says "did not open within 10 s" and exits 1 at once, although it never
    waited and the server is back a moment later.
    """
    run = Run(monkeypatch)
    server = echoServerFactory()
    link = run.reactor.accept(server)
    assert "* open" in run.err.getvalue()
    link.server.sendClose(1000, "going")  # (1012 as HeartbeatServerFactory.restart() does)
    link.blackhole(toServer=True, toClient=False)  # our close reply is slow to arrive
    link.pump()
    run.feed("after the close began")
    run.eof()
    run.reactor.advance(0.1)
    err = run.err.getvalue()
    assert "did not open within" not in err, err


def test_eof_reported_once_per_run(monkeypatch):
    """Sanity: a normal EOF after the open closes cleanly and exits 0."""
    run = Run(monkeypatch)
    run.reactor.accept(echoServerFactory())
    run.feed("a", "b")
    run.eof()
    run.reactor.advance(5)
    assert run.exitCode == 0, run.err.getvalue()
