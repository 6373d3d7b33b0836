"""
TLS options from PEM files: a server's certificate and key, a client's trusted CA.

Both load and check everything when called (unreadable file, no certificate
in it, a key that does not match the certificate), so a mistake stops the
program before it listens or dials, with a message that names the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read the {what} {path!r}: {e.strerror or e}") from None


def _certificates(data: bytes, path: str, what: str) -> List[Any]:
    """The PEM certificates in ``data`` (``cryptography`` certificates), in file order; at least one."""
    from cryptography import x509

    try:
        found = x509.load_pem_x509_certificates(data)
    except ValueError:
        found = []
    if not found:
        raise ValueError(f"the {what} {path!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return found


def serverTLSOptions(certFile: str, keyFile: str) -> Any:
    """
    Server TLS options (Twisted ``CertificateOptions``) from PEM files, checked now.

    The context releases idle connections' buffers (``MODE_RELEASE_BUFFERS``)
    and offers ALPN ``http/1.1``.

    :param certFile: the server's certificate, then any intermediate
        certificates it needs (the chain is sent to clients as given).
    :param keyFile: its private key, unencrypted PEM (may be the same file).
    :raises ValueError: a file cannot be read or holds no certificate / key,
        or the key is not the certificate's.
    """
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from OpenSSL import SSL
    from twisted.internet import ssl

    chain = _certificates(_read(certFile, "certificate file"), certFile, "certificate file")
    keyData = _read(keyFile, "key file")
    try:
        key = load_pem_private_key(keyData, password=None)
    except TypeError:
        raise ValueError(f"the key file {keyFile!r} holds an encrypted key: give an unencrypted PEM key") from None
    except ValueError:
        raise ValueError(f"the key file {keyFile!r} holds no PEM private key (-----BEGIN PRIVATE KEY-----)") from None
    # ALPN http/1.1: WebSocket over TLS is HTTP/1.1, and browsers and curl offer
    # ALPN; Twisted's select callback (set on every context) answers a client
    # offer it shares nothing with by failing the handshake (alert 80).
    options = ssl.CertificateOptions(
        privateKey=key,  # type: ignore[arg-type]  # (pyOpenSSL takes cryptography keys; PKey is deprecated)
        certificate=chain[0],
        extraCertChain=chain[1:],
        acceptableProtocols=[b"http/1.1"],
    )
    try:
        options.getContext()  # (checks the key against the certificate; cached, used for every connection)
    except SSL.Error:
        raise ValueError(f"the key in {keyFile!r} does not match the certificate in {certFile!r}") from None
    # (Twisted's CertificateOptions already sets SSL.MODE_RELEASE_BUFFERS, so
    # OpenSSL frees an idle connection's read and write buffers; a test checks
    # that it still does.)
    return options


def clientTLSOptions(host: str, caFile: str) -> Any:
    """
    Client TLS options for ``host`` that trust the CA certificates in ``caFile`` (PEM) only.

    Verification stays on: the server's certificate must chain to one of
    them and be for ``host``.  For a self-signed certificate, give that
    certificate itself.

    :raises ValueError: ``caFile`` cannot be read or holds no certificate.
    """
    from OpenSSL import crypto
    from twisted.internet import ssl

    # (Twisted's trust roots are pyOpenSSL certificates)
    roots = [
        ssl.Certificate(crypto.X509.from_cryptography(c))
        for c in _certificates(_read(caFile, "CA file"), caFile, "CA file")
    ]
    return ssl.optionsForClientTLS(host, trustRoot=ssl.trustRootFromCertificates(roots))
