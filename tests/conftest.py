from typing import Any

import pytest

from txheartbeat import HeartbeatClientFactory
from txheartbeat.testing import MemoryReactor, RecordingHandler

URL = "ws://127.0.0.1:9000/"


@pytest.fixture
def reactor() -> MemoryReactor:
    return MemoryReactor()


@pytest.fixture
def handler(reactor: MemoryReactor) -> RecordingHandler:
    return RecordingHandler(reactor)


@pytest.fixture
def make(reactor: MemoryReactor, handler: RecordingHandler):
    """Build and start a factory on the memory reactor; jitter off unless asked."""

    def make(**options: Any) -> HeartbeatClientFactory:
        options.setdefault("jitter", 0.0)
        factory = HeartbeatClientFactory(URL, handler, reactor=reactor, **options)
        # Tests that care about the Deferred use connect() or whenOpen() themselves.
        factory.connect().addErrback(lambda failure: None)
        return factory

    return make


def needsShortcut(*names: str) -> Any:
    """Skip a test of what a shortcut into Autobahn or Twisted does when it is off in this run (saying why)."""
    from txheartbeat._shortcuts import VERDICTS

    off = [f"{name}: {VERDICTS[name][1]}" for name in names if not VERDICTS[name][0]]
    return pytest.mark.skipif(bool(off), reason=f"tests a shortcut that is off in this run ({'; '.join(off)})")


def race(ds: Any) -> Any:
    """``twisted.internet.defer.race`` (Twisted 23.8 and later), or the same on older Twisted: the first result as ``(index, result)``, the others cancelled."""
    from twisted.internet import defer

    if hasattr(defer, "race"):
        return defer.race(ds)
    ds = list(ds)
    winner: Any = defer.Deferred(lambda _: [d.cancel() for d in ds])
    failures: list = []

    def won(result: Any, index: int) -> None:
        if not winner.called:
            winner.callback((index, result))
            for other in ds:
                if other is not ds[index]:
                    other.cancel()

    def lost(failure: Any) -> None:
        failures.append(failure)
        if len(failures) == len(ds) and not winner.called:
            winner.errback(failures[0])

    for index, d in enumerate(ds):
        d.addCallbacks(won, lost, callbackArgs=(index,))
    return winner


class NewGarbage:
    """
    What a test leaves for a full pass of Python's cyclic GC, and only that:
    objects that already existed when it began (an earlier test's, released
    during this one, as the asyncio reactor does a loop turn later) are not
    counted.  The collector is off between ``NewGarbage()`` and :meth:`found`.
    """

    def __init__(self) -> None:
        import gc

        gc.collect()
        self.before = {id(o) for o in gc.get_objects()}
        gc.disable()  # (else a pass could free a cycle before the look)

    def found(self, keep: Any) -> list:
        """The type names of this test's unreachable objects for which ``keep(o)`` is true."""
        import gc

        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        return [type(o).__name__ for o in gc.garbage if id(o) not in self.before and keep(o)]

    @staticmethod
    def close() -> None:
        import gc

        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.fixture
def redis():
    """A real redis-server of this test's own (tests/redisserver.py), stopped after it; skips, saying why, without one."""
    from .redisserver import RedisServer, missing

    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()
