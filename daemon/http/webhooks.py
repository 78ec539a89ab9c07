"""``POST /webhooks/sns``: SES feedback delivered by SNS.

Bad input never changes state and never gets a 5xx: the envelope is verified (signature,
certificate, topic, age) before anything is parsed or written, and every rejection is a
4xx with a short reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web

from daemon import metrics
from daemon.feedback.envelope import SnsRejected, SnsVerifier, validate_subscribe_url
from daemon.feedback.ses_events import SesEventError, parse_ses_message
from daemon.feedback.store import FeedbackStore
from outbox import errors

logger = logging.getLogger(__name__)

#: Confirms a subscription by fetching its SubscribeURL (already validated).
Confirmer = Callable[[str], Awaitable[None]]

VERIFIER = web.AppKey("sns_verifier", SnsVerifier)
FEEDBACK = web.AppKey("feedback_store", FeedbackStore)
CONFIRMER: web.AppKey[Confirmer] = web.AppKey("sns_confirmer")
TRANSIENT_LIMIT = web.AppKey("transient_bounce_limit", int)


def https_confirmer(session: aiohttp.ClientSession) -> Confirmer:
    async def confirm(url: str) -> None:
        timeout = aiohttp.ClientTimeout(total=5)
        async with session.get(url, allow_redirects=False, timeout=timeout) as response:
            if response.status != 200:
                raise RuntimeError(f"SubscribeURL answered {response.status}")

    return confirm


async def sns_webhook(request: web.Request) -> web.Response:
    try:
        body = await request.read()
        envelope = await request.app[VERIFIER].verify(
            body, message_type_header=request.headers.get("x-amz-sns-message-type")
        )
    except web.HTTPRequestEntityTooLarge:
        return web.Response(status=413, text="request body too large\n")
    except SnsRejected as exc:
        logger.warning("SNS message rejected: %s", exc.reason, extra={"action": "webhook"})
        return web.Response(status=exc.status, text=f"{exc.reason}\n")

    if envelope.type == "SubscriptionConfirmation":
        return await _confirm(request, envelope.subscribe_url or "", envelope.topic_arn)
    if envelope.type == "UnsubscribeConfirmation":
        logger.warning(
            "SNS topic %s unsubscribed this endpoint",
            envelope.topic_arn,
            extra={"action": "webhook"},
        )
        return web.Response(text="noted\n")

    try:
        events = parse_ses_message(envelope.message)
    except SesEventError as exc:
        return web.Response(status=400, text=f"not an SES event: {exc}\n")
    feedback = request.app[FEEDBACK]
    limit = request.app[TRANSIENT_LIMIT]
    recorded = 0
    try:
        # Many recipients (a list's bounce) share one notification: stored once.
        shared = await feedback.store_payload(events[0].payload) if len(events) > 1 else None
        for event in events:
            outcome = await feedback.record(event, transient_bounce_limit=limit, payload_id=shared)
            if not outcome.duplicate:
                recorded += 1
                metrics.FEEDBACK_EVENTS.labels(event.event_type).inc()
    except errors.DatabaseError as exc:
        # Our fault, not the sender's: SNS retries on 5xx, and events are deduplicated.
        logger.error("could not record feedback: %s", exc, extra={"action": "webhook"})
        return web.Response(status=503, text="temporarily unavailable\n")
    return web.Response(text=f"recorded {recorded} event(s)\n")


async def _confirm(request: web.Request, url: str, topic_arn: str) -> web.Response:
    try:
        validate_subscribe_url(url)
    except SnsRejected as exc:
        return web.Response(status=exc.status, text=f"{exc.reason}\n")
    try:
        await request.app[CONFIRMER](url)
    except Exception as exc:  # a failed confirmation is logged and reported, never fatal
        logger.warning("subscription confirmation failed: %s", exc, extra={"action": "webhook"})
        return web.Response(status=502, text="could not confirm the subscription\n")
    logger.info("confirmed SNS subscription to %s", topic_arn, extra={"action": "webhook"})
    return web.Response(text="subscription confirmed\n")


def setup(
    app: web.Application,
    *,
    verifier: SnsVerifier,
    feedback: FeedbackStore,
    confirmer: Confirmer,
    transient_bounce_limit: int,
) -> None:
    app[VERIFIER] = verifier
    app[FEEDBACK] = feedback
    app[CONFIRMER] = confirmer
    app[TRANSIENT_LIMIT] = transient_bounce_limit
    app.router.add_post("/webhooks/sns", sns_webhook)
