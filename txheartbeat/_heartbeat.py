"""
Liveness logic shared by the client and the server, with no I/O of its own.

A :class:`Heartbeat` is told about inbound traffic and drives two callbacks:
"send a heartbeat now" and "the peer is dead".  It has at most one call
pending on the clock it was given, most of the time on a :class:`Timeline`
that every heartbeat with the same delay on that clock shares.
"""

from __future__ import annotations

import math
import weakref
from collections import deque
from heapq import heapify, heappop, heappush
from typing import Any, Callable, Deque, List, Optional, Tuple

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


class _Entry:
    """One call in a :class:`Timeline` (the part of ``IDelayedCall`` that heartbeats use)."""

    __slots__ = ("due", "func", "arg", "_line")

    def __init__(self, due: float, func: Callable[..., object], arg: object, line: _Line) -> None:
        self.due = due
        self.func: Optional[Callable[..., object]] = func
        self.arg = arg
        self._line = line

    def getTime(self) -> float:
        return self.due

    def active(self) -> bool:
        return self.func is not None

    def run(self) -> None:
        """Make the call, unless cancelled (once: it lets go of the callable)."""
        func, arg, self.func, self.arg = self.func, self.arg, None, None
        if func is None:
            return
        if arg is _NO_ARG:
            func()
        else:
            func(arg)

    def cancel(self) -> None:
        if self.func is not None:
            self.func = self.arg = None  # (also lets go of what the call would have reached)
            self._line._cancelled(self)


_FIRING: Any = object()
_NO_ARG: Any = object()


def _delayUntil(clock: IReactorTime, due: float) -> float:
    """The delay from now that arms a delayed call no later than ``due`` (``now + (due - now)`` can round above it)."""
    now = clock.seconds()
    delay = max(0.0, due - now)
    while delay > 0.0 and now + delay > due:
        delay = math.nextafter(delay, 0.0)
    return delay


def _armed(call: Any) -> bool:
    """Whether a line's delayed call (or ``None``, or firing) will still fire: not cancelled from outside."""
    return call is _FIRING or (call is not None and call.active())


class _Line:
    """What :class:`Timeline` and :class:`Timers` share: one delayed call, armed for the first call still wanted."""

    __slots__ = ()
    _clock: IReactorTime
    _call: Any  # the delayed call, _FIRING while it runs, or None

    def _first(self) -> Optional[_Entry]:
        """The entry at the front, wanted or cancelled (``None``: none)."""
        raise NotImplementedError

    def _dropFirst(self) -> None:
        raise NotImplementedError

    def _fire(self) -> None:
        raise NotImplementedError

    def _arm(self) -> None:
        first = self._first()
        while first is not None and first.func is None:
            self._dropFirst()
            first = self._first()
        self._call = None if first is None else self._clock.callLater(_delayUntil(self._clock, first.due), self._fire)

    def _cancelled(self, entry: _Entry) -> bool:
        """``entry`` was cancelled: if it was the front, re-arm for the next call wanted (or none); whether it was."""
        call = self._call
        if call is not _FIRING and _armed(call) and self._first() is entry:
            call.cancel()
            self._arm()
            return True
        return False


class Timeline(_Line):
    """
    Calls due a fixed ``delay`` after they were made, on one delayed call of ``clock``.

    Every call on a timeline comes due in the order it was made, so a deque
    keeps them sorted for free; the reactor holds one delayed call, armed
    for the first call still wanted.  At 10,000 connections this replaces
    two pushes and a pop per heartbeat on a heap of 10,000 delayed calls
    (about 30 comparisons, each a Python call) with appends to a deque and
    one delayed call on a heap that stays a few entries long.  A cancelled
    call is dropped when it reaches the front; the delayed call is never
    armed for it.

    When the delayed call fires, every call already due runs, in the order
    they were made, in that one pass (after a stall, thousands of overdue
    heartbeats do not wait one reactor iteration each); none runs early.
    Calls due later than another delayed call run after it; only calls
    overdue together may run before another delayed call overdue with them
    (on ``task.Clock``: within one ``advance``).  A call that raises is
    reported by the reactor as any delayed call's would be, and the calls
    after it still run.
    """

    __slots__ = ("_clock", "_delay", "_entries", "_call", "__weakref__")

    # Per clock, per delay; a timeline lives while a heartbeat or a pending call holds it
    # (an application with a different interval per connection leaves nothing behind).
    _lines: weakref.WeakKeyDictionary[Any, weakref.WeakValueDictionary[float, Timeline]] = weakref.WeakKeyDictionary()

    def __init__(self, clock: IReactorTime, delay: float) -> None:
        self._clock = clock
        self._delay = delay
        self._entries: Deque[_Entry] = deque()
        self._call: Optional[IDelayedCall] = None

    @classmethod
    def on(cls, clock: IReactorTime, delay: float) -> Timeline:
        """The timeline of ``delay`` on ``clock``, shared by every heartbeat on it."""
        try:
            lines = cls._lines.get(clock)
            if lines is None:
                lines = cls._lines[clock] = weakref.WeakValueDictionary()
        except TypeError:  # a clock that cannot be weakly referenced
            return cls(clock, delay)
        line = lines.get(delay)
        if line is None:
            line = lines[delay] = cls(clock, delay)
        return line

    def callLater(self, func: Callable[..., object], arg: object = _NO_ARG) -> _Entry:
        """
        Call ``func`` (or ``func(arg)``) ``delay`` seconds from now; cancel
        with the result's ``cancel()``.

        With ``arg``, a plain function and its object make no bound method:
        one object less per call, which matters to the young generation of
        Python's cyclic GC when thousands are scheduled at once (a verdict
        wave and its reconnects: BENCHMARKS.md section 8).
        """
        entry = _Entry(self._clock.seconds() + self._delay, func, arg, self)
        self._entries.append(entry)
        if self._call is None:
            self._call = self._clock.callLater(self._delay, self._fire)  # (due at entry.due exactly)
        elif not _armed(self._call):
            self._arm()
        return entry

    def _first(self) -> Optional[_Entry]:
        return self._entries[0] if self._entries else None

    def _dropFirst(self) -> None:
        self._entries.popleft()

    def _fire(self) -> None:
        self._call = _FIRING
        entries = self._entries
        try:
            # (The front is wanted: a cancelled front re-arms.)  Never early,
            # whatever the rounding of the delay it was armed with.
            now = self._clock.seconds()
            if not entries or entries[0].due > now:
                return
            while entries and entries[0].due <= now:
                entries.popleft().run()
        finally:
            self._arm()


class Timers(_Line):
    """
    Calls at any delay on one delayed call of ``clock``: a heap of its own.

    Twisted keeps delayed calls in a heap ordered by ``DelayedCall.__lt__``,
    a Python method: with 10,000 clients waiting to reconnect, every delayed
    call the reactor runs costs about 26 of those calls to pop.  Here the
    heap holds ``(due, order, entry)`` tuples, compared in C, and the
    reactor's heap holds one delayed call, armed for the first call still
    wanted.  Calls run in the order they come due (the order they were made,
    for calls due together), none early; every call due when the delayed
    call fires runs in that pass, except calls made during that pass of the
    reactor (by it, or by another delayed call before it), which wait for
    the next, as ``callLater(0)`` does: a zero-delay call lets the reactor
    read first.  Calls due later than another delayed call run after it;
    only calls overdue together may run before another delayed call overdue
    with them (on ``task.Clock``: within one ``advance``).  A call that
    raises is reported by the reactor as any delayed call's would be, and
    the calls after it still run.  A cancelled call is dropped when it
    reaches the front, or when cancelled calls are most of the heap.
    """

    __slots__ = ("_clock", "_heap", "_call", "_order", "_held", "_cancelledCount", "__weakref__")

    # Per clock, while some pending call holds it (held weakly: a clock's timers never outlive their calls).
    _all: weakref.WeakKeyDictionary[Any, weakref.ReferenceType[Timers]] = weakref.WeakKeyDictionary()

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._heap: List[Tuple[float, int, _Entry]] = []
        self._call: Optional[IDelayedCall] = None
        self._order = 0
        self._held = 0  # the first call made while the armed call was already due (0: none)
        self._cancelledCount = 0  # cancelled calls still in the heap behind its front

    @classmethod
    def on(cls, clock: IReactorTime) -> Timers:
        """The timers of ``clock``, shared by every caller on it."""
        try:
            ref = cls._all.get(clock)
        except TypeError:  # a clock that cannot be weakly referenced
            return cls(clock)
        timers = None if ref is None else ref()
        if timers is None:
            timers = cls(clock)
            cls._all[clock] = weakref.ref(timers)
        return timers

    def callLater(self, delay: float, func: Callable[..., object], arg: object = _NO_ARG) -> _Entry:
        """Call ``func`` (or ``func(arg)``) ``delay`` seconds from now; cancel with the result's ``cancel()``."""
        now = self._clock.seconds()
        due = now + delay
        entry = _Entry(due, func, arg, self)
        self._order += 1
        heappush(self._heap, (due, self._order, entry))
        call = self._call
        if call is None:
            self._call = self._clock.callLater(delay, self._fire)  # (due at entry.due exactly)
        elif call is _FIRING:
            pass  # (re-armed when the firing ends)
        elif not call.active():
            self._arm()
        elif due < call.getTime():
            call.cancel()
            self._call = self._clock.callLater(delay, self._fire)
        elif not self._held and call.getTime() <= now:
            # The armed call is due already and may run later in this very pass
            # of the reactor: this call waits for the next, as callLater(0) would.
            self._held = self._order
        return entry

    def _first(self) -> Optional[_Entry]:
        return self._heap[0][2] if self._heap else None

    def _dropFirst(self) -> None:
        heappop(self._heap)

    def _arm(self) -> None:
        super()._arm()
        if self._call is None:
            self._cancelledCount = 0

    def _cancelled(self, entry: _Entry) -> bool:
        if super()._cancelled(entry):
            return True
        self._cancelledCount += 1
        heap = self._heap
        if self._call is not _FIRING and self._cancelledCount > 50 and 2 * self._cancelledCount > len(heap):
            # As Twisted's reactor does with its own: drop them all once they are most of the heap.
            heap[:] = [item for item in heap if item[2].func is not None]
            heapify(heap)
            self._cancelledCount = 0
        return False

    def _fire(self) -> None:
        self._call = _FIRING
        heap = self._heap
        # (calls made from here on, or while this call was already due, wait for the next pass)
        last = self._held - 1 if self._held else self._order
        self._held = 0
        try:
            now = self._clock.seconds()
            while heap and heap[0][0] <= now and heap[0][1] <= last:
                heappop(heap)[2].run()
        finally:
            self._arm()


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
        "_idleLine",
        "_deadLine",
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
        self._call: Optional[_Entry] = None
        self._idleLine = Timeline.on(clock, interval)
        self._deadLine = None if timeout is None else Timeline.on(clock, timeout)
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
        self._schedule(self._interval, Heartbeat._idleCheck)

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
                self._schedule(self._interval, Heartbeat._idleCheck)
            if self._onAnswer is not None:
                self._onAnswer(now - sentAt)

    def _schedule(self, delay: float, what: Callable[[Heartbeat], None]) -> None:
        # The two fixed delays go on the clock's shared timelines; the rest of
        # an interval and the zero-delay verdict on its shared timers.
        # (``what`` is one of this class's functions, called with this
        # heartbeat: no bound method is made per timer.)
        if delay == self._interval:
            self._call = self._idleLine.callLater(what, self)
        elif delay == self._timeout:
            self._call = self._deadLine.callLater(what, self)  # type: ignore[union-attr]
        else:
            self._call = Timers.on(self._clock).callLater(delay, what, self)

    def _idleCheck(self) -> None:
        self._call = None
        idle = self._clock.seconds() - self.lastTraffic
        # The nanosecond of slack stops float rounding (last + interval - last
        # != interval) from re-arming a zero-length timer forever.
        if idle < self._interval - _SLACK:
            # Traffic arrived since this timer was set: sleep for the rest.
            self._schedule(self._interval - idle, Heartbeat._idleCheck)
            return
        # State first: a peer may answer synchronously from inside sendPing.
        if self._timeout is None:
            self._schedule(self._interval, Heartbeat._idleCheck)
        else:
            self._pingSentAt = self._clock.seconds()
            self._schedule(self._timeout, Heartbeat._deadline)
            if self._progress is not None:
                # Before sending: whether our own data is queued ahead of the heartbeat.
                sample = self._sample()
                self._position = None if sample is None else sample[0]
                self._drained = sample is None or sample[1] == 0
        self._sendPing()

    def _deadline(self) -> None:
        # Let the reactor read once before the verdict (noteTraffic cancels it).
        self._schedule(0, Heartbeat._verdict)

    def _verdict(self) -> None:
        self._call = None
        if self._progressing():
            self._schedule(self._timeout, Heartbeat._deadline)  # type: ignore[arg-type]
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
