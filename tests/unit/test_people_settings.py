from __future__ import annotations

import pytest

from daemon import settings
from outbox import errors


def test_people_settings_have_working_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    people = settings.load().people
    assert (people.digest_interval, people.digest_batch) == (10.0, 1000)
    assert (people.schedule_catch_up, people.schedule_batch) == (1, 200)
    monkeypatch.setenv("OUTBOXD_PEOPLE__DIGEST_INTERVAL", "2.5")
    monkeypatch.setenv("OUTBOXD_PEOPLE__SCHEDULE_CATCH_UP", "3")
    people = settings.load().people
    assert (people.digest_interval, people.schedule_catch_up) == (2.5, 3)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("OUTBOXD_PEOPLE__DIGEST_INTERVAL", "0"),
        ("OUTBOXD_PEOPLE__DIGEST_INTERVAL", "soon"),
        ("OUTBOXD_PEOPLE__DIGEST_BATCH", "0"),
        ("OUTBOXD_PEOPLE__SCHEDULE_CATCH_UP", "0"),
        ("OUTBOXD_PEOPLE__SCHEDULE_BATCH", "-1"),
    ],
)
def test_bad_people_settings_name_the_variable_in_one_line(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(errors.ConfigurationError) as caught:
        settings.load()
    assert str(caught.value).startswith(f"invalid setting {name}: ")
    assert "\n" not in str(caught.value)
