"""`txheartbeat serve --tls-cert/--tls-key` and `connect --ca`: wss:// between real processes on loopback."""

import re
import ssl
import subprocess
import urllib.request
from pathlib import Path
from typing import Tuple

import pytest

from .test_cli import Running, Server, run
from .tlsserver import selfSigned


def writePair(directory: Path, name: str = "localhost") -> Tuple[str, str]:
    """A fresh self-signed certificate for ``name`` and its key, as two PEM files in ``directory``."""
    from cryptography.hazmat.primitives import serialization

    pair = selfSigned(name)
    cert, key = directory / f"{name}-cert.pem", directory / f"{name}-key.pem"
    cert.write_bytes(pair.original.to_cryptography().public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        pair.privateKey.original.to_cryptography_key().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert), str(key)


@pytest.fixture
def pair(tmp_path) -> Tuple[str, str]:
    return writePair(tmp_path)


def httpsGet(url: str, caFile: str) -> Tuple[int, str]:
    """Status and body of a GET over verified HTTPS (trusting ``caFile`` only), never through a proxy; ALPN offered as browsers do."""
    context = ssl.create_default_context(cafile=caFile)
    context.set_alpn_protocols(["h2", "http/1.1"])
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context))
    with opener.open(url, timeout=10) as response:
        return response.status, response.read().decode()


def test_serve_tls_and_connect_ca_round_trip(pair):
    """`serve --tls-cert/--tls-key` serves wss://, and `connect wss://localhost:PORT --ca CERT` sends a line and gets its echo."""
    cert, key = pair
    with Server("--tls-cert", cert, "--tls-key", key) as server:
        assert f"serving wss://127.0.0.1:{server.port}/" in server.banner
        assert f"status page: https://127.0.0.1:{server.port}/" in server.expect("status page:")
        with Running("connect", f"wss://localhost:{server.port}/", "--ca", cert, stdin=subprocess.PIPE) as client:
            client.expect("open")
            client.proc.stdin.write("over tls\n")
            client.proc.stdin.flush()
            client.expect("over tls", fd=1)
            client.proc.stdin.close()
            assert client.proc.wait(30) == 0


def test_connect_without_ca_verifies_and_refuses_self_signed(pair):
    """`connect wss://` without --ca verifies against the system's roots: a self-signed server is refused, nothing sent, exit 1."""
    cert, key = pair
    with Server("--tls-cert", cert, "--tls-key", key) as server:
        result = run("connect", f"wss://localhost:{server.port}/", "--max-retries", "0", input="secret\n")
    assert result.returncode == 1
    assert "certificate verify failed" in result.stderr
    assert "secret" not in result.stdout


def test_connect_ca_still_checks_the_host_name(pair):
    """`connect --ca CERT` to a name the certificate is not for (127.0.0.1 vs localhost) is refused: --ca trusts, it does not skip checks."""
    cert, key = pair
    with Server("--tls-cert", cert, "--tls-key", key) as server:
        result = run("connect", f"wss://127.0.0.1:{server.port}/", "--ca", cert, "--max-retries", "0", input="x\n")
    assert result.returncode == 1
    assert "giving up" in result.stderr


def test_serve_tls_status_page_script_and_metrics_over_https(pair):
    """With TLS the status page, /txheartbeat.js and --metrics-port are served over verified HTTPS (ALPN offered, as browsers do)."""
    pytest.importorskip("prometheus_client")
    import twisted

    if int(twisted.__version__.split(".")[0]) < 23:
        pytest.skip(
            f"serve refuses --metrics-port with TLS on Twisted {twisted.__version__} (its HTTPS connections were dropped)"
        )
    cert, key = pair
    with Server("--tls-cert", cert, "--tls-key", key, "--metrics-port", "0") as server:
        assert "metrics: https://" in server.expect("metrics:")
        status, page = httpsGet(f"https://localhost:{server.port}/", cert)
        assert status == 200 and "txheartbeat.js" in page
        status, script = httpsGet(f"https://localhost:{server.port}/txheartbeat.js", cert)
        assert status == 200 and "WebsocketHeartbeat" in script
        status, metrics = httpsGet(f"https://localhost:{server.metricsPort}/metrics", cert)
        assert status == 200 and 'txheartbeat_server_clients{server="serve"} 0.0' in metrics


def _bad(tmp_path: Path, case: str) -> Tuple[list, str]:
    cert, key = writePair(tmp_path)
    _, otherKey = writePair(tmp_path, "other")
    missing = str(tmp_path / "missing.pem")
    encrypted = tmp_path / "encrypted-key.pem"
    from cryptography.hazmat.primitives import serialization

    encrypted.write_bytes(
        serialization.load_pem_private_key(Path(key).read_bytes(), password=None).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    cases = {
        "cert alone": (["--tls-cert", cert], "--tls-cert and --tls-key go together"),
        "key alone": (["--tls-key", key], "--tls-cert and --tls-key go together"),
        "unreadable cert": (["--tls-cert", missing, "--tls-key", key], f"cannot read the certificate file {missing!r}"),
        "unreadable key": (["--tls-cert", cert, "--tls-key", missing], f"cannot read the key file {missing!r}"),
        "key as cert": (
            ["--tls-cert", key, "--tls-key", key],
            f"the certificate file {key!r} holds no PEM certificate",
        ),
        "cert as key": (["--tls-cert", cert, "--tls-key", cert], f"the key file {cert!r} holds no PEM private key"),
        "mismatched": (
            ["--tls-cert", cert, "--tls-key", otherKey],
            f"the key in {otherKey!r} does not match the certificate in {cert!r}",
        ),
        "encrypted key": (["--tls-cert", cert, "--tls-key", str(encrypted)], "holds an encrypted key"),
    }
    args, said = cases[case]
    return ["serve", "--port", "0", *args], said


@pytest.mark.parametrize(
    "case",
    [
        "cert alone",
        "key alone",
        "unreadable cert",
        "unreadable key",
        "key as cert",
        "cert as key",
        "mismatched",
        "encrypted key",
    ],
)
def test_serve_bad_tls_files_one_line_exit_2(tmp_path, case):
    """`serve` with a missing, unreadable, wrong-kind, encrypted or mismatched cert/key says which file and what, in one line, before listening; exit 2."""
    args, said = _bad(tmp_path, case)
    result = run(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("txheartbeat: error: ") and said in result.stderr
    assert result.stderr.count("\n") == 1 and "serving" not in result.stderr


@pytest.mark.parametrize(
    "url, said",
    [
        ("ws://localhost:1/", "--ca is for wss:// URLs only"),
        ("wss://localhost:1/", "cannot read the CA file"),
    ],
)
def test_connect_bad_ca_one_line_exit_2(tmp_path, url, said):
    """`connect --ca` with a ws:// URL or an unreadable file says so in one line and exits 2."""
    result = run("connect", url, "--ca", str(tmp_path / "missing.pem"))
    assert result.returncode == 2
    assert result.stderr.startswith("txheartbeat: error: ") and said in result.stderr
    assert re.fullmatch(r"[^\n]*\n", result.stderr)
