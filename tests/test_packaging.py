"""What the built package declares and ships: the version from one place, the typing marker, the tested range."""

import os
import re
from importlib import metadata
from pathlib import Path

import txheartbeat

ROOT = Path(__file__).resolve().parent.parent


def test_installed_version_is_the_package_version():
    """The installed distribution's version is txheartbeat.__version__ (setup.py reads it from there)."""
    assert metadata.version("txheartbeat") == txheartbeat.__version__


def test_package_ships_its_typing_marker_and_license():
    """py.typed is next to the modules, and the distribution carries its license."""
    assert (Path(txheartbeat.__file__).parent / "py.typed").is_file()
    files = [str(f) for f in metadata.files("txheartbeat") or []]
    assert any(re.search(r"LICEN[CS]E", f) for f in files), files


def test_tested_from_the_wheel_where_ci_says_so():
    """In CI's wheel runs (TXHEARTBEAT_FROM_WHEEL=1) txheartbeat comes from site-packages, never from the source tree."""
    if os.environ.get("TXHEARTBEAT_FROM_WHEEL") != "1":
        return
    where = Path(txheartbeat.__file__).resolve()
    assert "site-packages" in where.parts and where.parent != ROOT / "txheartbeat", where


def test_declared_pythons_are_the_ones_ci_runs():
    """The Python classifiers and python_requires agree with the floor and newest cells CI runs (.ci/run)."""
    meta = metadata.metadata("txheartbeat")
    pythons = sorted(
        c.rsplit(" :: ", 1)[1]
        for c in meta.get_all("Classifier") or []
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert pythons == ["3.10", "3.11", "3.12", "3.13"]
    assert meta["Requires-Python"] == ">=3.10"
    floors = dict(re.findall(r"^([a-z-]+)==([\d.]+)$", (ROOT / ".ci" / "constraints-floor.txt").read_text(), re.M))
    requires = " ".join(meta.get_all("Requires-Dist") or [])
    for name, version in floors.items():
        assert re.search(rf"\b{name}(\[[^\]]*\])?\s*\(?>={re.escape(version)}\b", requires, re.I), (name, requires)


def test_readme_states_the_tested_floors():
    """The README's "Supported versions" names the floors CI tests and links the support policy."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Supported versions", 1)[1].split("\n## ", 1)[0]
    floors = dict(re.findall(r"^([a-z-]+)==([\d.]+)$", (ROOT / ".ci" / "constraints-floor.txt").read_text(), re.M))
    for name in ("twisted", "autobahn", "txaio"):
        assert f"{floors[name]} and later" in section, name
    assert "Python 3.10 to 3.13" in section and "docs/support.md" in section
