"""The API reference: every public name documented, and pydoctor builds it without a warning."""

import inspect
import subprocess
import sys

import pytest

import txheartbeat
import txheartbeat.metrics
import txheartbeat.testing

MODULES = (txheartbeat, txheartbeat.testing, txheartbeat.metrics)


def publicNames():
    for module in MODULES:
        names = getattr(module, "__all__", None) or [
            n
            for n, v in vars(module).items()
            if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
        ]
        for name in names:
            obj = getattr(module, name)
            yield f"{module.__name__}.{name}", obj
            if inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    # (functions and properties: option values some classes hold are not API)
                    if attr.startswith("_") or not (inspect.isfunction(value) or isinstance(value, property)):
                        continue
                    yield f"{module.__name__}.{name}.{attr}", value


def undocumented():
    missing = []
    for name, obj in publicNames():
        target = obj.fget if isinstance(obj, property) else obj
        if not (getattr(target, "__doc__", None) or "").strip():
            missing.append(name)
    return missing


def test_every_public_name_has_a_docstring():
    """Every name in the public modules' __all__, and every public method or property their classes define, has a docstring."""
    assert undocumented() == []


def test_pydoctor_builds_without_warnings(tmp_path):
    """The API reference builds with pydoctor, warnings as errors (what `tox -e docs` runs)."""
    pytest.importorskip("pydoctor", reason="pydoctor is in the test extras; install them")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pydoctor",
            "--project-name=txheartbeat",
            "--docformat=restructuredtext",
            f"--html-output={tmp_path}",
            "-q",
            "-W",
            "txheartbeat",
        ],
        capture_output=True,
        text=True,
        cwd=str(__import__("pathlib").Path(txheartbeat.__file__).parent.parent),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "txheartbeat.HeartbeatClientFactory.html").exists()
