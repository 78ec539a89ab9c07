"""Planning a schedule's occurrences: a pure function of the row and a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from daemon.people.digests import DigestTemplates
from daemon.people.schedules import SKIP_COUNT_LIMIT, plan
from daemon.people.store import DueSchedule, iso_utc

NEW_YORK = "America/New_York"
WRITTEN = datetime(2026, 1, 1, tzinfo=UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def schedule(
    cron: str,
    *,
    next_at: datetime | None = None,
    updated_at: datetime = WRITTEN,
    zone: str = NEW_YORK,
) -> DueSchedule:
    epoch = utc(1970, 1, 1)  # planning takes its clock as an argument
    return DueSchedule(7, cron, next_at, updated_at, zone, as_of=epoch)


def test_an_unplanned_schedule_starts_at_the_first_cron_time_after_it_was_written() -> None:
    # Written on Sunday 2026-03-01 12:00 New York time; Mondays 09:00 local.
    row = schedule("0 9 * * 1", updated_at=utc(2026, 3, 1, 17))
    planned, skipped = plan(row, utc(2026, 3, 1, 17, 0, 5), catch_up=1)
    assert planned.occurrences == ()
    assert planned.next_at == utc(2026, 3, 2, 14)  # 09:00 EST
    assert (planned.error, skipped) == (None, 0)


def test_monday_nine_oclock_local_follows_daylight_saving_time() -> None:
    row = schedule("0 9 * * 1", next_at=utc(2026, 3, 2, 14))
    planned, _ = plan(row, utc(2026, 3, 2, 14, 0, 3), catch_up=1)
    assert planned.occurrences == (utc(2026, 3, 2, 14),)
    assert planned.next_at == utc(2026, 3, 9, 13)  # 09:00 EDT after 2026-03-08
    planned, _ = plan(schedule("0 9 * * 1", next_at=utc(2026, 10, 26, 13)),
                      utc(2026, 10, 26, 13, 0, 1), catch_up=1)  # fmt: skip
    assert planned.next_at == utc(2026, 11, 2, 14)  # 09:00 EST after 2026-11-01


def test_a_time_the_spring_forward_gap_skips_runs_at_the_jump() -> None:
    # 02:30 does not exist in New York on 2026-03-08: the clock jumps from 02:00 to 03:00.
    planned, _ = plan(schedule("30 2 * * *", next_at=utc(2026, 3, 7, 7, 30)),
                      utc(2026, 3, 7, 7, 30, 1), catch_up=1)  # fmt: skip
    assert planned.next_at == utc(2026, 3, 8, 7)  # 03:00 EDT
    planned, _ = plan(schedule("30 2 * * *", next_at=planned.next_at),
                      utc(2026, 3, 8, 7, 0, 1), catch_up=1)  # fmt: skip
    assert planned.occurrences == (utc(2026, 3, 8, 7),)
    assert planned.next_at == utc(2026, 3, 9, 6, 30)  # 02:30 EDT


def test_a_time_the_fall_back_repeats_runs_once() -> None:
    # 01:30 happens twice in New York on 2026-11-01 (EDT, then EST): one occurrence.
    planned, _ = plan(schedule("30 1 * * *", next_at=utc(2026, 10, 31, 5, 30)),
                      utc(2026, 10, 31, 5, 30, 1), catch_up=1)  # fmt: skip
    assert planned.next_at == utc(2026, 11, 1, 5, 30)  # the first 01:30 (EDT)
    planned, _ = plan(schedule("30 1 * * *", next_at=planned.next_at),
                      utc(2026, 11, 1, 5, 30, 1), catch_up=1)  # fmt: skip
    assert planned.next_at == utc(2026, 11, 2, 6, 30)  # not the second 01:30 at 06:30Z


def test_catch_up_fires_the_newest_occurrences_and_skips_the_older_ones() -> None:
    # Hourly at :00, due since 05:00; it is 10:20: 05, 06, 07, 08, 09 and 10 o'clock missed.
    row = schedule("0 * * * *", next_at=utc(2026, 6, 1, 5))
    planned, skipped = plan(row, utc(2026, 6, 1, 10, 20), catch_up=3)
    assert planned.occurrences == (utc(2026, 6, 1, 8), utc(2026, 6, 1, 9), utc(2026, 6, 1, 10))
    assert skipped == 3
    assert planned.next_at == utc(2026, 6, 1, 11)


def test_catch_up_within_the_limit_skips_nothing() -> None:
    row = schedule("0 * * * *", next_at=utc(2026, 6, 1, 8))
    planned, skipped = plan(row, utc(2026, 6, 1, 10), catch_up=3)
    assert planned.occurrences == (utc(2026, 6, 1, 8), utc(2026, 6, 1, 9), utc(2026, 6, 1, 10))
    assert skipped == 0
    planned, skipped = plan(row, utc(2026, 6, 1, 10), catch_up=1)
    assert (planned.occurrences, skipped) == ((utc(2026, 6, 1, 10),), 2)


def test_a_next_at_set_by_hand_is_itself_an_occurrence() -> None:
    row = schedule("0 9 * * *", next_at=utc(2026, 6, 1, 12, 34))
    planned, skipped = plan(row, utc(2026, 6, 1, 12, 35), catch_up=1)
    assert (planned.occurrences, skipped) == ((utc(2026, 6, 1, 12, 34),), 0)
    assert planned.next_at == utc(2026, 6, 1, 13)  # 09:00 EDT, later that morning


def test_skips_are_counted_up_to_a_limit() -> None:
    row = schedule("* * * * *", next_at=utc(2025, 6, 1))
    planned, skipped = plan(row, utc(2026, 6, 1), catch_up=1)
    assert planned.occurrences == (utc(2026, 6, 1),)
    assert skipped == SKIP_COUNT_LIMIT + 1


def test_what_cannot_be_planned_is_an_error_on_the_row() -> None:
    planned, _ = plan(schedule("0 9 * * *", zone="Mars/Olympus"), utc(2026, 6, 1), 1)
    assert planned.error == (
        "time zone 'Mars/Olympus' is unknown to the daemon's time zone database"
    )
    assert (planned.occurrences, planned.next_at) == ((), None)
    planned, _ = plan(schedule("0 9 30 2 *"), utc(2026, 6, 1), 1)
    assert planned.error == "cron '0 9 30 2 *': Bad day-of-month"


def test_occurrences_are_spelled_as_utc_iso_8601() -> None:
    local = utc(2026, 3, 9, 13, 0, 0, 250).astimezone(timezone(timedelta(hours=-4)))
    assert iso_utc(local) == "2026-03-09T13:00:00Z"


def test_digest_variants_are_found_per_channel_and_directory(tmp_path: Path) -> None:
    own, bundled = tmp_path / "own", tmp_path / "bundled"
    for directory, template, parts in [
        (own, "comments/digest", ["subject.j2", "text.j2", "html.j2"]),
        (own, "likes/digest", ["subject.j2", "inapp.j2"]),
        (own, "half/digest", ["subject.j2"]),
        (own, "_layouts/digest", ["subject.j2", "text.j2"]),
        (bundled, "billing/alerts/digest", ["sms.j2"]),
    ]:
        (directory / template).mkdir(parents=True)
        for part in parts:
            (directory / template / part).write_text("x")
    assert DigestTemplates([own, bundled, tmp_path / "missing"]).pairs() == [
        ("email", "comments"),
        ("inapp", "likes"),
        ("sms", "billing/alerts"),
    ]


@pytest.mark.parametrize("catch_up", [1, 2, 5])
def test_a_running_daemon_fires_each_occurrence_exactly_once(catch_up: int) -> None:
    # Polling every few seconds over a day: each 15-minute occurrence once, in order.
    row = schedule("*/15 * * * *", updated_at=utc(2026, 3, 8, 4))
    fired: list[datetime] = []
    now = utc(2026, 3, 8, 4)
    while now <= utc(2026, 3, 9, 4):
        if row.next_at is None or row.next_at <= now:
            planned, skipped = plan(row, now, catch_up)
            assert skipped == 0
            fired.extend(planned.occurrences)
            row = schedule(row.cron, next_at=planned.next_at, updated_at=row.updated_at)
        now += timedelta(seconds=5)
    # Across the night New York springs forward: still every quarter of an hour.
    assert len(fired) == 24 * 4 == len(set(fired))
    assert fired == sorted(fired)
    assert fired[0] == utc(2026, 3, 8, 4, 15)
