"""
The browser's session wire format (``txheartbeat.resume.1``), sans I/O.

A browser cannot set handshake headers, send ping frames or see pongs, so
a session with one runs inside its messages.  The client offers the
subprotocol :data:`SUBPROTOCOL` (``Sec-WebSocket-Protocol``), then
:data:`PLAIN_SUBPROTOCOL`; a server with ``resume`` selects the first (one
without selects the second: the connection runs plain), and from then on every message of the connection, in
both directions, begins with one byte:

- ``d`` (0x64): data, the application's message follows (text in a text
  frame, bytes in a binary frame); numbered and acknowledged as in
  :mod:`txheartbeat._resume`;
- ``c`` (0x63): control, a small JSON object follows, always in a text frame.

Control messages (``received`` counts data messages delivered, this session):

- client, first message: ``{"type": "hello", "session": <token> | null, "received": n}``
- server, the answer: ``{"type": "welcome", "session": <token>, "received": n, "resumed": true | false}``
- either side: ``{"type": "ack", "received": n}``
- client heartbeat: ``{"type": "ping", "received": n}``, answered by
  ``{"type": "pong", "received": n}``

Unknown control types are ignored (later versions may add some); a message
with any other first byte, or a control that is not such an object, fails
the connection (1002).  See ``docs/wire.md``.
"""

from __future__ import annotations

import json
from typing import Any, Dict, NamedTuple, Optional

#: the Sec-WebSocket-Protocol that negotiates the browser's session format
SUBPROTOCOL = "txheartbeat.resume.1"
#: offered with it: what a txheartbeat server without resume selects, so that
#: the page runs plain (a browser fails a connection whose offered
#: subprotocols all went unanswered)
PLAIN_SUBPROTOCOL = "txheartbeat.plain"
#: the close code of a connection the page gives up on, keeping its session, where it
#: cannot close without a status code (a mini-program's SocketTask sends 1000 when
#: given none); any other code of 1000, 1001 or 3000 and above ends the session
ABANDON_CODE = 4990
#: the first byte of a data message and of a control message
DATA = b"d"
CONTROL = b"c"
_MAX_CONTROL = 1024  # bytes: a control message is a few dozen


class WireError(ValueError):
    """A message that breaks :data:`SUBPROTOCOL` (the connection fails with 1002)."""


class Control(NamedTuple):
    """A parsed control message; fields a type does not use are ``None``."""

    type: str
    received: Optional[int] = None
    session: Optional[str] = None
    resumed: Optional[bool] = None


def control(type: str, **fields: Any) -> bytes:
    """A control message's payload (text frame): ``c`` and compact JSON."""
    return CONTROL + json.dumps({"type": type, **fields}, separators=(",", ":")).encode("ascii")


def welcome(token: str, received: int, resumed: bool) -> bytes:
    """The server's answer to a hello."""
    return control("welcome", session=token, received=received, resumed=resumed)


def ack(received: int) -> bytes:
    """An acknowledgement: ``received`` data messages of the session were delivered."""
    return control("ack", received=received)


def pong(received: int) -> bytes:
    """The server's answer to a client heartbeat, with its own count."""
    return control("pong", received=received)


def checkToken(token: Any) -> Optional[str]:
    """A hello's token if well-formed (16 to 128 ASCII characters, as the header's) or ``None`` for none."""
    if token is None:
        return None
    if not isinstance(token, str) or not (16 <= len(token) <= 128) or not token.isascii():
        raise WireError("the session token must be null or 16 to 128 ASCII characters")
    return token


def parseControl(body: bytes) -> Control:
    """
    Parse a control message's body (after the ``c``).

    :raises WireError: if it is not a JSON object with a string ``type``, or
        its ``received`` is not an integer >= 0.
    """
    if len(body) > _MAX_CONTROL:
        raise WireError(f"control message of {len(body)} bytes (at most {_MAX_CONTROL})")
    try:
        value = json.loads(body)
    except ValueError:
        raise WireError("control message is not JSON") from None
    if not isinstance(value, dict) or not isinstance(value.get("type"), str):
        raise WireError("control message is not an object with a string type")
    fields: Dict[str, Any] = value
    received = fields.get("received")
    if received is not None and (isinstance(received, bool) or not isinstance(received, int) or received < 0):
        raise WireError(f"received must be an integer >= 0, got {received!r}")
    resumed = fields.get("resumed")
    return Control(
        fields["type"],
        received,
        checkToken(fields.get("session")),
        resumed if isinstance(resumed, bool) else None,
    )
