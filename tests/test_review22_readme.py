"""README.md as Markdown."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_heading_has_a_blank_line_before_it():
    """README line ~206: '## A server' follows a paragraph line directly (markdownlint MD022;
    renderers that need the blank line, e.g. some Markdown-to-man/Sphinx converters, glue it
    to the paragraph)."""
    lines = (ROOT / "README.md").read_text().split("\n")
    fence = False
    bad = []
    for i, line in enumerate(lines):
        if line.startswith("```"):
            fence = not fence
        elif not fence and re.match(r"#+ ", line) and i and lines[i - 1].strip():
            bad.append((i + 1, line))
    assert not bad, bad
