"""
The supervisor of ``benchmarks/sessions.py``: ``txheartbeat._workers.Supervisor``
running ``sessions_worker.py`` N times on one shared socket (as ``serve
--workers`` does).  Prints ``port P`` then ``ready`` on stderr; SIGHUP rolls,
SIGTERM stops.  Worker output (their ``R`` lines) goes to stdout.
"""

import signal
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred

from txheartbeat._workers import Supervisor, listenShared


def say(text: str) -> None:
    sys.stderr.write(f"* {text}\n")
    sys.stderr.flush()


def main() -> None:
    count, workerArgs = int(sys.argv[1]), sys.argv[2:]
    sock = listenShared("127.0.0.1", 0)
    say(f"port {sock.getsockname()[1]}")
    command = [sys.executable, str(Path(__file__).with_name("sessions_worker.py"))]
    supervisor = Supervisor(reactor, count, sock, workerArgs, say, command=command)
    reactor.addSystemEventTrigger("before", "shutdown", supervisor.stop)
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(supervisor.rollingRestart))
    supervisor.start().addCallback(lambda _: say("ready"))
    Deferred()
    reactor.run()


if __name__ == "__main__":
    main()
