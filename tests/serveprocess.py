"""
``txheartbeat serve`` as a real process for loopback tests: its stderr
lines collected on the test's reactor, waited for by pattern (never a
sleep), and real signals sent to it or to one of its workers.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from typing import Dict, List, Optional, Tuple

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol

#: how long a line may take to appear before the test fails (a failure, not a wait)
LINE_TIMEOUT = 30.0


class ServeProcess(ProcessProtocol):
    """One ``txheartbeat serve ...`` process; :meth:`line` waits for a stderr line matching a pattern."""

    def __init__(self, *args: str) -> None:
        self.lines: List[str] = []
        self._pending = b""
        self._waiters: List[Tuple[re.Pattern[str], int, Deferred[re.Match[str]]]] = []
        self.ended: Deferred[int] = Deferred()
        self.exitCode: Optional[int] = None
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        _reactor.spawnProcess(
            self,
            sys.executable,
            [sys.executable, "-m", "txheartbeat", "serve", *args],
            env=env,
            childFDs={0: "w", 1: "r", 2: "r"},
        )

    def errReceived(self, data: bytes) -> None:
        self._pending += data
        *complete, self._pending = self._pending.split(b"\n")
        for raw in complete:
            self.lines.append(raw.decode(errors="replace"))
            self._check()

    def outReceived(self, data: bytes) -> None:
        pass

    def _check(self) -> None:
        for waiter in list(self._waiters):
            pattern, start, d = waiter
            for text in self.lines[start:]:
                match = pattern.search(text)
                if match:
                    self._waiters.remove(waiter)
                    d.callback(match)
                    break

    def line(self, pattern: str, after: int = 0) -> Deferred[re.Match[str]]:
        """The first line from index ``after`` on that matches ``pattern`` (fails after LINE_TIMEOUT)."""
        d: Deferred[re.Match[str]] = Deferred()
        self._waiters.append((re.compile(pattern), after, d))
        self._check()

        def timedOut(failure: object, _: float) -> None:
            raise AssertionError(
                f"no line matching {pattern!r} within {LINE_TIMEOUT} s; lines:\n" + "\n".join(self.lines[-40:])
            )

        return d.addTimeout(LINE_TIMEOUT, _reactor, onTimeoutCancel=timedOut)

    def workers(self) -> Dict[int, int]:
        """The pid of each worker now (from the supervisor's "worker N (pid P) started" lines)."""
        pids: Dict[int, int] = {}
        for text in self.lines:
            match = re.search(r"worker (\d+) \(pid (\d+)\) started", text)
            if match:
                pids[int(match.group(1))] = int(match.group(2))
        return pids

    def processEnded(self, reason: object) -> None:
        self.exitCode = getattr(getattr(reason, "value", None), "exitCode", None)
        self.ended.callback(self.exitCode)

    def signal(self, number: int) -> None:
        if self.exitCode is None and not self.ended.called:
            self.transport.signalProcess(number)  # type: ignore[union-attr]

    async def stop(self) -> None:
        """SIGTERM (after SIGCONT to every worker), and wait for it to exit."""
        for pid in self.workers().values():
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        self.signal(signal.SIGTERM)
        await self.ended
