"""
The ``txheartbeat`` command: ``demo``, ``connect URL`` and ``serve``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, List, Optional, Sequence, TextIO

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.python.failure import Failure

from ._client import connect
from ._handler import HeartbeatHandler, Message
from ._resume import ServerSession
from ._server import HeartbeatServerFactory, HeartbeatServerProtocol


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"txheartbeat: error: {message}\n")


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


def buildParser() -> argparse.ArgumentParser:
    parser = _Parser(prog="txheartbeat", description="Resilient WebSocket client and heartbeat-aware server.")
    sub = parser.add_subparsers(dest="command", metavar="{demo,connect,serve}")
    sub.required = True
    sub.add_parser("demo", help="narrated demo: heartbeat, dead peer, reconnect, queued message (loopback only)")
    c = sub.add_parser("connect", help="interactive client: stdin lines are sent, messages printed")
    c.add_argument("url")
    c.add_argument("--ping-interval", type=_seconds, default=15.0, metavar="S")
    c.add_argument("--pong-timeout", type=_seconds, default=10.0, metavar="S")
    c.add_argument(
        "--ping-message", default=None, metavar="TEXT", help="application heartbeat text (default: ping frames)"
    )
    c.add_argument("--max-retries", type=_count, default=None, metavar="N")
    c.add_argument(
        "--resume",
        action="store_true",
        help="ask for a resumable session: what is lost in a drop is sent again after the reconnect",
    )
    s = sub.add_parser("serve", help="echo server that answers heartbeats and reaps dead clients")
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
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point of the console script and of ``python -m txheartbeat``."""
    parser = buildParser()
    args = parser.parse_args(argv)
    if args.command == "serve" and args.resume_window is not None and not args.resume:
        parser.error("--resume-window needs --resume")
    from twisted.internet.task import react

    if args.command == "demo":
        from ._demo import demo

        react(lambda reactor: ensureDeferred(demo(reactor, sys.stdout)))
    elif args.command == "connect":
        react(lambda reactor: _connect(reactor, args))
    else:
        react(lambda reactor: _serve(reactor, args))


# connect -----------------------------------------------------------------------


class _ConsoleHandler(HeartbeatHandler):
    """Messages to stdout, status to stderr."""

    def __init__(self, out: TextIO, err: TextIO) -> None:
        super().__init__()
        self.out = out
        self.err = err
        self._replayed = 0  # stats.replayed at the last open

    def status(self, text: str) -> None:
        self.err.write(f"* {text}\n")
        self.err.flush()

    def onOpen(self) -> None:
        self.status("open")
        replayed, self._replayed = self.stats.replayed - self._replayed, self.stats.replayed
        if self.resumed:
            self.status(f"session resumed, {replayed} message(s) replayed")

    def onSessionLost(self, unacked: List[Message]) -> None:
        self.status(f"session lost: {len(unacked)} message(s) never acknowledged")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.out.write((payload.hex() if isBinary else payload.decode("utf-8", "replace")) + "\n")
        self.out.flush()

    def onHeartbeat(self, roundTrip: float) -> None:
        self.status(f"heartbeat answered in {roundTrip * 1000:.1f} ms")

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        self.status(f"closed (clean={wasClean}, code={code})")

    def onError(self, failure: Failure) -> None:
        self.status(f"error: {failure.getErrorMessage() or repr(failure.value)}")

    def onReconnect(self, attempt: int, delay: float, reason: Optional[Failure] = None) -> None:
        self.status(f"reconnecting in {delay:.1f} s (attempt {attempt})")

    def onGiveUp(self, reason: Optional[Failure] = None) -> None:
        why = f": {reason.getErrorMessage()}" if reason is not None else ""
        self.status(f"giving up{why}")


def _connect(reactor: Any, args: argparse.Namespace) -> Deferred[None]:
    from twisted.internet import stdio
    from twisted.protocols.basic import LineReceiver

    handler = _ConsoleHandler(sys.stdout, sys.stderr)
    try:
        connected = connect(
            args.url,
            handler,
            reactor=reactor,
            pingInterval=args.ping_interval,
            pongTimeout=args.pong_timeout,
            pingMessage=args.ping_message,
            maxRetries=args.max_retries,
            resume=args.resume,
        )
    except ValueError as e:
        sys.stderr.write(f"txheartbeat: error: {e}\n")
        raise SystemExit(2) from None
    connected.addErrback(lambda f: None)  # reported through the handler

    class Lines(LineReceiver):
        delimiter = b"\n"

        def lineReceived(self, line: bytes) -> None:
            try:
                handler.send(line.rstrip(b"\r").decode("utf-8", "replace"))
            except Exception as e:
                handler.status(f"not sent: {e}")

        def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
            unsent = handler.close()
            if unsent:
                handler.status(f"{len(unsent)} queued message(s) were not sent")

    stdio.StandardIO(Lines(), reactor=reactor)

    def done(_: object) -> None:
        if handler.factory is not None and handler.factory.state == "gaveup":
            raise SystemExit(1)

    return handler.whenClosed().addCallback(done)


# serve -------------------------------------------------------------------------


def _say(text: str) -> None:
    sys.stderr.write(f"* {text}\n")
    sys.stderr.flush()


class _EchoServer(HeartbeatServerProtocol):
    def onOpen(self) -> None:
        _say(f"{self.peer}: open")

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)

    def onPeerDead(self, failure: Failure) -> None:
        _say(f"{self.peer}: dead client reaped: {failure.getErrorMessage()}")

    def onClose(self, wasClean: bool, code: Optional[int], reason: Optional[str]) -> None:
        _say(f"{self.peer}: closed (clean={wasClean}, code={code})")


class _EchoFactory(HeartbeatServerFactory):
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


def _peerOf(session: ServerSession) -> str:
    protocol = session.protocol  # (set: the hooks that use it run while a connection opens)
    return (protocol.peer if protocol is not None else None) or "?"


def _serve(reactor: Any, args: argparse.Namespace) -> Deferred[None]:
    window = args.resume_window if args.resume_window is not None else RESUME_WINDOW
    factory = _EchoFactory(
        f"ws://{args.host}:{args.port}",
        pingInterval=args.ping_interval,
        pongTimeout=args.pong_timeout,
        resume=args.resume,
        resumeWindow=window,
        reactor=reactor,
    )
    try:
        port = reactor.listenTCP(args.port, factory, interface=args.host)
    except Exception as e:
        sys.stderr.write(f"txheartbeat: error: cannot listen on {args.host}:{args.port}: {e}\n")
        raise SystemExit(1) from None
    address = port.getHost()
    resume = f"; resume: sessions kept {window:g} s" if args.resume else ""
    _say(
        f"serving ws://{address.host}:{address.port}/ (echo; answers 'heartbeat'; "
        f"ping {args.ping_interval:g} s, pong {args.pong_timeout:g} s{resume})"
    )
    # A planned stop (SIGTERM, SIGINT) closes clients with 1012 so they spread their reconnects.
    reactor.addSystemEventTrigger("before", "shutdown", factory.restart, args.restart_window)
    forever: Deferred[None] = Deferred()
    return forever
