"""Segments: JSON rules over recipient attributes, compiled to parameterised SQL."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from tests.integration.campaign_helpers import add_list, add_people, subscribe

HOSTILE = [
    "'; DROP TABLE outbox.message; --",
    "O'Brien",
    "x') OR true OR ('1'='1",
    "$1",
    "$2[1]",
    "\\'",
    '"quoted"',
    "}'::jsonb) OR (SELECT true) --",
    "\u0000".replace("\u0000", "nul?"),
    "日本語 ✉",
]

PEOPLE: dict[str, dict[str, Any]] = {
    "ann": {"plan": "pro", "age": 30, "score": 9.5, "tags": ["vip", "beta"], "city": "Paris",
            "active": True, "profile": {"lang": "fr"}},
    "bob": {"plan": "free", "age": 9, "score": 10, "tags": ["beta"], "city": "Berlin",
            "active": False},
    "cy": {"plan": "pro", "age": "40", "tags": [], "city": "Porto", "nickname": None},
    "dee": {"plan": "team", "age": 10.0, "city": "Paris, Texas"},
    "eve": {},
    **{f"h{i}": {"name": value} for i, value in enumerate(HOSTILE)},
}  # fmt: skip


@pytest.fixture
async def people(pool: asyncpg.Pool) -> asyncpg.Pool:
    await add_people(pool, PEOPLE)
    await add_list(pool, "news")
    await subscribe(pool, "news", PEOPLE)
    return pool


async def matching(pool: asyncpg.Pool, segment: Any) -> list[str]:
    """Keys of the people the segment selects, by both ways of asking."""
    rows = await pool.fetch(
        "SELECT key FROM outbox.recipient WHERE outbox.segment_matches($1::jsonb, attrs) "
        "ORDER BY key",
        json.dumps(segment),
    )
    keys = [r["key"] for r in rows]
    count = await pool.fetchval(
        "SELECT outbox.segment_count('news', $1::jsonb)", json.dumps(segment)
    )
    assert count == len(keys)
    return keys


def rule(attr: str, op: str, value: Any = None) -> dict[str, Any]:
    return {"attr": attr, "op": op, **({} if value is None else {"value": value})}


OPERATOR_CASES: list[tuple[Any, list[str]]] = [
        (None, sorted(PEOPLE)),
        ({}, sorted(PEOPLE)),
        (rule("plan", "eq", "pro"), ["ann", "cy"]),
        (rule("plan", "ne", "pro"), sorted(set(PEOPLE) - {"ann", "cy"})),
        # JSON numbers compare numerically (10 = 10.0 > 9.5 > 9), never with strings ("40").
        (rule("age", "gt", 9), ["ann", "dee"]),
        (rule("age", "gte", 10), ["ann", "dee"]),
        (rule("age", "eq", 10), ["dee"]),
        (rule("age", "lt", 10), ["bob"]),
        (rule("score", "lte", 9.5), ["ann"]),
        (rule("score", "gt", 9.75), ["bob"]),
        (rule("age", "eq", "40"), ["cy"]),
        (rule("city", "lt", "Paris"), ["bob"]),
        (rule("plan", "in", ["team", "free", 3]), ["bob", "dee"]),
        (rule("plan", "in", []), []),
        (rule("tags", "contains", "beta"), ["ann", "bob"]),
        (rule("city", "contains", "Paris"), ["ann", "dee"]),
        (rule("city", "contains", "paris"), []),
        (rule("active", "eq", False), ["bob"]),
        (rule("profile", "eq", {"lang": "fr"}), ["ann"]),
        (rule("nickname", "exists"), ["cy"]),
        ({"attr": "tags", "op": "exists", "value": "ignored"}, ["ann", "bob", "cy"]),
        ({"all": []}, sorted(PEOPLE)),
        ({"any": []}, []),
        (
            {"all": [rule("plan", "eq", "pro"),
                     {"any": [rule("age", "gt", 20), rule("city", "eq", "Porto")]}]},
            ["ann", "cy"],
        ),
        ({"any": [{"all": [rule("plan", "eq", "free")]}, rule("tags", "contains", "vip")]},
         ["ann", "bob"]),
]  # fmt: skip


async def test_operators_and_nesting(people: asyncpg.Pool) -> None:
    # One database for every case: each case only reads.
    wrong = [
        (segment, expected, found)
        for segment, expected in OPERATOR_CASES
        if (found := await matching(people, segment)) != expected
    ]
    assert wrong == []


async def test_hostile_values_are_data_never_sql(people: asyncpg.Pool) -> None:
    for value in HOSTILE:
        await _hostile(people, value)


async def _hostile(people: asyncpg.Pool, value: str) -> None:
    index = HOSTILE.index(value)
    assert await matching(people, rule("name", "eq", value)) == [f"h{index}"]
    assert await matching(people, rule("name", "in", [value, "nobody"])) == [f"h{index}"]
    assert f"h{index}" in await matching(people, rule("name", "contains", value))
    # A hostile attribute name is only a key that nobody has.
    assert await matching(people, rule(value, "exists")) == []
    assert await matching(people, rule(value, "ne", value)) == sorted(PEOPLE)
    # The SQL text is operators and placeholders only, the same whatever the rule's strings
    # say; they travel as parameters.
    compiled, plain = [
        await people.fetchrow(
            "SELECT * FROM outbox.segment_sql($1::jsonb)",
            json.dumps({"all": [rule(text, "eq", text), rule("name", "contains", text)]}),
        )
        for text in (value, "plain")
    ]
    assert compiled is not None and plain is not None
    assert compiled["sql"] == plain["sql"]
    assert compiled["names"] == [value, "name"]
    assert [json.loads(v) for v in compiled["vals"]] == [value, value]
    assert await people.fetchval("SELECT count(*) FROM outbox.message") == 0  # nothing dropped


BAD_SEGMENTS: list[tuple[Any, str]] = [
        (rule("plan", "like", "p%"), "segment: unknown op 'like'"),
        ({"all": [rule("plan", "eq", "pro"), {"any": [rule("age", "regex", 1)]}]},
         r"segment.all\[1\].any\[0\]: unknown op 'regex'"),
        ({"attr": "plan", "op": "eq", "value": "x", "type": "date"},
         "segment: unknown key 'type'"),
        (rule("plan", "eq"), "segment: op eq needs a \"value\""),
        (rule("plan", "eq", None) | {"value": None}, "segment: op eq cannot compare with null"),
        (rule("age", "gt", {"n": 1}), "op gt compares numbers or strings, not a JSON object"),
        (rule("age", "lt", True), "op lt compares numbers or strings, not a JSON boolean"),
        (rule("plan", "in", "pro"), "op in needs an array of values, not a JSON string"),
        (rule("plan", "in", [["pro"]]), "op in takes strings, numbers and booleans, not a JSON"),
        (rule("tags", "contains", ["a"]), "op contains looks for a string, number or boolean"),
        ({"attr": "", "op": "eq", "value": 1}, r"segment.attr: must be a non-empty string"),
        ({"attr": 3, "op": "eq", "value": 1}, r"segment.attr: must be a non-empty string"),
        ({"attr": "a", "op": 3, "value": 1}, r"segment.op: must be a string"),
        ({"all": "x"}, r"segment.all: must be an array of rules, got string"),
        ({"all": [], "attr": "a"}, r"segment: has \"attr\" beside \"all\""),
        ({"any": [1]}, r"segment.any\[0\]: must be a JSON object"),
        ([rule("a", "eq", 1)], "segment: must be a JSON object"),
        (rule("a", "eq", 1) | {"op": "EQ"}, "segment: unknown op 'EQ'"),
]  # fmt: skip


async def test_bad_segments_are_refused_clearly(people: asyncpg.Pool) -> None:
    for segment, message in BAD_SEGMENTS:
        with pytest.raises(asyncpg.InvalidParameterValueError, match=message):
            await people.fetchval(
                "SELECT outbox.segment_count('news', $1::jsonb)", json.dumps(segment)
            )


async def test_deep_and_wide_segments_are_bounded(people: asyncpg.Pool) -> None:
    deep: dict[str, Any] = rule("plan", "eq", "pro")
    for _ in range(20):
        deep = {"all": [deep]}
    with pytest.raises(asyncpg.InvalidParameterValueError, match="nested more than 16 levels"):
        await matching(people, deep)
    wide = {"any": [rule("plan", "eq", str(i)) for i in range(300)]}
    with pytest.raises(asyncpg.InvalidParameterValueError, match="more than 256 conditions"):
        await matching(people, wide)


async def test_segment_count_counts_active_subscribers_before_suppression(
    people: asyncpg.Pool,
) -> None:
    await people.execute(
        "UPDATE outbox.subscription SET status = 'unsubscribed' WHERE recipient_key = 'cy'"
    )
    await people.execute(
        "INSERT INTO outbox.suppression (channel, recipient, reason) "
        "VALUES ('email', 'ann@example.com', 'bounce')"
    )
    count = await people.fetchval(
        "SELECT outbox.segment_count('news', $1::jsonb)", json.dumps(rule("plan", "eq", "pro"))
    )
    assert count == 1  # ann (suppressed, still counted); cy is no longer active
    with pytest.raises(asyncpg.InvalidParameterValueError, match="no list named 'nope'"):
        await people.fetchval("SELECT outbox.segment_count('nope')")


async def test_a_campaign_with_a_bad_segment_is_refused(people: asyncpg.Pool) -> None:
    with pytest.raises(asyncpg.InvalidParameterValueError, match="unknown op 'near'"):
        await people.execute(
            "INSERT INTO outbox.campaign (name, list_id, template, segment) "
            "VALUES ('c', 1, 'newsletter', $1::jsonb)",
            json.dumps(rule("city", "near", "Paris")),
        )
