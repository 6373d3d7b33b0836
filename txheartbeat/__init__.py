"""
txheartbeat: keep Twisted/Autobahn WebSocket clients alive and honest.

Heartbeats when the line is idle, a silent peer declared dead within
``pingInterval + pongTimeout``, reconnects with backoff and jitter, and a
persistent handler whose hooks outlive every connection.
"""

from ._backoff import exponentialBackoff
from ._client import HeartbeatClientFactory, HeartbeatClientProtocol, connect
from ._errors import (
    ConnectionClosed,
    GaveUp,
    HandshakeError,
    HeartbeatError,
    HeartbeatTimeout,
    NotConnected,
    OpenTimeout,
    ProtocolError,
    SendQueueFull,
    StoreUnavailable,
    TLSRequired,
)
from ._handler import HeartbeatHandler, HeartbeatStats
from ._heartbeat import Heartbeat
from ._resume import ISessionStore, MemorySessionStore, ServerSession
from ._server import HeartbeatServerFactory, HeartbeatServerProtocol, ServerStats
from ._service import HeartbeatClientService
from ._tls import clientTLSOptions, serverTLSOptions

__version__ = "0.3.1"

__all__ = [
    "ConnectionClosed",
    "GaveUp",
    "HandshakeError",
    "Heartbeat",
    "HeartbeatClientFactory",
    "HeartbeatClientProtocol",
    "HeartbeatClientService",
    "HeartbeatError",
    "HeartbeatHandler",
    "HeartbeatServerFactory",
    "HeartbeatServerProtocol",
    "HeartbeatStats",
    "HeartbeatTimeout",
    "ISessionStore",
    "MemorySessionStore",
    "NotConnected",
    "OpenTimeout",
    "ProtocolError",
    "SendQueueFull",
    "ServerSession",
    "ServerStats",
    "StoreUnavailable",
    "TLSRequired",
    "clientTLSOptions",
    "connect",
    "exponentialBackoff",
    "serverTLSOptions",
]
