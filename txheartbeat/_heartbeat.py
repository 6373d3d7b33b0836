"""
Liveness logic shared by the client and the server, with no I/O of its own.

A :class:`Heartbeat` is told about inbound traffic and drives two callbacks:
"send a heartbeat now" and "the peer is dead".  It owns exactly one pending
delayed call on the clock it was given.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

_log = Logger(namespace="txheartbeat")


def checkInterval(name: str, value: Optional[float], *, allowNone: bool = True) -> None:
    """
    Raise ``ValueError`` unless ``value`` is a positive finite number
    (or ``None`` where that is allowed).
    """
    if value is None:
        if allowNone:
            return
        raise ValueError(f"{name} must be a number of seconds, not None")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number of seconds, got {value!r}")
    if not (0 < value < float("inf")):
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}")


def checkByteCount(name: str, value: Optional[int]) -> None:
    """Raise ``ValueError`` unless ``value`` is ``None`` or an integer >= 0."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{name} must be None or a number of bytes >= 0, got {value!r}")


_SLACK = 1e-9


class Heartbeat:
    """
    Idle-based heartbeat with a dead-peer deadline.

    After ``interval`` seconds without inbound traffic, ``sendPing`` is
    called.  If no traffic at all arrives within ``timeout`` seconds after
    that, ``onDead`` is called once and the heartbeat stops.  The peer is thus
    declared dead ``interval + timeout`` seconds after its last inbound byte,
    never earlier, with two exceptions that keep live peers alive:

    * **One I/O pass first.**  When the deadline fires, the verdict waits for
      a zero-delay call, so the reactor reads its sockets once in between: an
      answer that arrived while the process was stalled (synchronous work, GC,
      VM steal) counts.
    * **Outbound progress.**  With ``progress`` (see
      :func:`txheartbeat._tcpinfo.outboundProgress`), a deadline at which our
      own bytes are still queued and the peer's TCP has acknowledged more of
      them since the last look waits another ``timeout``: the heartbeat is
      stuck behind our own data, not lost.  Once that backlog has drained,
      the peer gets one more ``timeout`` to answer.  A peer that stops
      acknowledging (its window closed, the path black-holed) is declared
      dead at the first deadline without progress: within ``2 * timeout``
      of the last acknowledged byte.

    :meth:`noteTraffic` is the hot path: it stores a timestamp and touches a
    timer only for the first traffic after a heartbeat (once per heartbeat,
    never per message).

    :param clock: where the one delayed call lives.
    :param interval: idle seconds before a heartbeat.
    :param timeout: seconds to wait for any traffic after a heartbeat;
        ``None`` keeps the line busy without ever declaring the peer dead.
    :param sendPing: called with no arguments to send a heartbeat.
    :param onDead: called with the seconds since the last inbound traffic.
    :param onAnswer: called with the seconds between a heartbeat and the
        first traffic after it (the round-trip time for peers that answer).
    :param progress: returns ``(position, backlog)`` of our outbound bytes,
        or ``None`` when unknown; sampled only at a heartbeat and a deadline.
    """

    __slots__ = (
        "_clock",
        "_interval",
        "_timeout",
        "_sendPing",
        "_onDead",
        "_onAnswer",
        "_call",
        "_pingSentAt",
        "_progress",
        "_position",
        "_drained",
        "lastTraffic",
    )

    def __init__(
        self,
        clock: IReactorTime,
        interval: float,
        timeout: Optional[float],
        sendPing: Callable[[], object],
        onDead: Callable[[float], object],
        onAnswer: Optional[Callable[[float], object]] = None,
        progress: Optional[Callable[[], Optional[Tuple[int, int]]]] = None,
    ) -> None:
        checkInterval("interval", interval, allowNone=False)
        checkInterval("timeout", timeout)
        self._clock = clock
        self._interval = interval
        self._timeout = timeout
        self._sendPing = sendPing
        self._onDead = onDead
        self._onAnswer = onAnswer
        self._call: Optional[IDelayedCall] = None
        self._pingSentAt: Optional[float] = None
        self._progress = progress
        self._position: Optional[int] = None  # outbound position when last looked at
        self._drained = True  # no backlog seen since the heartbeat went out
        self.lastTraffic: float = clock.seconds()

    @property
    def running(self) -> bool:
        """Whether a timer is pending (between :meth:`start` and :meth:`stop` or death)."""
        return self._call is not None

    @property
    def awaitingAnswer(self) -> bool:
        """Whether a heartbeat is out and no traffic has arrived since."""
        return self._pingSentAt is not None

    def start(self) -> None:
        """Start counting idle time from now."""
        self.stop()
        self.lastTraffic = self._clock.seconds()
        self._schedule(self._interval, self._idleCheck)

    def stop(self) -> None:
        """Cancel the pending timer; nothing is called after this."""
        if self._call is not None:
            call, self._call = self._call, None
            call.cancel()
        self._pingSentAt = None

    def noteTraffic(self) -> None:
        """Record that something arrived from the peer (O(1))."""
        now = self.lastTraffic = self._clock.seconds()
        sentAt = self._pingSentAt
        if sentAt is not None:
            self._pingSentAt = None
            if self._call is not None:
                self._call.cancel()
                self._schedule(self._interval, self._idleCheck)
            if self._onAnswer is not None:
                self._onAnswer(now - sentAt)

    def _schedule(self, delay: float, what: Callable[[], None]) -> None:
        self._call = self._clock.callLater(delay, what)

    def _idleCheck(self) -> None:
        self._call = None
        idle = self._clock.seconds() - self.lastTraffic
        # The nanosecond of slack stops float rounding (last + interval - last
        # != interval) from re-arming a zero-length timer forever.
        if idle < self._interval - _SLACK:
            # Traffic arrived since this timer was set: sleep for the rest.
            self._schedule(self._interval - idle, self._idleCheck)
            return
        # State first: a peer may answer synchronously from inside sendPing.
        if self._timeout is None:
            self._schedule(self._interval, self._idleCheck)
        else:
            self._pingSentAt = self._clock.seconds()
            self._schedule(self._timeout, self._deadline)
            if self._progress is not None:
                # Before sending: whether our own data is queued ahead of the heartbeat.
                sample = self._sample()
                self._position = None if sample is None else sample[0]
                self._drained = sample is None or sample[1] == 0
        self._sendPing()

    def _deadline(self) -> None:
        # Let the reactor read once before the verdict (noteTraffic cancels it).
        self._schedule(0, self._verdict)

    def _verdict(self) -> None:
        self._call = None
        if self._progressing():
            self._schedule(self._timeout, self._deadline)  # type: ignore[arg-type]
            return
        self._pingSentAt = None
        self._onDead(self._clock.seconds() - self.lastTraffic)

    def _sample(self) -> Optional[Tuple[int, int]]:
        try:
            return self._progress()  # type: ignore[misc]
        except Exception:
            # Evidence we cannot read is no evidence: the exact rule applies.
            _log.failure("txheartbeat: the outbound progress probe raised")
            return None

    def _progressing(self) -> bool:
        """Whether our bytes are still moving towards a live peer (sampled now)."""
        if self._progress is None or self._position is None:
            return False
        sample = self._sample()
        if sample is None:
            return False
        position, backlog = sample
        moved, self._position = position > self._position, position
        if moved and backlog > 0:
            self._drained = False  # the heartbeat may still be queued behind our data
            return True
        if moved and not self._drained:
            self._drained = True  # the backlog just drained: one timeout for the answer
            return True
        return False
