"""The README's code blocks, found by section, language and a piece of their text, so that
tests run them exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def section(title: str) -> str:
    """The README text under ``## title``, up to the next ``## `` heading."""
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def block(title: str, language: str, containing: str = "") -> str:
    """The one ``language`` block of section ``title`` whose text contains ``containing``."""
    found = [
        body
        for lang, body in _BLOCK.findall(section(title))
        if lang == language and containing in body
    ]
    assert len(found) == 1, f"{len(found)} {language} blocks containing {containing!r}"
    return found[0]
