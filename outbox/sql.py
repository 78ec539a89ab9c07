"""Named SQL queries, parsed once from ``sql/queries.sql``.

The file holds blocks introduced by a comment line ``-- name(param, ...) --``; the names in
parentheses document asyncpg's ``$1, $2, ...`` placeholders in order.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from outbox import resources

_HEADER = re.compile(r"^--\s*(?P<name>[a-z_][a-z0-9_]*)\s*(?:\((?P<params>[^)]*)\))?\s*--\s*$")


@dataclass(frozen=True, slots=True)
class Query:
    name: str
    params: tuple[str, ...]
    text: str


def parse_queries(source: str) -> dict[str, Query]:
    """Split a queries file into named queries; duplicate names are an error."""
    queries: dict[str, Query] = {}
    name: str | None = None
    params: tuple[str, ...] = ()
    lines: list[str] = []

    def flush() -> None:
        if name is None:
            return
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        text = "\n".join(lines).strip()
        if not text:
            raise ValueError(f"query {name!r} is empty")
        queries[name] = Query(name, params, text)

    for line in source.splitlines():
        match = _HEADER.match(line)
        if match:
            flush()
            name = match["name"]
            raw = match["params"] or ""
            params = tuple(p.strip() for p in raw.split(",") if p.strip())
            lines = []
        elif name is not None:
            lines.append(line)
    flush()
    return queries


@functools.cache
def queries() -> dict[str, Query]:
    return parse_queries((resources.sql_dir() / "queries.sql").read_text(encoding="utf-8"))


def get(name: str) -> str:
    """The text of query ``name``."""
    return queries()[name].text
