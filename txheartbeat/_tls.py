"""
TLS options: a server's from PEM files, a client's (default, or trusting a CA
file), and TLS session resumption for a reconnecting client.

The PEM helpers load and check everything when called (unreadable file, no
certificate in it, a key that does not match the certificate), so a mistake
stops the program before it listens or dials, with a message that names the file.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.logger import Logger
from zope.interface import implementer

from ._tlsidentity import connectionFor, lean

_log = Logger(namespace="txheartbeat")


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

    The context releases idle connections' buffers (``MODE_RELEASE_BUFFERS``),
    issues and accepts session tickets (a reconnecting client resumes its
    session) and offers ALPN ``http/1.1``.

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
    # Session tickets: a reconnecting client resumes its session instead of a
    # full handshake (no signature by the server's key).  Stateless: the server
    # keeps nothing per session; the ticket key is random per process, in memory
    # only (docs/tls.md).
    options = ssl.CertificateOptions(
        privateKey=key,  # type: ignore[arg-type]  # (pyOpenSSL takes cryptography keys; PKey is deprecated)
        certificate=chain[0],
        extraCertChain=chain[1:],
        acceptableProtocols=[b"http/1.1"],
        enableSessionTickets=True,
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
    return lean(ssl.optionsForClientTLS(host, trustRoot=ssl.trustRootFromCertificates(roots)))


#: the default client options by host name, while some client uses them
_defaults: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


def defaultClientTLSOptions(host: str) -> Any:
    """
    The default ``wss://`` client options for ``host``: verified against the
    system's roots, shared by every client of ``host`` in this process.

    Twisted's ``optionsForClientTLS(host)`` makes one OpenSSL context per call,
    and loading the system's roots into it costs about 0.9 MB (Debian's 144 CA
    certificates): per client, that was most of a ``wss://`` client's memory.
    The options hold no per-connection state (Twisted uses one for every
    connection of a client), so clients of one host share them.  They accept
    session tickets (for servers that speak TLS 1.2; TLS 1.3 needs nothing).
    """
    options = _defaults.get(host)
    if options is None:
        from twisted.internet.ssl import optionsForClientTLS

        options = _defaults[host] = lean(
            optionsForClientTLS(host, extraCertificateOptions={"enableSessionTickets": True})
        )
    return options


@implementer(IOpenSSLClientConnectionCreator)
class ResumingClientTLS:
    """
    One client's TLS connection creator: ``creator``'s connections, the next
    offering the session of the last one that opened, if it was to the same
    ``(host, port)``.

    The session is kept only from a connection whose certificate was verified
    and whose WebSocket handshake completed (:meth:`keep`), and offered only
    through the same ``creator``, so with the same host name to verify and the
    same trust.  A server that does not know the session (restarted with a new
    ticket key, or the session expired) answers with a full handshake, verified
    as any; the session of that connection is kept instead.

    :param creator: an ``IOpenSSLClientConnectionCreator`` (Twisted's
        ``optionsForClientTLS``, :func:`clientTLSOptions`).
    :param target: ``() -> (host, port)`` the client is dialling now; a bound
        method is held weakly (the factory keeps this object, and a copy of the
        first factory's attributes may outlive it as class-level defaults).
    """

    __slots__ = ("creator", "_owner", "_target", "_session", "__weakref__")

    def __init__(self, creator: Any, target: Callable[[], Tuple[str, int]]) -> None:
        self.creator = creator
        # A bound method is held as a weak reference to its object and its
        # function (one object per client; a WeakMethod is four).
        owner = getattr(target, "__self__", None)
        self._owner: Optional[Callable[[], Any]] = None if owner is None else weakref.ref(owner)
        self._target: Callable[..., Any] = target if owner is None else target.__func__  # type: ignore[attr-defined]
        self._session: Optional[Tuple[Tuple[str, int], Any]] = None

    def _where(self) -> Optional[Tuple[str, int]]:
        if self._owner is None:
            return self._target()  # type: ignore[no-any-return]
        owner = self._owner()
        return None if owner is None else self._target(owner)  # type: ignore[no-any-return]

    def clientConnectionForTLS(self, tlsProtocol: Any) -> Any:
        """``creator``'s connection, with the last session set if it was to this ``(host, port)``."""
        connection = connectionFor(self.creator, tlsProtocol)
        # A server that goes away without a TLS close (killed, restarted, a
        # load balancer's reset) is an unexpected EOF, which OpenSSL answers
        # with a fatal alert that marks the session not resumable: the very
        # reconnect resumption is for.  The WebSocket layer frames every
        # message and reports such an end as unclean (1006) either way, so the
        # TLS layer's truncation check adds nothing here.  (Where pyOpenSSL or
        # OpenSSL lack the option, sessions resume after orderly ends only.)
        ignoreEOF = getattr(_SSL(), "OP_IGNORE_UNEXPECTED_EOF", 0)
        if ignoreEOF and hasattr(connection, "set_options"):
            connection.set_options(ignoreEOF)
        kept = self._session
        if kept is not None and kept[0] == self._where() and resumptionWorks():
            connection.set_session(kept[1])  # (before the handshake: Twisted starts it after this returns)
        return connection

    def keep(self, transport: Any) -> None:
        """Keep the session of ``transport``'s TLS connection (once open: TLS 1.3 tickets come after the handshake)."""
        getHandle = getattr(transport, "getHandle", None)
        connection = getHandle() if getHandle is not None else None
        getSession = getattr(connection, "get_session", None)
        session = getSession() if getSession is not None else None
        where = self._where()
        self._session = None if session is None or where is None else (where, session)

    def forget(self) -> None:
        """Offer no session on the next connection."""
        self._session = None


def _SSL() -> Any:
    from OpenSSL import SSL

    return SSL


def resumptionWorks() -> bool:
    """
    Whether a resumed session is safe with the Autobahn and pyOpenSSL in use.
    On a resumed session the server's certificate is known when the
    connection is made, and Autobahn then reads it; Autobahn before 23 reads
    it with pyOpenSSL's ``X509.get_extension``, which newer pyOpenSSL
    releases no longer have (the connection fails).  Checked on the code
    that runs, not on version numbers.
    """
    global _RESUMPTION_WORKS
    if _RESUMPTION_WORKS is None:
        import inspect

        from OpenSSL import crypto

        try:
            from autobahn.twisted import util

            source = inspect.getsource(util)
        except Exception:  # pragma: no cover - (no source to read: assume the newer code)
            source = ""
        _RESUMPTION_WORKS = hasattr(crypto.X509, "get_extension") or ".get_extension(" not in source
        if not _RESUMPTION_WORKS:
            _log.info(
                "txheartbeat: TLS session resumption off: this Autobahn reads a resumed session's certificate "
                "with X509.get_extension, which this pyOpenSSL lacks (Autobahn 23 or later does not)"
            )
    return _RESUMPTION_WORKS


_RESUMPTION_WORKS: Optional[bool] = None


def resuming(creator: Any, target: Callable[[], Tuple[str, int]]) -> Any:
    """``creator`` wrapped in a :class:`ResumingClientTLS` where it creates client connections, else as it is."""
    if isinstance(creator, ResumingClientTLS):
        creator = creator.creator  # (another client's: its sessions stay its own)
    if not IOpenSSLClientConnectionCreator.providedBy(creator):
        return creator
    return ResumingClientTLS(creator, target)


def _twistedConnectSSL(reactor: Any) -> bool:
    """Whether ``reactor.connectSSL`` is Twisted's own: wrap in a ``TLSMemoryBIOFactory``, then ``connectTCP``."""
    from twisted.internet import posixbase

    from ._shortcuts import enabled

    return (
        enabled("tlsWrapping")
        and posixbase.tls is not None
        # (as this reactor resolves it: a connectSSL replaced on the instance, a mock, stays in charge)
        and getattr(getattr(reactor, "connectSSL", None), "__func__", None) is posixbase.PosixReactorBase.connectSSL
    )


def connectTLS(reactor: Any, host: str, port: int, factory: Any, creator: Any, wrapper: Any = None) -> Any:
    """
    ``reactor.connectSSL(host, port, factory, creator, timeout=None)``, reusing ``wrapper``.

    Twisted's ``connectSSL`` wraps ``factory`` in a new ``TLSMemoryBIOFactory``
    at each call (with a closure, two cells and a bound method of ``creator``):
    an attempt's worth of objects for Python's young GC generation, thousands
    at once when every client reconnects.  Where the reactor's ``connectSSL``
    is Twisted's (the ``tlsWrapping`` shortcut: checked against its code),
    one wrapper serves every attempt of a client, as a connector's own
    ``connect()`` retries reuse theirs; elsewhere (a test's memory reactor, a
    reactor of its own) ``connectSSL`` is called.

    :param wrapper: what the last call returned (``None`` at first).
    :returns: the wrapper to pass next time (``None`` if ``connectSSL`` was used).
    """
    if not _twistedConnectSSL(reactor):
        reactor.connectSSL(host, port, factory, creator, timeout=None)
        return None
    if wrapper is None or wrapper.wrappedFactory is not factory or wrapper.creator is not creator:
        from twisted.protocols.tls import TLSMemoryBIOFactory

        wrapper = TLSMemoryBIOFactory(creator, True, factory)
        wrapper.creator = creator  # (which options it was made for: a client's may change between attempts)
    reactor.connectTCP(host, port, wrapper, timeout=None)
    return wrapper


def _leanAbortTypes() -> Tuple[type, ...]:
    """The TLS transports :func:`abortTLS` aborts itself (none where the ``tlsAbort`` shortcut is off)."""
    from ._shortcuts import enabled

    if not enabled("tlsAbort"):
        return ()
    from twisted.protocols import tls

    if enabled("tlsAbortBuffered"):  # (Twisted 23.8 and later: the subclass that buffers a client's small writes)
        return (tls.TLSMemoryBIOProtocol, tls.BufferingTLSTransport)
    return (tls.TLSMemoryBIOProtocol,)


_LEAN_ABORT: Optional[Tuple[type, ...]] = None  # (found at the first abort: no import of Twisted's TLS before)


def abortTLS(transport: Any) -> bool:
    """
    Abort ``transport`` if it is Twisted's TLS on a connection that ignores
    an unexpected end of the stream (txheartbeat's client connections),
    without the TLS close an abort throws away; ``False`` (nothing done) for
    any other transport or connection, one with a producer registered, or
    where the ``tlsAbort`` shortcut is off: there the reason the protocol
    hears would not be the same as Twisted's.

    Twisted's TLS ``abortConnection`` shuts the TLS connection down (OpenSSL
    makes a close alert, written into the TCP buffer the abort then
    discards), and its ``connectionLost`` reads the TLS connection again
    after the end (a second shutdown, an error or end-of-stream raised and
    caught): for a peer declared dead, work that cannot reach it.  Here the
    TLS layer is marked aborted, shut down (as OpenSSL records it: a session
    ended by us stays resumable, as after Twisted's shutdown) and lost, then
    the TCP connection is aborted: the protocol's ``connectionLost`` comes
    as before, with the TCP transport's ``ConnectionAborted``.
    """
    global _LEAN_ABORT
    if _LEAN_ABORT is None:
        _LEAN_ABORT = _leanAbortTypes()
    connection = getattr(transport, "_tlsConnection", None) if type(transport) in _LEAN_ABORT else None
    if connection is None or transport._producer is not None:
        return False  # (a producer's writes after the abort meet the shut-down connection: Twisted's reason stays)
    # Only where OpenSSL takes the end of the stream as an end (txheartbeat's client connections): elsewhere
    # Twisted's read after the end reports ConnectionLost, and ends the session, and so it stays.
    SSL = _SSL()
    ignoreEOF = getattr(SSL, "OP_IGNORE_UNEXPECTED_EOF", 0)
    if not ignoreEOF or not connection.set_options(0) & ignoreEOF:  # (set_options(0): the options, unchanged)
        return False
    transport._aborted = True
    transport.disconnecting = True
    transport._lostTLSConnection = True  # (its connectionLost: no read of the TLS connection after the end)
    connection.set_shutdown(connection.get_shutdown() | SSL.SENT_SHUTDOWN)
    transport.transport.abortConnection()
    return True
