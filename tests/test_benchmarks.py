"""The benchmark script runs (it asserts nothing about speed: machines here are shared)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmarks_run(tmp_path):
    """`benchmarks/run.py --quick` completes and writes all four measurements."""
    out = tmp_path / "BENCHMARKS.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    for heading in (
        "## 1. Dead-peer detection",
        "## 2. Hot-path overhead",
        "## 3. Idle scale",
        "## 4. Reconnect storm",
    ):
        assert heading in text
    assert "| txheartbeat |" in text
