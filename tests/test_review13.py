"""Review 13: attempts to break the origin policy, the serve status page, metrics and connect --json."""

import io
import json
import subprocess
import sys
import threading

import pytest
import pytest_twisted
from prometheus_client import CollectorRegistry
from twisted.internet import defer, protocol, reactor
from twisted.internet.task import deferLater
from twisted.web.client import Agent, readBody

from txheartbeat import HeartbeatServerFactory, HeartbeatServerProtocol
from txheartbeat._cli import _ConsoleHandler, _EchoFactory
from txheartbeat.metrics import HeartbeatCollector, listenMetrics


class Raw(protocol.Protocol):
    """Sends a request in chunks (a pause between them) and collects the answer until the server closes."""

    def __init__(self, chunks, pause=0.05):
        self.chunks = list(chunks)
        self.pause = pause
        self.data = b""
        self.done = defer.Deferred()

    def connectionMade(self):
        self._next()

    def _next(self):
        if self.chunks:
            self.transport.write(self.chunks.pop(0))
            if self.chunks:
                reactor.callLater(self.pause, self._next)

    def dataReceived(self, data):
        self.data += data
        if b"\r\n\r\n" in self.data and self.data.startswith(b"HTTP/1.1 101"):
            self.transport.loseConnection()

    def connectionLost(self, reason=None):
        if not self.done.called:
            self.done.callback(self.data)


def head(port, origin=None, path="/", version=13, extra=(), host=None, method="GET", upgrade=True):
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host or f'127.0.0.1:{port}'}"]
    if upgrade:
        lines += [
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            f"Sec-WebSocket-Version: {version}",
        ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    lines += list(extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@defer.inlineCallbacks
def exchange(factory, build, pause=0.05, split=None):
    built = []  # the server's end of each connection, to wait until it is gone too
    original = factory.buildProtocol
    factory.buildProtocol = lambda addr: built.append(original(addr)) or built[-1]
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        number = port.getHost().port
        data = build(number)
        chunks = [data] if split is None else [data[:split], data[split:]]
        raw = Raw(chunks, pause)
        yield protocol.ClientCreator(reactor, lambda: raw).connectTCP("127.0.0.1", number)
        answer = yield raw.done
        # (so that nothing of this exchange is left for a later test's GC pass to find)
        yield defer.DeferredList([p.whenGone() for p in built if hasattr(p, "whenGone")])
    finally:
        yield port.stopListening()
    return answer


def code(answer):
    return int(answer.split(b" ", 2)[1]) if answer else None


def policyServer(allowed, protocolClass=HeartbeatServerProtocol):
    factory = HeartbeatServerFactory(pingInterval=None, allowedOrigins=allowed)
    factory.protocol = protocolClass
    return factory


# 1. Origin policy ------------------------------------------------------------------

# A 192-character host ending in ".good.com" (labels of at most 63): "https://" + it is exactly 200 characters.
_PREFIX_HOST = "a" * 63 + "." + "a" * 63 + "." + "a" * 55 + ".good.com"
_LONG_EVIL = "https://" + _PREFIX_HOST + ".evil.com"  # a valid 201-character DNS name under evil.com


@pytest_twisted.inlineCallbacks
def test_long_origin_is_not_truncated_into_an_allowed_one():
    """An origin under evil.com is refused by 'https://*.good.com' however long its host is."""
    assert len(_PREFIX_HOST + ".evil.com") <= 253
    answer = yield exchange(policyServer(["https://*.good.com"]), lambda p: head(p, _LONG_EVIL))
    assert code(answer) == 403


def test_extension_origin_pattern_matches_its_origin():
    """allowedOrigins=['chrome-extension://abcdef'] allows the origin 'chrome-extension://abcdef'."""
    factory = HeartbeatServerFactory(allowedOrigins=["chrome-extension://abcdef"])
    assert factory._refusedOrigin(b"GET / HTTP/1.1\r\nOrigin: chrome-extension://abcdef") is None


def test_ipv6_literal_origin_pattern_matches():
    """allowedOrigins=['http://[::1]:8080'] allows the origin 'http://[::1]:8080'."""
    factory = HeartbeatServerFactory(allowedOrigins=["http://[::1]:8080"])
    assert factory._refusedOrigin(b"GET / HTTP/1.1\r\nOrigin: http://[::1]:8080") is None


def test_pattern_host_case_does_not_matter():
    """A pattern with capitals in its host allows the browser's (lowercase) origin."""
    factory = HeartbeatServerFactory(allowedOrigins=["https://App.example.com"])
    assert factory._refusedOrigin(b"GET / HTTP/1.1\r\nOrigin: https://app.example.com") is None


@pytest_twisted.inlineCallbacks
def test_origin_the_application_sees_is_the_one_checked():
    """A version-8 upgrade whose Sec-WebSocket-Origin is not allowed never reaches onConnect with that origin."""
    seen = []

    class App(HeartbeatServerProtocol):
        def onConnect(self, request):
            seen.append(request.origin)

    factory = policyServer(["https://app.example"], App)
    yield exchange(
        factory,
        lambda p: head(p, "https://app.example", version=8, extra=["Sec-WebSocket-Origin: https://evil.example"]),
    )
    assert "https://evil.example" not in seen


@pytest.mark.parametrize(
    "origin, extra",
    [
        ("https://evil.example", ["Origin: https://app.example"]),  # duplicates: one of them evil
        ("https://app.example", ["Origin: https://evil.example"]),
        ("NULL", []),
        (" Null ", []),
        ("file://host/x", []),
        ("https://app.example.", []),
        ("https://app.example:443@evil.example", []),
        ("https://evil.example#https://app.example", []),
        (None, ["Sec-WebSocket-Origin: https://evil.example"]),
        (None, ["oRiGiN :  https://evil.example  "]),
    ],
)
@pytest_twisted.inlineCallbacks
def test_origin_spellings_do_not_bypass(origin, extra):
    """Duplicate, odd-case, null-like, userinfo, fragment and header-spelling variants of a foreign origin get 4xx."""
    answer = yield exchange(policyServer(["https://app.example"]), lambda p: head(p, origin, extra=extra))
    assert code(answer) in (400, 403)


@pytest.mark.parametrize("split", [10, 120, -2, -1])
@pytest_twisted.inlineCallbacks
def test_origin_split_across_reads_is_still_checked(split):
    """A request whose head arrives in two TCP reads (split anywhere, even inside the final CRLFCRLF) is still refused."""
    answer = yield exchange(
        policyServer(["https://app.example"]), lambda p: head(p, "https://evil.example"), split=split
    )
    assert code(answer) == 403


@pytest_twisted.inlineCallbacks
def test_overloaded_then_origin():
    """While overloaded a foreign origin gets 503 (not 101), and after overloaded(None) a 403."""
    factory = policyServer(["https://app.example"])
    factory.overloaded(5)
    first = yield exchange(factory, lambda p: head(p, "https://evil.example"))
    factory.overloaded(None)
    second = yield exchange(factory, lambda p: head(p, "https://evil.example"))
    assert (code(first), code(second)) == (503, 403)


# 2. serve's status page ------------------------------------------------------------


def serveFactory(**options):
    options.setdefault("pingInterval", None)
    return _EchoFactory(**options)


@pytest_twisted.inlineCallbacks
def test_status_feed_refuses_dns_rebinding():
    """A /_status upgrade whose Host names a foreign domain (rebound to this server) is refused."""
    answer = yield exchange(
        serveFactory(),
        lambda p: head(p, f"http://rebind.evil.example:{p}", path="/_status", host=f"rebind.evil.example:{p}"),
    )
    assert code(answer) in (400, 403, 421)


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "null", "http://127.0.0.1", "http://127.0.0.1:{p}.evil.example", "https://evil.example"],
)
@pytest_twisted.inlineCallbacks
def test_cross_origin_viewer_refused(origin):
    """A /_status upgrade from another origin (port-less, null, suffixed) gets 403."""
    answer = yield exchange(serveFactory(), lambda p: head(p, origin.format(p=p), path="/_status?x=1"))
    assert code(answer) == 403


@pytest_twisted.inlineCallbacks
def test_viewer_is_never_a_client_and_gets_no_echo():
    """A same-origin viewer that sends 'heartbeat' and text is not counted, gets only JSON snapshots."""
    factory = serveFactory()

    def build(p):
        # upgrade, then two masked text frames: "heartbeat" and "hello"
        def frame(text):
            payload = text.encode()
            mask = b"\x01\x02\x03\x04"
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            return bytes([0x81, 0x80 | len(payload)]) + mask + masked

        return head(p, f"http://127.0.0.1:{p}", path="/_status") + frame("heartbeat") + frame("hello")

    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    got = []

    class Keep(protocol.Protocol):
        def connectionMade(self):
            self.transport.write(build(port.getHost().port))

        def dataReceived(self, data):
            got.append(data)

    try:
        client = yield protocol.ClientCreator(reactor, Keep).connectTCP("127.0.0.1", port.getHost().port)
        deadline = reactor.seconds() + 10
        while not factory.statusFeed.viewers:  # the upgrade done (its frames came in the same write)
            assert reactor.seconds() < deadline, "the viewer never opened"
            yield deferLater(reactor, 0.01, lambda: None)
        yield deferLater(reactor, 0.1, lambda: None)  # a window in which no echo and no answer may come
        stats = factory.stats
        viewers = len(factory.statusFeed.viewers)
        client.transport.abortConnection()
        deadline = reactor.seconds() + 10
        while factory.statusFeed.viewers:  # the server's end of it gone too
            assert reactor.seconds() < deadline, "the viewer was never dropped"
            yield deferLater(reactor, 0.01, lambda: None)
    finally:
        yield port.stopListening()
    data = b"".join(got)
    assert data.startswith(b"HTTP/1.1 101")
    assert viewers == 1 and stats.clients == 0 and stats.opened == 0 and stats.heartbeatsAnswered == 0
    assert b"hello" not in data and b"heartbeat\x81" not in data
    assert not factory.statusFeed.viewers


@pytest.mark.parametrize(
    "method, path, expected",
    [
        ("GET", "/?redirect=http://evil.example&after=0", 200),
        ("GET", "/?redirect=//evil.example", 200),
        ("GET", "/_status", None),  # not an upgrade: not the page
        ("GET", "/..%2f", 404),
        ("POST", "/", None),
        ("HEAD", "/", None),
    ],
)
@pytest_twisted.inlineCallbacks
def test_plain_http_requests(method, path, expected):
    """Plain requests never redirect and get the page only on GET /; no Location header ever."""
    answer = yield exchange(serveFactory(), lambda p: head(p, path=path, method=method, upgrade=False))
    assert b"location:" not in answer.lower() and b"Refresh" not in answer
    if expected is not None:
        assert code(answer) == expected
    else:
        assert code(answer) != 200 and b"<html" not in answer


def test_snapshot_json_escapes_hostile_peer():
    """A peer string with markup and </script> goes out as JSON text, never breaking out of the page."""
    from txheartbeat._status import PAGE, _describe

    class Fake:
        peer = "unix:</script><img src=x onerror=alert(1)>"
        session = None
        openedAt = None
        lastRoundTrip = None

    described = _describe(Fake(), 0.0)
    assert json.loads(json.dumps(described))["peer"] == Fake.peer
    assert "innerHTML" not in PAGE and "insertAdjacentHTML" not in PAGE and "eval(" not in PAGE


# 3. metrics ------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_scrape_reads_counters_on_the_reactor_thread():
    """A scrape served by listenMetrics calls HeartbeatCollector.collect on the reactor thread."""
    threads = []

    class Recording(HeartbeatCollector):
        def collect(self):
            threads.append(threading.get_ident())
            return super().collect()

    registry = CollectorRegistry()
    registry.register(Recording(servers={"s": HeartbeatServerFactory(pingInterval=None)}))
    port = listenMetrics(0, registry=registry, reactor=reactor)
    try:
        response = yield Agent(reactor).request(b"GET", f"http://127.0.0.1:{port.getHost().port}/metrics".encode())
        yield readBody(response)
    finally:
        yield port.stopListening()
    assert threads and set(threads) == {threading.get_ident()}


def test_metrics_labels_carry_no_url():
    """The collector's labels are the names given, never a URL (no credentials can reach a label)."""
    registry = CollectorRegistry()
    registry.register(HeartbeatCollector(servers={"s": HeartbeatServerFactory("ws://127.0.0.1:9000/")}))
    from prometheus_client import generate_latest

    text = generate_latest(registry).decode()
    assert "ws://" not in text and 'server="s"' in text


# 4. connect --json -----------------------------------------------------------------


def test_bad_url_error_never_shows_the_password():
    """connect with a URL whose password holds '#' or '?' says it is bad without printing any of the password."""
    for url in ("ws://alice:se#cret@example.com/", "ws://alice:se?cret@example.com/"):
        done = subprocess.run(
            [sys.executable, "-m", "txheartbeat", "connect", "--json", url],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 2
        out = done.stdout + done.stderr
        assert "alice" not in out and "cret" not in out


def test_json_lines_are_valid_for_hostile_messages():
    """Every --json event is exactly one line of valid JSON: binary, invalid UTF-8, controls, U+2028, 1 MB."""
    out, err = io.StringIO(), io.StringIO()
    handler = _ConsoleHandler(out, err, asJson=True)
    messages = [
        (b"\xff\xfe\x00\n", True),
        (b"bad \xc3\x28 utf8 \xed\xa0\x80", False),
        ("\x00\x1b[31m\r\n\u2028\u2029</script>".encode(), False),
        (b"x" * (1 << 20), False),
    ]
    for payload, isBinary in messages:
        handler.onMessage(payload, isBinary)
    handler.onClose(False, None, "reason\nwith\x00controls\udcff")
    lines = out.getvalue().split("\n")
    assert lines[-1] == "" and len(lines) == len(messages) + 2
    events = [json.loads(line) for line in lines[:-1]]
    assert [e["event"] for e in events] == ["message"] * 4 + ["close"]
    assert err.getvalue() == ""


def test_connecting_line_hides_credentials_query_and_fragment_spellings():
    """The connecting URL drops userinfo (also with '@' in the password or uppercase scheme), query and fragment."""
    from txheartbeat._protocol import redactURL

    for url in (
        "ws://alice:p@ss@example.com/x?token=t",
        "WSS://alice:secret@example.com:443/x?token=t#frag",
        "ws://alice:secret@[::1]:9000/?t=1",
        "ws://:secret@example.com/",
    ):
        shown = redactURL(url)
        assert "secret" not in shown and "alice" not in shown and "token" not in shown and "ss@" not in shown
