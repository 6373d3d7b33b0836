"""
What the operating system knows about a connection's outbound progress.

The heartbeat asks this when it sends a heartbeat after writes of ours and
when a pong deadline would otherwise declare the peer dead (never per
message; an idle connection's heartbeats compute it, see
``HeartbeatMixin._outboundProgress``): have bytes of ours been acknowledged
by the peer's TCP since the last look, and is anything of ours still waiting
to go?

On Linux the answer comes from the socket: ``TCP_INFO``'s ``tcpi_bytes_acked``
(bytes the peer's TCP acknowledged) and ``SIOCOUTQ`` (bytes in the kernel send
queue, unsent or unacknowledged).  Elsewhere only Twisted's own write buffer
is visible: progress is then that buffer shrinking between two looks, which
proves our kernel accepted data (the peer's window was open), not that the
peer acknowledged it.
"""

from __future__ import annotations

import socket
import struct
import sys
from typing import Any, Optional, Tuple

from twisted.internet import tcp

from ._shortcuts import enabled

#: ``(position, backlog)``: ``position`` grows with outbound progress (compare
#: two samples of the same connection only); ``backlog`` is bytes of ours not
#: yet acknowledged (Linux) or not yet handed to the kernel (elsewhere).
Progress = Tuple[int, int]

# Twisted's TCP transports, whose buffers and socket are read directly where the
# "socketWrites" shortcut holds (connectSSL's transport is a protocol wrapper;
# startTLS sets TLS); otherwise none, and every transport takes the general walk.
_PLAIN_TCP = (tcp.Server, tcp.Client) if enabled("socketWrites") else ()

_TCP_INFO = getattr(socket, "TCP_INFO", None)
_BYTES_ACKED = struct.Struct("=Q")  # struct tcp_info.tcpi_bytes_acked, at offset 120 (Linux >= 4.1)
_BYTES_ACKED_AT = 120
_TCP_INFO_SIZE = 256

if sys.platform.startswith("linux"):  # pragma: no branch
    import fcntl
    import termios

    _OUTQ: Optional[int] = termios.TIOCOUTQ  # == SIOCOUTQ for TCP sockets
else:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]
    _OUTQ = None


def userBacklog(transport: Any) -> int:
    """Bytes written to ``transport`` (and any TLS layer above TCP) not yet handed to the kernel."""
    total = 0
    while transport is not None:
        # twisted.internet.abstract.FileDescriptor keeps a buffer, an offset and pending chunks.
        data = getattr(transport, "dataBuffer", None)
        if data is not None:
            total += len(data) - getattr(transport, "offset", 0) + getattr(transport, "_tempDataLen", 0)
        pending = getattr(transport, "_appSendBuffer", None)  # TLSMemoryBIOProtocol before/while paused
        if pending:
            total += sum(len(chunk) for chunk in pending)
        aggregated = getattr(getattr(transport, "_aggregator", None), "_buffer", None)  # TLS: writes of this turn
        if aggregated:
            total += sum(len(chunk) for chunk in aggregated)
        transport = getattr(transport, "transport", None)  # TLS over TCP: look at the TCP transport too
    return total


def tcpSocket(transport: Any) -> Optional[socket.socket]:
    """The TCP socket under ``transport`` (through a TLS layer), or ``None``."""
    while transport is not None:
        getHandle = getattr(transport, "getHandle", None)
        handle = getHandle() if getHandle is not None else None
        if isinstance(handle, socket.socket):
            return handle if handle.type == socket.SOCK_STREAM and handle.family != socket.AF_UNIX else None
        transport = getattr(transport, "transport", None)
    return None


def kernelProgress(sock: socket.socket) -> Optional[Progress]:
    """``(bytes acknowledged by the peer, bytes in our kernel send queue)``, or ``None`` where unknown."""
    if _TCP_INFO is None or _OUTQ is None:
        return None
    try:
        # The queue first: an acknowledgement arriving between the two reads
        # then errs towards "still queued" (a live peer waits), and a queue
        # read as empty means the count read after it is exact.
        (queued,) = struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"))
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _TCP_INFO_SIZE)
        if len(info) < _BYTES_ACKED_AT + _BYTES_ACKED.size:
            return None  # kernel older than 4.1
        (acked,) = _BYTES_ACKED.unpack_from(info, _BYTES_ACKED_AT)
    except OSError:
        return None
    return acked, queued


def outboundProgress(transport: Any) -> Optional[Progress]:
    """
    Sample a connection's outbound progress (see :data:`Progress`).

    ``None`` when the transport has neither a TCP socket nor a write buffer
    to look at (e.g. a test double).
    """
    if type(transport) in _PLAIN_TCP and not transport.TLS:
        # The common case: Twisted's TCP connection, its buffer and socket
        # read directly (as writeNow does).
        kernel = kernelProgress(transport.socket)
        if kernel is not None:
            return kernel[0], kernel[1] + len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    user = userBacklog(transport)
    sock = tcpSocket(transport)
    if sock is not None:
        kernel = kernelProgress(sock)
        if kernel is not None:
            acked, queued = kernel
            return acked, queued + user
    if getattr(transport, "dataBuffer", None) is None and getattr(transport, "transport", None) is None:
        return None
    # Only our own buffer is visible: its shrinking is the (weaker) progress.
    return -user, user
