"""The client's message shape, without a database."""

from __future__ import annotations

import dataclasses
import json
import pickle

import pytest

from outbox import Enqueued, NewMessage
from outbox.messages import MessageFields
from outbox.models import Priority


def test_keyword_helpers_take_exactly_the_fields_of_new_message() -> None:
    fields = dataclasses.fields(NewMessage)
    assert set(MessageFields.__annotations__) == {f.name for f in fields}
    required = {f.name for f in fields if f.default is f.default_factory is dataclasses.MISSING}
    assert MessageFields.__required_keys__ == required


def test_values_are_the_sql_functions_arguments() -> None:
    message = NewMessage("email", "a@example.com", "t", {"n": 1}, priority=Priority.HIGH)
    values = message.values()
    assert values["context"] == '{"n":1}' and values["tags"] == "{}"
    assert values["priority"] == 2 and type(values["priority"]) is int
    assert NewMessage("email", "a", "t", None, tags=None).values()["context"] == "{}"
    assert NewMessage("email", "a", "t", priority=None).values()["priority"] is None  # type: ignore[arg-type]


@pytest.mark.parametrize("priority", [True, 1.5, 2.0, "1", [1]])
def test_a_priority_that_is_not_an_integer_is_refused(priority: object) -> None:
    with pytest.raises(ValueError, match=r"priority must be an integer from 0 to 3, got "):
        NewMessage("email", "a", "t", priority=priority).values()  # type: ignore[arg-type]


def test_enqueued_is_the_id_and_says_whether_it_was_new() -> None:
    result = Enqueued(42, created=False)
    assert result == 42 and hash(result) == hash(42) and isinstance(result, int)
    assert (str(result), f"{result}", str(result + 0), json.dumps([result])) == (
        "42", "42", "42", "[42]",
    )  # fmt: skip
    assert repr(result) == "Enqueued(42, created=False)"
    copy = pickle.loads(pickle.dumps(result))
    assert (copy, copy.created) == (42, False)
