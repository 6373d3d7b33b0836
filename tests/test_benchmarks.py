"""The benchmark script runs (it asserts nothing about speed: machines here are shared)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .cdp import findChromium

ROOT = Path(__file__).resolve().parent.parent


def benchmark(script: str, *args: str) -> subprocess.CompletedProcess:
    """``python benchmarks/SCRIPT.py ARGS`` with this checkout's txheartbeat, its output captured (10 minutes at most)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / f"{script}.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_quick_benchmarks_run(tmp_path):
    """`benchmarks/run.py --quick` completes and writes all four measurements."""
    out = tmp_path / "BENCHMARKS.md"
    result = benchmark("run", "--quick", "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    for heading in (
        "## 1. Dead-peer detection",
        "## 2. Hot-path overhead",
        "## 3. Idle scale (both ends) and frozen-at-once detection",
        "## 4. Reconnect storm",
    ):
        assert heading in text
    assert "| txheartbeat |" in text
    section3 = text.split("## 3.", 1)[1].split("## 4.", 1)[0]
    if shutil.which("node") and "npm" not in section3:
        # Section 3's Node-based parts ran (without node, or ws and npm to fetch it, they are skipped with the reason).
        for part in ("### A. Server end", "### B. Client end", "### D. Frozen at once"):
            assert part in text
        assert "Run failed" not in section3


@pytest.mark.skipif(findChromium() is None, reason="no Chromium found; .ci/run installs Debian's chromium")
def test_quick_browser_benchmark_runs():
    """`benchmarks/browser.py --quick` completes and prints section 7 with its four parts, txheartbeat.js measured in each."""
    result = benchmark("browser", "--quick")
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    assert text.startswith("## 7. Browser end (issue 20) (--quick)")
    for part in ("(a) Dead peer", "(b) 100 numbered messages", "(c) Reconnect storm", "(d) Size"):
        assert part in text
    dead = text.split("(a) Dead peer", 1)[1].split("(b) ", 1)[0]
    assert re.search(r"^\| txheartbeat\.js \| .+ \| 1 of 1 \|$", dead, re.MULTILINE), dead  # its onclose came
    assert "| txheartbeat.js `resume: true` | 0 | 0 | yes | 0 | 0 | yes |" in text
    assert "| txheartbeat.js | Chromium |" in text and "| txheartbeat.js |" in text.split("(d) Size")[1]


def test_quick_sessions_benchmark_runs(redis):
    """`benchmarks/sessions.py --quick` (kill -9 of a worker, memory and Redis stores) completes and prints its table."""
    del redis  # (only so that the test skips, saying why, without redis-server; the script starts its own)
    result = benchmark("sessions", "--quick", "--clients", "10", "--duration", "6")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| kill9 |")]
    assert [row.split("|")[2].strip() for row in rows] == ["memory", "redis-write"]
    redisRow = rows[1].split("|")
    assert redisRow[3].strip() == "0 / 0"  # nothing lost with the Redis store, silently or reported


def test_quick_frozen_benchmark_runs():
    """`benchmarks/frozen.py` at a small size prints one row per run and scheme, every client judged (or says why it skipped)."""
    result = benchmark("frozen", "--runs", "1", "--count", "200", "--ping", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    text = result.stdout
    assert text.startswith("### Frozen at once, run after run, ws:// and wss://")
    if "Skipped:" in text:
        assert not shutil.which("node") or "npm" in text, text
        return
    rows = re.findall(r"^\| 1 \| (wss?://) \| (\S+) / 200 \|", text, re.MULTILINE)
    assert rows == [("ws://", "200"), ("wss://", "200")], text
    assert "On time in every respect: ws://" in text and "wss://" in text


def opensslPrefersNoKeyExchange():
    from OpenSSL import SSL

    return SSL.OPENSSL_VERSION_NUMBER >= 0x30300000  # (as benchmarks/tls.py's preferNoKeyExchange)


@pytest.mark.skipif(not opensslPrefersNoKeyExchange(), reason="OpenSSL before 3.3 has no SSL_OP_PREFER_NO_DHE_KEX")
def test_handshake_benchmark_measures_a_resumption_without_a_key_exchange():
    """`benchmarks/tls.py --handshakes`: every handshake resumed where it says so, and the `psk_ke` row really made no
    key exchange (its server sent no key share: over 1 KB less with OpenSSL's default hybrid group, 32 bytes with X25519)."""
    result = benchmark("tls", "--handshakes")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = re.findall(
        r"^\| ([^|]+) \| .* \((\d+) of 300 resumed\) \| .* \| ([\d,]+) / ([\d,]+) bytes \|$", result.stdout, re.M
    )
    served = {name: (int(full.replace(",", "")), int(resumed.replace(",", ""))) for name, _, full, resumed in rows}
    assert len(rows) == 3 and all(reused == "300" for _, reused, _, _ in rows), result.stdout
    plain, withoutKx = served["P-256"], served["P-256, resumed without a key exchange (`psk_ke`, not applied)"]
    assert withoutKx[0] == pytest.approx(plain[0], abs=8)  # the full handshakes alike
    assert withoutKx[1] <= plain[1] - 32, result.stdout
