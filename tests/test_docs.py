"""The documentation: every public name has a docstring, pydoctor builds without a warning, and the README and docs/*.md hold together (whole tables, every hook and option listed, examples that run as written)."""

import inspect
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Set

import pytest
import pytest_twisted

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


# The README and docs/*.md as a reader sees them -----------------------------------------

ROOT = Path(__file__).resolve().parent.parent  # (the tree's pages, also when txheartbeat is an installed wheel)
PACKAGE_IN_TREE = ROOT / "txheartbeat"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@dataclass
class Table:
    """A Markdown table: where it is, the heading it sits under, and its rows' cells (header first)."""

    page: str
    line: int
    heading: str
    rows: List[List[str]] = field(default_factory=list)
    problems: List[str] = field(default_factory=list)


def cells(row: str) -> List[str]:
    """The cells of a table row: split on the pipes outside code spans and not escaped."""
    out, cell, code, i = [], "", False, 0
    body = row.strip()
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") and not body.endswith("\\|") else body
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            cell += body[i : i + 2]
            i += 2
            continue
        if char == "`":
            code = not code
        if char == "|" and not code:
            out.append(cell.strip())
            cell = ""
        else:
            cell += char
        i += 1
    out.append(cell.strip())
    return out


def tables(path: Path) -> List[Table]:
    """Every table of a page (outside fenced code), with what is wrong with its shape."""
    lines = path.read_text().splitlines()
    found: List[Table] = []
    heading, fenced, i = "", False, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            heading = line.lstrip("#").strip()
        elif not fenced and line.startswith("|"):
            table = Table(path.name, i + 1, heading)
            if i > 0 and lines[i - 1].strip():
                table.problems.append("no blank line before it (a paragraph runs into it)")
            while i < len(lines) and lines[i].startswith("|"):
                table.rows.append(cells(lines[i]))
                i += 1
            if i < len(lines) and lines[i].strip():
                table.problems.append(f"no blank line after it: {lines[i]!r} runs on from its last row")
            if len(table.rows) < 2 or not all(re.fullmatch(r":?-{3,}:?", c) for c in table.rows[1]):
                table.problems.append("no header and --- separator: rows outside a table")
            widths = {len(row) for row in table.rows}
            if len(widths) > 1:
                table.problems.append(f"rows of different widths {sorted(widths)}")
            found.append(table)
            continue
        i += 1
    return found


def names(cell: str) -> List[str]:
    """The names in a cell's code spans: "`onClose(wasClean, code, reason)`, `x`" -> ["onClose", "x"]."""
    return [re.split(r"[(\s]", span, maxsplit=1)[0] for span in re.findall(r"`([^`]+)`", cell)]


def documented(kind: str, under: str = "") -> Set[str]:
    """The names in the first column of the README's tables headed ``kind``, under a heading containing ``under``."""
    return {
        name
        for table in tables(ROOT / "README.md")
        if table.rows and table.rows[0][0] == kind and under in table.heading.lower()
        for row in table.rows[2:]
        for name in names(row[0])
    }


def keywordOnly(function) -> Set[str]:
    return {p.name for p in inspect.signature(function).parameters.values() if p.kind == p.KEYWORD_ONLY}


def test_markdown_tables_are_whole():
    """Every table in README.md and docs/*.md has a header and separator, rows of one width, and blank lines around it (no paragraph splits or runs into it)."""
    problems = [f"{t.page}:{t.line} ({t.heading}): {p}" for page in PAGES for t in tables(page) for p in t.problems]
    assert problems == []
    assert len(tables(ROOT / "README.md")) >= 4  # (the parser finds them)


def test_the_table_check_catches_a_paragraph_inside_a_table(tmp_path):
    """The table check reports the README's old defect: a paragraph between two rows of the hooks table."""
    page = tmp_path / "page.md"
    page.write_text("| hook | when |\n|---|---|\n| `a()` | x |\n\nA paragraph.\n| `b()` | y |\n\nText.\n")
    problems = [p for t in tables(page) for p in t.problems]
    assert any("separator" in p for p in problems) and any("blank line before" in p for p in problems)


def test_every_hook_and_option_is_in_a_readme_table():
    """Every public hook of HeartbeatHandler is in the README's hooks table, every client option (connect() included) in the client's options table and every server option in the server's."""
    hooks = {
        name for name, value in vars(txheartbeat.HeartbeatHandler).items() if name.startswith("on") and callable(value)
    }
    assert hooks and hooks - documented("hook") == set()
    client = keywordOnly(txheartbeat.HeartbeatClientFactory.__init__) | keywordOnly(txheartbeat.connect)
    assert "pingInterval" in client and client - documented("option", "client") == set()
    server = keywordOnly(txheartbeat.HeartbeatServerFactory.__init__)
    assert "allowedOrigins" in server and server - documented("option", "server") == set()


def pythonBlocks() -> List[str]:
    text = (ROOT / "README.md").read_text()
    return [block.split("```", 1)[0] for block in text.split("```python\n")[1:]]


def test_readme_server_example_is_examples_server_py():
    """The server shown in the README is examples/server.py as it runs (and is tested), word for word."""
    (shown,) = [block for block in pythonBlocks() if "class Relay(" in block]
    assert len(shown.splitlines()) > 40
    assert shown in (ROOT / "examples" / "server.py").read_text()


@pytest.mark.parametrize("server", ["serve", "examples/server.py"])
@pytest_twisted.ensureDeferred
async def test_readme_first_example_runs_as_written(tmp_path, server):
    """The README's first example, saved as chat.py, runs as written against `txheartbeat serve` and against examples/server.py: echoes, a clean close, exit 0."""
    from twisted.internet.error import ProcessDone

    from .test_cli import serving, spawn, stop

    first = pythonBlocks()[0]
    assert "super().__init__()" in first and "ws://127.0.0.1:9000/" in first
    chat = tmp_path / "chat.py"
    chat.write_text(first)
    if server == "serve":
        listening, listeningTransport = spawn("serve", "--port", "0")
        url = await serving(listening, 2)
    else:
        listening, listeningTransport = spawn(str(ROOT / server), "0")
        url = await serving(listening, 1)
    try:
        client, clientTransport = spawn(str(chat), url)
        try:
            assert isinstance(await client.ended, ProcessDone), client.output()
        finally:
            await stop(client, clientTransport)
    finally:
        await stop(listening, listeningTransport)
    out = [line for line in client.lines[1] if not line.startswith("< tick ")]  # (examples/server.py pushes ticks)
    assert out == ["< newcomer is here", "< hello", "< bye", "closed; 3 messages sent"], client.output()


def anchors(path: Path) -> Set[str]:
    """The anchors GitHub makes for a page's headings (lower case, punctuation dropped, spaces to hyphens)."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    headings = re.findall(r"^#+\s+(.*)$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_links_between_pages_resolve():
    """Every relative link in README.md and docs/*.md points to a file that exists and, with #anchor, to one of its headings."""
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists() and linked.is_relative_to(PACKAGE_IN_TREE):
                # (a link into the package's source, where the tests run against an installed wheel)
                linked = Path(txheartbeat.__file__).parent / linked.relative_to(PACKAGE_IN_TREE)
            if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
                broken.append(f"{page.name}: {target}")
    assert broken == []
