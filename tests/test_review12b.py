"""Review 12b: attempts to break is_closed made again on demand (3dc4844), and the cyclic-garbage claim."""

import weakref

import pytest
import pytest_twisted
from twisted.internet import protocol
from twisted.internet import reactor as globalReactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.task import deferLater

from txheartbeat import (
    HeartbeatClientFactory,
    HeartbeatHandler,
    HeartbeatServerFactory,
    HeartbeatServerProtocol,
    connect,
)
from txheartbeat._client import HeartbeatClientProtocol
from txheartbeat._protocol import HeartbeatMixin
from txheartbeat.testing import MemoryReactor, RecordingHandler

from .conftest import URL, NewGarbage


def sleep(seconds):
    return deferLater(globalReactor, seconds, lambda: None)


def memoryLink(serverProtocol=HeartbeatServerProtocol):
    reactor = MemoryReactor()
    server = HeartbeatServerFactory(URL, pingInterval=None, reactor=reactor)
    server.protocol = serverProtocol
    handler = RecordingHandler(reactor)
    HeartbeatClientFactory(URL, handler, reactor=reactor, pingInterval=None, shouldRetry=lambda f: False).connect()
    return reactor, server, handler, reactor.accept(server)


# --- is_closed semantics (MemoryReactor) -----------------------------------------------------------


def test_callbacks_that_change_the_result_keep_autobahns_future():
    """A callback added before the close that returns something else (None, here): the stored future stays, with Autobahn's (changed) result, as without txheartbeat; nothing raises."""
    _, _, _, link = memoryLink()
    d = link.client.is_closed
    d.addCallback(lambda p: None)
    link.reset()
    assert link.client.is_closed is d and d.result is None


def test_a_paused_chain_on_is_closed_survives_the_loss():
    """A callback returning an unfired Deferred pauses is_closed across connectionLost: it is kept (result not the protocol) and resumes later with what the chain gives."""
    _, _, _, link = memoryLink()
    inner = Deferred()
    got = []
    d = link.client.is_closed
    d.addCallback(lambda p: inner).addCallback(got.append)
    link.reset()
    assert d.paused and link.client.is_closed is d
    inner.callback("later")
    assert got == ["later"]


def test_each_access_after_close_is_fresh_and_fired_with_the_protocol():
    """After the loss every access is a new succeed(protocol): one user's callback (returning None) never changes what the next one sees."""
    _, _, _, link = memoryLink()
    link.reset()
    seen = []
    for proto in (link.client, link.server):
        proto.is_closed.addCallback(lambda p: seen.append(p))  # returns None
        proto.is_closed.addCallback(seen.append)
        assert proto.is_closed is not proto.is_closed
    assert seen == [link.client, link.client, link.server, link.server]


def test_dropped_before_lost_no_already_called():
    """dropConnection resolves is_closed before connectionLost (abort, dead peer, close handshake end): the later connectionLost neither resolves again nor raises; callbacks run once."""
    _, server, _, link = memoryLink()
    calls = []
    link.server.is_closed.addCallback(lambda p: calls.append(p) or p)
    link.server.abort()  # dropConnection: resolved now, TCP goes at the pump
    assert calls == [link.server] and "_isClosed" in vars(link.server)
    link.pump()
    assert calls == [link.server] and "_isClosed" not in vars(link.server)
    assert link.server.is_closed.result is link.server


def test_is_closed_callback_reentering_the_protocol_during_close():
    """A callback on is_closed that aborts again and reads is_closed (re-entrant, from inside dropConnection) breaks nothing."""
    _, _, _, link = memoryLink()
    seen = []

    def cb(p):
        p.abort()
        seen.append(p.is_closed.result)
        return p

    link.client.is_closed.addCallback(cb)
    link.client.abort()
    link.pump()
    assert seen == [link.client] and link.client.is_closed.result is link.client


def test_lost_during_the_opening_handshake():
    """A connection lost before it opened (server never answers): is_closed has fired with the protocol and is not kept."""
    reactor = MemoryReactor()
    handler = RecordingHandler(reactor)
    HeartbeatClientFactory(URL, handler, reactor=reactor, pingInterval=None, shouldRetry=lambda f: False).connect()
    link = reactor.accept(HeartbeatServerFactory(URL, pingInterval=None, reactor=reactor), greet=False)
    d = link.client.is_closed
    link.reset()
    assert d.called and d.result is link.client and "_isClosed" not in vars(link.client)
    assert link.server.is_closed.result is link.server


# --- cyclic garbage on a real reactor ----------------------------------------------------------------


class _Mute(protocol.Protocol):
    def dataReceived(self, data):
        pass


class _NoCloseReply(HeartbeatServerProtocol):
    def onCloseFrame(self, code, reasonRaw):
        return None  # never answers a close: the client's closeTimeout aborts


def _listen(**options):
    serverProtocol = options.pop("serverProtocol", None)
    factory = HeartbeatServerFactory(pingInterval=None, **options)
    if serverProtocol is not None:
        factory.protocol = serverProtocol
    port = globalReactor.listenTCP(0, factory, interface="127.0.0.1")
    return factory, port, f"ws://127.0.0.1:{port.getHost().port}/"


@inlineCallbacks
def _opened(server=None, **client):
    factory, port, url = _listen(**(server or {}))
    handler = HeartbeatHandler()
    client.setdefault("pingInterval", None)
    client.setdefault("shouldRetry", lambda f: False)
    yield connect(url, handler, reactor=globalReactor, **client)
    return factory, port, handler


@inlineCallbacks
def _cleanClientClose():
    factory, port, handler = yield _opened()
    handler.close()
    yield handler.whenClosed()
    while factory.clients:
        yield sleep(0.01)
    yield port.stopListening()


@inlineCallbacks
def _serverRestart():
    factory, port, handler = yield _opened()
    yield factory.restart(0.01)
    while handler.protocol is not None or factory.clients:
        yield sleep(0.01)
    handler.close()
    yield port.stopListening()


@inlineCallbacks
def _serverAbort():
    factory, port, handler = yield _opened()
    for c in list(factory.clients):
        c.abort()
    while handler.protocol is not None or factory.clients:
        yield sleep(0.01)
    handler.close()
    yield port.stopListening()


@inlineCallbacks
def _originRefused():
    factory, port, url = _listen(allowedOrigins=["https://ok.example"])
    d = connect(url, HeartbeatHandler(), reactor=globalReactor, shouldRetry=lambda f: False, origin="https://x.example")
    yield d.addErrback(lambda f: None)
    yield port.stopListening()


@inlineCallbacks
def _openTimeout():
    port = globalReactor.listenTCP(0, protocol.Factory.forProtocol(_Mute), interface="127.0.0.1")
    url = f"ws://127.0.0.1:{port.getHost().port}/"
    d = connect(url, HeartbeatHandler(), reactor=globalReactor, openTimeout=0.1, shouldRetry=lambda f: False)
    yield d.addErrback(lambda f: None)
    yield port.stopListening()


@inlineCallbacks
def _closeHandshakeTimeout():
    factory, port, handler = yield _opened(server={"serverProtocol": _NoCloseReply}, closeTimeout=0.1)
    handler.close()
    yield handler.whenClosed()
    for c in list(factory.clients):
        c.abort()
    while factory.clients:
        yield sleep(0.01)
    yield port.stopListening()


@inlineCallbacks
def _resumed():
    factory, port, handler = yield _opened(
        server={"resume": True, "resumeWindow": 5}, resume=True, initialDelay=0.01, jitter=0, shouldRetry=lambda f: True
    )
    handler.send("a")
    yield sleep(0.05)
    first = handler.protocol
    first.transport.abortConnection()
    del first  # (only the identity is needed below)
    while handler._counts.opens < 2:
        yield sleep(0.01)
    handler.close()
    yield handler.whenClosed()
    while factory.clients:
        yield sleep(0.01)
    yield port.stopListening()


@pytest.mark.parametrize(
    "scenario",
    [_cleanClientClose, _serverRestart, _serverAbort, _originRefused, _openTimeout, _closeHandshakeTimeout, _resumed],
    ids=["clean-close", "restart", "server-abort", "origin-403", "open-timeout", "close-timeout", "resume"],
)
@pytest_twisted.inlineCallbacks
def test_no_protocol_in_cyclic_garbage(scenario, monkeypatch):
    """
    Beyond the dead peer of test_scale: clean close, server restart(), server abort, a refused
    upgrade (403), an open timeout in the handshake, a close handshake the peer never answers, and
    a resumed session all leave no txheartbeat/Autobahn protocol for a full GC pass (checked
    sensitive: without 3dc4844's delete every one of them shows both protocols).
    """
    made = weakref.WeakSet()  # every protocol of the scenario, at both ends, held weakly

    def connectionMade(self):
        made.add(self)
        super(HeartbeatMixin, self).connectionMade()

    monkeypatch.setattr(HeartbeatMixin, "connectionMade", connectionMade, raising=False)
    garbage = NewGarbage()
    try:
        yield scenario()
        # Wait for the event, not for time: each connection's loss handled at both ends.
        deadline = globalReactor.seconds() + 10
        while any(not p._gone for p in list(made)):
            assert globalReactor.seconds() < deadline, "a connection of the scenario was never lost"
            yield sleep(0.01)
        assert garbage.found(lambda o: isinstance(o, HeartbeatMixin)) == []
    finally:
        garbage.close()


# --- Found by the review (pre-existing, fixed: restart()/StatusFeed.stop() wait for whenGone(); the TLSRequired path closes) ---


class _Recorded(HeartbeatServerProtocol):
    events = None

    def onClose(self, wasClean, code, reason):
        self.events.append("onClose")


@pytest_twisted.inlineCallbacks
def test_restart_fires_only_once_the_connections_are_gone():
    """
    Found by the review (fixed): restart() (and StatusFeed.stop()) gathered ``client.is_closed``, which Autobahn fires from
    dropConnection, i.e. when the server has *decided* to drop TCP, before connectionLost.  So the
    Deferred promised "when every one of those connections is closed" fires while every client is
    still in ``factory.clients`` / ``stats.clients`` and before any ``onClose`` (and session
    detach) has run.  ``yield factory.restart(); reactor.stop()`` races the hooks.
    """
    events = []
    _Recorded.events = events
    factory, port, url = _listen(serverProtocol=_Recorded)
    handlers = [HeartbeatHandler() for _ in range(3)]
    for h in handlers:
        yield connect(url, h, reactor=globalReactor, pingInterval=None, shouldRetry=lambda f: False)
    try:
        yield factory.restart(0.01)
        state = (len(factory.clients), factory.stats.clients, len(events))
    finally:
        yield sleep(0.1)
        for h in handlers:
            h.close()
        yield port.stopListening()
    assert state == (0, 0, 3)


@pytest_twisted.inlineCallbacks
def test_tls_required_connection_fires_is_closed():
    """
    Found by the review (fixed): reactor.connectTCP() with a wss:// factory aborts with TLSRequired and its
    connectionLost skipped super() (Autobahn never started), so the protocol's ``is_closed`` never
    fires (``yield proto.is_closed`` hangs) and ``isOpen`` raises AttributeError (no ``state``).
    """
    seen = []

    class P(HeartbeatClientProtocol):
        def connectionMade(self):
            seen.append(self)
            super().connectionMade()

    factory, port, _ = _listen()
    client = HeartbeatClientFactory(
        f"wss://127.0.0.1:{port.getHost().port}/",
        HeartbeatHandler(),
        reactor=globalReactor,
        shouldRetry=lambda f: False,
    )
    client.protocol = P
    globalReactor.connectTCP("127.0.0.1", port.getHost().port, client)
    while not seen or seen[0].lostReason is None:
        yield sleep(0.01)
    yield port.stopListening()
    proto = seen[0]
    assert proto.is_closed.called
    assert proto.isOpen is False


def test_residual_cycle_when_a_callback_chain_ends_on_the_protocol_later():
    """
    Probe (limitation, behaviour correct): a callback on is_closed that returns a Deferred still
    pending at connectionLost keeps the future on the protocol; when that chain later ends with the
    protocol, the old cycle is back (freed only by a full pass).  Results stay right.
    """
    _, _, _, link = memoryLink()
    inner = Deferred()
    d = link.client.is_closed
    d.addCallback(lambda p: inner)
    link.reset()
    inner.callback(link.client)
    assert link.client.is_closed is d and d.result is link.client  # kept: the cycle remains
    assert succeed(link.client).result is link.client
