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


@pytest.fixture
def redis():
    """A real redis-server of this test's own (tests/redisserver.py), stopped after it; skips, saying why, without one."""
    from tests.redisserver import RedisServer, missing

    reason = missing()
    if reason is not None:
        pytest.skip(reason)
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.close()
