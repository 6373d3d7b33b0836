"""The "tlsIdentity" shortcut: txheartbeat's own client options check the server's identity once per context, as strictly as Twisted's per-connection callback."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import reactor as _reactor
from twisted.internet import ssl

import txheartbeat._tlsidentity as tlsidentity
from txheartbeat import GaveUp, HeartbeatClientFactory, clientTLSOptions

from .conftest import NewGarbage, needsShortcut
from .test_cli_tls import writePair
from .test_integration import Waiter
from .test_tls import ResumingServer
from .tlsserver import selfSignedPEM


def writeSelfSigned(directory: Path, commonName: str, names: list) -> tuple:
    """:func:`selfSignedPEM` written as PEM files in ``directory``: (certificate file, key file)."""
    certPem, keyPem = selfSignedPEM(commonName, names)
    certFile, keyFile = (
        directory / f"{commonName}-{len(names)}-cert.pem",
        directory / f"{commonName}-{len(names)}-key.pem",
    )
    certFile.write_bytes(certPem)
    keyFile.write_bytes(keyPem)
    return str(certFile), str(keyFile)


def writeIPPair(directory: Path) -> tuple:
    """A self-signed certificate for IP address 127.0.0.1 only, and its key, as PEM files."""
    from cryptography import x509

    return writeSelfSigned(directory, "127.0.0.1", [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])


async def outcome(url: str, options) -> tuple:
    """Connect once with ``options``; (opened, the errors reported, whether the TLS connection shares its context's verify callback)."""
    h = Waiter()
    factory = HeartbeatClientFactory(url, h, reactor=_reactor, maxRetries=0)
    try:
        await factory.connect(options)
    except GaveUp:
        return False, [e[2] for e in h.events if e[1] == "onError"], None
    connection = h.protocol.transport.getHandle()
    shared = connection._verify_helper is connection.get_context()._verify_helper
    h.close()
    await h.whenClosed()
    return True, [], shared


@needsShortcut("tlsIdentity")
@pytest_twisted.ensureDeferred
async def test_right_name_opens_without_a_callback_per_connection(tmp_path, monkeypatch):
    """The server's certificate for the URL's name opens the connection, whose verify callback is its context's (Twisted makes one per connection)."""
    cert, key = writePair(tmp_path)
    server = ResumingServer(cert, key)
    try:
        opened, errors, shared = await outcome(f"wss://localhost:{server.number}/", clientTLSOptions("localhost", cert))
        assert opened and errors == [] and shared
        monkeypatch.setattr(tlsidentity, "enabled", lambda name: False)
        opened, errors, shared = await outcome(f"wss://localhost:{server.number}/", clientTLSOptions("localhost", cert))
        assert opened and errors == [] and not shared  # (without the shortcut: Twisted's own)
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize("lean", [True, False], ids=["context check", "Twisted's per-connection check"])
async def test_another_name_or_address_is_refused(tmp_path, monkeypatch, lean):
    """A trusted certificate for another name, or for a name where the URL has an address, fails with VerificationError; never opens."""
    from service_identity import VerificationError

    if not lean:
        monkeypatch.setattr(tlsidentity, "enabled", lambda name: False)
    cert, key = writePair(tmp_path, "other.example")
    server = ResumingServer(cert, key)
    try:
        for host in ("localhost", "127.0.0.1"):
            options = clientTLSOptions(host, cert)
            assert tlsidentity.isLean(options) == (lean and tlsidentity.enabled("tlsIdentity"))
            opened, errors, _ = await outcome(f"wss://{host}:{server.number}/", options)
            assert not opened and any(isinstance(e, VerificationError) for e in errors), errors
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_an_address_certificate_is_checked_by_address(tmp_path):
    """A certificate naming IP 127.0.0.1 opens wss://127.0.0.1 and is refused for wss://localhost."""
    from service_identity import VerificationError

    cert, key = writeIPPair(tmp_path)
    server = ResumingServer(cert, key)
    try:
        opened, errors, _ = await outcome(f"wss://127.0.0.1:{server.number}/", clientTLSOptions("127.0.0.1", cert))
        assert opened and errors == []
        opened, errors, _ = await outcome(f"wss://localhost:{server.number}/", clientTLSOptions("localhost", cert))
        assert not opened and any(isinstance(e, VerificationError) for e in errors), errors
    finally:
        await server.stop()


@pytest_twisted.ensureDeferred
async def test_an_untrusted_certificate_for_the_right_name_is_refused(tmp_path):
    """The identity check does not replace the chain check: a certificate for the name, from a CA not trusted, fails."""
    from OpenSSL import SSL

    cert, key = writePair(tmp_path)
    other, _ = writePair(tmp_path / "..", "localhost")  # another self-signed certificate for the same name
    server = ResumingServer(cert, key)
    try:
        opened, errors, _ = await outcome(f"wss://localhost:{server.number}/", clientTLSOptions("localhost", other))
        assert not opened and any(isinstance(e, SSL.Error) for e in errors), errors
    finally:
        await server.stop()


@needsShortcut("tlsIdentity")
@pytest_twisted.ensureDeferred
async def test_an_attempt_abandoned_in_the_handshake_leaves_no_tls_protocol_in_a_cycle(tmp_path):
    """An attempt given up on (openTimeout) before the server's certificate came leaves its TLS protocol to reference counting."""
    from OpenSSL import SSL
    from twisted.internet import protocol
    from twisted.protocols.tls import TLSMemoryBIOProtocol

    cert, _ = writePair(tmp_path)
    mute = _reactor.listenTCP(0, protocol.Factory.forProtocol(protocol.Protocol), interface="127.0.0.1")
    garbage = NewGarbage()
    try:
        handlers = [Waiter() for _ in range(3)]
        for h in handlers:
            factory = HeartbeatClientFactory(
                f"wss://localhost:{mute.getHost().port}/", h, reactor=_reactor, openTimeout=0.2, maxRetries=0
            )
            factory.connect(clientTLSOptions("localhost", cert)).addErrback(lambda f: None)
        for h in handlers:
            await h.whenClosed()
        # (A context's own helpers are pyOpenSSL's cycles, one set per context: not counted.)
        left = garbage.found(lambda o: isinstance(o, (TLSMemoryBIOProtocol, SSL.Connection)))
        assert left == []
    finally:
        garbage.close()
        await mute.stopListening()


def test_options_a_user_made_are_left_as_twisted_made_them():
    """Only txheartbeat's own options are made lean; a user's optionsForClientTLS keeps Twisted's per-connection check."""
    theirs = ssl.optionsForClientTLS("localhost")
    assert not tlsidentity.isLean(theirs)
    from txheartbeat._tls import defaultClientTLSOptions

    ours = defaultClientTLSOptions("lean.example")
    assert tlsidentity.isLean(ours) == tlsidentity.enabled("tlsIdentity")


def writeNoSANPair(directory: Path, commonName: str = "localhost") -> tuple:
    """A self-signed certificate naming ``commonName`` in its subject only (no subjectAltName), and its key."""
    return writeSelfSigned(directory, commonName, [])


@needsShortcut("tlsIdentity")
@pytest_twisted.ensureDeferred
async def test_a_certificate_without_names_is_refused(tmp_path):
    """A trusted certificate with no subjectAltName (a subject name only) is refused: its names cannot be checked (fail closed)."""
    cert, key = writeNoSANPair(tmp_path, "evil.example")
    server = ResumingServer(cert, key)
    try:
        opened, errors, _ = await outcome(f"wss://localhost:{server.number}/", clientTLSOptions("localhost", cert))
        assert not opened and errors, errors
    finally:
        await server.stop()


def test_wrappers_overrides_and_unhashable_creators_take_twisteds_path():
    """Only those very options are lean: an equal wrapper, an instance override, an unhashable creator go through their own clientConnectionForTLS."""
    from dataclasses import dataclass

    from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
    from zope.interface import implementer

    from txheartbeat._tls import defaultClientTLSOptions

    ours = defaultClientTLSOptions("wrapped.example")
    called = []

    class Wrapper:
        def __eq__(self, other):
            return other is ours or other is self

        def __hash__(self):
            return hash(ours)

        def clientConnectionForTLS(self, protocol):
            called.append("wrapper")
            return "wrapper's"

    assert tlsidentity.connectionFor(Wrapper(), object()) == "wrapper's"
    ours.clientConnectionForTLS = lambda protocol: called.append("override") or "override's"
    try:
        assert tlsidentity.connectionFor(ours, object()) == "override's"
    finally:
        del ours.clientConnectionForTLS

    @implementer(IOpenSSLClientConnectionCreator)
    @dataclass
    class Mine:
        name: str

        def clientConnectionForTLS(self, protocol):
            called.append("mine")
            return "mine"

    assert tlsidentity.connectionFor(Mine("x"), object()) == "mine"
    assert called == ["wrapper", "override", "mine"]
