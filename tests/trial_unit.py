"""
The clock-driven unit tests, under Twisted's trial:

    python -m twisted.trial tests.trial_unit

The tests are written as pytest functions; this module turns each one (and
each of its parametrized cases) into a ``SynchronousTestCase`` method and
supplies the same fixtures as ``tests/conftest.py``.
"""

import inspect
from typing import Any, Callable, Dict

from twisted.trial.unittest import SynchronousTestCase

from txheartbeat import HeartbeatClientFactory
from txheartbeat.testing import MemoryReactor, RecordingHandler

from . import test_backoff, test_client, test_heartbeat, test_lifecycle, test_server
from .conftest import URL


def _fixtures() -> Dict[str, Any]:
    reactor = MemoryReactor()
    handler = RecordingHandler(reactor)

    def make(**options: Any) -> HeartbeatClientFactory:
        options.setdefault("jitter", 0.0)
        factory = HeartbeatClientFactory(URL, handler, reactor=reactor, **options)
        # Tests that care about the Deferred use connect() or whenOpen() themselves.
        factory.connect().addErrback(lambda failure: None)
        return factory

    values: Dict[str, Any] = {"reactor": reactor, "handler": handler, "make": make}
    values["rec"] = test_heartbeat.Recorder(reactor)
    return values


def _cases(function: Callable[..., Any]):
    """Yield (suffix, kwargs) for each parametrized case of a pytest function."""
    cases = [("", {})]
    for mark in getattr(function, "pytestmark", []):
        if mark.name != "parametrize":
            continue
        names, values = mark.args[0], mark.args[1]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        expanded = []
        for suffix, kwargs in cases:
            for i, value in enumerate(values):
                value = value if len(names) > 1 else (value,)
                expanded.append((f"{suffix}_{i}", {**kwargs, **dict(zip(names, value, strict=True))}))
        cases = expanded
    return cases


def _method(function: Callable[..., Any], given: Dict[str, Any]) -> Callable[[SynchronousTestCase], None]:
    def test(self: SynchronousTestCase) -> None:
        fixtures = _fixtures()
        if "server" in inspect.signature(function).parameters:
            fixtures["server"] = _serverFixture()
        kwargs = {name: given.get(name, fixtures.get(name)) for name in inspect.signature(function).parameters}
        function(**kwargs)
        if function.__name__ == "test_hook_exceptions_are_logged_and_isolated":
            self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    test.__doc__ = function.__doc__
    return test


def _serverFixture():
    from txheartbeat import HeartbeatServerFactory

    test_server.AppServer.messages = []
    test_server.AppServer.dead = []

    def make(**options: Any):
        factory = HeartbeatServerFactory(**options)
        factory.protocol = test_server.AppServer
        return factory

    return make


def _suite(module: Any) -> type:
    methods = {}
    for name, function in vars(module).items():
        if name.startswith("test_") and callable(function) and not hasattr(function, "hypothesis"):
            for suffix, given in _cases(function):
                methods[name + suffix] = _method(function, given)
        elif name.startswith("test_") and hasattr(function, "hypothesis"):
            methods[name] = lambda self, f=function: f()
    return type(f"Trial_{module.__name__.rsplit('.', 1)[-1]}", (SynchronousTestCase,), methods)


HeartbeatTests = _suite(test_heartbeat)
BackoffTests = _suite(test_backoff)
ClientTests = _suite(test_client)
ServerTests = _suite(test_server)
LifecycleTests = _suite(test_lifecycle)
