from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from outbox import migrations, sql, store


def _stores() -> dict[str, tuple[str, ...]]:
    """Every module that declares the named queries it uses (``QUERY_NAMES``): found by
    reading the sources, so a new store needs no registration here."""
    root = Path(__file__).resolve().parents[2]
    found: dict[str, tuple[str, ...]] = {}
    for package in ("outbox", "daemon"):
        for path in sorted((root / package).rglob("*.py")):
            if "\nQUERY_NAMES" not in path.read_text(encoding="utf-8"):
                continue
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            found[module] = tuple(importlib.import_module(module).QUERY_NAMES)
    return found


def test_the_stores_are_found() -> None:
    assert {"outbox.store", "daemon.feedback.store"} <= set(_stores())


def test_every_query_the_store_uses_exists() -> None:
    missing = [name for name in store.QUERY_NAMES if name not in sql.queries()]
    assert missing == []


def test_every_query_is_used_by_a_store() -> None:
    stores = _stores()
    used = {name for names in stores.values() for name in names}
    assert sorted(sql.queries()) == sorted(used)
    missing = {
        module: [name for name in names if name not in sql.queries()]
        for module, names in stores.items()
    }
    assert {module: names for module, names in missing.items() if names} == {}


def test_parser_reads_names_and_parameters() -> None:
    parsed = sql.parse_queries(
        "-- header comment\n-- first(a, b) --\nSELECT $1, $2\n\n-- second --\nSELECT 1\n"
    )
    assert parsed["first"].params == ("a", "b")
    assert parsed["first"].text == "SELECT $1, $2"
    assert parsed["second"].text == "SELECT 1"


def test_parser_rejects_duplicates_and_empty_queries() -> None:
    with pytest.raises(ValueError, match="twice"):
        sql.parse_queries("-- a --\nSELECT 1\n-- a --\nSELECT 2\n")
    with pytest.raises(ValueError, match="empty"):
        sql.parse_queries("-- a --\n\n-- b --\nSELECT 1\n")


def test_documented_parameter_counts_match_placeholders() -> None:
    import re

    for query in sql.queries().values():
        used = {int(n) for n in re.findall(r"\$(\d+)", query.text)}
        assert used == set(range(1, len(query.params) + 1)), query.name


def test_migrations_are_numbered_in_order() -> None:
    versions = [m.version for m in migrations.available()]
    assert versions == sorted(versions)
    assert versions[0] == 1
    # Numbers are handed out ahead of merging, so one branch may skip some; each number is
    # applied once, in order, whatever was applied before it.
    assert len(set(versions)) == len(versions)
