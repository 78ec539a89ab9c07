"""Message search, a message's page (timeline and rendered content), and the actions:
retry, requeue and cancel, on chosen messages or on a whole search (with a confirm step)."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from multidict import MultiDict

from daemon.http import html
from daemon.http.console import gallery
from daemon.http.console.common import (
    BASE,
    CONSOLE,
    action,
    back_to,
    console_path,
    filters_from,
    number,
    problem,
    render,
    signed_in,
)
from daemon.http.console.queries import ACTIONS, CHANNELS, STATUSES
from daemon.http.console.store import MessageDetail

logger = logging.getLogger(__name__)
PAGE_SIZE = 50
#: What each action is called on buttons and in notices.
VERBS = {"retry": "Retry", "requeue": "Requeue now", "cancel": "Cancel"}
DONE = {"retry": "retried", "requeue": "requeued", "cancel": "cancelled"}
MAX_IDS = 500


@signed_in
async def search(request: web.Request) -> web.StreamResponse:
    try:
        filters = filters_from(request.query)
        before = request.query.get("before", "")
        before_id = number(before)
        if before and before_id is None:
            raise ValueError("before must be a message id")
    except ValueError as exc:
        return problem(request, 400, str(exc))
    store = request.app[CONSOLE].store
    rows, next_before = await store.search(filters, before=before_id, limit=PAGE_SIZE)
    return render(
        request,
        "messages.html.j2",
        filters=filters,
        fields=filters.as_query(),
        rows=rows,
        next_before=next_before,
        statuses=STATUSES,
        channels=CHANNELS,
        verbs=VERBS,
        notice=request.query.get("notice", ""),
    )


def _timeline(detail: MessageDetail) -> list[dict[str, Any]]:
    """What happened to the message, in order: enqueued, attempts, sent, feedback."""
    m = detail.message
    steps: list[dict[str, Any]] = [
        {"at": m["created_at"], "what": "enqueued", "detail": f"{m['channel']} · {m['template']}"}
    ]
    # Scheduled later (or retried): when it became due, unless that was after it went out.
    if m["not_before"] > m["created_at"] and (
        m["sent_at"] is None or m["not_before"] <= m["sent_at"]
    ):
        steps.append({"at": m["not_before"], "what": "due", "detail": m["deferred_reason"] or ""})
    if m["attempts"]:
        steps.append(
            {
                "at": m["updated_at"] if m["sent_at"] is None else m["sent_at"],
                "what": f"{m['attempts']} attempt{'s' if m['attempts'] != 1 else ''}",
                "detail": m["last_error"] or "",
                "error": bool(m["last_error"]),
            }
        )
    if m["sent_at"] is not None:
        steps.append({"at": m["sent_at"], "what": "sent", "detail": m["provider"] or ""})
    for event in detail.events:
        subtype = f" ({event['subtype']})" if event["subtype"] else ""
        steps.append(
            {
                "at": event["occurred_at"] or event["created_at"],
                "what": f"{event['event_type']}{subtype}",
                "detail": f"from {event['source']}",
                "error": event["event_type"] in ("bounce", "complaint"),
            }
        )
    if m["status"] not in ("pending", "sending", "sent") and m["sent_at"] is None:
        steps.append({"at": m["updated_at"], "what": m["status"], "detail": m["last_error"] or ""})
    return sorted(steps, key=lambda s: s["at"])


async def _detail(request: web.Request) -> MessageDetail:
    message_id = number(request.match_info["id"])
    if message_id is None:
        raise web.HTTPNotFound()
    detail = await request.app[CONSOLE].store.message(message_id)
    if detail is None:
        raise web.HTTPNotFound()
    return detail


def _preview(request: web.Request, detail: MessageDetail) -> gallery.Preview:
    m = detail.message
    context = json.loads(m["context"]) if isinstance(m["context"], str) else dict(m["context"])
    context.update(recipient=m["recipient"], message_id=m["id"])
    locale = m["locale"]
    if detail.person is not None:
        context["person"] = detail.person
        locale = locale or detail.person.get("locale")
    return gallery.preview(
        request.app[CONSOLE].renderer,
        template=m["template"],
        channel=m["channel"],
        context=context,
        locale=locale,
    )


@signed_in
async def message(request: web.Request) -> web.StreamResponse:
    detail = await _detail(request)
    m = detail.message
    return render(
        request,
        "message.html.j2",
        m=m,
        tags=json.dumps(json.loads(m["tags"]) if isinstance(m["tags"], str) else m["tags"]),
        timeline=_timeline(detail),
        webhooks=detail.webhooks,
        preview=_preview(request, detail),
        # An archived message is read-only: the actions change outbox.message rows only.
        verbs={
            a: v
            for a, v in VERBS.items()
            if m["archived_at"] is None and m["status"] in ACTIONS[a][0]
        },
        notice=request.query.get("notice", ""),
    )


@signed_in
async def message_html(request: web.Request) -> web.StreamResponse:
    """The message's HTML part alone, for the sandboxed frame of its page."""
    preview = _preview(request, await _detail(request))
    if preview.rendered is None or not preview.rendered.html:
        raise web.HTTPNotFound()
    response = web.Response(text=preview.rendered.html, content_type="text/html")
    html.secure(response, html.PREVIEW_POLICY)
    return response


def _ids(form: MultiDict[str]) -> list[int]:
    ids = {i for i in map(number, form.getall("id", [])) if i is not None}
    if len(ids) > MAX_IDS:
        raise ValueError(f"at most {MAX_IDS} messages at once; act on the search instead")
    return sorted(ids)


@action
async def act(request: web.Request, form: MultiDict[str]) -> web.StreamResponse:
    """An action on chosen messages (``id`` fields), or on the whole search (the filter
    fields, ``scope=search``): that one first shows what it would change and asks."""
    console = request.app[CONSOLE]
    name = form.get("action", "")
    if name not in ACTIONS:
        return problem(request, 400, "Unknown action.")
    back = console_path(form.get("back", BASE))
    if form.get("scope") != "search":
        try:
            ids = _ids(form)
        except ValueError as exc:
            return problem(request, 400, str(exc))
        if not ids:
            raise back_to(back, "Nothing chosen: tick the messages first.")
        done = await console.store.act_on_ids(name, ids)
        logger.info("console: %s %d message(s)", DONE[name], len(done), extra={"action": "console"})
        skipped = len(ids) - len(done)
        note = (
            f" ({skipped} skipped: archived, or their status does not allow it)" if skipped else ""
        )
        raise back_to(back, f"{len(done)} message(s) {DONE[name]}{note}.")
    try:
        filters = filters_from(form)
    except ValueError as exc:
        return problem(request, 400, str(exc))
    cap = console.settings.max_rows
    if form.get("confirm") != "yes":
        count = await console.store.count_for_action(filters, name, cap)
        return render(
            request, "confirm.html.j2", action=name, verb=VERBS[name], count=count, cap=cap,
            fields=filters.as_query(), statuses=ACTIONS[name][0], back=back,
        )  # fmt: skip
    changed = await console.store.act_on_search(
        filters, name, batch=console.settings.batch_size, cap=cap
    )
    logger.info(
        "console: %s %d message(s) of a search", DONE[name], changed, extra={"action": "console"}
    )
    raise back_to(back, f"{changed} message(s) {DONE[name]}.")
