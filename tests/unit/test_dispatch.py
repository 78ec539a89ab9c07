"""Dispatcher: every outcome of one delivery becomes the right Completion (no database)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daemon.delivery import retry
from daemon.delivery.dispatch import MAX_CONTEXT_BYTES, Dispatcher
from daemon.settings import WorkerSettings
from outbox import errors
from outbox.models import Message, Status
from outbox.store import Completion
from tests.unit import fakes

WORKER = WorkerSettings(
    max_attempts=3, retry_base_seconds=2.0, retry_max_seconds=30.0, pause_seconds=90.0
)


class Setup:
    def __init__(self, directory: Path) -> None:
        self.email = fakes.ScriptedProvider("email", "mail")
        self.sms = fakes.ScriptedProvider("sms", "text")
        self.paused: list[tuple[str, str]] = []
        self.throttled: list[str] = []
        self.dispatcher = Dispatcher(
            renderer=fakes.renderer(directory),
            providers={"email": self.email, "sms": self.sms},
            worker=WORKER,
            on_paused=lambda channel, reason: self.paused.append((channel, reason)),
            on_throttled=self.throttled.append,
        )

    async def deliver(self, **fields: Any) -> Completion:
        return await self.dispatcher.deliver(message(**fields))


def message(*, channel: str = "email", attempts: int = 1, **fields: Any) -> Message:
    """A message as a claim hands it over (the claim counted this attempt)."""
    recipient = "ann@example.com" if channel == "email" else "+14155550100"
    row = fakes.Row(7, channel, fields.pop("recipient", recipient), attempts=attempts, **fields)
    return row.message()


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    return Setup(tmp_path)


async def test_a_send_the_provider_accepts_is_sent_with_its_receipt(setup: Setup) -> None:
    completion = await setup.deliver()
    assert completion == Completion(
        7, 1, Status.SENT, provider="mail", provider_message_id="<7@scripted>"
    )
    [rendered] = setup.email.rendered
    assert (rendered.subject, rendered.text) == ("Hello Ann", "Hi Ann, this is message 7.")
    sms = await setup.deliver(channel="sms")
    assert sms.status is Status.SENT and sms.provider == "text"
    assert setup.sms.rendered[0].sms == "Hi Ann"


@pytest.mark.parametrize(
    ("fields", "status", "error"),
    [
        (
            {"expires_at": datetime(2001, 2, 3, tzinfo=UTC)},
            Status.EXPIRED,
            "expired at 2001-02-03T00:00:00+00:00 before it could be sent",
        ),
        ({"suppressed_reason": "recipient suppressed (bounce)"}, Status.SUPPRESSED,
         "recipient suppressed (bounce)"),
        ({"context_bytes": MAX_CONTEXT_BYTES + 1}, Status.FAILED,
         f"context is {MAX_CONTEXT_BYTES + 1} bytes decoded, more than the 256 KiB limit"),
        ({"context": {}}, Status.FAILED, "template 'note' (subject.j2): 'name' is undefined"),
        ({"template": "nope"}, Status.FAILED, "template 'nope' not found: no subject.j2 in"),
        ({"recipient": "ann@"}, Status.FAILED, "invalid email address"),
    ],
)  # fmt: skip
async def test_what_must_not_be_sent_ends_before_the_provider(
    setup: Setup, fields: dict[str, Any], status: Status, error: str
) -> None:
    completion = await setup.deliver(**fields)
    assert completion.status is status
    assert completion.error is not None and completion.error.startswith(error)
    assert not completion.refund
    assert setup.email.attempted == []


async def test_a_message_that_has_not_expired_yet_is_sent(setup: Setup) -> None:
    completion = await setup.deliver(expires_at=datetime.now(UTC) + timedelta(hours=1))
    assert completion.status is Status.SENT


async def test_a_transient_error_retries_with_backoff_until_attempts_run_out(
    setup: Setup,
) -> None:
    setup.email.error = errors.TransientError("SMTP 451 try again later")
    first = await setup.deliver(attempts=1)
    assert (first.status, first.error, first.provider) == (
        Status.PENDING, "SMTP 451 try again later", "mail"
    )  # fmt: skip
    assert 0 <= first.retry_delay <= WORKER.retry_base_seconds and not first.refund
    second = await setup.deliver(attempts=2)
    assert second.status is Status.PENDING
    assert 0 <= second.retry_delay <= 2 * WORKER.retry_base_seconds
    last = await setup.deliver(attempts=WORKER.max_attempts)
    assert (last.status, last.error) == (
        Status.FAILED, "attempts exhausted (3): SMTP 451 try again later"
    )  # fmt: skip
    assert setup.paused == [] and setup.throttled == []


async def test_a_hint_from_the_provider_sets_the_retry_delay(setup: Setup) -> None:
    setup.email.error = errors.TransientError("busy", retry_after=42.0)
    assert (await setup.deliver()).retry_delay == 42.0


async def test_a_permanent_error_fails_now(setup: Setup) -> None:
    setup.email.error = errors.PermanentError("SMTP 550 no such user")
    completion = await setup.deliver()
    assert (completion.status, completion.error) == (Status.FAILED, "SMTP 550 no such user")
    assert setup.paused == [] and setup.throttled == []


async def test_throttling_retries_without_an_attempt_and_slows_the_channel(
    setup: Setup,
) -> None:
    setup.email.error = errors.Throttled("Maximum sending rate exceeded")
    completion = await setup.deliver(attempts=WORKER.max_attempts)  # even the last one
    assert completion == Completion(
        7, 3, Status.PENDING, error="Maximum sending rate exceeded", provider="mail",
        retry_delay=retry.THROTTLE_DELAY_SECONDS, refund=True,
    )  # fmt: skip
    assert setup.throttled == ["email"]
    assert setup.paused == []


async def test_a_paused_account_pauses_the_channel_without_using_an_attempt(
    setup: Setup,
) -> None:
    setup.sms.error = errors.ChannelPaused("SMS sending is paused for this account")
    completion = await setup.deliver(channel="sms", attempts=WORKER.max_attempts)
    assert completion == Completion(
        7, 3, Status.PENDING, error="SMS sending is paused for this account", provider="text",
        retry_delay=WORKER.pause_seconds, refund=True,
    )  # fmt: skip
    assert setup.paused == [("sms", "SMS sending is paused for this account")]
    assert setup.throttled == []


async def test_a_provider_bug_is_a_transient_failure_not_a_crash(setup: Setup) -> None:
    setup.email.error = KeyError("oops")
    completion = await setup.deliver()
    assert completion.status is Status.PENDING
    assert completion.error == "unexpected KeyError: 'oops'"


async def test_a_send_cut_off_by_its_deadline_is_retried(setup: Setup) -> None:
    completion = setup.dispatcher.timed_out(message(attempts=1), 2.5)
    assert (completion.status, completion.error) == (
        Status.PENDING, "mail: no answer within 2.5s"
    )  # fmt: skip
    assert not completion.refund


async def test_links_add_context_and_headers(tmp_path: Path) -> None:
    def links(m: Message) -> tuple[Mapping[str, Any], Mapping[str, str]]:
        return {"name": f"reader of {m.id}"}, {"List-Unsubscribe": f"<https://u.example/{m.id}>"}

    setup = Setup(tmp_path)
    setup.dispatcher.links = links
    assert (await setup.deliver()).status is Status.SENT
    [rendered] = setup.email.rendered
    assert rendered.subject == "Hello reader of 7"
    assert rendered.headers == {"List-Unsubscribe": "<https://u.example/7>"}
