"""
A ``wss://`` client's check of the server's identity, made once per OpenSSL
context instead of once per connection (the "tlsIdentity" shortcut of
:mod:`txheartbeat._shortcuts`).

Twisted's ``ClientTLSOptions`` gives every connection its own verify
callback: a closure holding the connection's TLS protocol and the expected
identity, which pyOpenSSL wraps in a helper of its own (a cffi callback, a
list, closures).  That is about a dozen objects per connection for Python's
collector to walk, in reference cycles; and an attempt abandoned before the
server's certificate arrived leaves its whole TLS protocol in such a cycle,
freed only by a full pass.  The options txheartbeat makes for a host
(the default for a ``wss://`` URL, and ``clientTLSOptions``) have one context each, so the same
check is set once on that context: for the certificate at depth 0 the
server's identity is checked against the host name or IP address, as
Twisted's callback does, and a mismatch fails the connection through its TLS
protocol (OpenSSL's application data, which Twisted sets) with the same
``VerificationError``.  Options a user made stay as Twisted makes them.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, Tuple

from twisted.logger import Logger
from twisted.python.failure import Failure

from ._shortcuts import enabled

_log = Logger(namespace="txheartbeat")

#: id(options) -> (the options, weakly; the context that checks their identity), see :func:`lean`.
#: Looked up by identity: a wrapper equal to the options, or options with a
#: ``clientConnectionForTLS`` of their own, take Twisted's path.
_lean: Dict[int, Tuple[Any, Any]] = {}


def _checkingContext(options: Any) -> Any:
    """The context that checks the identity for ``options`` (those very options, not overridden), or ``None``."""
    entry = _lean.get(id(options))
    if entry is None or entry[0]() is not options or "clientConnectionForTLS" in vars(options):
        return None
    return entry[1]


def isLean(options: Any) -> bool:
    """Whether ``options`` (those very options) have their identity checked by their context."""
    return _checkingContext(options) is not None


def _identityCheck(serviceID: Any) -> Callable[..., bool]:
    """The context's verify callback: Twisted's per-connection ``_verifyCB``, with the protocol from the connection."""
    from twisted.internet._sslverify import VerificationError, extract_patterns, verify_service_identity

    def verify(connection: Any, certificate: Any, errno: int, depth: int, ok: Any) -> bool:
        result = bool(ok)
        if depth != 0:
            return result  # (only the server's own certificate names it)
        try:
            verify_service_identity(extract_patterns(certificate), [serviceID], [])
        except BaseException as e:
            # Fail closed: a certificate whose names cannot be read (service_identity's
            # CertificateError: no subjectAltName) is refused too, where Twisted's own
            # callback logs it and lets the handshake go on.
            result = False
            if not isinstance(e, VerificationError):
                _log.failure("txheartbeat: the server's certificate names cannot be checked; refused")
            try:
                connection.get_app_data().failVerification(Failure())
            except BaseException:  # (an exception out of an OpenSSL callback would be lost)
                _log.failure("txheartbeat: while failing a connection whose certificate was refused")
        return result

    return verify


def lean(options: Any) -> Any:
    """Set ``options``' identity check on its context, where the shortcut holds; ``options`` itself."""
    if not enabled("tlsIdentity") or type(options).__name__ != "ClientTLSOptions":
        return options
    try:
        from OpenSSL.SSL import VERIFY_FAIL_IF_NO_PEER_CERT, VERIFY_PEER
        from twisted.internet._sslverify import DNS_ID, IPAddress_ID

        context = options._createConnection.__self__.getContext()
        serviceID = (DNS_ID if options._hostnameIsDnsName else IPAddress_ID)(options._hostnameASCII)
        context.set_verify(VERIFY_PEER | VERIFY_FAIL_IF_NO_PEER_CERT, _identityCheck(serviceID))
    except Exception:  # pragma: no cover - (not the verified code after all: Twisted's own path)
        return options
    key = id(options)
    _lean[key] = (weakref.ref(options, lambda _: _lean.pop(key, None)), context)
    return options


def connectionFor(options: Any, tlsProtocol: Any) -> Any:
    """``options.clientConnectionForTLS(tlsProtocol)``, with no verify callback of its own if ``options`` is lean."""
    context = _checkingContext(options)
    if context is None:
        return options.clientConnectionForTLS(tlsProtocol)
    connection = options._createConnection(tlsProtocol)
    if connection.get_context() is not context:  # pragma: no cover - (not the context checked: Twisted's path)
        return options.clientConnectionForTLS(tlsProtocol)
    if options._sendServerName:
        connection.set_tlsext_host_name(options._hostnameBytes)
    return connection
