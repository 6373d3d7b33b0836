"""HeartbeatClientService: unit tests on the in-memory reactor, and the .tac example under a real twistd."""

import gc
import os
import signal
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest
import pytest_twisted
from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.application.service import IService, MultiService
from twisted.internet import defer, protocol
from twisted.internet.error import ProcessTerminated
from twisted.logger import formatEvent, globalLogPublisher
from zope.interface.verify import verifyObject

from txheartbeat import HeartbeatServerFactory, HeartbeatServerProtocol, NotConnected
from txheartbeat._service import HeartbeatClientService
from txheartbeat.testing import echoServerFactory

from .conftest import URL

ROOT = Path(__file__).resolve().parent.parent


def service(reactor, handler, **options: Any) -> HeartbeatClientService:
    options.setdefault("jitter", 0.0)
    return HeartbeatClientService(URL, handler, reactor=reactor, **options)


def fired(d: defer.Deferred) -> List[Any]:
    """The results ``d`` has delivered so far (failures included, and so consumed)."""
    results: List[Any] = []
    d.addBoth(results.append)
    return results


@pytest.fixture
def logged():
    """Every log event published while the test runs (after a GC, so unhandled Deferred errors show)."""
    events: List[Dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def texts(events: List[Dict[str, Any]]) -> str:
    gc.collect()  # a Deferred that failed unhandled logs when it is collected
    return "\n".join(formatEvent(e) for e in events)


class RecordingServer(WebSocketServerProtocol):
    """Echo server that remembers what it received."""

    received: List[bytes] = []

    def onMessage(self, payload, isBinary):
        RecordingServer.received.append(payload)
        self.sendMessage(payload, isBinary)


# Construction ---------------------------------------------------------------


@pytest.mark.parametrize(
    "url, options",
    [
        ("http://127.0.0.1/", {}),
        (URL, {"pingInterval": 0}),
        (URL, {"maxRetries": -1}),
        (URL, {"autoPingInterval": 5}),
    ],
)
def test_bad_options_raise_at_construction(reactor, handler, url, options):
    """A malformed URL or a bad option raises ValueError when the service is built, not when it starts."""
    with pytest.raises(ValueError):
        HeartbeatClientService(url, handler, reactor=reactor, **options)


def test_handler_must_be_a_handler(reactor):
    """Anything but a HeartbeatHandler is refused with TypeError at construction."""
    with pytest.raises(TypeError):
        HeartbeatClientService(URL, object(), reactor=reactor)


def test_construction_neither_connects_nor_schedules(reactor, handler):
    """Building the service is an IService that has not connected and holds an unstarted factory."""
    svc = service(reactor, handler)
    assert verifyObject(IService, svc)
    assert not svc.running
    assert svc.factory.state == "idle" and svc.factory.handler is handler
    assert reactor.tcpClients == [] and reactor.getDelayedCalls() == []


# Start, open, stop ------------------------------------------------------------


def test_start_connects(reactor, handler):
    """startService starts one connection attempt with the service's options."""
    svc = service(reactor, handler, pingInterval=7)
    svc.startService()
    assert svc.running
    assert len(reactor.pending) == 1 and reactor.pending[0].factory is svc.factory
    assert svc.factory.state == "connecting" and svc.factory.pingInterval == 7


def test_start_twice_makes_one_attempt(reactor, handler):
    """A second startService while running is a no-op: still one attempt, one factory."""
    svc = service(reactor, handler)
    svc.startService()
    factory = svc.factory
    svc.startService()
    assert len(reactor.pending) == 1 and svc.factory is factory


def test_open_after_accept(reactor, handler):
    """Once the attempt is accepted the handler is open and whenOpen() fires with it."""
    svc = service(reactor, handler)
    opened = fired(svc.whenOpen())
    svc.startService()
    assert opened == []
    reactor.accept()
    assert opened == [handler]
    assert handler.isOpen and handler.names() == ["onOpen"]


def test_messages_sent_before_start_go_out_at_first_open(reactor, handler):
    """A message the handler is given before the service starts is delivered at the first open."""
    RecordingServer.received = []
    svc = service(reactor, handler)
    handler.send("early")
    svc.startService()
    reactor.accept(echoServerFactory(RecordingServer))
    assert RecordingServer.received == [b"early"]


def test_stop_fires_after_close_handshake(reactor, handler):
    """stopService's Deferred fires only once the close handshake has finished, leaving no timer behind."""
    svc = service(reactor, handler)
    svc.startService()
    link = reactor.accept()
    done = fired(svc.stopService())
    assert not svc.running
    assert done == [] and reactor.getDelayedCalls() != []  # close frame not yet across; closeTimeout armed
    reactor.advance(0)
    assert done == [None]
    assert handler.events[-1][1:] == ("onClose", True, 1000, None)
    assert link.server.remoteCloseCode == 1000
    assert svc.factory.state == "closed"
    assert reactor.getDelayedCalls() == [] and reactor.links == []


def test_stop_during_retry_wait_fires_at_once(reactor, handler):
    """Stopping while a retry is scheduled fires at once, cancels the retry and leaves nothing pending."""
    svc = service(reactor, handler, initialDelay=3)
    svc.startService()
    reactor.refuse()
    assert svc.factory.state == "waiting" and len(reactor.getDelayedCalls()) == 1
    done = fired(svc.stopService())
    assert done == [None]
    assert reactor.getDelayedCalls() == [] and reactor.pending == []
    reactor.advance(10)
    assert reactor.pending == []


def test_stop_while_connecting_fires_at_once(reactor, handler, logged):
    """Stopping during the first attempt cancels it, fires at once, and the unopened connect is no unhandled error."""
    svc = service(reactor, handler)
    opened = fired(svc.whenOpen())
    svc.startService()
    done = fired(svc.stopService())
    assert done == [None]
    assert reactor.pending == [] and reactor.getDelayedCalls() == []
    assert len(opened) == 1 and opened[0].check(NotConnected)
    assert "Unhandled error" not in texts(logged)


def test_stop_drops_queued_messages_and_says_how_many(reactor, handler, logged):
    """Messages still queued at stop are dropped and their number is logged."""
    svc = service(reactor, handler)
    svc.startService()
    handler.send("a")
    handler.send("b")
    svc.stopService()
    assert handler.queued == []
    (event,) = [e for e in logged if "unsent" in e.get("log_format", "")]
    assert event["count"] == 2


def test_stop_before_start_is_a_noop(reactor, handler):
    """stopService on a service never started returns a fired Deferred and leaves it able to start."""
    svc = service(reactor, handler)
    done = fired(svc.stopService())
    assert done == [None]
    assert svc.factory.state == "idle" and reactor.tcpClients == []
    handler.send("still accepted")  # the handler was not closed
    svc.startService()
    assert len(reactor.pending) == 1


def test_stop_twice_is_safe(reactor, handler):
    """A second stopService while the first is closing, and a third after, both fire once closed."""
    svc = service(reactor, handler)
    svc.startService()
    reactor.accept()
    first = fired(svc.stopService())
    second = fired(svc.stopService())
    assert first == [] and second == []
    reactor.advance(0)
    assert first == [None] and second == [None]
    assert fired(svc.stopService()) == [None]
    assert handler.names().count("onClose") == 1
    assert reactor.getDelayedCalls() == []


def test_multiservice_parent_starts_and_stops_it(reactor, handler):
    """A parent MultiService starts the service and its stop waits for the close handshake."""
    parent = MultiService()
    svc = service(reactor, handler)
    svc.setServiceParent(parent)
    parent.startService()
    assert svc.running and len(reactor.pending) == 1
    reactor.accept()
    done = fired(parent.stopService())
    assert not svc.running and done == []
    reactor.advance(0)
    assert len(done) == 1
    assert handler.events[-1][1:] == ("onClose", True, 1000, None)
    assert reactor.getDelayedCalls() == []


# Giving up ----------------------------------------------------------------------


def test_give_up_is_logged_not_raised(reactor, handler, logged):
    """Running out of retries before the first open is logged; no unhandled error, the service stays running."""
    svc = service(reactor, handler, maxRetries=1, initialDelay=1)
    svc.startService()
    reactor.refuse()
    reactor.advance(svc.factory.delay)
    reactor.refuse()
    assert handler.names()[-1] == "onGiveUp"
    text = texts(logged)
    assert "Unhandled error" not in text
    (event,) = [e for e in logged if "service gave up" in e.get("log_format", "")]
    assert event["url"] == URL and event["attempts"] >= 1
    assert svc.running
    assert fired(svc.stopService()) == [None]
    assert reactor.getDelayedCalls() == []


# Restart (needs a finished handler to be attachable to a new factory) ---------------


def test_restart_connects_again_with_same_handler(reactor, handler):
    """start, stop, start connects the same handler again through a new factory; its stats carry on."""
    svc = service(reactor, handler)
    svc.startService()
    reactor.accept()
    svc.stopService()
    reactor.advance(0)
    first = svc.factory
    svc.startService()
    assert svc.factory is not first and handler.factory is svc.factory
    assert len(reactor.pending) == 1
    reactor.accept()
    assert handler.isOpen
    assert handler.stats.opens == 2 and handler.stats.attempts == 2
    assert handler.names() == ["onOpen", "onClose", "onOpen"]
    done = fired(svc.stopService())
    reactor.advance(0)
    assert done == [None] and reactor.getDelayedCalls() == []


def test_restart_while_closing_waits_for_the_close(reactor, handler):
    """A start before the previous close has finished connects once it has, and whenOpen() spans the gap."""
    svc = service(reactor, handler)
    svc.startService()
    reactor.accept()
    svc.stopService()
    svc.startService()
    opened = fired(svc.whenOpen())
    assert reactor.pending == []  # the old connection is still closing
    reactor.advance(0)
    assert handler.names() == ["onOpen", "onClose"]
    assert len(reactor.pending) == 1
    reactor.accept()
    assert opened == [handler]
    assert handler.names() == ["onOpen", "onClose", "onOpen"]


def test_stop_while_restart_waits_cancels_it(reactor, handler):
    """stop, start, stop in one turn ends closed, with no new attempt and whenOpen() failed."""
    svc = service(reactor, handler)
    svc.startService()
    reactor.accept()
    svc.stopService()
    svc.startService()
    opened = fired(svc.whenOpen())
    done = fired(svc.stopService())
    assert len(opened) == 1 and opened[0].check(NotConnected)
    reactor.advance(0)
    assert done == [None]
    assert reactor.pending == [] and reactor.getDelayedCalls() == []


# whenOpen (needs the factory's whenOpen() to fire at once while open) ------------------


def test_whenOpen_fires_at_once_while_open(reactor, handler):
    """whenOpen() while the connection is open fires at once with the handler."""
    svc = service(reactor, handler)
    svc.startService()
    reactor.accept()
    assert fired(svc.whenOpen()) == [handler]


# The .tac example under twistd ------------------------------------------------------------


class Seen:
    """What the loopback server saw of the twistd client, as Deferreds a test can wait on."""

    def __init__(self) -> None:
        self.opened: defer.Deferred = defer.Deferred()
        self.hello: defer.Deferred = defer.Deferred()
        self.closed: defer.Deferred = defer.Deferred()


class SeeingServer(HeartbeatServerProtocol):
    """Echo server that reports open, the first message and the close to ``factory.seen``."""

    def onOpen(self):
        self.factory.seen.opened.callback(None)

    def onMessage(self, payload, isBinary):
        if not self.factory.seen.hello.called:
            self.factory.seen.hello.callback(payload)
        self.sendMessage(payload, isBinary)

    def onClose(self, wasClean, code, reason):
        if not self.factory.seen.closed.called:
            self.factory.seen.closed.callback((wasClean, code))


class Twistd(protocol.ProcessProtocol):
    """Collects twistd's output; ``ended`` fires with the exit reason, and an early exit fails ``early``."""

    def __init__(self, early: List[defer.Deferred]) -> None:
        self.output = bytearray()
        self.ended: defer.Deferred = defer.Deferred()
        self.early = early

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def processEnded(self, reason) -> None:
        for d in self.early:
            if not d.called:
                d.errback(AssertionError(f"twistd exited ({reason.value}) too early:\n{self.text()}"))
        self.ended.callback(reason.value)


async def within(d: defer.Deferred, seconds: float, what: str, twistd: Twistd) -> Any:
    from twisted.internet import reactor

    try:
        return await d.addTimeout(seconds, reactor)
    except defer.TimeoutError:
        raise AssertionError(f"{what} not within {seconds} s; twistd said:\n{twistd.text()}") from None


@pytest_twisted.ensureDeferred
async def test_tac_example_under_twistd(tmp_path):
    """twistd -ny examples/heartbeat.tac connects and says hello; SIGTERM closes it cleanly (1000) before exit."""
    from twisted.internet import reactor

    seen = Seen()
    factory = HeartbeatServerFactory(reactor=reactor)
    factory.protocol = SeeingServer
    factory.seen = seen
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    pidfile = tmp_path / "twistd.pid"
    twistd = Twistd([seen.opened, seen.hello])
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "TXHEARTBEAT_URL": f"ws://127.0.0.1:{port.getHost().port}/",
    }
    # `python -m twisted` is `twist`, which runs plugins, not .tac files, and
    # twisted.scripts.twistd has no __main__: call its run() like the twistd script does.
    args = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    args += ["-ny", str(ROOT / "examples" / "heartbeat.tac"), "--pidfile", str(pidfile), "--logfile", "-"]
    process = reactor.spawnProcess(twistd, sys.executable, args, env=env, path=str(tmp_path))
    exited: Optional[Any] = None
    try:
        await within(seen.opened, 10, "the client's open", twistd)
        assert await within(seen.hello, 5, "the client's hello", twistd) == b"hello"
        assert pidfile.read_text().strip() == str(process.pid)
        process.signalProcess("TERM")
        exited = await within(twistd.ended, 10, "twistd's exit after SIGTERM", twistd)
        assert await within(seen.closed, 5, "the close", twistd) == (True, 1000)
    finally:
        if exited is None and process.pid is not None:
            process.signalProcess("KILL")
            await within(twistd.ended, 10, "twistd's exit after SIGKILL", twistd)
        await port.stopListening()
    out = twistd.text()
    # twistd shuts down cleanly, then re-raises the signal on itself (Twisted
    # >= 20.3), so the exit status is "terminated by SIGTERM", not 0.
    assert isinstance(exited, ProcessTerminated) and exited.signal == signal.SIGTERM, out
    assert "closed (clean=True, code=1000)" in out
    assert out.index("closed (clean=True, code=1000)") < out.index("Server Shut Down.")
    assert "Traceback" not in out and "Unhandled" not in out
    assert not pidfile.exists()
