"""Unit tests for the sans-I/O liveness core, on a Twisted Clock."""

from typing import Callable, List

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from txheartbeat import Heartbeat
from txheartbeat.testing import advanceStepwise


class Recorder:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.pings: List[float] = []
        self.deaths: List[float] = []
        self.answers: List[float] = []
        self.hb: Heartbeat

    def make(self, interval=15.0, timeout=10.0, **kw) -> Heartbeat:
        self.hb = Heartbeat(
            self.clock,
            interval,
            timeout,
            lambda: self.pings.append(self.clock.seconds()),
            lambda idle: self.deaths.append(self.clock.seconds()),
            onAnswer=self.answers.append,
            **kw,
        )
        return self.hb


@pytest.fixture
def rec() -> Recorder:
    return Recorder(Clock())


def test_first_heartbeat_after_interval(rec):
    """A heartbeat goes out exactly pingInterval seconds after start, not before."""
    hb = rec.make()
    hb.start()
    advanceStepwise(rec.clock, 14.999)
    assert rec.pings == []
    advanceStepwise(rec.clock, 0.001)
    assert rec.pings == [15.0]
    hb.stop()
    assert rec.clock.getDelayedCalls() == []


def test_traffic_postpones_heartbeat(rec):
    """Inbound traffic restarts the idle count: the heartbeat waits pingInterval after the last traffic."""
    hb = rec.make()
    hb.start()
    advanceStepwise(rec.clock, 10)
    hb.noteTraffic()
    advanceStepwise(rec.clock, 14.9)
    assert rec.pings == []
    advanceStepwise(rec.clock, 0.1)
    assert rec.pings == [25.0]
    hb.stop()
    assert rec.clock.getDelayedCalls() == []


def test_dead_exactly_at_bound(rec):
    """With no traffic the peer is declared dead exactly pingInterval + pongTimeout after the last traffic."""
    hb = rec.make()
    hb.start()
    advanceStepwise(rec.clock, 3)
    hb.noteTraffic()
    advanceStepwise(rec.clock, 24.999)
    assert rec.deaths == []
    advanceStepwise(rec.clock, 0.001)
    assert rec.pings == [18.0]
    assert rec.deaths == [28.0]
    assert not hb.running
    assert rec.clock.getDelayedCalls() == []


def test_answer_ends_wait_and_rearms(rec):
    """The first traffic after a heartbeat reports the round trip and the next heartbeat follows pingInterval later."""
    hb = rec.make()
    hb.start()
    advanceStepwise(rec.clock, 15)
    advanceStepwise(rec.clock, 0.25)
    hb.noteTraffic()
    assert rec.answers == [0.25]
    assert not hb.awaitingAnswer
    advanceStepwise(rec.clock, 14.999)
    assert rec.pings == [15.0]
    advanceStepwise(rec.clock, 0.001)
    assert rec.pings == [15.0, 30.25]
    assert rec.deaths == []
    hb.stop()
    assert rec.clock.getDelayedCalls() == []


def test_traffic_without_heartbeat_touches_no_timer(rec):
    """Noting traffic while no heartbeat is out leaves the pending timer untouched (O(1) hot path)."""
    hb = rec.make()
    hb.start()
    before = rec.clock.getDelayedCalls()
    for _ in range(1000):
        advanceStepwise(rec.clock, 0.001)
        hb.noteTraffic()
    after = rec.clock.getDelayedCalls()
    assert len(after) == 1 and after[0] is before[0]
    assert after[0].getTime() == 15.0
    hb.stop()


def test_timeout_none_keeps_alive_without_death(rec):
    """pongTimeout=None sends a heartbeat every idle interval and never declares the peer dead."""
    hb = rec.make(interval=5.0, timeout=None)
    hb.start()
    advanceStepwise(rec.clock, 100)
    assert rec.pings == [5.0 * i for i in range(1, 21)]
    assert rec.deaths == []
    hb.stop()
    assert rec.clock.getDelayedCalls() == []


def test_synchronous_answer_is_not_lost(rec):
    """A peer that answers from inside sendPing (same call stack) still counts as alive."""
    clock = rec.clock
    hb: Heartbeat

    def ping():
        rec.pings.append(clock.seconds())
        hb.noteTraffic()

    hb = Heartbeat(clock, 1.0, 1.0, ping, lambda idle: rec.deaths.append(clock.seconds()))
    hb.start()
    advanceStepwise(clock, 10)
    assert rec.deaths == []
    assert rec.pings == [float(i) for i in range(1, 11)]
    hb.stop()


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "15", True])
def test_bad_timings_rejected(rec, bad):
    """Zero, negative, infinite or non-numeric timings raise ValueError at construction."""
    with pytest.raises(ValueError):
        rec.make(interval=bad)
    with pytest.raises(ValueError):
        rec.make(timeout=bad)


@settings(max_examples=200, deadline=None)
@given(
    interval=st.sampled_from([0.5, 1.0, 2.0, 15.0]),
    timeout=st.sampled_from([0.25, 0.5, 10.0, 30.0]),
    gaps=st.lists(st.floats(min_value=0.001, max_value=40.0), max_size=20),
)
def test_detection_bound_property(interval, timeout, gaps):
    """Whatever the traffic pattern, heartbeats are never early and death comes exactly interval+timeout after the last traffic."""
    clock = Clock()
    rec = Recorder(clock)
    hb = rec.make(interval=interval, timeout=timeout)
    hb.start()
    last = 0.0
    for gap in gaps:
        if rec.deaths:
            break
        advanceStepwise(clock, gap)
        if rec.deaths:
            break
        hb.noteTraffic()
        last = clock.seconds()
    if not rec.deaths:
        advanceStepwise(clock, interval + timeout + 1)
    assert len(rec.deaths) == 1
    assert abs(rec.deaths[0] - (last + interval + timeout)) < 1e-6
    assert all(p >= q - 1e-9 for p, q in zip(rec.pings[1:], rec.pings[:-1], strict=True))
    assert clock.getDelayedCalls() == []


# Issue 9: a stalled reactor and outbound progress ------------------------------


def fireNextCall(clock: Clock) -> None:
    """Run only the earliest delayed call, at its time (what a reactor does before it polls I/O again)."""
    call = min(clock.getDelayedCalls(), key=lambda c: c.getTime())
    clock.rightNow = call.getTime()
    clock.calls.remove(call)
    call.func(*call.args, **call.kw)


def test_verdict_waits_for_one_io_pass(rec):
    """At the pong deadline the verdict is a zero-delay call: an answer read in between keeps the peer alive."""
    hb = rec.make(interval=1.0, timeout=1.0)
    hb.start()
    fireNextCall(rec.clock)  # the heartbeat at 1.0
    fireNextCall(rec.clock)  # the deadline at 2.0: the verdict is scheduled, not given
    assert rec.deaths == []
    (verdict,) = rec.clock.getDelayedCalls()
    assert verdict.getTime() == 2.0
    hb.noteTraffic()  # the I/O pass reads the answer that arrived during a stall
    rec.clock.advance(0)
    assert rec.deaths == [] and rec.answers == [1.0]
    hb.stop()


def test_verdict_without_answer_is_still_exact(rec):
    """With no answer, the verdict comes at exactly pingInterval + pongTimeout, never later on the clock."""
    hb = rec.make(interval=1.0, timeout=1.0)
    hb.start()
    advanceStepwise(rec.clock, 2.0)
    assert rec.deaths == [2.0]
    assert rec.clock.getDelayedCalls() == []


class Outbound:
    """A fake outbound-progress probe: position (bytes acknowledged) and backlog (bytes not yet acknowledged)."""

    def __init__(self) -> None:
        self.position, self.backlog, self.looks = 0, 0, 0

    def __call__(self):
        self.looks += 1
        return self.position, self.backlog


def test_progress_behind_our_own_backlog_extends_the_deadline(rec):
    """While our bytes are still queued and the peer's TCP acknowledges more of them, the heartbeat waits another pongTimeout each time."""
    out = Outbound()
    hb = rec.make(interval=1.0, timeout=2.0, progress=out)
    hb.start()
    out.backlog = 1_000_000  # an upload: our heartbeat sits behind it
    advanceStepwise(rec.clock, 1.0)
    assert rec.pings == [1.0]
    for _ in range(4):  # 8 s of a slow upload, acknowledged bit by bit
        out.position += 250_000
        out.backlog -= 250_000
        advanceStepwise(rec.clock, 2.0)
        assert rec.deaths == []
    assert out.backlog == 0
    advanceStepwise(rec.clock, 2.0)  # drained at the last look: one more pongTimeout for the answer
    assert rec.deaths == [11.0]
    assert rec.clock.getDelayedCalls() == []


def test_answer_after_the_backlog_drains_keeps_the_connection(rec):
    """The answer that was queued behind the upload arrives after it: the connection lives on."""
    out = Outbound()
    hb = rec.make(interval=1.0, timeout=2.0, progress=out)
    hb.start()
    out.backlog = 500_000
    advanceStepwise(rec.clock, 1.0)
    out.position, out.backlog = 500_000, 0
    advanceStepwise(rec.clock, 2.0)  # drained: extended once
    advanceStepwise(rec.clock, 1.0)
    hb.noteTraffic()
    assert rec.deaths == [] and rec.answers == [3.0]
    hb.stop()


@pytest.mark.parametrize("case", ["window closed", "black hole"])
def test_no_progress_with_backlog_is_dead_within_two_timeouts_of_the_last_ack(rec, case):
    """A peer that stops acknowledging (window closed, path black-holed) is dead at the first deadline without progress."""
    out = Outbound()
    hb = rec.make(interval=1.0, timeout=2.0, progress=out)
    hb.start()
    out.backlog = 1_000_000
    advanceStepwise(rec.clock, 1.0)
    out.position, out.backlog = 100_000, 900_000  # progress until t=2.5, then nothing more is acknowledged
    advanceStepwise(rec.clock, 1.5)
    advanceStepwise(rec.clock, 0.5)  # deadline at 3.0: moved since 1.0 -> extended
    assert rec.deaths == []
    advanceStepwise(rec.clock, 2.0)  # deadline at 5.0: no progress since 3.0 -> dead
    assert rec.deaths == [5.0] and 5.0 - 2.5 <= 2 * 2.0


def test_acknowledged_heartbeat_alone_is_not_life(rec):
    """An idle peer whose kernel acknowledges our heartbeat but never answers is dead exactly on time."""
    out = Outbound()
    hb = rec.make(interval=1.0, timeout=2.0, progress=out)
    hb.start()
    advanceStepwise(rec.clock, 1.0)
    out.position += 20  # the ping frame, acknowledged by the frozen peer's kernel
    advanceStepwise(rec.clock, 2.0)
    assert rec.deaths == [3.0]


def test_progress_is_looked_at_only_per_heartbeat_and_deadline(rec):
    """The socket is looked at once per heartbeat and once per deadline, never per message."""
    out = Outbound()
    hb = rec.make(interval=1.0, timeout=2.0, progress=out)
    hb.start()
    for _ in range(1000):
        hb.noteTraffic()
    assert out.looks == 0
    advanceStepwise(rec.clock, 1.0)
    assert out.looks == 1
    advanceStepwise(rec.clock, 2.0)
    assert out.looks == 2 and rec.deaths == [3.0]


def test_unknown_progress_changes_nothing(rec):
    """A probe that cannot tell (None) leaves the exact bound as it is."""
    hb = rec.make(interval=1.0, timeout=2.0, progress=lambda: None)
    hb.start()
    advanceStepwise(rec.clock, 3.0)
    assert rec.deaths == [3.0]


# The shared timelines ---------------------------------------------------------


def test_heartbeats_with_the_same_delays_share_one_delayed_call():
    """1,000 heartbeats on one clock keep one delayed call pending, yet each pings exactly interval after its own start."""
    clock = Clock()
    pings: List[tuple] = []
    beats, starts = [], []
    for i in range(1000):
        hb = Heartbeat(clock, 5.0, 5.0, lambda i=i: pings.append((i, clock.seconds())), lambda idle: None)
        hb.start()
        beats.append(hb)
        starts.append(clock.seconds())
        clock.advance(0.004)
    assert len(clock.getDelayedCalls()) == 1
    advanceStepwise(clock, 6.0)
    assert pings == [(i, start + 5.0) for i, start in enumerate(starts)]
    assert len(clock.getDelayedCalls()) == 1  # the 1,000 pong deadlines
    for hb in beats:
        hb.stop()
    assert clock.getDelayedCalls() == []


def test_timeline_never_fires_early_and_keeps_order_with_other_calls():
    """Calls due at 5 and 7 on a timeline and another delayed call at 6 run in time order, each at or after its time."""
    from txheartbeat._heartbeat import Timeline

    clock = Clock()
    line = Timeline(clock, 5.0)
    ran = []
    line.callLater(lambda: ran.append(("a", clock.seconds())))
    clock.advance(2)
    line.callLater(lambda: ran.append(("c", clock.seconds())))
    clock.callLater(4, lambda: ran.append(("b", clock.seconds())))
    clock.pump([1.0] * 10)
    assert ran == [("a", 5.0), ("b", 6.0), ("c", 7.0)]


def test_timeline_cancel_moves_the_one_delayed_call_and_lets_go():
    """Cancelling the first call re-arms for the next; cancelling the last leaves no delayed call and drops the callable."""
    import gc
    import weakref

    from txheartbeat._heartbeat import Timeline

    class Target:
        def run(self) -> None:
            ran.append(clock.seconds())

    clock = Clock()
    line = Timeline(clock, 5.0)
    ran: List[float] = []
    target = Target()
    alive = weakref.ref(target)
    first = line.callLater(target.run)
    clock.advance(1)
    second = line.callLater(lambda: ran.append(clock.seconds()))
    first.cancel()
    (call,) = clock.getDelayedCalls()
    assert call.getTime() == 6.0 and not first.active() and second.active()
    del target
    gc.collect()
    assert alive() is None  # a cancelled call keeps nothing alive while it waits in the deque
    second.cancel()
    assert clock.getDelayedCalls() == []
    clock.advance(10)
    assert ran == []


def test_timeline_call_that_raises_leaves_the_others_due():
    """A call that raises escapes as any delayed call's would; the calls due with it still run (in the next pass)."""
    from txheartbeat._heartbeat import Timeline

    clock = Clock()
    line = Timeline(clock, 5.0)
    ran = []

    def boom() -> None:
        raise ZeroDivisionError

    line.callLater(boom)
    line.callLater(lambda: ran.append(clock.seconds()))
    with pytest.raises(ZeroDivisionError):
        clock.advance(5)
    clock.advance(0)
    assert ran == [5.0]


def test_timeline_is_shared_per_clock_and_delay():
    """One timeline per (clock, delay): another delay or another clock gets its own."""
    from txheartbeat._heartbeat import Timeline

    a, b = Clock(), Clock()
    held = Timeline.on(a, 5.0)
    assert Timeline.on(a, 5.0) is held
    assert Timeline.on(a, 10.0) is not held
    assert Timeline.on(b, 5.0) is not held


def test_timelines_of_gone_heartbeats_are_not_kept():
    """A different interval per connection leaves no timeline behind once its heartbeats are gone."""
    import gc

    from txheartbeat._heartbeat import Timeline

    clock = Clock()
    for i in range(100):
        hb = Heartbeat(clock, 5.0 + i / 1000, 5.0, lambda: None, lambda idle: None)
        hb.start()
        hb.stop()
    del hb
    gc.collect()
    assert len(Timeline._lines[clock]) == 0


def test_timers_run_in_due_order_none_early_on_one_delayed_call():
    """Calls at any delay on a clock's timers: due order (made order among equals), none early, one delayed call between them."""
    from txheartbeat._heartbeat import Timers

    clock = Clock()
    timers = Timers(clock)
    ran = []
    for name, delay in [("c", 3.0), ("a", 1.0), ("b", 2.0), ("b2", 2.0), ("d", 3.5)]:
        timers.callLater(delay, ran.append, name)
    clock.callLater(2.5, ran.append, "other")
    assert [c.getTime() for c in clock.getDelayedCalls()] == [1.0, 2.5]
    clock.advance(0.999)
    assert ran == []
    clock.advance(0.001)
    assert ran == ["a"]
    clock.advance(1.499)
    assert ran == ["a", "b", "b2"]
    clock.advance(0.001)
    clock.advance(0.5)
    assert ran == ["a", "b", "b2", "other", "c"]
    timers.callLater(0.25, ran.append, "e")  # sooner than the armed 3.5: re-armed
    assert [c.getTime() for c in clock.getDelayedCalls()] == [3.25]
    clock.advance(1)
    assert ran == ["a", "b", "b2", "other", "c", "e", "d"] and clock.getDelayedCalls() == []


def test_timers_calls_made_while_firing_wait_for_the_next_turn():
    """A call made (at delay 0) by a running call waits for a delayed call of its own, as callLater(0) would: I/O comes first."""
    from txheartbeat._heartbeat import Timers

    clock = Clock()
    timers = Timers(clock)
    ran = []

    def first() -> None:
        ran.append("first")
        timers.callLater(0, ran.append, "made while firing")
        assert clock.getDelayedCalls() == []  # (none armed while firing)

    timers.callLater(1, first)
    timers.callLater(1, ran.append, "due with first")
    call = clock.getDelayedCalls()[0]
    clock.calls.remove(call)  # run it as the reactor would, by itself, at its time
    clock.rightNow = 1.0
    call.func()
    assert ran == ["first", "due with first"]
    assert [c.getTime() for c in clock.getDelayedCalls()] == [1.0]  # re-armed for the next turn
    clock.advance(0)
    assert ran == ["first", "due with first", "made while firing"]


def test_timers_cancel_rearms_and_lets_go():
    """Cancelling the front re-arms for the next; cancelling the rest leaves no delayed call and drops what the call held."""
    import gc
    import weakref

    from txheartbeat._heartbeat import Timers

    class Target:
        def run(self) -> None:
            ran.append(clock.seconds())

    clock = Clock()
    timers = Timers(clock)
    ran: List[float] = []
    target = Target()
    alive = weakref.ref(target)
    first = timers.callLater(1, Target.run, target)
    second = timers.callLater(2, ran.append, "second")
    first.cancel()
    assert [c.getTime() for c in clock.getDelayedCalls()] == [2.0] and not first.active() and second.active()
    del target
    gc.collect()
    assert alive() is None
    second.cancel()
    assert clock.getDelayedCalls() == []
    clock.advance(10)
    assert ran == []


def test_timers_call_that_raises_leaves_the_others_due():
    """A call that raises escapes as any delayed call's would; the calls due with it still run (in the next pass)."""
    from txheartbeat._heartbeat import Timers

    clock = Clock()
    timers = Timers(clock)
    ran = []
    timers.callLater(1, lambda: 1 / 0)
    timers.callLater(1, ran.append, "after")
    with pytest.raises(ZeroDivisionError):
        clock.advance(1)
    clock.advance(0)
    assert ran == ["after"]


def test_timers_are_shared_per_clock_and_not_kept():
    """One timers per clock while some call holds it; none kept once every call has run or been cancelled."""
    import gc

    from txheartbeat._heartbeat import Timers

    a, b = Clock(), Clock()
    held = Timers.on(a)
    assert Timers.on(a) is held and Timers.on(b) is not held
    entry = held.callLater(1, lambda: None)
    del held
    gc.collect()
    assert Timers._all[a]() is not None
    entry.cancel()
    del entry
    gc.collect()
    assert Timers._all[a]() is None


def test_waiting_clients_hold_one_delayed_call():
    """1,000 clients waiting to reconnect hold one delayed call of the reactor between them; each retries at its own time."""
    from txheartbeat import HeartbeatClientFactory, HeartbeatHandler
    from txheartbeat.testing import MemoryReactor

    reactor = MemoryReactor()
    clients = [
        HeartbeatClientFactory(
            "ws://127.0.0.1:9/", HeartbeatHandler(), reactor=reactor, retryPolicy=lambda n, i=i: 1 + i / 1000
        )
        for i in range(1000)
    ]
    for client in clients:
        client.connect().addErrback(lambda f: None)
    while reactor.pending:
        reactor.refuse()
    assert {c.state for c in clients} == {"waiting"}
    assert len(reactor.getDelayedCalls()) == 1
    reactor.advance(1.4995)
    assert sum(c.state == "waiting" for c in clients) == 500


def test_timers_rearmed_never_after_the_due_time():
    """Re-armed for the next call (after another fired), the delayed call is due no later than it: advancing to exactly its time runs it."""
    from txheartbeat import HeartbeatClientFactory, HeartbeatHandler
    from txheartbeat.testing import MemoryReactor

    reactor = MemoryReactor()
    a = HeartbeatClientFactory(
        "ws://127.0.0.1:9/", HeartbeatHandler(), reactor=reactor, retryPolicy=lambda n: 9.2, openTimeout=100
    )
    b = HeartbeatClientFactory("ws://127.0.0.1:9/", HeartbeatHandler(), reactor=reactor, retryPolicy=lambda n: 48.37)
    for client in (a, b):
        client.connect().addErrback(lambda f: None)
    while reactor.pending:
        reactor.refuse()
    due = b._callID.getTime()
    reactor.advance(due)  # (a's retry at 9.2 fires first; b's call is re-armed from there)
    assert (a.state, b.state) == ("connecting", "connecting")


def test_timers_drop_cancelled_calls_once_they_are_most_of_the_heap():
    """Calls cancelled behind the front do not pile up until their time (a client closed and started again while waiting)."""
    from txheartbeat._heartbeat import Timers

    clock = Clock()
    timers = Timers(clock)
    timers.callLater(1, lambda: None)
    for _ in range(10_000):
        timers.callLater(3600, lambda: None).cancel()
    assert len(timers._heap) <= 102


def test_timers_and_timelines_recover_from_their_delayed_call_cancelled_outside():
    """A test's cleanup that cancels every delayed call of a clock does not leave its timers or timelines dead."""
    from txheartbeat._heartbeat import Timeline, Timers

    clock = Clock()
    held = [Timers.on(clock).callLater(100, lambda: None), Timeline.on(clock, 5.0).callLater(lambda: None)]
    for call in clock.getDelayedCalls():
        call.cancel()
    ran = []
    Timers.on(clock).callLater(200, ran.append, "timers")
    Timeline.on(clock, 5.0).callLater(ran.append, "timeline")
    for entry in held:
        entry.cancel()  # (no AlreadyCancelled)
    clock.advance(1000)
    assert ran == ["timeline", "timers"] and clock.getDelayedCalls() == []


@pytest_twisted.ensureDeferred
async def test_zero_delay_verdict_waits_for_io_though_the_shared_timers_are_due():
    """
    After a stall across the deadline, the verdict waits for one pass of I/O
    even when the clock's shared timers are due in the same pass (another
    connection's timer): the answer that arrived during the stall is read first.
    """
    import socket
    import time

    from twisted.internet import reactor

    from txheartbeat._heartbeat import Timers

    local, peer = socket.socketpair()
    stallLocal, stallPeer = socket.socketpair()
    for s in (local, stallLocal):
        s.setblocking(False)
    events: List[str] = []
    done: Deferred[None] = Deferred()

    class Reader:
        def __init__(self, sock: socket.socket, on: Callable[[], None]) -> None:
            self.sock, self.on = sock, on

        def fileno(self) -> int:
            return self.sock.fileno()

        def logPrefix(self) -> str:
            return "reader"

        def connectionLost(self, reason: object) -> None:
            pass

        def doRead(self) -> None:
            self.sock.recv(100)
            self.on()

    def answered() -> None:
        events.append("answer read")
        hb.noteTraffic()

    def stall() -> None:
        peer.send(b"pong")  # the answer arrives while another connection keeps the reactor busy past the deadline
        time.sleep(0.5)

    others = []

    def pinged() -> None:
        events.append("ping")
        if events.count("ping") == 1:
            # From the ping on, whatever the machine's speed: the stall starts at the next
            # I/O pass and outlasts the deadline (0.2 s), and another connection's timer
            # falls due between the deadline and the stall's end.
            stallPeer.send(b"x")
            others.append(Timers.on(reactor).callLater(0.3, lambda: None))
        if events.count("ping") == 2 and not done.called:
            done.callback(None)

    def dead(idle: float) -> None:
        events.append("dead")
        if not done.called:
            done.callback(None)

    hb = Heartbeat(reactor, 0.2, 0.2, pinged, dead)
    readers = [Reader(local, answered), Reader(stallLocal, stall)]
    for r in readers:
        reactor.addReader(r)
    hb.start()

    try:
        await done
    finally:
        hb.stop()
        for other in others:
            other.cancel()
        for r in readers:
            reactor.removeReader(r)
        for s in (local, peer, stallLocal, stallPeer):
            s.close()
    assert "dead" not in events and events[:2] == ["ping", "answer read"], events
