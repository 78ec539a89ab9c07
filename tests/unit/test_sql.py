from __future__ import annotations

import pytest

from daemon.feedback import store as feedback_store
from daemon.people import profiles as people_profiles
from daemon.people import store as people_store
from outbox import migrations, sql, store


def test_every_query_the_store_uses_exists() -> None:
    missing = [name for name in store.QUERY_NAMES if name not in sql.queries()]
    assert missing == []


def test_every_query_is_used_by_a_store() -> None:
    used = {
        *store.QUERY_NAMES,
        *feedback_store.QUERY_NAMES,
        *people_profiles.QUERY_NAMES,
        *people_store.QUERY_NAMES,
    }
    assert sorted(sql.queries()) == sorted(used)
    assert all(name in sql.queries() for name in feedback_store.QUERY_NAMES)
    assert all(name in sql.queries() for name in people_store.QUERY_NAMES)


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
