"""
Autobahn's per-connection debug lines, formatted only when they are logged
(the "debugFormatting" shortcut of :mod:`txheartbeat._shortcuts`).

Every WebSocket connection, at both ends, makes Autobahn format two debug
lines whether or not debug logging is on: ``_connectionMade`` passes
``pformat`` of its whole configuration (about 100 µs, a quarter of what a
server spends on a plain reconnect) and a client's ``startHandshake``
``pformat`` of the transport's details.  While that connection's logger
drops debug lines, ``pformat`` called from those two functions returns a
:class:`Formatted` that formats the same text if anything ever asks for it;
every other caller (Autobahn's ``Timings.__str__``), and every call while
debug logging is on, gets ``pprint.pformat`` itself.

One race is left: the debug method is looked up by Autobahn before the
argument is made, and again here.  Debug logging turned off between the two
(a signal handler that changes the level, in the middle of that line) sends
one debug event carrying a :class:`Formatted`: its text is right, but a JSON
log observer stores the field as unpersistable.
"""

from __future__ import annotations

import sys
from pprint import pformat
from typing import Any, FrozenSet

from ._shortcuts import enabled


class Formatted:
    """``pformat(value)``, computed when formatted."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __format__(self, spec: str) -> str:
        return format(pformat(self.value), spec)

    def __str__(self) -> str:
        return pformat(self.value)

    __repr__ = __str__


def _formatter(lazyIn: FrozenSet[Any], logOff: Any) -> Any:
    def pformatWhenLogged(*args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and not kwargs:
            caller = sys._getframe(1)
            if caller.f_code in lazyIn:
                log = getattr(caller.f_locals.get("self"), "log", None)
                if getattr(log, "debug", None) is logOff:
                    return Formatted(args[0])
        return pformat(*args, **kwargs)

    return pformatWhenLogged


def install(logOff: Any) -> bool:
    """Put the formatter in Autobahn's protocol module (once; never over another's); whether it is there."""
    from autobahn.websocket import protocol

    current = getattr(protocol, "pformat", None)
    if getattr(current, "__qualname__", "") == "_formatter.<locals>.pformatWhenLogged":
        return True
    if not enabled("debugFormatting") or current is not pformat:
        return False
    lazyIn = frozenset(
        {protocol.WebSocketProtocol._connectionMade.__code__, protocol.WebSocketClientProtocol.startHandshake.__code__}
    )
    protocol.pformat = _formatter(lazyIn, logOff)  # type: ignore[attr-defined]
    return True
