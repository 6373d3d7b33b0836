"""Unit tests for the pure retry-delay policy."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txheartbeat import exponentialBackoff


def test_exact_sequence_without_jitter():
    """With jitter 0 the delays double from initialDelay and stop at maxDelay."""
    policy = exponentialBackoff(initialDelay=1.0, maxDelay=30.0, factor=2.0, jitter=0.0)
    assert [policy(n) for n in range(1, 8)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


def test_jitter_extremes():
    """Later delays spread over ±jitter of themselves; the first retry over [0, initialDelay]."""
    low = exponentialBackoff(jitter=0.1, random=lambda: 0.0)
    high = exponentialBackoff(jitter=0.1, random=lambda: 0.999999)
    assert low(1) == 0.0
    assert high(1) == pytest.approx(1.0, abs=1e-5)
    assert low(2) == pytest.approx(1.8)
    assert high(2) == pytest.approx(2.2, abs=1e-5)
    assert low(3) == pytest.approx(3.6)


def test_jitter_never_exceeds_max():
    """A jittered delay at the cap is still capped at maxDelay."""
    policy = exponentialBackoff(maxDelay=30.0, jitter=0.5, random=lambda: 0.99)
    assert policy(50) == 30.0


def test_huge_attempt_numbers_do_not_overflow():
    """Attempt numbers far past the cap give maxDelay instead of OverflowError."""
    policy = exponentialBackoff(maxDelay=30.0, factor=10.0, jitter=0.0)
    assert policy(10_000) == 30.0


@settings(deadline=None)  # (microseconds an example: a stalled machine is not a failure)
@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    r=st.floats(min_value=0.0, max_value=0.9999999),
    jitter=st.floats(min_value=0.0, max_value=0.99),
)
def test_bounds_property(attempt, r, jitter):
    """Every delay lies within its jitter band and never above maxDelay."""
    policy = exponentialBackoff(initialDelay=0.5, maxDelay=20.0, factor=1.7, jitter=jitter, random=lambda: r)
    delay = policy(attempt)
    assert 0 <= delay <= 20.0
    if attempt == 1:
        assert delay <= 0.5
    else:
        base = 20.0 if attempt > 60 else min(20.0, 0.5 * 1.7 ** (attempt - 1))
        assert delay >= (1 - jitter) * base - 1e-9


@pytest.mark.parametrize(
    "kwargs",
    [
        {"initialDelay": 0},
        {"initialDelay": -1},
        {"maxDelay": 0.5, "initialDelay": 1.0},
        {"factor": 0.5},
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"factor": "2"},
    ],
)
def test_bad_options_rejected(kwargs):
    """Nonsense backoff options raise ValueError when the policy is built."""
    with pytest.raises(ValueError):
        exponentialBackoff(**kwargs)


def test_attempt_zero_rejected():
    """Attempts are numbered from 1."""
    with pytest.raises(ValueError):
        exponentialBackoff()(0)
