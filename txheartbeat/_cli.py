"""
The ``txheartbeat`` command: ``demo``, ``connect URL`` and ``serve``.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from typing import Any, Callable, List, Optional, Sequence, TextIO

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.python.failure import Failure

from ._client import connect
from ._errors import SendQueueFull
from ._handler import HeartbeatHandler, Message
from ._protocol import redactURL
from ._resume import ServerSession
from ._status import StatusServerFactory, StatusServerProtocol


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"txheartbeat: error: {message}\n")


#: the environment variable ``serve --session-store`` defaults to (and that workers get it in)
STORE_VARIABLE = "TXHEARTBEAT_SESSION_STORE"
#: seconds ``serve --resume`` keeps a session for its client to come back
RESUME_WINDOW = 60.0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def _port(text: str) -> int:
    value = _count(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return value


def _origin(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty origin pattern matches nothing")
    return text.strip()


#: ``connect --json``: the events, one JSON object a line on stdout
JSON_EVENTS = """\
with --json, every event is one JSON object a line on stdout (nothing on stderr
but argument errors), with "event" and:
  connecting   url (credentials, query and fragment left out)
  open         resumed (true/false); replayed (messages sent again) when resumed
  message      text (a text message), or binary (base64) for a binary one
  heartbeat    roundTrip (seconds)
  close        clean (true/false), code (null if none), reason (null if none)
  error        error (what went wrong: refused, handshake, dead peer...)
  reconnect    attempt (number), delay (seconds)
  sessionLost  unacked (messages the server never acknowledged; with --resume)
  giveUp       reason (the last failure, or null), unsent (queued messages)
  notSent      error (a stdin line that could not be sent)
  inputEnded   beforeOpen (true/false), unsent (queued messages not sent);
               printed once what was read is sent, or the wait for the open
               (--open-timeout) is over
exit status: 0 after a clean end of input (what was read was sent), 1 if the
connection did not open within --open-timeout of the end of input or the
client gave up, 2 for bad arguments."""


class _Version(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        from ._shortcuts import report

        sys.stdout.write(report())
        parser.exit(0)


def buildParser() -> argparse.ArgumentParser:
    parser = _Parser(prog="txheartbeat", description="Resilient WebSocket client and heartbeat-aware server.")
    parser.add_argument(
        "--version", action=_Version, nargs=0, help="versions in use; which shortcuts into Autobahn and Twisted hold"
    )
    parser.set_defaults(tls=None)  # (TLS options, made by main() from --tls-cert/--tls-key or --ca)
    sub = parser.add_subparsers(dest="command", metavar="{demo,connect,serve}")
    sub.required = True
    sub.add_parser("demo", help="narrated demo: heartbeat, dead peer, reconnect, queued message (loopback only)")
    c = sub.add_parser(
        "connect",
        help="interactive client: stdin lines are sent, messages printed",
        description="Send each stdin line as a text message and print what arrives; status on stderr. "
        "End of input sends what was read, then closes the connection (1000) and exits: input that ends "
        "before the connection opens (echo hi | txheartbeat connect URL) waits up to --open-timeout for it.",
        epilog=JSON_EVENTS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("url")
    c.add_argument("--ping-interval", type=_seconds, default=15.0, metavar="S")
    c.add_argument("--pong-timeout", type=_seconds, default=10.0, metavar="S")
    c.add_argument(
        "--ping-message", default=None, metavar="TEXT", help="application heartbeat text (default: ping frames)"
    )
    c.add_argument("--max-retries", type=_count, default=None, metavar="N")
    c.add_argument(
        "--open-timeout",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="seconds an attempt may take to open; at end of input before the open, how long to wait for it",
    )
    c.add_argument(
        "--resume",
        action="store_true",
        help="ask for a resumable session: what is lost in a drop is sent again after the reconnect",
    )
    c.add_argument("--json", action="store_true", help="print every event as one JSON line on stdout (see below)")
    c.add_argument(
        "--ca",
        default=None,
        metavar="FILE",
        help="wss:// only: trust the CA certificate(s) in this PEM file (e.g. a self-signed test certificate) "
        "instead of the system's; the certificate is still verified for the URL's host",
    )
    s = sub.add_parser(
        "serve",
        help="echo server that answers heartbeats and reaps dead clients",
        description="Echo server that answers heartbeats and reaps dead clients. A browser's GET / shows a live "
        "status page (clients, round trips, heartbeats and opens per 10 s); its feed is at /_status.",
    )
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=_port, default=9000)
    s.add_argument("--ping-interval", type=_seconds, default=15.0, metavar="S")
    s.add_argument("--pong-timeout", type=_seconds, default=10.0, metavar="S")
    s.add_argument(
        "--restart-window",
        type=_seconds,
        default=5.0,
        metavar="S",
        help="on SIGTERM/SIGINT, close clients with 1012 asking them to reconnect within S seconds",
    )
    s.add_argument("--resume", action="store_true", help="offer resumable sessions to clients that ask")
    s.add_argument(
        "--resume-window",
        type=_seconds,
        default=None,
        metavar="S",
        help=f"with --resume, keep a session S seconds for its client to come back (default {RESUME_WINDOW:g})",
    )
    s.add_argument(
        "--allowed-origin",
        action="append",
        type=_origin,
        default=None,
        metavar="PATTERN",
        help="allow browser pages from this origin only (repeatable; * is a wildcard, e.g. "
        "'https://*.example.com'; 'null' for file:// pages); others get 403. Default: every origin, null included",
    )
    s.add_argument(
        "--metrics-port",
        type=_port,
        default=None,
        metavar="N",
        help="serve Prometheus metrics at http://HOST:N/metrics (needs txheartbeat[prometheus]); https with --tls-cert",
    )
    s.add_argument(
        "--tls-cert",
        default=None,
        metavar="FILE",
        help="serve wss:// (and the status page, metrics over https) with this PEM certificate, "
        "then any intermediates; needs --tls-key",
    )
    s.add_argument("--tls-key", default=None, metavar="FILE", help="the certificate's unencrypted PEM private key")
    s.add_argument(
        "--workers",
        type=_count,
        default=1,
        metavar="N",
        help="run N worker processes on the one port (restarted if they exit; SIGHUP restarts them one by one)",
    )
    s.add_argument(
        "--session-store",
        default=os.environ.get(STORE_VARIABLE) or None,
        metavar="URL",
        help="with --resume, keep sessions in Redis (redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]): they survive a "
        f"restart or a crash, and every worker can resume any session. Default: ${STORE_VARIABLE} (a password "
        "there stays out of the process list)",
    )
    s.add_argument(
        "--durability",
        choices=("write", "batched"),
        default="write",
        help="with --session-store: store client messages' progress at every batch (write, the default) or every "
        "32 messages (batched: fewer writes; after a kill -9 more messages come again, flagged); see docs/sessions.md",
    )
    s.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)  # (set by the supervisor)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point of the console script and of ``python -m txheartbeat``."""
    parser = buildParser()
    args = parser.parse_args(argv)
    if args.command == "serve" and args.resume_window is not None and not args.resume:
        parser.error("--resume-window needs --resume")
    if args.command == "serve":
        _checkWorkers(parser, args)
    if args.command == "serve" and args.metrics_port is not None:
        try:
            import txheartbeat.metrics  # noqa: F401
        except ImportError:
            parser.error("--metrics-port needs prometheus-client: pip install 'txheartbeat[prometheus]'")
    if args.command == "serve" and (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together: give both (or neither, for plain ws://)")
    if args.command == "serve" and args.tls_cert is not None and args.metrics_port is not None:
        import twisted

        if int(twisted.__version__.split(".")[0]) < 23:
            # (seen on Twisted 22.10: its web server drops the HTTPS connections of this
            # listener; metrics over HTTPS are tested on Twisted 26.10)
            parser.error(f"--metrics-port with --tls-cert needs Twisted 23 or later (this is {twisted.__version__})")
    args.tls = None
    try:
        if args.command == "serve" and args.tls_cert is not None:
            from ._tls import serverTLSOptions

            args.tls = serverTLSOptions(args.tls_cert, args.tls_key)
        if args.command == "connect" and args.ca is not None:
            from urllib.parse import urlsplit

            from ._tls import clientTLSOptions

            url = urlsplit(args.url)
            if url.scheme.lower() != "wss" or not url.hostname:
                parser.error("--ca is for wss:// URLs only")
            args.tls = clientTLSOptions(url.hostname, args.ca)
    except ValueError as e:
        parser.error(str(e))
    from twisted.internet.task import react

    if args.command == "demo":
        from ._demo import demo

        react(lambda reactor: ensureDeferred(demo(reactor, sys.stdout)))
    elif args.command == "connect":
        react(lambda reactor: _connect(reactor, args))
    elif args.workers > 1 and not args.worker:
        serveArgs = list(argv if argv is not None else sys.argv[1:])
        react(lambda reactor: _supervise(reactor, args, serveArgs))
    else:
        react(lambda reactor: ensureDeferred(_serve(reactor, args)))


# connect -----------------------------------------------------------------------


class _ConsoleHandler(HeartbeatHandler):
    """Messages to stdout, status to stderr; with ``asJson``, every event a JSON line on stdout."""

    def __init__(self, out: TextIO, err: TextIO, asJson: bool = False) -> None:
        super().__init__()
        self.out = out
        self.err = err
        self.asJson = asJson
        self._replayed = 0  # stats.replayed at the last open

    def report(self, event: str, text: str, /, **fields: Any) -> None:
        """One event: ``* text`` on stderr, or with ``asJson`` ``{"event": event, **fields}`` on stdout."""
        if self.asJson:
            self._print(json.dumps({"event": event, **fields}))
        else:
            self.err.write(f"* {text}\n")
            self.err.flush()

    def _print(self, line: str) -> None:
        """A line on stdout; once its reader is gone (``| head -1``), close quietly instead of failing per message."""
        if self.out is None:
            return
        try:
            self.out.write(line + "\n")
            self.out.flush()
        except BrokenPipeError:
            self.out = None  # type: ignore[assignment]
            try:  # (so that Python's own flush at exit finds nothing to fail on)
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            except (OSError, ValueError):
                pass
            self.close()

    def onOpen(self) -> None:
        replayed, self._replayed = self.stats.replayed - self._replayed, self.stats.replayed
        if self.asJson:
            self.report("open", "", resumed=self.resumed, **({"replayed": replayed} if self.resumed else {}))
            return
        self.report("open", "open")
        if self.resumed:
            self.report("open", f"session resumed, {replayed} message(s) replayed")

    def onSessionLost(self, unacked: List[Message]) -> None:
        self.report("sessionLost", f"session lost: {len(unacked)} message(s) never acknowledged", unacked=len(unacked))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.asJson:
            if isBinary:
                self.report("message", "", binary=base64.b64encode(payload).decode("ascii"))
            else:
                self.report("message", "", text=payload.decode("utf-8", "replace"))
            return
        self._print(payload.hex() if isBinary else payload.decode("utf-8", "replace"))

    def onHeartbeat(self, roundTrip: float) -> None:
        self.report("heartbeat", f"heartbeat answered in {roundTrip * 1000:.1f} ms", roundTrip=roundTrip)

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.report("close", f"closed (clean={wasClean}, code={code})", clean=wasClean, code=code, reason=reason)

    def onError(self, failure: Failure) -> None:
        error = failure.getErrorMessage() or repr(failure.value)
        self.report("error", f"error: {error}", error=error)

    def onReconnect(self, attempt: int, delay: float, reason: Optional[Failure] = None) -> None:
        self.report("reconnect", f"reconnecting in {delay:.1f} s (attempt {attempt})", attempt=attempt, delay=delay)

    def onGiveUp(self, reason: Optional[Failure] = None) -> None:
        why = reason.getErrorMessage() if reason is not None else None
        unsent = len(self.queued)
        text = "giving up" + (f": {why}" if why else "") + (f" ({unsent} queued message(s) not sent)" if unsent else "")
        self.report("giveUp", text, reason=why, unsent=unsent)


#: seconds between offers of a line the full send queue refused (stdin is paused meanwhile)
_RETRY_FULL = 0.05


def _connect(reactor: Any, args: argparse.Namespace) -> Deferred[None]:
    from twisted.internet import stdio
    from twisted.protocols.basic import LineReceiver

    handler = _ConsoleHandler(sys.stdout, sys.stderr, asJson=args.json)
    try:
        connected = connect(
            args.url,
            handler,
            reactor=reactor,
            pingInterval=args.ping_interval,
            pongTimeout=args.pong_timeout,
            pingMessage=args.ping_message,
            maxRetries=args.max_retries,
            openTimeout=args.open_timeout,
            resume=args.resume,
            contextFactory=args.tls,
        )
    except ValueError as e:
        sys.stderr.write(f"txheartbeat: error: {e}\n")
        raise SystemExit(2) from None
    connected.addErrback(lambda f: None)  # reported through the handler
    url = redactURL(args.url)
    # First, though the attempt began above: its hooks run in a later reactor turn.
    handler.report("connecting", f"connecting to {url}", url=url)
    neverOpened = False

    def inputEnded(beforeOpen: bool) -> None:
        """Close: the queue was flushed at the open, so whatever is handed back was not sent."""
        nonlocal neverOpened
        neverOpened = not handler.isOpen  # (set first: close() may end it all now)
        unsent = len(handler.close())
        if neverOpened:
            lost = f"{unsent} queued message(s) were not sent" if unsent else "nothing was sent"
            text = f"the connection did not open within {args.open_timeout:g} s of the end of input; {lost}"
        else:
            text = f"{unsent} queued message(s) were not sent" if unsent else ""
        if text or handler.asJson:
            handler.report("inputEnded", text, beforeOpen=beforeOpen, unsent=unsent)

    def notOpened(failure: Failure, factory: Any) -> None:
        if not factory.finished:  # the wait timed out (a give-up has said why already)
            inputEnded(beforeOpen=True)

    def nextOpen(factory: Any) -> Deferred[Any]:
        """The open to wait for: this one, or, while a connection is closing, the one after it."""
        protocol = handler.protocol
        if factory.state == "open" and protocol is not None and not handler.isOpen:
            return protocol.whenGone().addCallback(lambda _: factory.whenOpen())
        return factory.whenOpen()

    class Lines(LineReceiver):
        """stdin's lines, each sent; reading pauses while the send queue is full (nothing read is dropped)."""

        delimiter = b"\n"
        pending: Optional[str] = None  # a line the full queue refused, offered again every _RETRY_FULL s
        ended = False  # end of input came
        waiting = False  # input ended before the open: waiting for it

        def lineReceived(self, line: bytes) -> None:
            text = line.rstrip(b"\r").decode("utf-8", "replace")
            if not self.offer(text):
                self.pending = text
                self.pauseProducing()  # (the lines already read stay in LineReceiver's buffer, in order)
                reactor.callLater(_RETRY_FULL, self.retry)

        def offer(self, text: str) -> bool:
            """Send ``text``; ``False`` if the queue (or a session's replay buffer) is full."""
            try:
                handler.send(text)
            except SendQueueFull:
                return False
            except Exception as e:
                handler.report("notSent", f"not sent: {e}", error=str(e))
            return True

        def retry(self) -> None:
            factory = handler.factory
            if self.pending is None or factory is None or factory.finished:
                return  # it gave up (said so): the line stays unsent, the process ends with 1
            if not self.offer(self.pending):
                reactor.callLater(_RETRY_FULL, self.retry)
                return
            self.pending = None
            if self.ended:
                self.end()
            else:
                self.resumeProducing()

        def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
            self.ended = True
            if self.pending is None:
                self.end()

        def end(self) -> None:
            factory = handler.factory
            if factory is None or factory.finished:
                return  # it gave up: the process is ending, input did not
            if handler.isOpen:
                inputEnded(beforeOpen=False)
                return
            # Input that ends first (a pipe, a file) is still sent: wait for the open
            # (the queue is flushed right after it), at most --open-timeout.
            self.waiting = True
            if not handler.asJson:
                handler.report("inputEnded", f"input ended; waiting up to {args.open_timeout:g} s for the open")
            opened = nextOpen(factory).addTimeout(args.open_timeout, reactor)
            opened.addCallbacks(lambda _: inputEnded(beforeOpen=True), lambda f: notOpened(f, factory))

    lines = Lines()
    stdio.StandardIO(lines, reactor=reactor)
    result: Deferred[None] = Deferred()

    def done(_: object) -> None:
        if neverOpened or (handler.factory is not None and handler.factory.state == "gaveup"):
            raise SystemExit(1)

    def interrupted() -> None:
        # SIGINT/SIGTERM: what was read and not sent is said, and the exit status is not 0.
        unsent = len(handler.queued) + (lines.pending is not None)
        if result.called or not (unsent or lines.waiting):
            return
        handler.report("interrupted", f"stopped: {unsent} message(s) read were not sent", unsent=unsent)
        result.errback(Failure(SystemExit(1)))

    reactor.addSystemEventTrigger("before", "shutdown", interrupted)

    def settle(outcome: object) -> None:
        if not result.called:
            if isinstance(outcome, Failure):
                result.errback(outcome)
            else:
                result.callback(None)

    handler.whenClosed().addCallback(done).addBoth(settle)
    return result


# serve -------------------------------------------------------------------------


_PREFIX = ""  # "[worker N] " in a worker


def _say(text: str) -> None:
    sys.stderr.write(f"* {_PREFIX}{text}\n")
    sys.stderr.flush()


class _EchoServer(StatusServerProtocol):
    """Echoes clients; status viewers and plain GETs (the status page) are handled by :class:`StatusServerProtocol`."""

    def onOpen(self) -> None:
        _say(f"{self.peer}: open")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.redelivered:  # (the echo goes out again: a process that died may have sent it already)
            _say(f"{self.peer}: a message delivered again, flagged: the process before may have echoed it")
        self.sendMessage(payload, isBinary)

    def onPeerDead(self, failure: Failure) -> None:
        _say(f"{self.peer}: dead client reaped: {failure.getErrorMessage()}")

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        if self.openedAt is not None:
            _say(f"{self.peer}: closed (clean={wasClean}, code={code})")
        elif self.wasNotCleanReason:  # (a plain GET, e.g. for the status page, is no news)
            _say(f"{self.peer}: refused: {self.wasNotCleanReason}")


class _EchoFactory(StatusServerFactory):
    """Narrates sessions by their public ``id`` (never the token, which would let a reader take one over)."""

    protocol = _EchoServer

    def onSessionCreated(self, session: ServerSession) -> None:
        refused = "; the resume it asked for was refused: unknown or expired" if session.resumeRefused else ""
        _say(f"{_peerOf(session)}: session {session.id} created{refused}")

    def onSessionResumed(self, session: ServerSession) -> None:
        # Right after the resume, what the client has not acknowledged is what was just sent again.
        replayed = len(session.unacked)
        _say(f"{_peerOf(session)}: session {session.id} resumed, {replayed} message(s) replayed")

    def onSessionExpired(self, session: ServerSession) -> None:
        _say(f"session {session.id} expired ({len(session.unacked)} message(s) never acknowledged)")

    def onSessionClosed(self, session: ServerSession) -> None:
        _say(f"session {session.id} closed by the client")

    def onSessionMoved(self, session: ServerSession) -> None:
        _say(f"session {session.id} taken over by another process")


def _peerOf(session: ServerSession) -> str:
    protocol = session.protocol  # (set: the hooks that use it run while a connection opens)
    return (protocol.peer if protocol is not None else None) or "?"


def _hostPort(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _checkWorkers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.session_store is not None:
        if not args.resume:
            parser.error("--session-store needs --resume (it keeps resumable sessions)")
        from .stores._redisurl import parseRedisURL

        try:
            parseRedisURL(args.session_store)
        except ValueError as e:
            parser.error(str(e))
    elif args.durability != "write":
        parser.error("--durability needs --session-store")
    if args.workers < 1:
        parser.error("--workers must be 1 or more")
    if args.workers > 1 and args.metrics_port is not None:
        parser.error("--metrics-port serves one process: run it without --workers, or scrape each worker's factory")


async def _serve(reactor: Any, args: argparse.Namespace) -> None:
    global _PREFIX
    if args.worker:
        _PREFIX = f"[worker {args.worker}] "
    window = args.resume_window if args.resume_window is not None else RESUME_WINDOW
    ws, http = ("wss", "https") if args.tls is not None else ("ws", "http")
    store = None
    if args.session_store is not None:
        from ._errors import StoreUnavailable
        from .stores import RedisSessionStore

        store = RedisSessionStore(args.session_store, durability=args.durability, reactor=reactor)
        try:
            await store.start()
        except StoreUnavailable as e:
            await store.stop()
            sys.stderr.write(f"txheartbeat: error: {e}\n")
            raise SystemExit(1) from None
    factory = _EchoFactory(
        f"{ws}://{_hostPort(args.host, args.port)}" if args.port else None,  # (Autobahn refuses port 0 in a URL)
        pingInterval=args.ping_interval,
        pongTimeout=args.pong_timeout,
        resume=args.resume,
        resumeWindow=window,
        sessionStore=store,
        allowedOrigins=args.allowed_origin,
        reactor=reactor,
    )
    if args.worker:
        from ._workers import adopt

        port = adopt(reactor, factory, args.host, args.tls)
    elif args.tls is not None:
        port = _listen(
            lambda: reactor.listenSSL(args.port, factory, args.tls, interface=args.host), args.host, args.port
        )
    else:
        port = _listen(lambda: reactor.listenTCP(args.port, factory, interface=args.host), args.host, args.port)
    where = _hostPort(args.host, port.getHost().port)
    resume = f"; resume: sessions kept {window:g} s" if args.resume else ""
    if store is not None:
        resume += f" in {store.address.redacted}"
    origins = "any, null included" if args.allowed_origin is None else ", ".join(args.allowed_origin) + " only"
    _say(
        f"serving {ws}://{where}/ (echo; answers 'heartbeat'; "
        f"ping {args.ping_interval:g} s, pong {args.pong_timeout:g} s{resume}; origins: {origins})"
    )
    _say(f"status page: {http}://{where}/")
    if args.metrics_port is not None:
        from prometheus_client import REGISTRY

        from .metrics import HeartbeatCollector, listenMetrics

        REGISTRY.register(HeartbeatCollector(servers={"serve": factory}))
        metrics = _listen(
            lambda: listenMetrics(args.metrics_port, reactor=reactor, interface=args.host, tlsOptions=args.tls),
            args.host,
            args.metrics_port,
            " for metrics",
        )
        _say(f"metrics: {http}://{_hostPort(args.host, metrics.getHost().port)}/metrics")
    factory.statusFeed.start()

    def stopping() -> Deferred[Any]:
        # A planned stop (SIGTERM, SIGINT) closes clients with 1012 so they spread their reconnects
        # (with a session store: each session handed over to the store first).
        d = DeferredList([factory.statusFeed.stop(), factory.restart(args.restart_window)])
        if store is not None:
            d.addBoth(lambda _: store.stop())
        return d

    reactor.addSystemEventTrigger("before", "shutdown", stopping)
    if args.worker:
        from ._workers import tellReady

        tellReady()
    forever: Deferred[None] = Deferred()
    await forever


def _supervise(reactor: Any, args: argparse.Namespace, serveArgs: List[str]) -> Deferred[None]:
    import signal

    from ._workers import Supervisor, listenShared

    try:
        sock = listenShared(args.host, args.port)
    except OSError as e:
        sys.stderr.write(f"txheartbeat: error: cannot listen on {_hostPort(args.host, args.port)}: {e}\n")
        raise SystemExit(1) from None
    port = sock.getsockname()[1]
    ws = "wss" if args.tls is not None else "ws"
    # The workers get the port the supervisor bound (also when it was 0), and the store's
    # address in their environment: a password in it stays off their command lines.
    serveArgs = [*_withoutOption(serveArgs, "--session-store"), "--port", str(port)]
    env = {STORE_VARIABLE: args.session_store} if args.session_store else {}
    supervisor = Supervisor(reactor, args.workers, sock, serveArgs, _say, env=env)
    store = f"; sessions in {_redacted(args.session_store)}" if args.session_store else ""
    if args.resume and args.session_store is None:
        _say("warning: sessions are per worker: a client back on another worker loses its session (--session-store)")
    _say(f"serving {ws}://{_hostPort(args.host, port)}/ with {args.workers} workers{store}")
    reactor.addSystemEventTrigger("before", "shutdown", supervisor.stop)
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(supervisor.rollingRestart))
    supervisor.start().addCallback(lambda _: _say(f"all {args.workers} workers ready"))
    forever: Deferred[None] = Deferred()
    return forever


def _withoutOption(words: List[str], option: str) -> List[str]:
    """``words`` without ``option VALUE`` or ``option=VALUE``."""
    kept: List[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == option:
            skip = True
        elif not word.startswith(option + "="):
            kept.append(word)
    return kept


def _redacted(url: str) -> str:
    from .stores._redisurl import parseRedisURL

    return parseRedisURL(url).redacted


def _listen(listen: Callable[[], Any], host: str, port: int, what: str = "") -> Any:
    """Return ``listen()``'s listening port, or say why it cannot listen and exit 1."""
    try:
        return listen()
    except Exception as e:
        sys.stderr.write(f"txheartbeat: error: cannot listen on {_hostPort(host, port)}{what}: {e}\n")
        raise SystemExit(1) from None
