"""The client side of the people helpers: statements for both paramstyles, argument checks."""

from __future__ import annotations

import datetime as dt
import decimal
import json

import pytest

from outbox import people
from outbox._sqlcall import Statement, json_object


def test_a_statement_renders_both_paramstyles_with_casts() -> None:
    statement = Statement.from_template(
        "SELECT f({a}, {b}) WHERE x = '{}'", [("a", "text"), ("b", "jsonb")]
    )
    assert statement.asyncpg_sql == "SELECT f($1::text, $2::jsonb) WHERE x = '{}'"
    assert statement.dbapi_sql == "SELECT f(%s::text, %s::jsonb) WHERE x = '{}'"
    assert statement.args({"b": "{}", "a": "x", "ignored": 1}) == ("x", "{}")


def test_a_function_call_names_its_arguments() -> None:
    statement = Statement.function_call("outbox.f", [("key", "text"), ("n", "numeric")])
    assert statement.asyncpg_sql == "SELECT outbox.f(key => $1::text, n => $2::numeric)"
    assert statement.dbapi_sql == "SELECT outbox.f(key => %s::text, n => %s::numeric)"


@pytest.mark.parametrize(
    ("template", "complaint"),
    [
        ("SELECT {b}, {a}", "in that order"),
        ("SELECT {a}", "in that order"),
        ("SELECT {a}, {a}, {b}", "in that order"),
        ("SELECT {a}, {b} WHERE x LIKE 'a%'", "literal '%'"),
    ],
)
def test_a_template_must_use_each_parameter_once_in_order(template: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        Statement.from_template(template, [("a", "text"), ("b", "text")])


def test_the_notify_statement_passes_every_argument_of_the_sql_function() -> None:
    assert people._NOTIFY.names == (
        "recipient_key", "template", "context", "category", "priority", "channels",
        "not_before", "expires_at", "idempotency_key", "tags", "digest_key", "digest_window",
        "escalate_after", "brand",
    )  # fmt: skip
    assert "priority => %s::numeric" in people._NOTIFY.dbapi_sql


def test_json_object_encodes_common_types_and_refuses_non_mappings() -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC)
    encoded = json_object({"when": when, "amount": decimal.Decimal("1.50")}, "context")
    assert json.loads(encoded) == {"when": "2026-01-02T03:04:00+00:00", "amount": "1.50"}
    assert json_object(None, "tags") == "{}"
    with pytest.raises(TypeError, match=r"^attrs must be a mapping"):
        json_object([1], "attrs")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^context: value of type object"):
        json_object({"x": object()}, "context")


@pytest.mark.parametrize(
    ("value", "sent"),
    [(2, 2), (3.9, decimal.Decimal("3.9")), (2.0, decimal.Decimal("2.0")),
     (decimal.Decimal("1"), decimal.Decimal("1"))],
)  # fmt: skip
def test_priority_goes_to_sql_as_written(value: object, sent: object) -> None:
    # SQL refuses 3.9 by name; a float must arrive as 3.9, not 3.899999999999999911...
    assert people.priority_value(value) == sent


@pytest.mark.parametrize("value", [True, "2", None])
def test_priority_refuses_what_a_driver_would_turn_into_a_number(value: object) -> None:
    with pytest.raises(TypeError, match=r"^priority must be an integer 0\.\.3"):
        people.priority_value(value)


def test_channels_must_be_a_list_not_a_string() -> None:
    assert people.channels_value(("sms", "email")) == ["sms", "email"]
    assert people.channels_value(None) is None
    with pytest.raises(TypeError, match=r"^channels must be a list"):
        people.channels_value("email")


def test_quiet_hours_take_times_or_their_text() -> None:
    assert people.quiet_hours_value(None) == (None, None)
    assert people.quiet_hours_value(("22:00", dt.time(7, 30))) == (dt.time(22), dt.time(7, 30))


@pytest.mark.parametrize(
    ("value", "error", "complaint"),
    [
        ("22:00-07:00", TypeError, "quiet_hours must be a"),
        (("22:00",), ValueError, "quiet_hours must be a"),
        (("22:00", "7 am"), ValueError, "quiet_hours end must be a time"),
        ((22, "07:00"), ValueError, "quiet_hours start must be a time"),
    ],
)
def test_quiet_hours_refusals_name_the_argument(
    value: object, error: type[Exception], complaint: str
) -> None:
    with pytest.raises(error, match=f"^{complaint}"):
        people.quiet_hours_value(value)  # type: ignore[arg-type]
