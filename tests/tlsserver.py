"""
A TLS WebSocket echo server on loopback with a certificate made at test time.

The certificate is self-signed (its own root) for one DNS name, valid from
yesterday to tomorrow; :meth:`TLSEchoServer.trustingOptions` is a client
context that trusts exactly it, so a failure with any other context is a
verification failure.
"""

from __future__ import annotations

import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor as _reactor
from twisted.internet import ssl
from twisted.internet.defer import Deferred

from txheartbeat.testing import echoServerFactory


def selfSignedPEM(commonName: str, names: list) -> tuple:
    """A fresh EC key and a self-signed CA certificate (subject ``commonName``, subjectAltName ``names``, none: no such extension), as PEM ``(certificate, key)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(
        key, hashes.SHA256()
    )
    keyPem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), keyPem


def selfSigned(name: str) -> ssl.PrivateCertificate:
    """A fresh EC key and a self-signed CA certificate for DNS name ``name``."""
    certPem, keyPem = selfSignedPEM(name, [x509.DNSName(name)])
    return ssl.PrivateCertificate.loadPEM(certPem + keyPem)


class TLSEchoServer:
    """An Autobahn echo server behind TLS on ``127.0.0.1:0``, certificate for ``name``."""

    def __init__(self, name: str = "localhost") -> None:
        self.name = name
        self.certificate = selfSigned(name)
        self.listeningPort = _reactor.listenSSL(
            0, echoServerFactory(), self.certificate.options(), interface="127.0.0.1"
        )
        self.port: int = self.listeningPort.getHost().port

    def trustingOptions(self) -> Any:
        """A client context for ``name`` that trusts this server's certificate (and nothing else)."""
        return ssl.optionsForClientTLS(self.name, trustRoot=ssl.Certificate(self.certificate.original))

    def stop(self) -> Deferred:
        return self.listeningPort.stopListening()
