"""Review 12: attempts to break shared heartbeat timelines, the pong fast path, hand-built pings and the computed outbound position."""

import gc
import time
import weakref

import pytest
import pytest_twisted
from twisted.internet import reactor as globalReactor
from twisted.internet.task import Clock, deferLater

from txheartbeat import HeartbeatClientFactory, HeartbeatServerFactory
from txheartbeat._heartbeat import Heartbeat, Timeline
from txheartbeat._protocol import xorMask
from txheartbeat.testing import MemoryReactor, RecordingHandler

from .conftest import URL


def frame(opcode, payload, mask=b"", first=0x80):
    return (
        bytes((first | opcode, (0x80 if mask else 0) | len(payload)))
        + mask
        + (xorMask(mask, payload) if mask else payload)
    )


MASK = b"\x01\x02\x03\x04"


# --- Found by the review (fixed): an overdue backlog drained one entry per reactor iteration --------


@pytest_twisted.inlineCallbacks
def test_overdue_timeline_entries_run_in_one_pass():
    """
    Found by the review (fixed: _fire now runs every entry already due).  On a real reactor every
    heartbeat's due time is distinct (seconds() differs per call), so Timeline._fire ran only the front entry and re-arms callLater(0) for the next overdue one,
    which Twisted ran only on the NEXT iteration.  After a stall, or on a busy reactor whose every
    iteration does I/O work, N overdue heartbeats take N reactor iterations: here 300 entries due
    within a few ms, on a reactor that spends 2 ms per iteration, are still not all run 0.2 s after
    they were due, while the same calls made with reactor.callLater all run in one pass.
    """
    delay = 0.05
    line = Timeline(globalReactor, delay)  # (not registered: nothing else shares it)
    ranLine, ranPlain = [], []
    for _ in range(300):
        line.callLater(lambda: ranLine.append(time.time()))
        globalReactor.callLater(delay, lambda: ranPlain.append(time.time()))
    due = time.time() + delay
    busy = [True]

    def work():  # a busy reactor: each iteration costs 2 ms of I/O processing
        if busy[0]:
            time.sleep(0.002)
            globalReactor.callLater(0, work)

    globalReactor.callLater(0, work)
    yield deferLater(globalReactor, delay + 0.2, lambda: None)
    busy[0] = False
    try:
        assert len(ranPlain) == 300
        assert len(ranLine) == 300, f"only {len(ranLine)} of 300 overdue timeline calls ran 0.2 s after they were due"
    finally:
        while len(ranLine) < 300:
            yield deferLater(globalReactor, 0.01, lambda: None)
        print("last timeline call ran", ranLine[-1] - due, "s late; plain:", ranPlain[-1] - due)


# --- Found by the review (fixed): the learned offset trusted a torn (acked, outq) sample -----------


@pytest_twisted.inlineCallbacks
def test_offset_is_not_learned_from_a_torn_kernel_sample(monkeypatch):
    """
    Found by the review (rare race, simulated): kernelProgress read tcpi_bytes_acked and then
    SIOCOUTQ; an ACK landing in between made acked+outq smaller than the octets handed to the
    kernel, and _outboundProgress learnt its offset from that sample for good.  Now the queue is
    read first (a torn read can only leave it stale-high) and the offset is learnt only from a
    sample whose queue was empty (then the count read after it is exact).  The simulation tears
    one sample the way the new order can: 100 octets still "queued" that were just acknowledged.
    """
    import txheartbeat._tcpinfo as tcpinfo
    from txheartbeat import HeartbeatHandler, connect

    real = tcpinfo.kernelProgress
    torn = []

    def sample(sock):
        acked, queued = real(sock)
        if torn == ["arm"]:
            torn[:] = ["done"]
            return acked, queued + 100  # 100 octets acknowledged between the two reads
        return acked, queued

    monkeypatch.setattr(tcpinfo, "kernelProgress", sample)
    server = HeartbeatServerFactory(pingInterval=None)
    port = globalReactor.listenTCP(0, server, interface="127.0.0.1")
    handler = HeartbeatHandler()
    try:
        yield connect(f"ws://127.0.0.1:{port.getHost().port}/", handler, reactor=globalReactor, pingInterval=0.05)
        while handler.stats.heartbeatsAnswered < 2:
            yield deferLater(globalReactor, 0.01, lambda: None)
        handler.send("x" * 1000)  # a write: the next heartbeat samples (and learns) again
        torn.append("arm")
        n = handler.stats.heartbeatsAnswered
        while handler.stats.heartbeatsAnswered < n + 4:
            yield deferLater(globalReactor, 0.01, lambda: None)
        protocol = handler.protocol
        computed = protocol._outboundProgress()
        kernel = real(protocol.transport.socket)
        assert torn == ["done"]
        assert computed == kernel, f"computed {computed} vs kernel {kernel}, 4 heartbeats after the torn sample"
    finally:
        handler.close()
        yield handler.whenClosed()
        yield port.stopListening()


# --- probes that hold -----------------------------------------------------------------------------


def test_timeline_callbacks_that_cancel_add_and_raise():
    """Inside _fire: cancelling the next entry, adding one, stopping+restarting, and raising; nothing early, nothing lost, nothing cancelled runs."""
    clock = Clock()
    line = Timeline(clock, 5.0)
    ran = []
    entries = {}

    def first():
        ran.append(("first", clock.seconds()))
        entries["second"].cancel()
        entries["late"] = line.callLater(lambda: ran.append(("late", clock.seconds())))

    def boom():
        ran.append(("boom", clock.seconds()))
        raise RuntimeError("hook")

    entries["first"] = line.callLater(first)
    entries["second"] = line.callLater(lambda: ran.append(("second", clock.seconds())))
    entries["boom"] = line.callLater(boom)
    entries["after"] = line.callLater(lambda: ran.append(("after", clock.seconds())))
    with pytest.raises(RuntimeError):
        clock.advance(5)
    clock.advance(0)
    assert ran == [("first", 5), ("boom", 5), ("after", 5)]
    clock.advance(4.999)
    assert ran[-1][0] == "after"
    clock.advance(0.002)
    assert ran[-1] == ("late", clock.seconds()) and not clock.getDelayedCalls()


def test_timeline_distinct_dues_never_early_with_float_dues():
    """Dues that are not representable sums (0.1 steps) never run early, in order, and the line disarms when empty."""
    clock = Clock()
    line = Timeline(clock, 0.3)
    ran = []
    for i in range(50):
        due = clock.seconds() + 0.3
        line.callLater(lambda i=i, due=due: ran.append((i, clock.seconds() >= due)))
        clock.advance(0.1)
    for _ in range(10):
        clock.advance(0.1)
    assert [i for i, _ in ran] == list(range(50)) and all(ok for _, ok in ran)
    assert not clock.getDelayedCalls()


def heartbeat(clock, interval, timeout, log, name):
    return Heartbeat(
        clock,
        interval,
        timeout,
        lambda: log.append((name, "ping", clock.seconds())),
        lambda idle: log.append((name, "dead", clock.seconds())),
    )


def test_interval_equal_timeout_share_a_line_and_bound_holds():
    """interval == timeout: idle checks and deadlines of two heartbeats on one timeline; death exactly at interval + timeout, the verdict after one pass."""
    clock = Clock()
    log = []
    a, b = heartbeat(clock, 10, 10, log, "a"), heartbeat(clock, 10, 10, log, "b")
    assert a._idleLine is a._deadLine is b._idleLine
    a.start()
    clock.advance(3)
    b.start()
    clock.advance(7)
    clock.advance(3)
    clock.advance(7)
    clock.advance(0)
    clock.advance(3)
    clock.advance(0)
    assert log == [("a", "ping", 10), ("b", "ping", 13), ("a", "dead", 20), ("b", "dead", 23)]
    assert not clock.getDelayedCalls()


def test_stop_inside_another_heartbeats_ping_and_restart():
    """A ping hook that stops another heartbeat due at the same instant and restarts itself: the stopped one never pings."""
    clock = Clock()
    log = []
    b = heartbeat(clock, 5, 3, log, "b")
    a = Heartbeat(
        clock, 5, 3, lambda: (log.append(("a", "ping", clock.seconds())), b.stop(), a.start()), lambda idle: None
    )
    a.start()
    b.start()
    clock.advance(5)
    assert log == [("a", "ping", 5)] and not b.running and a.running
    clock.advance(5)
    assert log == [("a", "ping", 5), ("a", "ping", 10)]


def test_timelines_let_go_after_stop():
    """Once every heartbeat of a delay is stopped and dropped, its timeline and the clock's registry entry go (no delayed call left)."""
    clock = Clock()
    hbs = [heartbeat(clock, 7.25, 3.5, [], i) for i in range(10)]
    for hb in hbs:
        hb.start()
    line = weakref.ref(hbs[0]._idleLine)
    for hb in hbs[::2]:
        hb.stop()
    for hb in hbs[1::2]:
        hb.stop()
    assert not clock.getDelayedCalls()
    del hbs, hb
    gc.collect()
    assert line() is None


@pytest.fixture
def link():
    reactor = MemoryReactor()
    server = HeartbeatServerFactory(URL, pingInterval=5, reactor=reactor)
    handler = RecordingHandler(reactor)
    HeartbeatClientFactory(URL, handler, reactor=reactor, pingInterval=5).connect()
    return reactor.accept(server), handler


def test_pong_between_fragments_of_a_message(link):
    """A whole pong read between two fragments of a message is taken by the fast path; the message still arrives whole."""
    link, handler = link
    client = link.client
    pongs = []
    client.onPong = pongs.append
    client.dataReceived(frame(1, b"hel", first=0x00))
    client.dataReceived(frame(10, b"pp"))
    client.dataReceived(frame(0, b"lo"))
    assert pongs == [b"pp"] and handler.received() == [b"hello"]


def test_pong_after_send_close_goes_through_autobahn(link):
    """After sendClose (CLOSING) a pong read is Autobahn's business (state check), and is still delivered by it."""
    link, _ = link
    client = link.client
    pongs = []
    client.onPong = pongs.append
    client.sendClose(1000)
    client.dataReceived(frame(10, b"pp"))
    assert pongs == [b"pp"]


def test_masked_pong_125_bytes_to_server_and_no_mask_mismatch(link):
    """A 125-byte masked pong to the server is unmasked right; an unmasked one is refused by Autobahn as before."""
    link, _ = link
    server = link.server
    pongs = []
    server.onPong = pongs.append
    payload = bytes(range(125))
    server.dataReceived(frame(10, payload, MASK))
    assert pongs == [payload]


def test_on_heartbeat_hook_that_closes_reentrantly():
    """onHeartbeat (now called directly, not via _fire) closing the connection from inside the pong fast path: a clean close, no hook failure."""
    reactor = MemoryReactor()
    server = HeartbeatServerFactory(URL, pingInterval=None, reactor=reactor)
    handler = RecordingHandler(reactor)
    seen = []
    handler.onHeartbeat = lambda rt: (seen.append(rt), handler.close())
    HeartbeatClientFactory(URL, handler, reactor=reactor, pingInterval=5).connect()
    reactor.accept(server)
    failed = []
    handler._hookFailed = failed.append
    for _ in range(20):
        reactor.advance(1)
    assert seen == [0] and failed == [] and "onClose" in handler.names()
