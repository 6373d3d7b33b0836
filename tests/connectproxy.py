"""
A small HTTP CONNECT proxy for the tests (Twisted, loopback only).

It reads one ``CONNECT host:port HTTP/1.1`` request with its headers, records
it, then either refuses it with a fixed status (``refuseWith``, e.g. 407 or
403) or opens a TCP connection to the target, answers ``200`` and relays
bytes both ways until either side closes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional

from twisted.internet import protocol
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

_REASONS = {
    400: "Bad Request",
    403: "Forbidden",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    502: "Bad Gateway",
}


@dataclass
class ConnectRequest:
    """One request as the proxy received it; header names are lower-cased."""

    method: str
    target: str
    version: str
    headers: Dict[str, str]
    #: the first bytes the client sent through the tunnel (empty if none, or refused)
    firstBytes: bytes = b""
    #: every byte relayed from the client to the target
    toTarget: List[bytes] = field(default_factory=list)

    @property
    def proxyAuthorization(self) -> Optional[str]:
        return self.headers.get("proxy-authorization")


class _Target(protocol.Protocol):
    """The proxy's connection to the CONNECT target; data from here goes back to the client."""

    def __init__(self, client: _Client) -> None:
        self.client = client

    def connectionMade(self) -> None:
        self.client.targetConnected(self)

    def dataReceived(self, data: bytes) -> None:
        if self.client.transport is not None:
            self.client.transport.write(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.client.proxy.tunnels.discard(self)
        if self.client.transport is not None:
            self.client.transport.loseConnection()


class _Client(protocol.Protocol):
    """A connection accepted from the client: one CONNECT request, then a tunnel."""

    def __init__(self, proxy: ConnectProxy) -> None:
        self.proxy = proxy
        self.buffer = b""
        self.request: Optional[ConnectRequest] = None
        self.target: Optional[_Target] = None

    def connectionMade(self) -> None:
        self.proxy.tunnels.add(self)

    def dataReceived(self, data: bytes) -> None:
        if self.target is not None:
            self._relay(data)
            return
        if self.request is not None:  # target not connected yet
            self.buffer += data
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head, self.buffer = self.buffer[:end].decode("latin-1"), self.buffer[end + 4 :]
        lines = head.split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
        except ValueError:
            self._answer(400)
            return
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.request = ConnectRequest(method, target, version, headers)
        self.proxy.requests.append(self.request)
        if method != "CONNECT":
            self._answer(405)
            return
        if self.proxy.refuseWith is not None:
            self._answer(self.proxy.refuseWith)
            return
        host, _, port = target.rpartition(":")
        self.transport.pauseProducing()
        factory = protocol.ClientFactory()
        factory.buildProtocol = lambda addr: _Target(self)  # type: ignore[method-assign]
        factory.clientConnectionFailed = lambda connector, reason: self._answer(502)  # type: ignore[method-assign]
        _reactor.connectTCP(host.strip("[]"), int(port), factory)

    def targetConnected(self, target: _Target) -> None:
        self.proxy.tunnels.add(target)
        self.target = target
        self.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        pending, self.buffer = self.buffer, b""
        if pending:
            self._relay(pending)
        self.transport.resumeProducing()

    def _relay(self, data: bytes) -> None:
        assert self.request is not None and self.target is not None
        if not self.request.firstBytes:
            self.request.firstBytes = data
        self.request.toTarget.append(data)
        self.target.transport.write(data)

    def _answer(self, status: int) -> None:
        reason = _REASONS.get(status, "Refused")
        extra = 'Proxy-Authenticate: Basic realm="test"\r\n' if status == 407 else ""
        self.transport.write(f"HTTP/1.1 {status} {reason}\r\n{extra}Content-Length: 0\r\n\r\n".encode("latin-1"))
        self.transport.loseConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.proxy.tunnels.discard(self)
        if self.target is not None and self.target.transport is not None:
            self.target.transport.loseConnection()


class ConnectProxy(protocol.Factory):
    """
    An HTTP CONNECT proxy listening on ``127.0.0.1:0``.

    ``refuseWith=None`` tunnels every CONNECT; a status (e.g. ``407``) answers
    every CONNECT with it and closes.  ``requests`` holds what was received.
    """

    def __init__(self, refuseWith: Optional[int] = None) -> None:
        self.refuseWith = refuseWith
        self.requests: List[ConnectRequest] = []
        self.tunnels: set = set()
        self.listeningPort = _reactor.listenTCP(0, self, interface="127.0.0.1")
        self.port: int = self.listeningPort.getHost().port

    @property
    def option(self) -> Dict[str, object]:
        """The ``proxy=`` option for txheartbeat/Autobahn that points here."""
        return {"host": "127.0.0.1", "port": self.port}

    def buildProtocol(self, addr: object) -> protocol.Protocol:
        return _Client(self)

    def stop(self) -> Deferred:
        """Stop listening and abort every connection still open on either side."""
        for p in list(self.tunnels):
            if p.transport is not None:
                p.transport.abortConnection()
        return self.listeningPort.stopListening()


class _MemoryConnectServer(protocol.Protocol):
    """For ``MemoryReactor.accept``: answers the CONNECT, then hands the tunnel to the inner server protocol."""

    def __init__(self, factory: MemoryConnectServerFactory) -> None:
        self.factory = factory
        self.buffer = b""
        self.inner: Optional[protocol.Protocol] = None

    def dataReceived(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.dataReceived(data)
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head, rest = self.buffer[:end].decode("latin-1"), self.buffer[end + 4 :]
        self.factory.requests.append(head)
        answer = self.factory.answer
        status = self.factory.refuseWith
        if status is not None:
            answer = f"HTTP/1.1 {status} {_REASONS.get(status, 'Refused')}\r\n\r\n".encode("latin-1")
        if answer is not None:
            self.transport.write(answer)
            self.transport.loseConnection()
            return
        self.transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        inner = self.factory.inner
        # MemoryReactor.accept put its clock on this factory; the WebSocket server must use it too.
        inner.reactor = self.factory.reactor
        inner._batched_timer = self.factory._batched_timer
        self.inner = inner.buildProtocol(self.transport.getPeer())
        self.inner.makeConnection(self.transport)
        if rest:
            self.inner.dataReceived(rest)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        if self.inner is not None:
            self.inner.connectionLost(reason)


class MemoryConnectServerFactory(protocol.Factory):
    """
    A CONNECT proxy and the server behind it in one, for ``MemoryReactor.accept``.

    ``refuseWith`` answers the CONNECT with that status and closes, ``answer``
    with those raw bytes; otherwise ``200``, then the tunnel is served by
    ``inner`` (e.g. ``echoServerFactory()``).
    ``requests`` holds each CONNECT request head as text.
    """

    reactor: object = None
    _batched_timer: object = None

    def __init__(
        self, inner: Optional[protocol.Factory] = None, refuseWith: Optional[int] = None, answer: Optional[bytes] = None
    ) -> None:
        self.inner = inner
        self.refuseWith = refuseWith
        self.answer = answer
        self.requests: List[str] = []

    def buildProtocol(self, addr: object) -> protocol.Protocol:
        return _MemoryConnectServer(self)
