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


# Verified: Autobahn 22.4.2 to 26.11.1 and Twisted 22.10.0 to 26.10.0 (the floor and the
# newest, tested in CI).  Where a digest differs between them the diff was read: Autobahn's
# frame reading changed only for compressed data frames, its client handshake only in
# failing a bad response, Twisted's doWrite only in how it joins its buffers.
SHORTCUTS: Tuple[Shortcut, ...] = (
    Shortcut(
        "sendData",
        "frames go out without Autobahn's per-frame debug line; an empty send queue is a list",
        (
            "autobahn.websocket.protocol:WebSocketProtocol.sendData",
            "autobahn.websocket.protocol:WebSocketProtocol._send",
        ),
        frozenset({"1477596cfc9a1880"}),
    ),
    Shortcut(
        "dataReceived",
        "inbound bytes skip the debug line Autobahn's Twisted adapter formats",
        ("autobahn.twisted.websocket:WebSocketAdapterProtocol.dataReceived",),
        frozenset({"f24d81ce43eb0edc"}),
    ),
    Shortcut(
        "pongFrames",
        "a whole pong frame between frames is read without Autobahn's frame parser",
        (
            "autobahn.twisted.websocket:WebSocketAdapterProtocol._onPong",
            "autobahn.websocket.protocol:WebSocketProtocol._dataReceived",
            "autobahn.websocket.protocol:WebSocketProtocol.consumeData",
            "autobahn.websocket.protocol:WebSocketProtocol.processData",
            "autobahn.websocket.protocol:WebSocketProtocol.onFrameBegin",
            "autobahn.websocket.protocol:WebSocketProtocol.onFrameData",
            "autobahn.websocket.protocol:WebSocketProtocol.onFrameEnd",
            "autobahn.websocket.protocol:WebSocketProtocol.processControlFrame",
        ),
        frozenset({"6dbbf7f00471c209", "91744af425467fd3"}),
    ),
    Shortcut(
        "pingFrames",
        "ping frames are built without Autobahn's per-frame cffi masker",
        (
            "autobahn.websocket.protocol:WebSocketProtocol.sendPing",
            "autobahn.websocket.protocol:WebSocketProtocol.sendFrame",
        ),
        frozenset({"c2ab9375fb2eb509"}),
    ),
    Shortcut(
        "handshakeMemory",
        "what Autobahn keeps of the opening handshake is dropped once open",
        (
            "autobahn.websocket.protocol:WebSocketServerProtocol.processHandshake",
            "autobahn.websocket.protocol:WebSocketClientProtocol.processHandshake",
        ),
        frozenset({"5f9baaaf0086b9ab", "eaa78e89594eed1f"}),
    ),
    Shortcut(
        "socketWrites",
        "frames are written straight to an idle TCP socket and its progress read from Twisted's buffers",
        (
            "twisted.internet.abstract:FileDescriptor.write",
            "twisted.internet.abstract:FileDescriptor.doWrite",
            "twisted.internet.tcp:Connection.writeSomeData",
        ),
        frozenset({"7e660f1209267c00", "4c4c2b67abd78ba6"}),
    ),
    Shortcut(
        "failedConnects",
        "a failed TCP connect's transport is freed without a full GC pass",
        ("twisted.internet.tcp:BaseClient.doConnect",),
        frozenset({"a92d8bc166801013"}),
    ),
)


def _resolve(path: str) -> object:
    module, _, qualified = path.partition(":")
    value: object = importlib.import_module(module)
    for part in qualified.split("."):
        value = getattr(value, part)
    return value


class _Normalise(ast.NodeTransformer):
    """What a reformatting changes and behaviour does not: annotations, docstrings, message texts."""

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.returns = None
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            node.body = body[1:] or [ast.Pass()]
        return self.generic_visit(node)

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node.annotation = None
        return node

    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.AST:
        return ast.Constant("<text>")

    def visit_Call(self, node: ast.Call) -> ast.AST:
        # "...".format(...) reads as an f-string in newer releases: both are a message text
        function = node.func
        if (
            isinstance(function, ast.Attribute)
            and function.attr == "format"
            and isinstance(function.value, ast.Constant)
            and isinstance(function.value.value, str)
        ):
            return ast.Constant("<text>")
        return self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        return ast.Constant("<text>") if isinstance(node.value, str) else node


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


def digest(paths: Tuple[str, ...]) -> Optional[str]:
    """
    sha256 (first 16 hex digits) of the code of ``paths`` in order, read from
    their source without what formatting changes (layout, comments,
    annotations, docstrings, the texts of messages); ``None`` if any cannot
    be read.
    """
    try:
        trees = [ast.parse(textwrap.dedent(inspect.getsource(_resolve(path)))) for path in paths]  # type: ignore[arg-type]
    except (ImportError, AttributeError, OSError, TypeError, SyntaxError):
        return None
    code = "".join(_dump(_Normalise().visit(tree)) for tree in trees)
    return hashlib.sha256(code.encode("utf-8")).hexdigest()[:16]


def _forcedOff(setting: str) -> FrozenSet[str]:
    setting = setting.strip()
    if setting.lower() in ("off", "0", "none", "false"):
        return frozenset(s.name for s in SHORTCUTS)
    return frozenset(part.strip()[1:] for part in setting.split(",") if part.strip().startswith("-"))


def check(environ: Optional[Dict[str, str]] = None) -> Dict[str, Tuple[bool, str]]:
    """Each shortcut's name -> (on, why): checked against the code installed now and ``TXHEARTBEAT_SHORTCUTS``."""
    forced = _forcedOff((os.environ if environ is None else environ).get("TXHEARTBEAT_SHORTCUTS", ""))
    verdicts: Dict[str, Tuple[bool, str]] = {}
    for shortcut in SHORTCUTS:
        if shortcut.name in forced:
            verdicts[shortcut.name] = (False, "turned off by TXHEARTBEAT_SHORTCUTS")
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
    off: List[str] = [f"{name} ({why})" for name, (on, why) in VERDICTS.items() if not on]
    if off:
        _log.info(
            "txheartbeat: Autobahn's or Twisted's own code path is used for {count} shortcut(s) on {versions}: "
            "{shortcuts}; the behaviour is the same, only slower",
            count=len(off),
            versions=versions(),
            shortcuts="; ".join(off),
        )


_report()
