"""
Helpers every benchmark script and worker process shares (standard library
only: a worker may run against another txheartbeat checkout).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional


def say(**figures: Any) -> None:
    """Print one JSON line of figures (how a worker process reports)."""
    print(json.dumps(figures), flush=True)


def runWorker(script: str, *args: Any, timeout: float = 300, env: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Run ``script`` with ``args`` in a new Python process; its last JSON line (see :func:`say`)."""
    out = subprocess.run(
        [sys.executable, script, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"worker {args[0]} failed: {out.stderr[-2000:]}")
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def raiseFileLimit() -> None:
    """Open files up to the hard limit (10,000 connections need them)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pin(cpu: int) -> None:
    """Keep this process on one core so that client and server do not trade places."""
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {cpu % (os.cpu_count() or 1)})


def rssBytes() -> int:
    """This process's resident memory in bytes (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def cpuSeconds() -> float:
    """User and system CPU seconds this process has used."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def machine() -> str:
    """The machine line of a report: OS, architecture, cores and CPU model."""
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores ({cpu})"


def savedRuns(parser: Any) -> None:
    """``--json`` (save the raw figures) and ``--report`` (reprint a saved run's tables) on ``parser``."""
    parser.add_argument("--json", help="also save the raw figures to this file")
    parser.add_argument("--report", metavar="JSON", help="reprint the tables of a run saved with --json, and exit")


def reprinted(args: Any, markdown: Callable[[Dict[str, Any]], List[str]]) -> bool:
    """With ``--report``: print the tables of that saved run and say so."""
    if not args.report:
        return False
    print("\n".join(markdown(json.loads(Path(args.report).read_text()))))
    return True
