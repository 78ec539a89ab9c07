"""Message.from_record: each column in its field; the JSON columns decode exactly as
``json.loads`` decodes them."""

from __future__ import annotations

import json

import pytest

from outbox import models

_SAME = [
    '{"name": "Ann", "login_url": "https://app.example.com/login?u=1"}',
    "{}",
    '{"nested": {"list": [1, 2.5, -3e2, true, false, null]}, "é": "\\u00e9\\ud83d\\ude00"}',
    ' {"leading": "space"}',
    '{"trailing": "space"}  ',
    '"a string"',
    "[1, 2]",
]
_REFUSED = ['{"a": 1} x', "\ufeff{}", "", "{'single': 1}", '{"a": NaN', "   "]


@pytest.mark.parametrize("text", _SAME)
def test_decodes_like_json_loads(text: str) -> None:
    assert models._loads(text) == json.loads(text)


@pytest.mark.parametrize("text", _REFUSED)
def test_refuses_what_json_loads_refuses_with_its_error(text: str) -> None:
    with pytest.raises(json.JSONDecodeError) as expected:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as got:
        models._loads(text)
    assert str(got.value) == str(expected.value)


def test_a_json_column_that_is_not_an_object_is_refused() -> None:
    with pytest.raises(TypeError, match="expected a JSON object, got list"):
        models._json_object("[1, 2]")
    assert models._json_object('{"a": 1}') == {"a": 1}
    assert models._json_object(None) == {}


def test_from_record_puts_every_column_in_its_own_field() -> None:
    record: dict[str, object] = {
        name: f"value of {name}" for name in models.Message._fields if name != "person"
    }
    record["context"] = '{"from": "context"}'
    record["tags"] = '{"from": "tags"}'
    message = models.Message.from_record(record)
    for name, value in record.items():
        if name not in ("context", "tags"):
            assert getattr(message, name) == value, name
    assert message.context == {"from": "context"}
    assert message.tags == {"from": "tags"}
    assert message.person is None
