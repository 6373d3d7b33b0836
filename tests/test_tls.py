"""The TLS helpers on loopback: serverTLSOptions with listenSSL and endpoint strings, clientTLSOptions trusting a test CA."""

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from txheartbeat import HeartbeatServerFactory, HeartbeatServerProtocol, clientTLSOptions, connect, serverTLSOptions
from txheartbeat._tls import resuming, resumptionWorks

from .test_cli_tls import writePair
from .test_endpoints import echoOnce
from .test_integration import Waiter


class Echo(HeartbeatServerProtocol):
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)


@pytest.mark.parametrize("how", ["listenSSL", "endpoint"])
@pytest_twisted.ensureDeferred
async def test_heartbeat_server_over_tls(tmp_path, how):
    """A HeartbeatServerFactory behind listenSSL(serverTLSOptions(...)) or an ssl: endpoint string echoes a wss:// client that trusts the test CA."""
    cert, key = writePair(tmp_path)
    factory = HeartbeatServerFactory("wss://localhost", reactor=_reactor)
    factory.protocol = Echo
    if how == "listenSSL":
        port = _reactor.listenSSL(0, factory, serverTLSOptions(cert, key), interface="127.0.0.1")
    else:
        endpoint = serverFromString(_reactor, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
        port = await endpoint.listen(factory)
    try:
        h = Waiter()
        d = connect(f"wss://localhost:{port.getHost().port}/", h, contextFactory=clientTLSOptions("localhost", cert))
        assert await echoOnce(h, d) == b"ping"
    finally:
        await port.stopListening()


def test_server_options_check_early(tmp_path):
    """serverTLSOptions raises ValueError naming both files when the key is not the certificate's."""
    cert, _ = writePair(tmp_path)
    _, otherKey = writePair(tmp_path, "other")
    with pytest.raises(ValueError, match="does not match the certificate"):
        serverTLSOptions(cert, otherKey)


def test_server_options_release_idle_buffers(tmp_path):
    """serverTLSOptions' context has OpenSSL release an idle connection's buffers (MODE_RELEASE_BUFFERS, which Twisted's CertificateOptions sets)."""
    from OpenSSL import SSL

    cert, key = writePair(tmp_path)
    context = serverTLSOptions(cert, key).getContext()
    assert context.set_mode(0) & SSL.MODE_RELEASE_BUFFERS  # (adds nothing, returns the mode)


# TLS session resumption on reconnect ----------------------------------------------


def sessionReused(transport) -> bool:
    """Whether the TLS connection under ``transport`` resumed a session (pyOpenSSL has no ``session_reused()``: OpenSSL's own)."""
    connection = transport.getHandle()
    if hasattr(connection, "session_reused"):
        return bool(connection.session_reused())
    from OpenSSL._util import lib

    return bool(lib.SSL_session_reused(connection._ssl))


class Recorded(Echo):
    """An echo server protocol that records, at each open, whether its TLS session was resumed."""

    def onOpen(self) -> None:
        self.factory.opened.append(self)
        self.factory.reused.append(sessionReused(self.transport))

    def onClose(self, wasClean, code, reason) -> None:
        if self in self.factory.opened:
            self.factory.opened.remove(self)


class ResumingServer:
    """A HeartbeatServerFactory behind listenSSL(serverTLSOptions(...)) on 127.0.0.1 (a given port, or any)."""

    def __init__(self, cert: str, key: str, port: int = 0) -> None:
        self.factory = HeartbeatServerFactory("wss://localhost", reactor=_reactor)
        self.factory.protocol = Recorded
        self.factory.opened, self.factory.reused = [], []
        self.port = _reactor.listenSSL(port, self.factory, serverTLSOptions(cert, key), interface="127.0.0.1")
        self.number = self.port.getHost().port

    def drop(self) -> None:
        """Abort every open connection (the clients reconnect)."""
        for p in list(self.factory.opened):
            p.transport.abortConnection()

    async def stop(self) -> None:
        self.drop()
        await self.port.stopListening()


async def reconnected(h: Waiter, server: ResumingServer) -> None:
    """The server drops ``h``'s connection; wait until ``h`` is open again."""
    opened = h.next("onOpen")
    server.drop()
    await opened


def fastClient(url: str, handler: Waiter, caFile: str, **kw):
    """A client that retries at once (within 50 ms) after a loss, trusting ``caFile`` for ``localhost``."""
    from txheartbeat import HeartbeatClientFactory

    factory = HeartbeatClientFactory(url, handler, reactor=_reactor, initialDelay=0.01, probeInterval=0.05, **kw)
    return factory, factory.connect(clientTLSOptions("localhost", caFile))


def useShortcut(monkeypatch, name: str, on: bool) -> None:
    """Turn the shortcut ``name`` on or off for this test; skip it where on is asked and this install has it off."""
    from txheartbeat import _shortcuts, _tls

    if on and not _shortcuts.VERDICTS[name][0]:
        pytest.skip(f"the {name} shortcut is off here: {_shortcuts.VERDICTS[name][1]}")
    monkeypatch.setattr(_shortcuts, "ENABLED", _shortcuts.ENABLED | {name} if on else _shortcuts.ENABLED - {name})
    monkeypatch.setattr(_tls, "_LEAN_ABORT", None)  # (found again at the next abort)


needsResumption = pytest.mark.skipif(
    not resumptionWorks(),
    reason="TLS session resumption is off here: this Autobahn (< 23) reads a resumed session's certificate "
    "with X509.get_extension, which this pyOpenSSL lacks",
)


@needsResumption
@pytest_twisted.ensureDeferred
async def test_reconnect_resumes_the_tls_session(tmp_path):
    """After a loss the client's next connection resumes its TLS session (client and server say so); the first was a full handshake."""
    cert, key = writePair(tmp_path)
    server = ResumingServer(cert, key)
    h = Waiter()
    factory, d = fastClient(f"wss://localhost:{server.number}/", h, cert)
    try:
        await d
        assert server.factory.reused == [False] and not sessionReused(h.protocol.transport)
        await reconnected(h, server)
        assert server.factory.reused == [False, True]
        assert sessionReused(h.protocol.transport)
        h.send("after")
        assert (await h.next("onMessage")) == (b"after",)
    finally:
        h.close()
        await server.stop()


@needsResumption
@pytest_twisted.ensureDeferred
async def test_no_resumption_across_names_or_clients(tmp_path):
    """A session is never offered for another URL host (prepare() changes it) nor by another client of the same server."""
    cert, key = writePair(tmp_path)
    server = ResumingServer(cert, key)
    hosts = iter(["localhost", "127.0.0.1", "127.0.0.1"])
    h = Waiter()
    factory, d = fastClient(
        f"wss://localhost:{server.number}/", h, cert, prepare=lambda attempt: f"wss://{next(hosts)}:{server.number}/"
    )
    other = Waiter()
    try:
        await d
        await reconnected(h, server)  # to 127.0.0.1 now: the session made for localhost is not offered
        second = server.factory.reused[-1]
        await reconnected(h, server)  # 127.0.0.1 again: its own session is
        assert (server.factory.reused, second) == ([False, False, True], False)
        _, d2 = fastClient(f"wss://localhost:{server.number}/", other, cert)
        await d2
        assert server.factory.reused[-1] is False  # another client: a full handshake
    finally:
        h.close()
        other.close()
        await server.stop()


@needsResumption
@pytest_twisted.ensureDeferred
async def test_server_restarted_with_new_ticket_keys_means_a_full_handshake(tmp_path):
    """A server restarted (new ticket keys) cannot resume the client's session: the client opens with a full, verified handshake and no error, then resumes the new session."""
    cert, key = writePair(tmp_path)
    first = ResumingServer(cert, key)
    number = first.number
    h = Waiter()
    factory, d = fastClient(f"wss://localhost:{number}/", h, cert)
    second = None
    try:
        await d
        opened = h.next("onOpen")
        await first.stop()
        second = ResumingServer(cert, key, number)
        await opened
        assert second.factory.reused == [False] and not sessionReused(h.protocol.transport)
        await reconnected(h, second)
        assert second.factory.reused == [False, True]
        from OpenSSL import SSL

        assert not [e for e in h.events if e[1] == "onError" and isinstance(e[2], SSL.Error)]
    finally:
        h.close()
        if second is not None:
            await second.stop()


@needsResumption
def test_resuming_offers_only_the_same_target():
    """ResumingClientTLS sets the kept session only on a connection to the (host, port) it was made with; forget() drops it."""
    from txheartbeat._tls import ResumingClientTLS, resuming

    class Connection:
        session = None

        def set_session(self, session):
            self.session = session

        def get_session(self):
            return "S1"

    from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
    from zope.interface import implementer

    @implementer(IOpenSSLClientConnectionCreator)
    class Creator:
        def clientConnectionForTLS(self, tlsProtocol):
            return Connection()

    class Transport:
        def getHandle(self):
            return Connection()

    target = [("a.example", 443)]
    r = ResumingClientTLS(Creator(), lambda: target[0])
    assert r.clientConnectionForTLS(None).session is None
    r.keep(Transport())
    assert r.clientConnectionForTLS(None).session == "S1"
    target[0] = ("b.example", 443)
    assert r.clientConnectionForTLS(None).session is None
    target[0] = ("a.example", 8443)
    assert r.clientConnectionForTLS(None).session is None
    target[0] = ("a.example", 443)
    r.forget()
    assert r.clientConnectionForTLS(None).session is None
    # another client's wrapper is unwrapped, never shared; an old-style context factory is left as it is
    other = resuming(r, lambda: target[0])
    assert other is not r and other.creator is r.creator
    old = object()
    assert resuming(old, lambda: target[0]) is old


def test_default_client_options_shared_per_host():
    """Clients of one host share one default verified context (the system's roots loaded once), each with its own sessions."""
    from txheartbeat import HeartbeatClientFactory
    from txheartbeat._tls import defaultClientTLSOptions
    from txheartbeat.testing import MemoryReactor

    reactor = MemoryReactor()
    a, b, c = (
        HeartbeatClientFactory(url, Waiter(), reactor=reactor)
        for url in ("wss://a.example/", "wss://a.example:8443/x", "wss://b.example/")
    )
    assert a.contextFactory is not b.contextFactory
    assert a.contextFactory.creator is b.contextFactory.creator is defaultClientTLSOptions("a.example")
    assert c.contextFactory.creator is not a.contextFactory.creator
    assert c.contextFactory.creator._hostname == "b.example"


def test_server_options_issue_session_tickets(tmp_path):
    """serverTLSOptions' context issues session tickets (Twisted's CertificateOptions turns them off by default)."""
    from OpenSSL import SSL

    cert, key = writePair(tmp_path)
    context = serverTLSOptions(cert, key).getContext()
    assert not context.set_options(0) & SSL.OP_NO_TICKET


def test_resuming_holds_its_client_weakly():
    """A client's TLS wrapper does not keep the client alive (a class-level default may hold the first one): once it is gone, nothing is offered or kept."""
    import gc
    import weakref

    from txheartbeat import HeartbeatClientFactory
    from txheartbeat.testing import MemoryReactor

    factory = HeartbeatClientFactory("wss://a.example/", Waiter(), reactor=MemoryReactor())
    wrapper, gone = factory.contextFactory, weakref.ref(factory)
    assert wrapper._where() == ("a.example", 443)
    del factory
    gc.collect()
    assert gone() is None and wrapper._where() is None


def test_resumption_is_off_where_autobahn_cannot_read_a_resumed_certificate(monkeypatch):
    """Where this Autobahn reads certificates with X509.get_extension and pyOpenSSL lacks it, no session is offered (the check reads the code that runs)."""
    from OpenSSL import crypto

    from txheartbeat import _tls

    monkeypatch.setattr(_tls, "_RESUMPTION_WORKS", None)
    monkeypatch.delattr(crypto.X509, "get_extension", raising=False)
    import inspect

    monkeypatch.setattr(inspect, "getsource", lambda _: "ext = cert.get_extension(i)")
    assert _tls.resumptionWorks() is False

    class Creator:
        def clientConnectionForTLS(self, tlsProtocol):
            return type("C", (), {"set_session": lambda self, s: setattr(self, "session", s), "session": None})()

    wrapper = _tls.ResumingClientTLS(Creator(), lambda: ("h", 443))
    wrapper._session = (("h", 443), object())
    assert wrapper.clientConnectionForTLS(None).session is None
    monkeypatch.setattr(_tls, "_RESUMPTION_WORKS", None)
    monkeypatch.setattr(inspect, "getsource", lambda _: "newer code")
    assert _tls.resumptionWorks() is True


@pytest.mark.parametrize("shortcut", [True, False])
@pytest_twisted.ensureDeferred
async def test_attempts_share_one_tls_wrapper(tmp_path, monkeypatch, shortcut):
    """
    Every attempt of a wss:// client is wrapped in TLS by one factory (the
    tlsWrapping shortcut: no wrapper, closure and bound method per attempt);
    options changed between attempts get a wrapper of their own; with the
    shortcut off each attempt has its own, from connectSSL.
    """
    useShortcut(monkeypatch, "tlsWrapping", shortcut)
    cert, key = writePair(tmp_path)
    server = ResumingServer(cert, key)
    h = Waiter()
    factory, d = fastClient(f"wss://localhost:{server.number}/", h, cert)
    try:
        await d
        first = h.protocol.transport.factory
        await reconnected(h, server)
        second = h.protocol.transport.factory
        assert (second is first) is shortcut
        assert second.wrappedFactory is factory
        factory.contextFactory = resuming(factory.contextFactory.creator, factory._tlsTarget)
        await reconnected(h, server)
        third = h.protocol.transport.factory
        assert third is not second
        await reconnected(h, server)
        assert (h.protocol.transport.factory is third) is shortcut
        h.send("after")
        assert (await h.next("onMessage")) == (b"after",)
    finally:
        h.close()
        await server.stop()


def test_a_connect_ssl_replaced_on_the_reactor_stays_in_charge(monkeypatch):
    """A reactor whose connectSSL was replaced on the instance (a mock, instrumentation) gets the call: no wrapper of ours."""
    from twisted.internet import reactor

    from txheartbeat._tls import connectTLS

    calls = []
    monkeypatch.setattr(reactor, "connectSSL", lambda *args, **kwargs: calls.append(args))
    factory, creator = object(), object()
    assert connectTLS(reactor, "127.0.0.1", 9, factory, creator) is None
    assert calls == [("127.0.0.1", 9, factory, creator)]


@pytest.mark.parametrize("shortcut", [True, False])
@pytest_twisted.ensureDeferred
async def test_a_silent_peer_over_tls_is_aborted_without_a_tls_close_and_resumed(tmp_path, monkeypatch, shortcut):
    """
    A wss:// server that stops reading is declared dead; with the tlsAbort
    shortcut the client's TLS connection is neither shut down nor read after
    the end (Twisted's abort does both, for nothing: the TCP abort discards
    the alert); either way the handler hears the same (HeartbeatTimeout, an
    unclean close, a reconnect) and the next connection resumes the session
    (where resumption works here).
    """
    from OpenSSL import SSL

    from txheartbeat import HeartbeatTimeout

    useShortcut(monkeypatch, "tlsAbort", shortcut)
    cert, key = writePair(tmp_path)
    server = ResumingServer(cert, key)
    h = Waiter()
    factory, d = fastClient(f"wss://localhost:{server.number}/", h, cert, pingInterval=0.2, pongTimeout=0.3)
    calls, client, tls = [], None, None
    for name in ("shutdown", "recv"):
        original = getattr(SSL.Connection, name)

        def counted(self, *args, _name=name, _original=original):
            if self is client and tls.disconnecting:  # (from the abort on)
                calls.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(SSL.Connection, name, counted)
    try:
        await d
        tls = h.protocol.transport
        client = tls.getHandle()
        lost = h.protocol.whenGone()
        opened = h.next("onOpen")
        server.factory.opened[0].transport.pauseProducing()  # (it reads nothing more: no pong)
        await lost.addTimeout(10, _reactor)
        assert calls == ([] if shortcut else ["shutdown", "recv", "shutdown"])
        names = h.names()
        assert names[-3:] == ["onError", "onClose", "onReconnect"], names
        assert isinstance(h.events[-3][2], HeartbeatTimeout) and h.events[-2][2:] == (False, 1006)
        await opened
        if resumptionWorks():  # (where it is off, the reconnect is a full handshake: see needsResumption)
            assert server.factory.reused == [False, True] and sessionReused(h.protocol.transport)
        h.send("after")
        assert (await h.next("onMessage")) == (b"after",)
    finally:
        h.close()
        await server.stop()


class LostRecorded(Recorded):
    """Recorded, noting the reason of each connection's end."""

    def connectionLost(self, reason) -> None:
        self.factory.lost.append(reason)
        super().connectionLost(reason)


@implementer(IPushProducer)
class Producer:
    """A push producer that does nothing (a user's, registered on a connection's transport)."""

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


@pytest.mark.parametrize("side", ["client", "server"])
@pytest_twisted.ensureDeferred
async def test_an_abort_of_tls_reports_the_reason_twisted_would(tmp_path, monkeypatch, side):
    """
    The end that aborts a wss:// connection hears the same reason with the
    tlsAbort shortcut as with Twisted's abort: ConnectionAborted at
    txheartbeat's client (its connections ignore an unexpected end of the
    stream, so Twisted's read after the end found a clean end), and at a
    server, whose connections do not, Twisted's ConnectionLost: there the
    shortcut stands aside, as it does for a connection with a producer
    registered (whose writes after the abort meet the shut-down TLS
    connection, as Twisted reports).
    """
    from twisted.internet.error import ConnectionAborted, ConnectionLost

    from txheartbeat import _protocol, _tls

    cert, key = writePair(tmp_path)
    heard = {}
    for shortcut in (True, False):
        useShortcut(monkeypatch, "tlsAbort", shortcut)
        server = ResumingServer(cert, key)
        server.factory.protocol, server.factory.lost = LostRecorded, []
        h = Waiter()
        factory, d = fastClient(f"wss://localhost:{server.number}/", h, cert)
        try:
            await d
            aborting = server.factory.opened[0] if side == "server" else h.protocol
            if shortcut and side == "client":  # (Autobahn unregisters any producer before it aborts; a user may not)
                aborting.transport.registerProducer(Producer(), True)
                assert _tls.abortTLS(aborting.transport) is False and aborting.transport.connected
                aborting.transport.unregisterProducer()
            lean = []
            monkeypatch.setattr(
                _protocol, "abortTLS", lambda transport, lean=lean: lean.append(_tls.abortTLS(transport)) or lean[-1]
            )
            gone = aborting.whenGone()
            aborting.abort()
            await gone
            monkeypatch.setattr(_protocol, "abortTLS", _tls.abortTLS)
            reason = server.factory.lost[0] if side == "server" else aborting.lostReason
            heard[shortcut] = (type(reason.value), lean == [True])
        finally:
            h.close()
            await server.stop()
    expected = ConnectionAborted if side == "client" else ConnectionLost
    assert heard == {False: (expected, False), True: (expected, side == "client")}
