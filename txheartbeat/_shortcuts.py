"""
Where txheartbeat stands on Autobahn's and Twisted's internals, checked at run time.

A few hot paths skip work that Autobahn or Twisted would do on every frame
(see each :class:`Shortcut`).  Each one mirrors or bypasses code of theirs,
so each names that code and the digests of its source it was verified
against.  On import, once, every digest is computed again (about 15 ms); a
shortcut whose code differs from every verified version -- another release,
a patched install, no source at all -- is turned off, and the protocols take
Autobahn's or Twisted's own path instead: the same behaviour, slower.  One
log line (info level) names the shortcuts turned off and why.

``TXHEARTBEAT_SHORTCUTS=off`` in the environment turns every shortcut off,
and ``TXHEARTBEAT_SHORTCUTS=-pongFrames,-pingFrames`` the ones named (the
test suite runs the protocol tests that way).

To verify another release: read the diff of the mirrored code against the
shortcut, then add the digest that ``txheartbeat --version`` prints for it.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import os
import textwrap
from typing import Dict, FrozenSet, List, NamedTuple, Optional, Tuple

from twisted.logger import Logger

_log = Logger(namespace="txheartbeat")


class Shortcut(NamedTuple):
    """One reach into another library: what it does and the code it stands on."""

    #: its name, for ``TXHEARTBEAT_SHORTCUTS`` and the log
    name: str
    #: what it does, in a few words
    what: str
    #: the functions it mirrors or bypasses, as ``module:Qualified.name``
    mirrors: Tuple[str, ...]
    #: the digests (:func:`digest`) of those functions' source it was verified against
    verified: FrozenSet[str]
    #: where set, the function (``module:Qualified.name``) whose cost the shortcut
    #: saves: a release without it does not need the shortcut (off, and not reported)
    saves: str = ""


_AUTOBAHN = ("autobahn.twisted.websocket:WebSocketServerProtocol", "autobahn.twisted.websocket:WebSocketClientProtocol")
_TCP = ("twisted.internet.tcp:Server", "twisted.internet.tcp:Client")


def _on(classes: Tuple[str, ...], *methods: str) -> Tuple[str, ...]:
    """``methods`` as the classes in use resolve them (an override added between their base and ours shows)."""
    return tuple(f"{cls}.{method}" for method in methods for cls in classes)


# Verified: Autobahn 22.4.2, 24.4.2 (the newest on Python 3.10) and 26.11.1 with Twisted
# 22.10.0 and 26.10.0 (the floor and the newest, tested in CI).  Where a digest differs
# between them the diff was read: Autobahn's frame reading changed only for compressed
# data frames, its client handshake only in failing a bad response and one log level,
# Twisted's doWrite only in how it joins its buffers.
SHORTCUTS: Tuple[Shortcut, ...] = (
    Shortcut(
        "sendData",
        "frames go out without Autobahn's per-frame debug line; an empty send queue is a list",
        _on(_AUTOBAHN, "sendData", "_send"),
        frozenset({"6606f012a05452fa"}),
    ),
    Shortcut(
        "dataReceived",
        "inbound bytes skip the debug line Autobahn's Twisted adapter formats",
        _on(_AUTOBAHN, "dataReceived"),
        frozenset({"2171c67cd0ca883f"}),
    ),
    Shortcut(
        "pongFrames",
        "a whole pong frame between frames is read without Autobahn's frame parser",
        _on(
            _AUTOBAHN,
            "_onPong",
            "_dataReceived",
            "consumeData",
            "processData",
            "onFrameBegin",
            "onFrameData",
            "onFrameEnd",
            "processControlFrame",
        ),
        frozenset({"c8c933666bb74b35", "afe3a7909b53c065"}),
    ),
    Shortcut(
        "pingFrames",
        "ping frames are built without Autobahn's per-frame cffi masker",
        _on(_AUTOBAHN, "sendPing", "sendFrame"),
        frozenset({"7fdf7664e0b718d2"}),
    ),
    Shortcut(
        "handshakeMemory",
        "what Autobahn keeps of the opening handshake is dropped once open",
        _on(_AUTOBAHN, "processHandshake"),
        frozenset({"a9ff3652848d864d", "c092811ffbc2493c", "d4dca6f1b73e41e7"}),
    ),
    Shortcut(
        "socketWrites",
        "frames are written straight to an idle TCP socket and its progress read from Twisted's buffers",
        _on(_TCP, "write", "doWrite", "writeSomeData"),
        frozenset({"321152aa6aa02a2d", "315f953350060244"}),
    ),
    Shortcut(
        "debugFormatting",
        "Autobahn's per-connection debug lines are formatted only if they are logged",
        (
            "autobahn.websocket.protocol:WebSocketProtocol._connectionMade",
            "autobahn.websocket.protocol:WebSocketClientProtocol.startHandshake",
        ),
        frozenset({"b1907403965e9a29"}),
    ),
    Shortcut(
        "tlsIdentity",
        "a wss:// client's server identity is checked by one callback on its context, not one per connection",
        (
            "twisted.internet._sslverify:ClientTLSOptions.__init__",
            "twisted.internet._sslverify:ClientTLSOptions.clientConnectionForTLS",
            "twisted.internet._sslverify:_verifyCB",
            "twisted.internet._sslverify:optionsForClientTLS",
            "twisted.internet._sslverify:OpenSSLCertificateOptions.getContext",
            "twisted.internet._sslverify:OpenSSLCertificateOptions._makeTLSConnection",
            "twisted.protocols._tls_legacy:_convertToAppropriateFactory",
        ),
        frozenset({"65b9632facc9715e"}),
        # (Twisted before 23 checks the identity once per context itself, from an info callback)
        saves="twisted.internet._sslverify:_verifyCB",
    ),
    Shortcut(
        "tlsWrapping",
        "a wss:// client's attempts share one TLS wrapping factory, not one each",
        (
            "twisted.internet.posixbase:PosixReactorBase.connectSSL",
            "twisted.protocols.tls:TLSMemoryBIOFactory.__init__",
            "twisted.protocols.policies:WrappingFactory.__init__",
        ),
        frozenset({"927e78cca70d63d3", "1f3f7772d8320984"}),
    ),
    Shortcut(
        "tlsAbort",
        "an aborted TLS connection skips the TLS close and the read after the end that the abort throws away",
        _on(_AUTOBAHN, "_closeConnection")
        + (
            "twisted.protocols.tls:TLSMemoryBIOProtocol.abortConnection",
            "twisted.protocols.tls:TLSMemoryBIOProtocol._shutdownTLS",
            "twisted.protocols.tls:TLSMemoryBIOProtocol.connectionLost",
            "twisted.protocols.tls:TLSMemoryBIOProtocol.write",
            "twisted.protocols.tls:TLSMemoryBIOProtocol._write",
            # (what reads the flags it sets, after the abort)
            "twisted.protocols.tls:TLSMemoryBIOProtocol._flushReceiveBIO",
            "twisted.protocols.tls:TLSMemoryBIOProtocol._checkHandshakeStatus",
            "twisted.protocols.tls:TLSMemoryBIOProtocol._tlsShutdownFinished",
            "twisted.protocols.tls:TLSMemoryBIOProtocol.loseConnection",
            "twisted.protocols.tls:TLSMemoryBIOProtocol.registerProducer",
            "twisted.protocols.tls:TLSMemoryBIOProtocol.unregisterProducer",
            "twisted.internet.tcp:Connection.abortConnection",
        ),
        # (Twisted 22.10 and 26.10 differ only in a type check of write's argument and the layout of _flushReceiveBIO)
        frozenset({"0ab05248cc2d15b2", "936d87d4989b216d"}),
    ),
    Shortcut(
        "tlsAbortBuffered",
        "tlsAbort on the TLS transport that buffers a client's small writes (Twisted 23.8 and later)",
        # (it closes its buffer, then TLSMemoryBIOProtocol's connectionLost runs)
        tuple(f"twisted.protocols.tls:BufferingTLSTransport.{m}" for m in ("connectionLost", "abortConnection")),
        frozenset({"eb41159c33023e33"}),
        saves="twisted.protocols.tls:BufferingTLSTransport",
    ),
    Shortcut(
        "failedConnects",
        "a failed TCP connect's transport is freed without a full GC pass",
        _on(_TCP[1:], "doConnect"),
        frozenset({"79c8470663ffa2f7"}),
    ),
)


def _resolve(path: str) -> object:
    module, _, qualified = path.partition(":")
    value: object = importlib.import_module(module)
    for part in qualified.split("."):
        value = getattr(value, part)
    return value


#: calls whose arguments are messages for people (a log line, a close reason, an error text)
_MESSAGE_CALLS = frozenset(
    {"debug", "info", "warn", "warning", "error", "critical", "failure", "trace", "msg"}
    | {"_protocol_violation", "_invalid_payload", "_fail_connection", "failHandshake", "_max_message_size_exceeded"}
)


def _isMessage(node: ast.AST) -> bool:
    """A text for people: a string, an f-string, ``"...".format(...)``, ``"..." % (...)``."""
    if isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        return _isMessage(node.left)
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
        and _isMessage(node.func.value)
    )


class _Normalise(ast.NodeTransformer):
    """
    What a reformatting changes and behaviour does not: annotations,
    docstrings, and the texts of messages (in log calls, close reasons and
    raised errors; every other string is kept, as code).
    """

    _TEXT = "<text>"

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.returns = None
        body = node.body
        if body and isinstance(body[0], ast.Expr) and _isMessage(body[0].value):
            node.body = body[1:] or [ast.Pass()]
        return self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.annotation = None
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        if node.value is None:
            return ast.Pass()
        return self.visit(ast.Assign(targets=[node.target], value=node.value, lineno=node.lineno))

    def _blind(self, args: List[ast.expr]) -> List[ast.expr]:
        return [ast.Constant(self._TEXT) if _isMessage(a) else self.visit(a) for a in args]

    def visit_Call(self, node: ast.Call) -> ast.AST:
        function = node.func
        name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
        if name in _MESSAGE_CALLS:
            node.func = self.visit(function)
            node.args = self._blind(node.args)
            for keyword in node.keywords:
                keyword.value = ast.Constant(self._TEXT) if _isMessage(keyword.value) else self.visit(keyword.value)
            return node
        return self.generic_visit(node)

    def visit_Raise(self, node: ast.Raise) -> ast.AST:
        if isinstance(node.exc, ast.Call):
            node.exc.func = self.visit(node.exc.func)
            node.exc.args = self._blind(node.exc.args)
            node.exc.keywords = [self.visit(k) for k in node.exc.keywords]
            if node.cause is not None:
                node.cause = self.visit(node.cause)
            return node
        return self.generic_visit(node)


#: fields some Python versions add to a node and others lack (3.12's type parameters, ...)
_UNSTABLE_FIELDS = frozenset({"type_params", "type_comment", "kind"})


def _dump(node: object) -> str:
    """A tree as text, the same on every Python that parses it (``ast.dump`` shows each version's fields)."""
    if isinstance(node, ast.AST):
        fields = (_dump(getattr(node, name, None)) for name in node._fields if name not in _UNSTABLE_FIELDS)
        return f"{type(node).__name__}({','.join(fields)})"
    if isinstance(node, list):
        return f"[{','.join(_dump(item) for item in node)}]"
    return repr(node)


def _code(function: object) -> str:
    """A function's normalised syntax tree as text (once per function: both ends share most of them)."""
    try:
        return _CODE[function]
    except (KeyError, TypeError):
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))  # type: ignore[arg-type]
        code = _CODE[function] = _dump(_Normalise().visit(tree))
        return code


_CODE: Dict[object, str] = {}


def digest(paths: Tuple[str, ...]) -> Optional[str]:
    """
    sha256 (first 16 hex digits) of the code of ``paths`` in order, read from
    their source without what formatting changes (layout, comments,
    annotations, docstrings, the texts of messages), with the qualified name
    each resolves to; ``None`` if any cannot be read.
    """
    try:
        # Where each resolved (a new override in between changes it), then what it does.
        code = "".join(f"{getattr(f, '__qualname__', '')}:{_code(f)}" for f in map(_resolve, paths))
    except Exception:  # (no source, a file changed since import, ...: the shortcut is off)
        return None
    return hashlib.sha256(code.encode("utf-8")).hexdigest()[:16]


def _forcedOff(setting: str) -> Tuple[FrozenSet[str], List[str]]:
    """The shortcuts ``TXHEARTBEAT_SHORTCUTS`` turns off, and the parts of it that mean nothing."""
    setting = setting.strip()
    names = {s.name for s in SHORTCUTS}
    if setting.lower() in ("off", "0", "none", "false"):
        return frozenset(names), []
    off, unknown = set(), []
    for part in (p.strip() for p in setting.split(",")):
        if part.startswith("-") and part[1:] in names:
            off.add(part[1:])
        elif part:
            unknown.append(part)
    return frozenset(off), unknown


#: the start of the reason a shortcut is off where the cost it saves does not exist
NOT_NEEDED = "not needed here"


def _exists(path: str) -> bool:
    try:
        _resolve(path)
    except Exception:
        return False
    return True


def check(environ: Optional[Dict[str, str]] = None) -> Dict[str, Tuple[bool, str]]:
    """Each shortcut's name -> (on, why): checked against the code installed now and ``TXHEARTBEAT_SHORTCUTS``."""
    forced, _ = _forcedOff((os.environ if environ is None else environ).get("TXHEARTBEAT_SHORTCUTS", ""))
    verdicts: Dict[str, Tuple[bool, str]] = {}
    for shortcut in SHORTCUTS:
        if shortcut.name in forced:
            verdicts[shortcut.name] = (False, "turned off by TXHEARTBEAT_SHORTCUTS")
            continue
        if shortcut.saves and not _exists(shortcut.saves):
            verdicts[shortcut.name] = (False, f"{NOT_NEEDED} ({shortcut.saves} does not exist)")
            continue
        found = digest(shortcut.mirrors)
        if found is None:
            verdicts[shortcut.name] = (False, "the code it mirrors cannot be read")
        elif found in shortcut.verified:
            verdicts[shortcut.name] = (True, f"verified ({found})")
        else:
            verdicts[shortcut.name] = (False, f"the code it mirrors differs from every verified version ({found})")
    return verdicts


def versions() -> str:
    """The versions of what the shortcuts stand on, for the log and ``--version``."""
    import autobahn
    import twisted

    return f"Autobahn {autobahn.__version__}, Twisted {twisted.__version__}"


VERDICTS = check()
#: the names of the shortcuts in use in this process
ENABLED: FrozenSet[str] = frozenset(name for name, (on, _) in VERDICTS.items() if on)


def enabled(name: str) -> bool:
    """Whether the shortcut ``name`` is in use in this process."""
    if name not in VERDICTS:
        raise KeyError(name)
    return name in ENABLED


def report() -> str:
    """What ``txheartbeat --version`` prints: the versions, and each shortcut with its verdict."""
    import platform

    import txaio

    from . import __version__

    lines = [f"txheartbeat {__version__} (Python {platform.python_version()}, {versions()}, txaio {txaio.__version__})"]
    for name, (on, why) in VERDICTS.items():
        lines.append(f"  shortcut {name}: {'on' if on else 'off'}, {why}")
    return "\n".join(lines) + "\n"


def _report() -> None:
    _, unknown = _forcedOff(os.environ.get("TXHEARTBEAT_SHORTCUTS", ""))
    if unknown:
        _log.warn(
            "txheartbeat: TXHEARTBEAT_SHORTCUTS: {unknown} turn(s) nothing off: say off, or -name for any of {names}",
            unknown=", ".join(repr(u) for u in unknown),
            names=", ".join(s.name for s in SHORTCUTS),
        )
    off: List[str] = [
        f"{name} ({why})" for name, (on, why) in VERDICTS.items() if not on and not why.startswith(NOT_NEEDED)
    ]
    if off:
        _log.info(
            "txheartbeat: Autobahn's or Twisted's own code path is used for {count} shortcut(s) on {versions}: "
            "{shortcuts}; the protocol is the same, idle connections cost more CPU and memory, and frames "
            "wait in Twisted's buffer until the next reactor turn (a burst counts against maxBuffered sooner)",
            count=len(off),
            versions=versions(),
            shortcuts="; ".join(off),
        )


_report()
