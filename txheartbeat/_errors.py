"""
Exceptions raised by txheartbeat or delivered to ``HeartbeatHandler.onError``.
"""

from __future__ import annotations

from typing import Any, Optional

from twisted.python.failure import Failure


class HeartbeatError(Exception):
    """Base class of every txheartbeat exception."""


class HeartbeatTimeout(HeartbeatError):
    """The peer sent nothing within ``pongTimeout`` after a heartbeat."""

    def __init__(self, idle: float) -> None:
        super().__init__(f"no traffic from the peer for {idle:.3f} s: peer is dead")
        self.idle = idle


class OpenTimeout(HeartbeatError):
    """The TCP connect plus opening handshake took longer than ``openTimeout``."""

    def __init__(self, timeout: float, phase: str) -> None:
        super().__init__(f"connection did not open within {timeout:g} s (stuck in {phase})")
        self.timeout = timeout
        self.phase = phase


class HandshakeError(HeartbeatError):
    """
    The server refused or botched the WebSocket upgrade, or an HTTP proxy
    refused the ``CONNECT`` (``proxy=``).

    ``status`` is the HTTP status code when the server answered with one
    other than 101 (e.g. 503), or the proxy with one outside 2xx (e.g. 407),
    else ``None``.
    """

    def __init__(self, reason: str, status: Optional[int] = None, retryAfter: Optional[float] = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        #: seconds from the answer's ``Retry-After`` header (503, 429), else ``None``
        self.retryAfter = retryAfter


class ConnectionClosed(HeartbeatError):
    """
    An open connection ended: ``code`` and ``reason`` as the close handshake
    gave them (``1006`` when it was not clean).  Passed to ``shouldRetry``,
    ``onReconnect`` and ``onGiveUp`` as the reason for a loss after open.
    """

    def __init__(self, code: Optional[int], reason: Optional[str], wasClean: bool) -> None:
        super().__init__(f"connection closed (code {code}{': ' + reason if reason else ''})")
        self.code = code
        self.reason = reason
        self.wasClean = wasClean


class ProtocolError(HeartbeatError):
    """
    The connection was failed for a protocol violation or a limit: e.g.
    ``code`` 1009 for a message above ``maxMessagePayloadSize``, 1007 for
    invalid UTF-8 in a text message, 1002 for a malformed frame.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{reason} (close code {code})")
        self.code = code
        self.reason = reason


class TLSRequired(HeartbeatError, ValueError):
    """
    A ``wss://`` factory was connected without TLS (e.g. with
    ``reactor.connectTCP``): nothing was sent, and nothing is retried.
    """


class NotConnected(HeartbeatError):
    """``send()`` was called with nothing to carry the message."""


class SendQueueFull(HeartbeatError):
    """``send()`` while not open found the bounded send queue full."""


class GaveUp(HeartbeatError):
    """
    Reconnecting stopped because ``attempts`` attempts failed in a row
    (``maxRetries + 1``: the first attempt and every retry).

    ``url`` is where it tried to connect (without user info or query: fit
    for logs), ``reason`` the last failure (a
    ``twisted.python.failure.Failure``, as ``onGiveUp(reason)`` gets
    it); both are ``None`` when not given, and both are in the message.
    """

    def __init__(self, attempts: int, url: Optional[str] = None, reason: Optional[Failure] = None) -> None:
        where = f" on {url}" if url else ""
        why = ""
        if reason is not None:
            error = reason.value if isinstance(reason, Failure) else reason
            why = f"; the last: {type(error).__name__}: {error}"
        super().__init__(f"gave up{where} after {attempts} failed attempt(s) in a row{why}")
        self.attempts = attempts
        self.url = url
        self.reason = reason

    def __reduce__(self) -> Any:
        # (rebuilt from its parts: the default would pass the message as ``attempts``)
        return (type(self), (self.attempts, self.url, self.reason))


class StoreUnavailable(HeartbeatError):
    """A networked session store (Redis) cannot be reached: nothing could be made durable."""
