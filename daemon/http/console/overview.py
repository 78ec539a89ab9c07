"""The overview: queue depth, send rate, bounce and complaint rates against SES's limits,
paused channels; and pausing or resuming a channel."""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from aiohttp import web
from multidict import MultiDict

from daemon.http.console import charts
from daemon.http.console.common import BASE, CONSOLE, action, back_to, render, signed_in
from daemon.http.console.queries import CHANNELS

logger = logging.getLogger(__name__)

#: SES reviews an account at a 5% bounce rate and a 0.1% complaint rate (and may pause
#: its sending at 10% and 0.5%).
BOUNCE_LIMIT = 0.05
COMPLAINT_LIMIT = 0.001


@dataclass(frozen=True, slots=True)
class ChannelFeedback:
    channel: str
    sent: int
    bounce_rate: float
    complaint_rate: float


def _per_minute(rows: list[dict[str, object]], now: datetime) -> dict[str, list[float]]:
    """Sends per minute for the last 60 minutes, oldest first, per channel."""
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=59)
    series: dict[str, list[float]] = {c: [0.0] * 60 for c in CHANNELS}
    for row in rows:
        minute = row["minute"]
        assert isinstance(minute, datetime)
        index = int((minute - start).total_seconds() // 60)
        if 0 <= index < 60:
            series[str(row["channel"])][index] += float(row["n"])  # type: ignore[arg-type]
    return series


@signed_in
async def overview(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    data = await console.store.overview()
    depth: dict[str, dict[str, int]] = defaultdict(dict)
    due: dict[str, int] = defaultdict(int)
    for row in data.depth:
        depth[row["channel"]][row["status"]] = row["n"]
        due[row["channel"]] += row["due"] if row["status"] == "pending" else 0
    finished: dict[str, dict[str, int]] = defaultdict(dict)
    for row in data.finished:
        finished[row["channel"]][row["status"]] = row["n"]
    now = datetime.now(UTC)
    series = _per_minute([dict(r) for r in data.send_rate], now)
    feedback = [
        ChannelFeedback(
            r["channel"], r["sent"], r["bounced"] / r["sent"], r["complained"] / r["sent"]
        )
        for r in data.feedback
        if r["sent"]
    ]
    return render(
        request,
        "overview.html.j2",
        channels=CHANNELS,
        depth=depth,
        due=due,
        finished=finished,
        series=series,
        rates={c: sum(v[-5:]) / 5 for c, v in series.items()},
        charts=charts,
        feedback=feedback,
        bounce_limit=BOUNCE_LIMIT,
        complaint_limit=COMPLAINT_LIMIT,
        pauses=data.pauses,
        breakers=console.state.paused(),
        notice=request.query.get("notice", ""),
    )


@action
async def pause(request: web.Request, form: MultiDict[str]) -> web.StreamResponse:
    channel = request.match_info["channel"]
    reason = form.get("reason", "").strip()[:500]
    if channel not in CHANNELS:
        raise web.HTTPNotFound()
    if not reason:
        raise back_to(BASE, f"Not paused: say why {channel} is paused.")
    await request.app[CONSOLE].store.pause(channel, reason, "console")
    logger.warning(
        "%s channel paused from the console: %s", channel, reason,
        extra={"action": "pause", "channel": channel},
    )  # fmt: skip
    raise back_to(BASE, f"{channel} paused: the daemons stop claiming it within seconds.")


@action
async def resume(request: web.Request, form: MultiDict[str]) -> web.StreamResponse:
    channel = request.match_info["channel"]
    if channel not in CHANNELS:
        raise web.HTTPNotFound()
    resumed = await request.app[CONSOLE].store.resume(channel)
    if resumed:
        logger.warning(
            "%s channel resumed from the console", channel,
            extra={"action": "resume", "channel": channel},
        )  # fmt: skip
    raise back_to(BASE, f"{channel} resumed." if resumed else f"{channel} was not paused.")
