"""
Idle wss:// connections at both ends, beside plain ws:// (issue 21).

    python benchmarks/tls.py                     # N = 2,000 and 10,000, ping 5 s, 10 s windows, breakdown (~10 minutes)
    python benchmarks/tls.py --counts 2000       # one N
    python benchmarks/tls.py --breakdown 0       # no tracemalloc runs
    python benchmarks/tls.py --json tls.json     # also save the raw figures
    python benchmarks/tls.py --report tls.json   # reprint the tables of a saved run
    python benchmarks/tls.py --handshakes        # only the server's CPU per handshake (~5 s)

The machinery of ``benchmarks/scale.py`` (A and B there) with a certificate
made for the run (EC P-256, self-signed, for IP 127.0.0.1):

A. Server end: one Python server, N Node ``ws`` clients over ``wss://`` that
   trust the certificate.  txheartbeat ``HeartbeatServerFactory`` behind
   ``listenSSL(serverTLSOptions(...))``; Autobahn ``WebSocketServerFactory``
   behind Twisted's ``CertificateOptions`` (what an ``ssl:`` endpoint string or
   ``PrivateCertificate.options()`` makes).
B. Client end: N Python clients in one process, one Node ``ws`` ``wss://``
   server.  The clients verify it against the system's roots, the system's
   bundle and the certificate (``SSL_CERT_FILE``): txheartbeat with its default context,
   plain Autobahn (one shared factory) with one ``optionsForClientTLS``.
C. Per connection in the same runs at N = 2,000: bytes held by the C
   allocator (``mallinfo2``: OpenSSL's allocations and Python objects over
   512 bytes) and bytes traced by ``tracemalloc`` (Python's allocations) by site.

Each end is also run over plain ``ws://`` for comparison.  Nothing here asserts.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import scale  # benchmarks/scale.py: the workers, the node peers, the figures
from common import machine, raiseFileLimit, reprinted, savedRuns

#: issue 21's target: txheartbeat / Autobahn, idle wss memory per connection
TARGET = 0.5

SERVERS = {"txheartbeat": "txheartbeat `HeartbeatServerFactory`", "autobahn": "Autobahn `WebSocketServerFactory`"}
CLIENTS = {"txheartbeat": "txheartbeat `HeartbeatClientFactory` each", "shared": "plain Autobahn, one shared factory"}

Result = Dict[str, Any]


def writeCertificate(where: str, keyType: str = "P-256") -> None:
    """``cert.pem`` and ``key.pem`` in ``where``: a self-signed certificate for IP 127.0.0.1, EC P-256 or RSA 2048."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    key: Any = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if keyType == "RSA 2048"
        else ec.generate_private_key(ec.SECP256R1())
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    Path(where, "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    bundle = systemRoots()
    if bundle is not None:
        Path(where, "roots.pem").write_bytes(bundle + b"\n" + cert.public_bytes(serialization.Encoding.PEM))
    Path(where, "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


#: OpenSSL's ``SSL_OP_ALLOW_NO_DHE_KEX`` and ``SSL_OP_PREFER_NO_DHE_KEX`` (pyOpenSSL names neither).
ALLOW_NO_DHE_KEX, PREFER_NO_DHE_KEX = 1 << 10, 1 << 35

#: The handshakes measured: the certificate's key and whether a resumed handshake makes a key exchange.
HANDSHAKES = {
    "P-256": ("P-256", True),
    "RSA 2048": ("RSA 2048", True),
    "P-256, resumed without a key exchange (`psk_ke`, not applied)": ("P-256", False),
}


def handshakeCpu(keyType: str, count: int = 300, keyExchange: bool = True) -> Dict[str, float]:
    """
    Server CPU µs per TLS handshake, full and resumed (a session ticket), in
    one process over memory BIOs as Twisted drives them: ``serverTLSOptions``'
    context against a verifying client; only the server's calls are timed
    (``time.thread_time``), so load from elsewhere barely moves the figures.
    Without ``keyExchange`` both ends allow TLS 1.3's resumption without an
    (EC)DHE exchange and the server prefers it (what it would save; it gives
    up forward secrecy, so txheartbeat does not set it).
    """
    from OpenSSL import SSL

    sys.path.insert(0, str(scale.ROOT))
    from txheartbeat import serverTLSOptions

    with tempfile.TemporaryDirectory() as where:
        writeCertificate(where, keyType)
        server = serverTLSOptions(os.path.join(where, "cert.pem"), os.path.join(where, "key.pem")).getContext()
        client = SSL.Context(SSL.TLS_METHOD)
        client.load_verify_locations(os.path.join(where, "cert.pem"))
        client.set_verify(SSL.VERIFY_PEER)
        if not keyExchange:
            server.set_options(ALLOW_NO_DHE_KEX | PREFER_NO_DHE_KEX)
            client.set_options(ALLOW_NO_DHE_KEX)
    spent = [0.0]

    def serverCall(call: Callable[[], Any]) -> Any:
        t0 = time.thread_time()
        try:
            return call()
        finally:
            spent[0] += time.thread_time() - t0

    def handshake(session: Any) -> Any:
        s, c = SSL.Connection(server, None), SSL.Connection(client, None)
        served = 0  # bytes the server sent (a key exchange's share shows: ML-KEM's is over 1 KB)
        s.set_accept_state()
        c.set_connect_state()
        if session is not None:
            c.set_session(session)
        for _ in range(6):
            for who in (c, s):
                try:
                    serverCall(who.do_handshake) if who is s else who.do_handshake()
                except SSL.WantReadError:
                    pass
            for a, b in ((c, s), (s, c)):
                try:
                    data = serverCall(lambda a=a: a.bio_read(65536)) if a is s else a.bio_read(65536)
                except SSL.WantReadError:
                    continue
                serverCall(lambda b=b, d=data: b.bio_write(d)) if b is s else b.bio_write(data)
                served += len(data) if a is s else 0
        try:
            c.recv(1)  # (processes the tickets)
        except SSL.WantReadError:
            pass
        from OpenSSL._util import lib  # (pyOpenSSL has no session_reused())

        return c.get_session(), bool(lib.SSL_session_reused(s._ssl)), c, served

    out: Dict[str, float] = {}
    # (kept open: OpenSSL marks the session of a connection freed without a
    # TLS close not resumable)
    first, _, keep, _ = handshake(None)
    for name, offer in (("full", None), ("resumed", first)):
        spent[0] = 0.0
        done = [handshake(offer) for _ in range(count)]
        out[name] = 1e6 * spent[0] / count
        out[name + "Reused"] = sum(d[1] for d in done)
        out[name + "Served"] = sum(d[3] for d in done) / count
    return out


def preferNoKeyExchange() -> bool:
    """Whether OpenSSL has ``SSL_OP_PREFER_NO_DHE_KEX`` (3.3 and later; older ones ignore the bit)."""
    from OpenSSL import SSL

    return SSL.OPENSSL_VERSION_NUMBER >= 0x30300000


def handshakes() -> Dict[str, Dict[str, float]]:
    """Every row of :data:`HANDSHAKES` (the one without a key exchange only where OpenSSL can prefer it)."""
    return {
        name: handshakeCpu(keyType, keyExchange=kx)
        for name, (keyType, kx) in HANDSHAKES.items()
        if kx or preferNoKeyExchange()
    }


def systemRoots() -> Optional[bytes]:
    """The system's CA bundle (PEM), as OpenSSL's default paths or Debian's name it; None if not found."""
    import ssl

    for path in (ssl.get_default_verify_paths().cafile, "/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/cert.pem"):
        if path and os.path.isfile(path):
            return Path(path).read_bytes()
    return None


def measure(
    counts: Sequence[int],
    ping: float,
    window: float,
    breakdown: int,
    log: Callable[[str], None] = lambda line: None,
) -> Result:
    """Every row, one process pair at a time."""
    began = time.monotonic()
    raiseFileLimit()
    settle = 1.5 * ping
    node, why = scale.nodePeers()
    out: Result = {
        "counts": list(counts),
        "ping": ping,
        "window": window,
        "settle": settle,
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "versions": scale.versions(),
        "skipped": {},
        "runs": [],
    }
    if node is None:
        out["skipped"]["node"] = why
        return out
    out["versions"]["node"] = subprocess.run([node[0], "--version"], capture_output=True, text=True).stdout.strip()
    out["versions"]["ws"] = scale.wsVersion()
    out["versions"].update(tlsVersions())
    with tempfile.TemporaryDirectory(prefix="txheartbeat-tls-") as where:
        writeCertificate(where)
        roots = Path(where, "roots.pem")
        out["roots"] = roots.read_bytes().count(b"-----BEGIN CERTIFICATE-----") - 1 if roots.exists() else 0
        plan = []
        for n in counts:
            for tls in ("", where):
                plan += [("server", kind, n, tls, 0) for kind in SERVERS]
                plan += [("client", kind, n, tls, 0) for kind in CLIENTS]
        if breakdown:
            plan += [
                (end, kind, breakdown, where, 40)
                for end, kinds in (("server", SERVERS), ("client", CLIENTS))
                for kind in kinds
            ]
        for end, kind, n, tls, trace in plan:
            t0 = time.monotonic()
            try:
                r = scale.idleEnd(end, kind, n, ping, settle, 0.0 if trace else window, node, trace=trace, tls=tls)
            except Exception as e:
                r = {"error": str(e)[-2000:]}
            r.update(end=end, kind=kind, count=n, tls=bool(tls), trace=trace, seconds=time.monotonic() - t0)
            log(
                f"{end} {kind} N={n} {'wss' if tls else 'ws'}{' traced' if trace else ''}: {scale.summary(r)} ({r['seconds']:.0f} s)"
            )
            out["runs"].append(r)
    out["handshake"] = handshakes()
    log(f"handshake CPU: {out['handshake']}")
    out["wallSeconds"] = time.monotonic() - began
    return out


def tlsVersions() -> Dict[str, str]:
    from importlib.metadata import version

    from OpenSSL import SSL

    return {
        "pyOpenSSL": version("pyOpenSSL"),
        "cryptography": version("cryptography"),
        "OpenSSL": SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode().split()[1],
    }


def find(results: Result, end: str, kind: str, n: int, tls: bool, trace: bool = False) -> Any:
    for r in results["runs"]:
        if (r["end"], r["kind"], r["count"], r["tls"], bool(r["trace"])) == (end, kind, n, tls, trace):
            return r
    return None


def kib(value: Any) -> str:
    return "–" if value is None else f"{value / 1024:.2f} KiB"


def markdown(results: Result, heading: str = "## 8. TLS (issue 21)") -> List[str]:
    if "runs" not in results:  # (saved by --handshakes)
        return handshakeMarkdown(results["handshake"])
    lines = [heading, "", "### Idle wss:// connections at both ends", ""]
    by = f" by `{results['command']}`" if results.get("command") else ""
    lines.append(
        f"Measured {results['date']}{by} in {results.get('wallSeconds', 0):.0f} s on {results['machine']}; "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items())
        + "."
    )
    lines.append("")
    if "node" in results["skipped"]:
        return lines + [f"Skipped: {results['skipped']['node']}.", ""]
    ping = results["ping"]
    lines += [
        "As in section 3 (A and B), one run per row, ping and pong timeout "
        f"{ping:g} s: N idle connections in the process measured, its Node `ws` peer in another process pinned to "
        "the other core. **RSS** per connection = (RSS once all N are open and "
        f"{results['settle']:g} s more have passed − RSS before), after `gc.collect()`, / N; **malloc** the same for "
        "the bytes the C allocator has handed out (glibc `mallinfo2`: OpenSSL's allocations and Python objects "
        "over 512 bytes); **CPU** over the "
        f"{results['window']:g} s idle window that follows. wss:// uses a self-signed EC P-256 certificate for "
        "127.0.0.1, verified by every client: txheartbeat's server behind `serverTLSOptions`, Autobahn's behind "
        "Twisted's `CertificateOptions` (`ssl:` endpoint strings make the same); txheartbeat's clients with their "
        "default context, Autobahn's shared factory with one `optionsForClientTLS`, both trusting the "
        "certificate as one of the system's roots (`SSL_CERT_FILE`: the system's bundle, "
        f"{results.get('roots', '?')} certificates, and it).",
        "",
        "| end | N | peer | ws RSS | wss RSS | wss malloc | wss CPU s/min idle | open at the end | wss txheartbeat / Autobahn |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for end, kinds, other in (("server", SERVERS, "autobahn"), ("client", CLIENTS, "shared")):
        for n in results["counts"]:
            for kind, name in kinds.items():
                plain, tls = find(results, end, kind, n, False), find(results, end, kind, n, True)
                ratio = ""
                if kind == "txheartbeat":
                    peer = find(results, end, other, n, True)
                    if ok(tls) and ok(peer):
                        value = tls["rssPerConnection"] / peer["rssPerConnection"]
                        verdict = "met" if value <= TARGET else "**missed**"
                        ratio = f"**{value:.2f}** (≤ {TARGET:.2f}: {verdict})"
                lines.append(
                    f"| {end} | {n:,} | {name} | {kib(plain['rssPerConnection']) if ok(plain) else 'error'} | "
                    + (
                        f"{kib(tls['rssPerConnection'])} | {kib(tls.get('mallocPerConnection'))} | "
                        f"{tls['cpuPerMinute']:.2f} | {tls['openAtEnd']:,} / {tls['connections']:,} | {ratio} |"
                        if ok(tls)
                        else "error | | | | |"
                    )
                )
    lines.append("")
    traced = [r for r in results["runs"] if r["trace"] and ok(r)]
    if traced:
        n = traced[0]["count"]
        lines += [
            f"Where an idle wss:// connection's bytes go, N = {n:,} (the same runs under `tracemalloc`, whose own "
            "bookkeeping the RSS column here includes): "
            "C allocations (OpenSSL's SSL object, its session, record layer and BIOs) against Python's, "
            "and Python's top sites:",
            "",
            "| end | peer | RSS | malloc (C and large Python objects) | traced by tracemalloc (Python) |",
            "|---|---|---|---|---|",
        ]
        for r in traced:
            names = SERVERS if r["end"] == "server" else CLIENTS
            lines.append(
                f"| {r['end']} | {names[r['kind']]} | {kib(r['rssPerConnection'])} | "
                f"{kib(r.get('mallocPerConnection'))} | {kib(r['tracedPerConnection'])} |"
            )
        lines.append("")
        for r in traced:
            names = SERVERS if r["end"] == "server" else CLIENTS
            lines += [
                f"{r['end'].capitalize()} end, {names[r['kind']]}, top Python sites:",
                "",
                "| B/conn | objects/conn | site | source |",
                "|---|---|---|---|",
            ]
            for s in r["sites"][:8]:
                lines.append(
                    f"| {s['bytes'] / n:,.0f} | {s['count'] / n:.2f} | `{scale.escape(s['file'])}:{s['line']}` "
                    f"| `{scale.escape(s['source'][:90])}` |"
                )
            lines.append("")
    if results.get("handshake"):
        lines += handshakeMarkdown(results["handshake"])
    for r in results["runs"]:
        if not ok(r):
            last = r["error"].strip().splitlines()[-1] if r["error"].strip() else "?"
            lines += [f"Run failed ({r['end']} {r['kind']} N={r['count']}): `{scale.escape(last[:300])}`.", ""]
    return lines


def handshakeMarkdown(figures: Dict[str, Dict[str, float]]) -> List[str]:
    count = 300
    lines = [
        "### Server CPU per TLS handshake, full and resumed",
        "",
        f"{count} handshakes each in one process over memory BIOs, as Twisted drives them (`serverTLSOptions`' "
        "context, TLS 1.3, a verifying pyOpenSSL client offering OpenSSL's default groups), only the server's "
        "calls timed (`time.thread_time`); resumed: the client offers a session ticket from an earlier "
        "connection. Both issue two new tickets per handshake (OpenSSL's default). **Server sent** = bytes "
        "of the server's handshake and tickets, full / resumed.",
        "",
        "| certificate | full handshake | resumed | resumed / full | server sent |",
        "|---|---|---|---|---|",
    ]
    for keyType, f in figures.items():
        served = f"{f['fullServed']:,.0f} / {f['resumedServed']:,.0f} bytes" if "fullServed" in f else "–"
        lines.append(
            f"| {keyType} | {f['full']:,.0f} µs | {f['resumed']:,.0f} µs ({f['resumedReused']:,.0f} of {count} "
            f"resumed) | **{f['resumed'] / f['full']:.2f}** | {served} |"
        )
    return lines + [""]


def ok(r: Any) -> bool:
    return r is not None and "error" not in r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[2000, 10000], help="N (default 2,000 and 10,000)")
    parser.add_argument("--ping", type=float, default=5.0, help="pingInterval = pongTimeout in seconds (default 5)")
    parser.add_argument("--window", type=float, default=10.0, help="seconds of idle window (default 10)")
    parser.add_argument("--breakdown", type=int, default=2000, help="N of the tracemalloc runs (0: none)")
    parser.add_argument("--handshakes", action="store_true", help="only the server's CPU per TLS handshake")
    savedRuns(parser)
    args = parser.parse_args()
    if reprinted(args, markdown):
        return
    if args.handshakes:
        figures = handshakes()
        if args.json:
            Path(args.json).write_text(json.dumps({"handshake": figures}))
        print("\n".join(handshakeMarkdown(figures)))
        return
    results = measure(
        args.counts, args.ping, args.window, args.breakdown, log=lambda line: print(line, file=sys.stderr, flush=True)
    )
    results["command"] = "python benchmarks/tls.py" + "".join(
        f" {flag} {value}"
        for flag, value, default in (
            ("--counts", " ".join(map(str, args.counts)), "2000 10000"),
            ("--ping", f"{args.ping:g}", "5"),
            ("--window", f"{args.window:g}", "10"),
            ("--breakdown", str(args.breakdown), "2000"),
        )
        if value != default
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results))
    print("\n".join(markdown(results)))


if __name__ == "__main__":
    main()
