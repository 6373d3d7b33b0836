"""Reconnect attempts yield to a process that is behind (issue 21): exact times on the in-memory reactor."""

import random

import pytest
from twisted.internet.task import Clock

import txheartbeat._client
from txheartbeat import connect
from txheartbeat._retry import BEHIND, YIELD_MAX, YIELD_STEP, yieldWhenBehind
from txheartbeat.testing import RecordingHandler

from .conftest import URL


def test_on_time_or_at_most_behind_the_attempt_goes_at_once():
    assert yieldWhenBehind(0.0, 0.0, lambda: 0.5) == 0.0
    assert yieldWhenBehind(BEHIND, 0.0, lambda: 0.5) == 0.0
    assert yieldWhenBehind(BEHIND + 1e-6, YIELD_MAX, lambda: 0.5) == 0.0


def test_a_late_timer_waits_a_spread_step_bounded_in_all():
    assert yieldWhenBehind(BEHIND + 1e-6, 0.0, lambda: 0.0) == pytest.approx(YIELD_STEP * 0.5)
    assert yieldWhenBehind(5.0, 0.0, lambda: 0.999999) == pytest.approx(YIELD_STEP * 1.5, abs=1e-6)
    assert yieldWhenBehind(5.0, YIELD_MAX - 0.025, lambda: 0.5) == pytest.approx(0.025)  # never past YIELD_MAX in all
    assert yieldWhenBehind(5.0, YIELD_MAX - 0.019, lambda: 0.5) == 0.0  # a last wait under 20 ms: none


@pytest.fixture
def pinned(monkeypatch, reactor):
    """Every spread draw is 0.5: each wait is exactly YIELD_STEP; real time moves with the test's clock."""
    monkeypatch.setattr(random, "random", lambda: 0.5)
    monkeypatch.setattr(txheartbeat._client, "_monotonic", reactor.seconds)


def jump(reactor, amount):
    """Time moves on by ``amount`` in one step, as for a process that was behind: every timer due meanwhile fires late."""
    Clock.advance(reactor, amount)
    reactor.flush()


def refusedOnce(reactor, handler, **options):
    connect(URL, handler, reactor=reactor, **options).addErrback(lambda f: None)
    assert handler.stats.attempts == 1
    reactor.refuse()
    return handler.factory.delay


def test_a_retry_on_time_starts_exactly_when_due(reactor, handler, pinned):
    delay = refusedOnce(reactor, handler)
    reactor.advance(delay)
    assert handler.stats.attempts == 2
    handler.close()


def test_a_retry_found_late_waits_once_then_starts_on_its_next_timer(reactor, handler, pinned):
    """11 ms late: the attempt waits YIELD_STEP more, then starts (its next timer fired on time)."""
    delay = refusedOnce(reactor, handler)
    jump(reactor, delay + BEHIND + 0.001)
    assert handler.stats.attempts == 1 and handler.factory.state.name == "WAITING"
    reactor.advance(YIELD_STEP - 1e-6)
    assert handler.stats.attempts == 1
    reactor.advance(2e-6)
    assert handler.stats.attempts == 2
    assert handler.names().count("onReconnect") == 1  # one reconnect, however long it waited
    handler.close()


def lateBy(reactor, amount):
    """Time moves to the next delayed call plus ``amount``: it fires that late."""
    jump(reactor, min(c.getTime() for c in reactor.getDelayedCalls()) - reactor.seconds() + amount)


def test_a_process_that_stays_behind_holds_the_attempt_until_YIELD_MAX_after_it_was_due(
    reactor, handler, pinned, monkeypatch
):
    """Every timer fires 15 ms late and each wait is 50 ms: the yields and the lateness add up to 0.990 s after the
    retry was due (the next wait would end past YIELD_MAX), and the attempt goes at that timer."""
    monkeypatch.setattr(random, "random", lambda: 0.75)  # each wait 1.25 * YIELD_STEP = 50 ms
    delay = refusedOnce(reactor, handler)
    due = reactor.seconds() + delay
    fired = 0
    while handler.stats.attempts == 1:
        lateBy(reactor, 0.015)
        fired += 1
        assert fired < 40
    assert fired == 16
    assert reactor.seconds() - due == pytest.approx(0.990) and reactor.seconds() - due <= YIELD_MAX
    assert handler.factory._yielded == pytest.approx(0.990)
    # The next retry may wait again: the bound is per retry.
    reactor.refuse()
    lateBy(reactor, 0.015)
    assert handler.stats.attempts == 2 and handler.factory._yielded == pytest.approx(0.015 + 1.25 * YIELD_STEP)
    handler.close()


def test_a_timer_already_YIELD_MAX_late_starts_the_attempt_at_once(reactor, handler, pinned):
    """The bound is time since the retry was due, lateness included: a stall as long as YIELD_MAX adds no wait."""
    delay = refusedOnce(reactor, handler)
    jump(reactor, delay + YIELD_MAX)
    assert handler.stats.attempts == 2
    handler.close()


@pytest.mark.parametrize("how", ["close", "stopTrying"])
def test_close_while_an_attempt_yields_starts_nothing(reactor, handler, pinned, how):
    delay = refusedOnce(reactor, handler)
    jump(reactor, delay + 0.5)
    assert handler.stats.attempts == 1
    closed = handler.factory.whenClosed()
    if how == "close":
        handler.close()
    else:
        handler.factory.stopTrying()
    assert closed.called
    reactor.advance(10.0)
    assert handler.stats.attempts == 1 and reactor.getDelayedCalls() == []


def test_a_hook_that_closes_from_onReconnect_is_not_undone_by_a_yield(reactor, pinned):
    """Re-entrant: a client closed by its own onReconnect hook never starts the attempt, late timer or not."""

    class Closing(RecordingHandler):
        def onReconnect(self, attempt, delay, reason=None):
            super().onReconnect(attempt, delay, reason)
            if attempt == 2:
                self.close()

    h = Closing(reactor)
    delay = refusedOnce(reactor, h)
    jump(reactor, delay + 0.5)  # late: waits
    jump(reactor, 1.0)  # its next timer fires past YIELD_MAX after the retry was due: it starts
    assert h.stats.attempts == 2
    reactor.refuse()  # the second retry's hook closes
    reactor.advance(10.0)
    assert h.stats.attempts == 2 and h.factory.finished and reactor.getDelayedCalls() == []


@pytest.mark.parametrize("lateBy", ["clock", "real time"])
def test_late_by_one_clock_only_is_not_behind(reactor, handler, monkeypatch, lateBy):
    """A task.Clock stepped past the retry (real time still) starts it at once, as it always did; so does a process
    whose wall clock jumped (reactor.seconds() is time.time()) while real time did not, and the reverse."""
    real = [0.0]
    monkeypatch.setattr(txheartbeat._client, "_monotonic", lambda: real[0])
    delay = refusedOnce(reactor, handler)
    if lateBy == "clock":
        real[0] += delay
        jump(reactor, delay + 1.0)
    else:
        real[0] += delay + 1.0
        jump(reactor, delay)
    assert handler.stats.attempts == 2
    handler.close()
