"""
``txheartbeat serve --workers N``: N worker processes accept on one
listening socket, made by the supervisor (this module) and handed to each
worker the Twisted way (``reactor.adoptStreamPort``).  The kernel gives
each connection to whichever worker accepts first, so a stopped (SIGSTOP)
or dead worker's share goes to the others at once.

The supervisor starts the workers, restarts one that exits (a crash, a
``kill -9``, or a SIGTERM that restarts it on purpose) and, on SIGHUP,
restarts them one after the other, each once its replacement is ready (a
rolling restart).  On SIGTERM or SIGINT it stops them all, each with its
``restart(window)``.

Workers tell the supervisor they are ready on a pipe (file descriptor 4):
never a sleep standing in for "it has started".
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence

from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

#: the listening socket's descriptor in a worker, and the pipe it says "ready" on
LISTEN_FD, READY_FD = 3, 4
#: a worker that exits within this many seconds of its start waits before the next try (a crash loop)
QUICK_EXIT = 1.0
MAX_RESPAWN_DELAY = 10.0


def listenShared(host: str, port: int) -> socket.socket:
    """The one listening socket the workers share (``OSError`` if it cannot listen)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    sock.setblocking(False)
    return sock


def _cancel(result: object, call: Any) -> object:
    if call.active():
        call.cancel()
    return result


def adopt(reactor: Any, factory: Any, host: str, tls: Any = None) -> Any:
    """In a worker: listen on the socket the supervisor handed over (with TLS if given)."""
    if tls is not None:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        factory = TLSMemoryBIOFactory(tls, False, factory)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    port = reactor.adoptStreamPort(LISTEN_FD, family, factory)
    os.close(LISTEN_FD)  # (adoptStreamPort made its own copy)
    return port


def tellReady() -> None:
    """In a worker: tell the supervisor this worker accepts connections."""
    try:
        os.write(READY_FD, b"ready\n")
        os.close(READY_FD)
    except OSError:
        pass  # (run by hand, without a supervisor)


class _Worker(ProcessProtocol):
    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.ready: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.startedAt = supervisor.reactor.seconds()

    pid: Optional[int] = None

    def connectionMade(self) -> None:
        self.pid = self.transport.pid  # type: ignore[union-attr]

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == READY_FD and b"ready" in data and not self.ready.called:
            self.ready.callback(None)

    def processEnded(self, reason: Failure) -> None:
        self.supervisor._ended(self, reason)
        if not self.ready.called:
            self.ready.errback(reason)
            self.ready.addErrback(lambda _: None)
        self.ended.callback(None)

    def signal(self, number: int) -> None:
        try:
            self.transport.signalProcess(number)  # type: ignore[union-attr]
        except Exception:
            pass  # (already gone)


class Supervisor:
    """Starts ``count`` workers on ``sock`` and keeps them running (see the module's docstring)."""

    def __init__(
        self,
        reactor: Any,
        count: int,
        sock: socket.socket,
        workerArgs: Sequence[str],
        say: Callable[[str], None],
        command: Optional[Sequence[str]] = None,
        stopTimeout: float = 30.0,
        env: Optional[Dict[str, str]] = None,
    ) -> None:
        self.reactor = reactor
        self.count = count
        self.sock = sock
        self.workerArgs = list(workerArgs)
        #: what runs a worker (its arguments follow, then ``--worker N``)
        self.command = list(command) if command is not None else [sys.executable, "-m", "txheartbeat"]
        self.say = say
        self.workers: Dict[int, _Worker] = {}
        self.stopping = False
        self._delays: Dict[int, float] = {}
        self._rolling: Optional[Deferred[None]] = None
        #: seconds a worker asked to stop may take before it is killed (SIGKILL)
        self.stopTimeout = stopTimeout
        #: added to the workers' environment (e.g. a Redis URL with its password: never on a command line)
        self.env = dict(env or {})
        self._spawnWaiters: Dict[int, List[Deferred[Optional[_Worker]]]] = {}

    def _nextSpawn(self, index: int) -> Deferred[Optional[_Worker]]:
        d: Deferred[Optional[_Worker]] = Deferred()
        self._spawnWaiters.setdefault(index, []).append(d)
        return d

    def start(self) -> Deferred[None]:
        """Start every worker; fires once all are ready."""
        return DeferredList([self._spawn(i) for i in range(1, self.count + 1)]).addCallback(lambda _: None)

    def _spawn(self, index: int) -> Deferred[None]:
        worker = _Worker(self, index)
        args = [*self.command, *self.workerArgs, "--worker", str(index)]
        self.reactor.spawnProcess(
            worker,
            args[0],
            args,
            env={**os.environ, **self.env},
            childFDs={0: "w", 1: 1, 2: 2, LISTEN_FD: self.sock.fileno(), READY_FD: "r"},
        )
        self.workers[index] = worker
        self.say(f"worker {index} (pid {worker.pid}) started")
        for waiter in self._spawnWaiters.pop(index, []):
            waiter.callback(worker)
        return worker.ready.addErrback(lambda _: None)

    def _ended(self, worker: _Worker, reason: Failure) -> None:
        if self.workers.get(worker.index) is not worker:
            return
        del self.workers[worker.index]
        status = reason.value
        how = getattr(status, "signal", None)
        what = f"killed by signal {how}" if how else f"exited with {getattr(status, 'exitCode', '?')}"
        if self.stopping:
            self.say(f"worker {worker.index} (pid {worker.pid}) {what}")
            return
        quick = self.reactor.seconds() - worker.startedAt < QUICK_EXIT
        delay = min(MAX_RESPAWN_DELAY, max(0.5, 2 * self._delays.get(worker.index, 0.25))) if quick else 0.0
        self._delays[worker.index] = delay
        self.say(f"worker {worker.index} {what}; starting it again" + (f" in {delay:g} s" if delay else ""))
        self.reactor.callLater(delay, self._respawn, worker.index)

    def _respawn(self, index: int) -> None:
        if not self.stopping and index not in self.workers:
            self._spawn(index)

    def rollingRestart(self) -> Deferred[None]:
        """Restart the workers one after the other, each once the previous one's replacement is ready."""
        if self._rolling is not None:
            return self._rolling
        self.say("rolling restart of every worker")

        async def roll() -> None:
            for index in sorted(self.workers):
                worker = self.workers.get(index)
                if worker is None or self.stopping:
                    continue
                spawned = self._nextSpawn(index)
                worker.signal(signal.SIGCONT)  # (a stopped worker cannot act on SIGTERM)
                worker.signal(signal.SIGTERM)
                kill = self.reactor.callLater(self.stopTimeout, worker.signal, signal.SIGKILL)
                await worker.ended
                if kill.active():
                    kill.cancel()
                replacement = await spawned
                if replacement is not None:
                    await replacement.ready

        def done(_: object) -> None:
            self._rolling = None

        from twisted.internet.defer import ensureDeferred

        self._rolling = ensureDeferred(roll())
        self._rolling.addBoth(done)
        return self._rolling

    def stop(self) -> Deferred[None]:
        """Stop every worker (SIGTERM: each closes its clients with 1012 first); fires once all ended."""
        self.stopping = True
        for waiters in self._spawnWaiters.values():
            for waiter in waiters:
                waiter.callback(None)
        self._spawnWaiters.clear()
        ended: List[Deferred[None]] = []
        for worker in list(self.workers.values()):
            worker.signal(signal.SIGCONT)  # (a stopped worker cannot act on SIGTERM)
            worker.signal(signal.SIGTERM)
            kill = self.reactor.callLater(self.stopTimeout, worker.signal, signal.SIGKILL)
            worker.ended.addBoth(_cancel, kill)
            ended.append(worker.ended)
        return DeferredList(ended).addCallback(lambda _: None) if ended else succeed(None)
