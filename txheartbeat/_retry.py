"""
Retry decisions: whether to try again after a failure, and when.

Pure functions of a :class:`RetryContext`; the random source is injectable.
The factory builds the context after every failed attempt or lost
connection and asks :func:`shouldRetryByDefault` (or the user's
``shouldRetry``) and :class:`ReconnectPolicy` (or the user's
``retryPolicy``).
"""

from __future__ import annotations

import random as _random
import re
from dataclasses import dataclass
from typing import Callable, Optional

from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure

from ._backoff import RetryPolicy
from ._errors import ConnectionClosed, HandshakeError, TLSRequired

#: HTTP statuses on the upgrade that no retry will fix (by default).
FATAL_STATUSES = frozenset({401, 403, 404})
#: Close codes after which the server does not want this client back (by default).
FATAL_CLOSE_CODES = frozenset({1008})
#: The close code a server sends for a planned restart, and for "try again later".
SERVICE_RESTART, TRY_AGAIN_LATER = 1012, 1013
_WINDOW = re.compile(r"retry-window=(\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)")


@dataclass(frozen=True)
class RetryContext:
    """What a retry decision can look at."""

    #: the reconnect about to be scheduled, numbered from 1 (since the last stable open)
    attempt: int
    #: why the last attempt failed or the connection ended
    failure: Failure
    #: seconds since the last open, or ``None`` if none opened yet
    sinceOpen: Optional[float]
    #: whether ``failure`` ended a connection that had opened (rather than an attempt)
    afterOpen: bool = False
    #: refused attempts in a row, this one included; a spread first retry after losing a stable
    #: connection counts as one (its random phase carries on into the probes)
    refusals: int = 0


#: A reconnect timer that fires more than this many seconds late finds the process behind.
BEHIND = 0.010
#: Each wait of a reconnect attempt that yields is this long on average (half to one and a half times).
YIELD_STEP = 0.040
#: A reconnect attempt that yields starts by this long after it was due (or at its last timer, if that is later).
YIELD_MAX = 1.000


def yieldWhenBehind(late: float, waited: float, random: Optional[Callable[[], float]] = None) -> float:
    """
    Seconds more a reconnect attempt that is due waits because the process is
    behind (0: start it now).

    A reconnect timer that fires more than :data:`BEHIND` late finds the
    reactor behind (a wave of verdicts, a long GC pass, a stall): its attempt
    waits a random 20–60 ms more, again while the timers stay late, until
    :data:`YIELD_MAX` after it was due (``waited`` is how long ago that was,
    the timers' lateness included; a last wait is at least 20 ms, or none),
    so that heartbeat verdicts and reads already due run before the work of
    new connections (over ``wss://``, ~400 µs of CPU each).  On time, an
    attempt starts at once.  ``random`` (default ``random.random``, looked
    up at each call) draws the spread.
    """
    if late <= BEHIND or YIELD_MAX - waited < YIELD_STEP / 2:
        return 0.0
    return min(YIELD_MAX - waited, YIELD_STEP * (0.5 + (random or _random.random)()))


def shouldRetryByDefault(failure: Failure) -> bool:
    """
    The default ``shouldRetry``: retry network errors, timeouts, HTTP 5xx and
    429, dead peers and closes; stop on HTTP 401/403/404, on close code 1008
    (policy violation) and on :class:`TLSRequired`.
    """
    error = failure.value
    if isinstance(error, HandshakeError) and error.status in FATAL_STATUSES:
        return False
    if isinstance(error, ConnectionClosed) and error.code in FATAL_CLOSE_CODES:
        return False
    return not isinstance(error, TLSRequired)


def restartWindow(reason: Optional[str]) -> Optional[float]:
    """The window a server announced in a 1012 close reason (``retry-window=5``), if any."""
    match = _WINDOW.search(reason or "")
    return float(match.group(1)) if match else None


class ReconnectPolicy:
    """
    txheartbeat's default reconnect schedule, tuned so that every outage
    length ends in a fast, smooth return.

    * **Nothing listening** (``ConnectionRefusedError``: the cheapest failure
      for the server host, and the signature of a restart): probe at a
      steady pace, never backing off. The first probe of a streak comes at a
      uniformly random point of ``[0, probeInterval]`` (the client's phase),
      the next ones every ``probeInterval`` ± 5 %: the clients of a dead
      server probe as one even stream, and after its restart every one is
      back within ``probeInterval``. The first retry after the loss of a
      stable connection (up ``minUptime``) is spread over ``[0,
      probeInterval]`` the same way, since it is what every client of a
      crashed server does at once. (``probeInterval=None``: back off as
      below; no random spread with ``jitter=0``.)
    * **Failures that cost the server** (HTTP 5xx, timeouts, a connection
      accepted and then dropped, a dead peer): exponential backoff,
      ``initialDelay * factor**(n-1)`` spread by ±``jitter``, capped at
      ``maxDelay``; the first one spread over ``[0, initialDelay]``.
    * **Server hints** come first: close 1012 (service restart) waits a
      uniformly random time within the announced window (``retry-window=S``
      in the close reason; ``restartWindow`` seconds if none); close 1013
      (try again later) backs off as for an overload; an HTTP 503 or 429
      with ``Retry-After`` waits that long (up to ``maxDelay``, plus up to
      10 % so that clients do not return in step).
    """

    def __init__(
        self,
        backoff: RetryPolicy,
        *,
        probeInterval: Optional[float] = 1.7,
        restartWindow: float = 5.0,
        maxDelay: float = 30.0,
        spread: bool = True,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.backoff = backoff
        self.spread = spread
        self.probeInterval = probeInterval
        self.restartWindow = restartWindow
        self.maxDelay = maxDelay
        self.random = random

    def backsOff(self, failure: Failure) -> bool:
        """Whether this failure is a step of the exponential backoff (all but refusals, while probing)."""
        return self.probeInterval is None or not failure.check(ConnectionRefusedError)

    def __call__(self, context: RetryContext, costlyStep: int) -> float:
        """The delay before the next attempt; ``costlyStep`` counts costly failures in a row (from 1)."""
        # Clamp first, then spread: a hint or interval above maxDelay must not put clients in step.
        error = context.failure.value
        if isinstance(error, ConnectionClosed) and error.code == SERVICE_RESTART:
            window = restartWindow(error.reason)
            if window is None or not window > 0:
                window = self.restartWindow
            return min(self.maxDelay, window) * self.random()
        if isinstance(error, HandshakeError) and error.retryAfter is not None and error.status in (429, 503):
            wait = min(self.maxDelay, error.retryAfter)
            spread = 0.1 * wait * self.random()
            return wait + spread if wait + spread <= self.maxDelay else wait - spread
        probe = None if self.probeInterval is None else min(self.probeInterval, self.maxDelay / 1.05)
        if probe is not None:
            if context.refusals > 1 and context.failure.check(
                ConnectionRefusedError
            ):  # keep the phase: a steady stream, not a random walk into clumps
                return min(self.maxDelay, probe * (1.0 + 0.05 * (2.0 * self.random() - 1.0)) if self.spread else probe)
            refused = context.failure.check(ConnectionRefusedError) is not None
            if (refused and context.refusals == 1) or (context.afterOpen and costlyStep <= 1 and self.spread):
                return min(self.maxDelay, probe * self.random() if self.spread else probe)
        return self.backoff(max(1, costlyStep))
