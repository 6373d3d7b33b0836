"""
Review of issue 18: the supervisor of ``serve --workers`` (``_workers.Supervisor``)
on a fake process reactor (a Clock that records spawns and signals).
"""

from __future__ import annotations

import signal
import socket
from typing import Any, List

from twisted.internet.task import Clock

from txheartbeat._workers import READY_FD, Supervisor


class _Transport:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.signals: List[int] = []

    def signalProcess(self, number: Any) -> None:
        self.signals.append(number)


class _Reactor(Clock):
    def __init__(self) -> None:
        super().__init__()
        self.spawned: List[Any] = []

    def spawnProcess(self, protocol: Any, executable: str, args: Any, env: Any = None, childFDs: Any = None) -> Any:
        transport = _Transport(1000 + len(self.spawned))
        protocol.makeConnection(transport)
        self.spawned.append(protocol)
        return transport


def test_a_rolling_restart_continues_a_stopped_worker_before_terminating_it() -> None:
    """
    SIGHUP while a worker is stopped (the issue's SIGSTOP scenario): stop()
    sends SIGCONT before SIGTERM ("a stopped worker cannot act on SIGTERM"),
    rollingRestart() does not, so it waits on that worker's end for as long
    as it stays stopped, and every later SIGHUP gets the same stuck roll.
    """
    reactor = _Reactor()
    sock = socket.socket()
    try:
        supervisor = Supervisor(reactor, 2, sock, ["serve"], lambda line: None)
        supervisor.start()
        for worker in reactor.spawned:
            worker.childDataReceived(READY_FD, b"ready\n")
        supervisor.rollingRestart()
        first = reactor.spawned[0].transport.signals
        assert signal.SIGTERM in first
        assert signal.SIGCONT in first and first.index(signal.SIGCONT) < first.index(signal.SIGTERM), first
    finally:
        sock.close()
