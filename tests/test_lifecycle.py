"""
The client's lifecycle table, cell by cell, on the in-memory reactor: every
(state, event) pair in ``txheartbeat._lifecycle.TRANSITIONS`` is reached
through real events (connectors, the link, timers, user calls) and must move
the factory to the state the table names; then the defects of issue 8, each
with the test that failed before the state machine.
"""

from typing import Any, Callable, Dict, List, Optional

import pytest
from autobahn.twisted.websocket import WebSocketServerProtocol, connectWS
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from txheartbeat import (
    GaveUp,
    HeartbeatClientFactory,
    HeartbeatClientProtocol,
    HeartbeatTimeout,
    NotConnected,
    OpenTimeout,
    connect,
)
from txheartbeat._lifecycle import FINAL, IMPOSSIBLE, TRANSITIONS, Event, State
from txheartbeat.testing import MemoryReactor, RecordingHandler, echoServerFactory

URL = "ws://127.0.0.1:9000/"
PING, PONG, OPEN_TIMEOUT = 1.0, 1.0, 3.0


def quiet(reactor: MemoryReactor) -> None:
    assert [c for c in reactor.getDelayedCalls() if not _serverCall(c)] == []


def _serverCall(call: Any) -> bool:
    return isinstance(getattr(call.func, "__self__", None), WebSocketServerProtocol)


class Rig:
    """A factory on a memory reactor that records every state it enters."""

    def __init__(self, prepared: bool = False, **options: Any) -> None:
        self.reactor = MemoryReactor()
        self.handler = RecordingHandler(self.reactor)
        self.prepareD: Optional[Deferred[Any]] = None
        self.hook: Optional[Callable[[], None]] = None  # run inside the next onError (state: disconnected)
        if prepared:
            options["prepare"] = self._prepare
        options.setdefault("jitter", 0.0)
        self.factory = HeartbeatClientFactory(
            URL,
            self.handler,
            reactor=self.reactor,
            pingInterval=PING,
            pongTimeout=PONG,
            openTimeout=OPEN_TIMEOUT,
            **options,
        )
        self.states: List[State] = []
        setState = self.factory._setState

        def record(state: State) -> None:
            self.states.append(state)
            setState(state)

        self.factory._setState = record  # type: ignore[method-assign]
        self.connectD: Optional[Deferred[Any]] = None
        self.link: Any = None
        self.raised: Optional[Exception] = None
        original = self.handler.onError

        def onError(failure: Any) -> None:
            original(failure)
            hook, self.hook = self.hook, None
            if hook is not None:
                hook()

        self.handler.onError = onError  # type: ignore[method-assign]

    def _prepare(self, attempt: int) -> Deferred[Any]:
        self.prepareD = Deferred()
        return self.prepareD

    def start(self, swallow: bool = True) -> None:
        self.connectD = self.factory.connect()
        if swallow:
            self.connectD.addErrback(lambda f: None)


def reach(state: State, event: Event, swallow: bool = True) -> Rig:
    """A rig in ``state`` (for DISCONNECTED, the event will be fired from inside onError)."""
    rig = Rig(prepared=state is State.PREPARING, maxRetries=0 if state is State.GAVEUP else None)
    r = rig.reactor
    if state is State.IDLE:
        return rig
    rig.start(swallow)
    if state in (State.PREPARING, State.CONNECTING):
        pass
    elif state is State.HANDSHAKING:
        rig.link = r.accept(greet=False)
    elif state is State.OPEN:
        rig.link = r.accept()
    elif state is State.CLOSING:
        rig.link = r.accept()
        rig.link.blackhole()
        rig.handler.close()
    elif state in (State.WAITING, State.GAVEUP):
        r.refuse()
    elif state is State.CLOSED:
        rig.handler.close()
    elif state is State.DISCONNECTED:
        pass  # fire() refuses the attempt and fires the event inside onError
    assert rig.factory.state == state or state is State.DISCONNECTED, (state, rig.factory.state)
    return rig


def fire(rig: Rig, state: State, event: Event) -> None:
    r, f = rig.reactor, rig.factory
    if state is State.DISCONNECTED:
        inner = {
            Event.RETRY: lambda: None,  # returning from the hook decides: retry
            Event.GIVE_UP: lambda: setattr(f, "maxRetries", 0),
        }.get(event, lambda: fire(rig, State.CONNECTING, event))

        def hook() -> None:
            try:
                inner()
            except Exception as e:  # a hook's exception would only be logged
                rig.raised = e

        rig.hook = hook
        r.refuse()
        return
    actions: Dict[Event, Callable[[], Any]] = {
        Event.START: lambda: f.connect().addErrback(lambda x: None),
        Event.PREPARED: lambda: rig.prepareD.callback(None),  # type: ignore[union-attr]
        Event.ATTEMPT: lambda: connectWS(f, timeout=None),
        Event.TCP_UP: lambda: setattr(rig, "link", r.accept(greet=False)),
        Event.CONNECT_FAILED: lambda: (
            rig.prepareD.errback(ConnectionRefusedError()) if state is State.PREPARING else r.refuse()  # type: ignore[union-attr]
        ),
        Event.OPENED: lambda: rig.link.pump(),
        Event.LOST: lambda: rig.link.reset(),
        Event.DEAD_PEER: lambda: (rig.link.blackhole(), r.advance(PING + PONG)),
        Event.CLOSE: lambda: rig.handler.close(),
        Event.CANCEL: lambda: rig.connectD.cancel() if rig.connectD is not None else None,  # type: ignore[func-returns-value]
        Event.OPEN_TIMEOUT: lambda: Clock.advance(r, OPEN_TIMEOUT),  # the timer alone, no bytes moved
        Event.TIMER: lambda: r.advance(f.delay),
    }
    if state is State.WAITING and event is Event.ATTEMPT:
        actions[Event.ATTEMPT] = lambda: f.connector.connect()  # the user's own connector: classic idiom
    if state is State.HANDSHAKING and event is Event.CONNECT_FAILED:
        # an endpoint's Deferred failing after its transport connected (late, from a wrapper)
        actions[event] = lambda: f._event(Event.CONNECT_FAILED, Failure(ConnectionRefusedError()))
    if state in FINAL and event is Event.ATTEMPT:
        actions[Event.ATTEMPT] = lambda: (f.resetDelay(), r.connectTCP("127.0.0.1", 9000, f))
    if event is Event.CANCEL and state is State.IDLE:
        actions[Event.CANCEL] = lambda: f._event(Event.CANCEL, 1000, None)  # no Deferred exists before connect()
    if event is Event.CANCEL and rig.connectD is not None and rig.connectD.called:
        actions[Event.CANCEL] = lambda: f._event(Event.CANCEL, 1000, None)  # it fired at open: cancel is a no-op there
    actions[event]()


CELLS = sorted(TRANSITIONS, key=lambda cell: (list(State).index(cell[0]), list(Event).index(cell[1])))


@pytest.mark.parametrize("state,event", CELLS, ids=[f"{s.value}-{e.value}" for s, e in CELLS])
def test_every_transition(state, event):
    """Each (state, event) cell of the table moves the client to the state the table names, through real events."""
    expected, action = TRANSITIONS[(state, event)]
    rig = reach(state, event)
    before = len(rig.states)
    if action == "_refuse" and state is not State.DISCONNECTED:
        with pytest.raises(RuntimeError, match="close\\(\\) it first"):
            fire(rig, state, event)
        assert rig.factory.state == state and rig.states[before:] == []
        rig.states.append(state)  # refused: the client stays where it was
    else:
        fire(rig, state, event)
    if action == "_refuse" and state is State.DISCONNECTED:
        assert isinstance(rig.raised, RuntimeError)
        rig.states.insert(before + 1, state)
    entered = rig.states[before:]
    if state is State.DISCONNECTED:
        # the refusal itself enters DISCONNECTED; the event fired inside its hook comes next
        assert entered[0] is State.DISCONNECTED
        entered = entered[1:]
    assert entered and entered[0] is expected, (state, event, entered)
    rig.handler.close()
    r = rig.reactor
    r.advance(OPEN_TIMEOUT + 10)
    if rig.link is not None:
        rig.link.reset()
    assert rig.factory.state in FINAL
    quiet(r)


def test_table_has_no_unreachable_actions_and_names_every_pair():
    """Every pair is either a transition or declared impossible, and every action named exists on the factory."""
    assert len(TRANSITIONS) + len(IMPOSSIBLE) == len(State) * len(Event)
    for (_, _), (_, action) in TRANSITIONS.items():
        assert callable(getattr(HeartbeatClientFactory, action, None)), action


def test_impossible_pair_is_logged_not_raised():
    """An event the table does not allow in a state is logged as a bug and changes nothing."""
    logged: List[dict] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        rig = Rig()
        rig.factory._event(Event.LOST, None)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert rig.factory.state is State.IDLE
    assert any("bug" in str(e.get("log_format")) for e in logged)


# Defect 1: close() inside onError ------------------------------------------------


@pytest.mark.parametrize("how", ["refused", "open timeout in TCP connect"])
def test_close_inside_on_error_is_final(how):
    """close() from onError after a refused attempt or an OpenTimeout in TCP connect ends the client for good."""
    rig = Rig()
    rig.hook = rig.handler.close
    rig.start()
    closed: List[Any] = []
    rig.factory.whenClosed().addCallback(closed.append)
    errors: List[Any] = []
    rig.connectD.addErrback(errors.append)  # type: ignore[union-attr]
    if how == "refused":
        rig.reactor.refuse()
    else:
        rig.reactor.advance(OPEN_TIMEOUT)
        assert isinstance(rig.handler.events[0][2], OpenTimeout)
    assert rig.factory.state == "closed"
    assert closed == [None]
    with pytest.raises(NotConnected):
        rig.handler.send("x")
    assert rig.reactor.pending == []
    quiet(rig.reactor)


# Defect 2: send() while closing and in onClose ---------------------------------


def test_send_while_close_handshake_runs_raises():
    """send() after close() while the close handshake is still running raises NotConnected instead of queueing."""
    rig = reach(State.CLOSING, Event.CLOSE)
    with pytest.raises(NotConnected):
        rig.handler.send("late")
    assert rig.handler.queued == []
    rig.reactor.advance(10)
    quiet(rig.reactor)


def test_send_inside_on_close_after_final_close_raises():
    """send() inside onClose after a final close raises NotConnected; after an unplanned loss it queues for the reconnect."""
    outcomes: List[str] = []

    class Sender(RecordingHandler):
        def onClose(self, wasClean, code, reason):
            try:
                self.send("from onClose")
                outcomes.append("queued")
            except NotConnected:
                outcomes.append("NotConnected")

    r = MemoryReactor()
    h = Sender(r)
    connect(URL, h, reactor=r, jitter=0)
    r.accept().reset()  # unplanned: queue for the next connection
    r.advance(1)
    r.accept()
    h.close()
    r.advance(5)
    assert outcomes == ["queued", "NotConnected"]
    quiet(r)


# Defect 5: maxRetries counts failed attempts in a row -----------------------------


def test_max_retries_counts_failures_in_a_row_not_opens():
    """A server that accepts and then drops every connection never makes the client give up; the backoff still grows."""
    rig = Rig(maxRetries=1, minUptime=5.0)
    rig.start()
    delays = []
    for _ in range(4):
        rig.reactor.accept()
        rig.reactor.links[0].reset()
        delays.append(rig.factory.delay)
        rig.reactor.advance(rig.factory.delay)
    assert rig.factory.state == "connecting" and "onGiveUp" not in rig.handler.names()
    assert delays == [1.0, 2.0, 4.0, 8.0]
    rig.reactor.refuse()
    rig.reactor.advance(rig.factory.delay)
    rig.reactor.refuse()  # two failed attempts in a row > maxRetries=1
    assert rig.factory.state == "gaveup"
    quiet(rig.reactor)


# Defect 7: inherited ReconnectingClientFactory methods ---------------------------


def test_retry_while_open_raises_and_leaves_one_connection():
    """retry() while open raises a clear error and schedules nothing."""
    rig = reach(State.OPEN, Event.CLOSE)
    with pytest.raises(RuntimeError, match="retry\\(\\)"):
        rig.factory.retry()
    assert rig.factory._callID is None and rig.factory.state == "open"
    rig.handler.close()
    rig.reactor.advance(5)
    quiet(rig.reactor)


def test_reset_delay_and_connector_connect_after_give_up_restarts_cleanly():
    """The classic resetDelay(); connector.connect() after a give-up starts over: one attempt, no onError after onGiveUp."""
    r = MemoryReactor()
    h = RecordingHandler(r)
    f = HeartbeatClientFactory(URL, h, reactor=r, maxRetries=0, jitter=0)
    connector = r.connectTCP("127.0.0.1", 9000, f)
    r.refuse()
    assert h.names() == ["onError", "onGiveUp"] and f.state == "gaveup"
    f.resetDelay()
    connector.connect()
    assert f.state == "connecting" and len(r.pending) == 1
    assert h.names() == ["onError", "onGiveUp"]
    r.accept()
    assert h.names()[-1] == "onOpen"
    h.close()
    r.advance(5)
    quiet(r)


# Defect 8: protocol subclasses that forget super() --------------------------------


def test_protocol_subclass_overrides_without_super_keep_the_machinery():
    """A HeartbeatClientProtocol subclass overriding onOpen/onMessage/onClose without super() still opens, heartbeats, reports and stops its timers."""
    seen: List[str] = []

    class Mine(HeartbeatClientProtocol):
        def onOpen(self):
            seen.append("open")

        def onMessage(self, payload, isBinary):
            seen.append("message")

        def onClose(self, wasClean, code, reason):
            seen.append("close")

    r = MemoryReactor()
    h = RecordingHandler(r)
    f = HeartbeatClientFactory(URL, h, reactor=r, pingInterval=PING, pongTimeout=PONG, jitter=0)
    f.protocol = Mine
    f.connect()
    link = r.accept()
    h.send("hi")
    r.flush()
    assert h.names() == ["onOpen", "onMessage"] and seen == ["open", "message"]
    link.blackhole()
    r.advance(PING + PONG)
    assert isinstance(h.events[2][2], HeartbeatTimeout)
    assert h.names()[2:4] == ["onError", "onClose"] and seen[-1] == "close"
    assert f.state == "waiting"
    h.close()
    quiet(r)


# Cancellation and waiters (integration point 10) ---------------------------------


@pytest.mark.parametrize("state", [State.PREPARING, State.CONNECTING, State.HANDSHAKING, State.WAITING])
def test_cancelling_connect_is_a_final_close(state):
    """Cancelling connect()'s Deferred before the first open closes for good: CancelledError, no attempt, no timer."""
    rig = reach(state, Event.CANCEL, swallow=False)
    failures: List[Any] = []
    rig.connectD.addErrback(failures.append)  # type: ignore[union-attr]
    rig.connectD.cancel()  # type: ignore[union-attr]
    rig.reactor.flush()
    assert failures and failures[0].check(CancelledError)
    rig.reactor.advance(60)
    assert rig.factory.state == "closed" and rig.reactor.pending == [] and rig.reactor.links == []
    quiet(rig.reactor)


def test_add_timeout_on_connect_gives_up_cleanly():
    """connect(...).addTimeout(5, reactor) against a refusing server ends in TimeoutError and a closed client."""
    from twisted.internet.defer import TimeoutError

    r = MemoryReactor()
    h = RecordingHandler(r)
    failures: List[Any] = []
    connect(URL, h, reactor=r, jitter=0).addTimeout(5, r).addErrback(failures.append)
    for _ in range(3):
        if r.pending:
            r.refuse()
        r.advance(2)
    assert failures and failures[0].check(TimeoutError)
    assert h.factory.state == "closed"
    quiet(r)


def test_when_open_cancel_removes_only_that_waiter_and_fires_at_once_when_open():
    """Cancelling a whenOpen() Deferred removes only it; whenOpen() while open fires at once."""
    rig = Rig()
    rig.start()
    a, b = rig.factory.whenOpen(), rig.factory.whenOpen()
    got: List[Any] = []
    a.addErrback(lambda f: got.append(f.type))
    b.addCallback(got.append)
    a.cancel()
    assert rig.factory.state == "connecting"
    rig.reactor.accept()
    assert got == [CancelledError, rig.handler]
    now: List[Any] = []
    rig.factory.whenOpen().addCallback(now.append)
    assert now == [rig.handler]
    rig.handler.close()
    rig.reactor.advance(5)
    quiet(rig.reactor)


# The handler outlives its client (integration point 11) --------------------------


@pytest.mark.parametrize("end", ["closed", "gaveup"])
def test_handler_connects_again_after_final_close_or_give_up(end):
    """After a final close or a give-up, connect(url, handler) works again; stats carry on and hooks keep firing."""
    r = MemoryReactor()
    h = RecordingHandler(r)
    connect(URL, h, reactor=r, maxRetries=0, jitter=0).addErrback(lambda f: None)
    if end == "closed":
        r.accept()
        h.close()
        r.flush()
    else:
        r.refuse()
    first = h.factory
    assert first.state == end
    opened: List[Any] = []
    connect(URL, h, reactor=r, maxRetries=0, jitter=0).addCallback(opened.append)
    r.accept()
    assert opened == [h] and h.factory is not first and h.stats.attempts == 2
    # the same factory can also start again
    h.close()
    r.flush()
    h.factory.connect()
    r.accept()
    assert h.isOpen and h.stats.attempts == 3
    h.close()
    r.advance(5)
    quiet(r)


def test_handler_of_a_running_client_is_refused():
    """A handler whose client still runs cannot be given to a second factory."""
    r = MemoryReactor()
    h = RecordingHandler(r)
    connect(URL, h, reactor=r).addErrback(lambda f: None)
    with pytest.raises(ValueError, match="close\\(\\) it first"):
        HeartbeatClientFactory(URL, h, reactor=r)
    h.close()
    quiet(r)


# prepare(attempt) (integration point 13) --------------------------------------------


class HeaderServer(WebSocketServerProtocol):
    seen: List[Any] = []

    def onConnect(self, request):
        HeaderServer.seen.append((request.path, request.headers.get("x-token")))


def test_prepare_gives_each_attempt_its_url_and_headers():
    """prepare(attempt) runs before every attempt; its URL and headers are used for that attempt only."""
    HeaderServer.seen = []
    calls: List[int] = []

    def prepare(attempt: int) -> Any:
        calls.append(attempt)
        d: Deferred[Any] = Deferred()
        r.callLater(0.5, d.callback, (f"ws://127.0.0.1:9000/a{attempt}", {"X-Token": f"t{attempt}"}))
        return d

    r = MemoryReactor()
    h = RecordingHandler(r)
    connect(URL, h, reactor=r, prepare=prepare, jitter=0)
    assert r.pending == []  # nothing dialed before prepare answers
    r.advance(0.5)
    r.refuse()
    r.advance(h.factory.delay + 0.5)
    r.accept(echoServerFactory(HeaderServer))
    assert calls == [1, 2]
    assert HeaderServer.seen == [("/a2", "t2")]
    h.close()
    r.advance(5)
    quiet(r)


def test_prepare_failure_is_a_failed_attempt_and_never_called_after_close():
    """A failing prepare is reported through onError and retried with backoff; after close() it is never called."""
    calls: List[int] = []

    def prepare(attempt: int) -> Any:
        calls.append(attempt)
        raise KeyError("token service down")

    r = MemoryReactor()
    h = RecordingHandler(r)
    connect(URL, h, reactor=r, prepare=prepare, jitter=0).addErrback(lambda f: None)
    assert h.names() == ["onError", "onReconnect"] and isinstance(h.events[0][2], KeyError)
    r.advance(1)
    assert calls == [1, 2]
    h.close()
    r.advance(60)
    assert calls == [1, 2]
    quiet(r)


def test_prepare_hanging_is_bounded_by_open_timeout():
    """A prepare that never answers fails the attempt with OpenTimeout(phase='prepare')."""
    r = MemoryReactor()
    h = RecordingHandler(r)
    connect(URL, h, reactor=r, prepare=lambda n: Deferred(), openTimeout=2, jitter=0).addErrback(lambda f: None)
    r.advance(2)
    error = h.events[0][2]
    assert isinstance(error, OpenTimeout) and error.phase == "prepare"
    h.close()
    quiet(r)


def test_prepare_with_a_users_connector_is_a_clear_error():
    """prepare= with reactor.connectTCP(…, factory) raises at once: only connect() can dial a prepared URL."""
    r = MemoryReactor()
    f = HeartbeatClientFactory(URL, RecordingHandler(r), reactor=r, prepare=lambda n: None)
    with pytest.raises(ValueError, match="connect\\(\\)"):
        r.connectTCP("127.0.0.1", 9000, f)


def test_give_up_reports_failures_in_a_row():
    """GaveUp.attempts counts every failed attempt in a row, the first included."""
    r = MemoryReactor()
    h = RecordingHandler(r)
    failures: List[Any] = []
    connect(URL, h, reactor=r, maxRetries=1, jitter=0).addErrback(failures.append)
    r.refuse()
    r.advance(h.factory.delay)
    r.refuse()
    assert failures[0].check(GaveUp) and failures[0].value.attempts == 2
    quiet(r)


# Names, IPv6 and endpoints (integration point 14) --------------------------------


def test_name_resolving_only_to_ipv6_connects_over_ipv6():
    """A host name that resolves only to an IPv6 address is resolved with the reactor's resolver and dialed over IPv6."""
    r = MemoryReactor()
    r.hosts["v6only.test"] = ["::1"]
    h = RecordingHandler(r)
    connect("ws://v6only.test:9000/", h, reactor=r).addErrback(lambda f: None)
    assert r.tcpClients[0][:2] == ("::1", 9000)
    link = r.accept()
    assert h.isOpen and link.clientTransport.getPeer().type == "TCP" and ":" in link.clientTransport.getPeer().host
    h.close()
    r.advance(5)
    quiet(r)


def test_every_resolved_address_is_tried_in_one_attempt():
    """When the first address refuses, the next one (other family first) is tried at once, in the same attempt."""
    r = MemoryReactor()
    r.hosts["dual.test"] = ["::1", "::2", "127.0.0.1"]
    h = RecordingHandler(r)
    connect("ws://dual.test:9000/", h, reactor=r, jitter=0).addErrback(lambda f: None)
    r.refuse()
    r.refuse()
    assert [c[0] for c in r.tcpClients] == ["::1", "127.0.0.1", "::2"]
    assert h.events == [] and h.stats.attempts == 1
    r.refuse()
    assert h.names() == ["onError", "onReconnect"]
    h.close()
    quiet(r)


def test_name_without_address_is_a_dns_error_and_retried():
    """A name that resolves to nothing fails the attempt with DNSLookupError, then retries."""
    from twisted.internet.error import DNSLookupError

    r = MemoryReactor()
    r.hosts["gone.test"] = []
    h = RecordingHandler(r)
    connect("ws://gone.test/", h, reactor=r, jitter=0).addErrback(lambda f: None)
    assert isinstance(h.events[0][2], DNSLookupError) and h.names() == ["onError", "onReconnect"]
    h.close()
    quiet(r)


def test_explicit_endpoint_is_used_and_cancelled_on_close():
    """An endpoint= is dialed instead of the URL's host; close() while it connects cancels it and leaves nothing."""
    from twisted.internet.endpoints import TCP4ClientEndpoint

    r = MemoryReactor()
    h = RecordingHandler(r)
    connect(URL, h, reactor=r, endpoint=TCP4ClientEndpoint(r, "192.0.2.9", 8443, timeout=None)).addErrback(
        lambda f: None
    )
    assert r.tcpClients[0][:2] == ("192.0.2.9", 8443)
    link = r.accept()
    assert h.isOpen
    link.reset()
    r.advance(h.factory.delay)
    assert len(r.pending) == 1
    h.close()
    assert r.pending == [] and h.factory.state == "closed"
    quiet(r)


def test_idle_protocol_dict_stays_under_its_resize_point():
    """An idle heartbeated connection's protocol keeps at most 85 instance attributes after a heartbeat (a 128-slot dict on CPython: ~1.7 KiB more per connection past it)."""
    import sys

    r = MemoryReactor()
    h = RecordingHandler(r)
    connect(URL, h, reactor=r, pingInterval=1, pongTimeout=1).addErrback(lambda f: None)
    protocol = r.accept().client
    r.advance(1.5)  # one heartbeat went round
    assert h.stats.heartbeatsAnswered == 1
    assert len(protocol.__dict__) <= 85, sorted(protocol.__dict__)
    if sys.version_info[:2] == (3, 11):
        assert sys.getsizeof(protocol.__dict__) <= 1584
    h.close()
    r.advance(5)
