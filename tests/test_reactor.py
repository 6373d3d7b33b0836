"""The suite runs on the reactor asked for with pytest-twisted's ``--reactor`` (default or asyncio)."""

import asyncio

import pytest
import pytest_twisted
import txaio
from twisted.internet import defer
from twisted.internet.asyncioreactor import AsyncioSelectorReactor


@pytest.fixture
def reactorOption(request: pytest.FixtureRequest) -> str:
    return request.config.getoption("reactor")


def test_installed_reactor_is_the_one_asked_for(reactorOption):
    """The global reactor is an AsyncioSelectorReactor under ``--reactor=asyncio``, else the platform default."""
    from twisted.internet import default, reactor

    if reactorOption == "asyncio":
        assert isinstance(reactor, AsyncioSelectorReactor), type(reactor)
    elif reactorOption == "default":
        assert not isinstance(reactor, AsyncioSelectorReactor)
        assert type(reactor).__module__ == default.install.__module__, type(reactor)
    else:
        pytest.skip(f"no expectation for --reactor={reactorOption}")


@pytest_twisted.ensureDeferred
async def test_asyncio_code_runs_on_the_reactors_loop(reactorOption):
    """Under ``--reactor=asyncio`` a coroutine scheduled on asyncio's running loop completes inside a Twisted test."""
    if reactorOption != "asyncio":
        pytest.skip("only the asyncio reactor runs an asyncio event loop")
    from twisted.internet import reactor

    future = asyncio.ensure_future(asyncio.sleep(0.01, result="ran"), loop=asyncio.get_running_loop())
    assert await defer.Deferred.fromFuture(future).addTimeout(5, reactor) == "ran"


def test_txaio_stays_on_twisted():
    """Autobahn's txaio uses Twisted whichever reactor runs: the asyncio reactor is still a Twisted reactor."""
    import txheartbeat  # noqa: F401  (imports autobahn.twisted.websocket, which calls txaio.use_twisted())

    assert txaio.using_twisted and not txaio.using_asyncio
