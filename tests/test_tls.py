"""The TLS helpers on loopback: serverTLSOptions with listenSSL and endpoint strings, clientTLSOptions trusting a test CA."""

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet.endpoints import serverFromString

from txheartbeat import HeartbeatServerFactory, HeartbeatServerProtocol, clientTLSOptions, connect, serverTLSOptions

from .test_cli_tls import writePair
from .test_endpoints import echoOnce
from .test_integration import Waiter


class Echo(HeartbeatServerProtocol):
    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.sendMessage(payload, isBinary)


@pytest.mark.parametrize("how", ["listenSSL", "endpoint"])
@pytest_twisted.ensureDeferred
async def test_heartbeat_server_over_tls(tmp_path, how):
    """A HeartbeatServerFactory behind listenSSL(serverTLSOptions(...)) or an ssl: endpoint string echoes a wss:// client that trusts the test CA."""
    cert, key = writePair(tmp_path)
    factory = HeartbeatServerFactory("wss://localhost", reactor=_reactor)
    factory.protocol = Echo
    if how == "listenSSL":
        port = _reactor.listenSSL(0, factory, serverTLSOptions(cert, key), interface="127.0.0.1")
    else:
        endpoint = serverFromString(_reactor, f"ssl:0:interface=127.0.0.1:privateKey={key}:certKey={cert}")
        port = await endpoint.listen(factory)
    try:
        h = Waiter()
        d = connect(f"wss://localhost:{port.getHost().port}/", h, contextFactory=clientTLSOptions("localhost", cert))
        assert await echoOnce(h, d) == b"ping"
    finally:
        await port.stopListening()


def test_server_options_check_early(tmp_path):
    """serverTLSOptions raises ValueError naming both files when the key is not the certificate's."""
    cert, _ = writePair(tmp_path)
    _, otherKey = writePair(tmp_path, "other")
    with pytest.raises(ValueError, match="does not match the certificate"):
        serverTLSOptions(cert, otherKey)


def test_server_options_release_idle_buffers(tmp_path):
    """serverTLSOptions' context has OpenSSL release an idle connection's buffers (MODE_RELEASE_BUFFERS, which Twisted's CertificateOptions sets)."""
    from OpenSSL import SSL

    cert, key = writePair(tmp_path)
    context = serverTLSOptions(cert, key).getContext()
    assert context.set_mode(0) & SSL.MODE_RELEASE_BUFFERS  # (adds nothing, returns the mode)
