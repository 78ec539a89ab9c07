"""Feedback events against real PostgreSQL: dedup, status moves, suppression."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg

from daemon.feedback.store import FeedbackStore
from outbox.models import FeedbackEvent
from outbox.store import Store
from tests.integration.enqueue_helpers import enqueue_one


def _event(kind: str, source_id: str, provider_id: str = "ses-1", **extra: str) -> FeedbackEvent:
    return FeedbackEvent(
        source_id=source_id,
        event_type=kind,
        provider_message_id=provider_id,
        recipient=extra.pop("recipient", "Ann@Example.com"),
        occurred_at=datetime.now(UTC),
        payload={"kind": kind},
        **extra,  # type: ignore[arg-type]
    )


async def _sent_message(pool: asyncpg.Pool, recipient: str = "ann@example.com") -> int:
    message_id = await enqueue_one(pool, channel="email", recipient=recipient, template="welcome")
    await pool.execute(
        "UPDATE outbox.message SET status = 'sent', provider_message_id = 'ses-1' WHERE id = $1",
        message_id,
    )
    return message_id


async def test_delivery_then_duplicate_is_recorded_once(pool: asyncpg.Pool) -> None:
    message_id = await _sent_message(pool)
    feedback = FeedbackStore(pool)
    first = await feedback.record(_event("delivery", "sns-1"))
    again = await feedback.record(_event("delivery", "sns-1"))
    assert (first.duplicate, first.message_id, first.status) == (False, message_id, "delivered")
    assert again.duplicate
    assert await pool.fetchval("SELECT count(*) FROM outbox.event") == 1
    assert await pool.fetchval("SELECT status FROM outbox.message") == "delivered"


async def test_status_only_moves_forward(pool: asyncpg.Pool) -> None:
    await _sent_message(pool)
    feedback = FeedbackStore(pool)
    await feedback.record(_event("complaint", "sns-1", complaint_type="abuse"))
    late_delivery = await feedback.record(_event("delivery", "sns-2"))
    assert late_delivery.status is None
    assert await pool.fetchval("SELECT status FROM outbox.message") == "complained"


async def test_permanent_bounce_suppresses_and_the_next_send_is_suppressed(
    pool: asyncpg.Pool,
) -> None:
    await _sent_message(pool)
    feedback = FeedbackStore(pool)
    outcome = await feedback.record(_event("bounce", "sns-1", bounce_type="Permanent"))
    assert (outcome.status, outcome.suppressed) == ("bounced", "bounce")
    await enqueue_one(pool, channel="email", recipient="ANN@example.com", template="welcome")
    [claimed] = await Store(pool).claim("email", 10, "w", 60)
    assert claimed.suppressed_reason == "recipient suppressed (bounce)"


async def test_transient_bounces_suppress_after_the_limit(pool: asyncpg.Pool) -> None:
    await _sent_message(pool)
    feedback = FeedbackStore(pool)
    outcomes = [
        await feedback.record(
            _event("bounce", f"sns-{i}", bounce_type="Transient"), transient_bounce_limit=3
        )
        for i in range(3)
    ]
    assert [o.suppressed for o in outcomes] == [None, None, "bounce"]
    assert [o.status for o in outcomes] == [None, None, None]
    assert await feedback.suppression("email", "ann@example.com") == "bounce"


async def test_not_spam_complaint_neither_suppresses_nor_changes_status(pool: asyncpg.Pool) -> None:
    await _sent_message(pool)
    outcome = await FeedbackStore(pool).record(_event("complaint", "s", complaint_type="not-spam"))
    assert (outcome.status, outcome.suppressed) == (None, None)
    assert await pool.fetchval("SELECT count(*) FROM outbox.suppression") == 0


async def test_event_for_an_unknown_message_is_kept_unlinked(pool: asyncpg.Pool) -> None:
    outcome = await FeedbackStore(pool).record(_event("delivery", "s", provider_id="unknown"))
    assert (outcome.duplicate, outcome.message_id) == (False, None)


async def test_preferences_round_trip_and_unsubscribe_does_not_block_transactional(
    pool: asyncpg.Pool,
) -> None:
    feedback = FeedbackStore(pool)
    await feedback.set_preference("email", "Bob@Example.com", "marketing", opted_out=True)
    await feedback.set_preference("email", "bob@example.com", "digest", opted_out=False)
    assert await feedback.preferences("email", "BOB@example.com") == {
        "digest": False,
        "marketing": True,
    }
    await feedback.suppress("email", "bob@example.com", "unsubscribe", "one-click")
    # A complaint later upgrades the reason; an unsubscribe never downgrades a complaint.
    await feedback.suppress("email", "bob@example.com", "complaint", "abuse")
    await feedback.suppress("email", "bob@example.com", "unsubscribe", "again")
    assert await feedback.suppression("email", "bob@example.com") == "complaint"
    await feedback.unsuppress("email", "bob@example.com")
    assert await feedback.suppression("email", "bob@example.com") is None


async def test_a_bounce_about_someone_we_never_wrote_to_suppresses_nobody(
    pool: asyncpg.Pool,
) -> None:
    feedback = FeedbackStore(pool)
    foreign = await feedback.record(
        _event("bounce", "f-1", provider_id="not-ours", recipient="victim@example.com",
               bounce_type="Permanent")
    )  # fmt: skip
    assert (foreign.duplicate, foreign.message_id, foreign.suppressed) == (False, None, None)
    complaint = await feedback.record(
        _event("complaint", "f-2", provider_id="not-ours", recipient="victim@example.com",
               complaint_type="abuse")
    )  # fmt: skip
    assert complaint.suppressed is None
    assert await feedback.suppression("email", "victim@example.com") is None
    assert await pool.fetchval("SELECT count(*) FROM outbox.event") == 2  # kept, unlinked


async def test_feedback_on_our_message_naming_another_recipient_changes_nothing(
    pool: asyncpg.Pool,
) -> None:
    await _sent_message(pool, "ann@example.com")
    feedback = FeedbackStore(pool)
    outcome = await feedback.record(
        _event("bounce", "x-1", recipient="victim@example.com", bounce_type="Permanent")
    )
    assert (outcome.message_id, outcome.status, outcome.suppressed) == (None, None, None)
    assert await pool.fetchval("SELECT status FROM outbox.message") == "sent"
    assert await pool.fetchval("SELECT count(*) FROM outbox.suppression") == 0


async def test_foreign_transient_bounces_do_not_count_towards_suppression(
    pool: asyncpg.Pool,
) -> None:
    await _sent_message(pool, "ann@example.com")
    feedback = FeedbackStore(pool)
    for i in range(3):
        await feedback.record(
            _event("bounce", f"elsewhere-{i}", provider_id=f"other-{i}", bounce_type="Transient")
        )
    own = await feedback.record(_event("bounce", "own-1", bounce_type="Transient"))
    assert own.suppressed is None
    assert await feedback.suppression("email", "ann@example.com") is None
