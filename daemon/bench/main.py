"""``outboxd bench``: throughput and latency, measured against the raw SQL floor in one run.

Runs in a throwaway database created beside the configured one (or in the embedded
server) and drops it afterwards. Phases:

1. floor - claim + batched completion only (no rendering, no sending): the SQL limit;
2. drain - a backlog of N messages rendered from a real template (html + text) and sent
   through the chosen provider by the real daemon;
3. notify - a three-channel ``outbox.notify`` timed against the three ``outbox.enqueue``
   calls it stands for, then a second drain of N rows of which ``--notify-share`` come
   from notify (email and in-app rows of people), as a ratio to the plain drain;
4. latency - messages enqueued one per transaction at a fixed offered rate while the
   daemon runs; enqueue-to-sent percentiles from the database's own clock.
5. with --digests: the digest flush against the bare SQL of the same grouping, and the
   claim floor beside a large batched backlog (:mod:`daemon.bench.digests`).
6. with --campaign: a large campaign's expansion against the bare INSERT ... SELECT, and
   transactional latency while it drains (:mod:`daemon.bench.campaign`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import statistics
from typing import Any

from daemon import db
from daemon.bench import people, phases, support
from daemon.settings import Settings
from outbox import errors


def run(settings: Settings, args: argparse.Namespace) -> int:
    if getattr(args, "inbox", False):
        from daemon.bench import inbox

        result = asyncio.run(inbox.run(settings, args))
        print(json.dumps(result, indent=2) if args.json else inbox.format_result(result))
        return 0
    if getattr(args, "webhooks", False):
        from daemon.bench import webhooks

        result = asyncio.run(webhooks.run(settings, args))
        print(json.dumps(result, indent=2) if args.json else webhooks.format_result(result))
        return 0
    result = asyncio.run(_bench(settings, args))
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_result(result))
    return 0


def format_result(result: dict[str, Any]) -> str:
    lines = [f"outboxd bench: {result['messages']} messages, provider {result['provider']}"]
    if "smtp_sink" in result:
        lines[0] += f" ({result['smtp_sink']} sink)"

    def line(label: str, value: str, phase: dict[str, Any] | None = None) -> None:
        cpu = (phase or {}).get("cpu_us")
        spent = ", ".join(f"{side} {us:,.0f}" for side, us in cpu.items()) if cpu else ""
        lines.append(f"  {label:<44}{value:>20}" + (f"   CPU us each: {spent}" if spent else ""))

    floor, drain = result.get("floor"), result.get("drain")
    if floor:
        line("raw SQL floor (claim + batched completion)", f"{floor['rate']:,.0f} rows/s", floor)
    if drain:
        processes = drain.get("processes", 1)
        label = f"end to end, {processes} process{'es' if processes > 1 else ''}"
        line(label, f"{drain['rate']:,.0f} messages/s", drain)
        if floor:
            line(_ratio_label("ratio to the SQL floor", result.get("floor_ratios")),
                 f"{result['floor_ratio']:.1%}")  # fmt: skip
    if "bare_aioboto3" in result:
        bare = result["bare_aioboto3"]["rate"]
        line("bare aioboto3 send_email loop", f"{bare:,.0f} calls/s")
        if drain:
            line(_ratio_label("outboxd / bare aioboto3", result.get("bare_ratios")),
                 f"{result['bare_ratio']:.1%}")  # fmt: skip
    if "notify_cost" in result:
        cost = result["notify_cost"]
        line(
            "three-channel notify / 3 enqueue calls",
            f"{cost['ratio']:.2f}x",
        )
        lines[-1] += f"   ({cost['notify_us']:,.0f} us against {cost['enqueue3_us']:,.0f} us"
        if "postgres_cpu_ratio" in cost:
            lines[-1] += f"; postgres CPU {cost['postgres_cpu_ratio']:.2f}x"
        lines[-1] += ")"
    mixed = result.get("drain_notify")
    if mixed:
        share, pairs = result["notify_share"], len(mixed["ratios"])
        line("end to end, plain backlog (median)", f"{mixed['plain_rate']:,.0f} messages/s",
             mixed["plain"])  # fmt: skip
        line(f"end to end, {share:.0%} of rows from notify (median)",
             f"{mixed['rate']:,.0f} messages/s", mixed)  # fmt: skip
        line(f"notify backlog / plain backlog, median of {pairs} pairs", f"{mixed['ratio']:.1%}")
        line("  its outboxd CPU per message / the plain one's", f"{mixed['cpu_ratio']:.2f}x")
    if "celery" in result:
        celery = result["celery"]
        line("Celery + Redis worker, same backlog", f"{celery['rate']:,.0f} messages/s", celery)
        if drain:
            line("outboxd / Celery + Redis", f"{drain['rate'] / celery['rate']:.1f}x")
    if "latency" in result:
        lat = result["latency"]
        line(
            f"enqueue->sent at {lat['offered_rate']:g}/s offered",
            f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms",
        )
    if "digests" in result:
        flush, claim = result["digests"]["flush"], result["digests"]["claim"]

        def cpu(value: float | None) -> str:
            return "" if value is None else f", CPU {value:.2f}x"

        label = f"digest flush, {flush['items']:,} items into {flush['digests']:,}"
        line(label, f"{flush['rate']:,.0f} items/s")
        line("same grouping, bare SQL", f"{flush['floor_rate']:,.0f} items/s")
        line("digest flush / bare SQL", f"{flush['ratio']:.2f}x{cpu(flush['cpu_ratio'])}")
        line(f"claim floor, {claim['rows']:,} due rows alone", f"{claim['rate_alone']:,.0f} rows/s")
        line(
            f"  beside {claim['batched']:,} batched rows",
            f"{claim['rate_beside_batched']:,.0f} rows/s",
        )
        line("  beside / alone", f"{claim['ratio']:.2f}x{cpu(claim['cpu_ratio'])}")
    if "campaign" in result:
        from daemon.bench import campaign

        campaign.format_result(result["campaign"], line)
    line("peak RSS of the bench process", f"{result['peak_rss_mib']:.0f} MiB")
    return "\n".join(lines)


def _ratio_label(label: str, ratios: list[float] | None) -> str:
    if not ratios:
        return label
    return f"{label}, median of {len(ratios)} ({', '.join(f'{r:.0%}' for r in ratios)})"


async def _bench(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    if args.compare and args.provider != "smtp":
        raise errors.ConfigurationError("outboxd bench --compare celery needs --provider smtp")
    admin_dsn, _ = db.resolve_dsn(settings)
    result: dict[str, Any] = {"messages": args.messages, "provider": args.provider}
    with contextlib.ExitStack() as stack:
        port = None
        if args.provider == "smtp":
            result["smtp_sink"] = getattr(args, "smtp_sink", "minimal")
            port = stack.enter_context(support.smtp_sink(result["smtp_sink"]))
        elif args.provider == "ses":
            port = stack.enter_context(support.fake_ses())
            support.fake_credentials()
        daemon_settings = phases.daemon_settings(settings, args, port)
        async with phases.throwaway_database(admin_dsn) as dsn:
            await phases.migrate(dsn)
            if args.extra_pending:
                await phases.fill(dsn, args.extra_pending, not_before_future=True)
                result["extra_pending"] = args.extra_pending
            result.update(await _rounds(dsn, args, daemon_settings, port))
            if "notify" not in args.skip:
                result["notify_cost"] = await people.notify_cost(dsn, args.notify_calls)
                if args.notify_share:
                    result["notify_share"] = args.notify_share
                    result["drain_notify"] = await _mixed_drains(dsn, args, daemon_settings, port)
            if args.compare == "celery":
                from daemon.bench import celery_peer as bench_celery

                assert port is not None
                await phases.fill_due(dsn, args.messages)
                result["celery"] = await bench_celery.drain(
                    dsn, broker=args.redis_url, smtp_port=port, processes=args.processes
                )
                result["celery"]["processes"] = args.processes
            if "latency" not in args.skip:
                result["latency"] = await phases.latency(
                    dsn, daemon_settings, args.rate, args.latency_seconds
                )
    if args.digests:
        from daemon.bench import digests

        result["digests"] = await digests.run(
            admin_dsn, args.digest_items, args.digest_groups, args.batched, args.messages
        )
    if args.campaign:
        from daemon.bench import campaign

        result["campaign"] = await campaign.run(admin_dsn, settings, args)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


async def _rounds(
    dsn: str, args: argparse.Namespace, settings: Settings, port: int | None
) -> dict[str, Any]:
    """The floor (or, for SES, the bare aioboto3 loop) and the drain, alternating
    ``--rounds`` times: on a shared machine the load moves between one phase and the next,
    so each drain is compared with the reference measured just before it, and the median
    of those ratios is reported with the median round."""
    bare_ses = args.provider == "ses" and port is not None
    rounds: list[dict[str, Any]] = []
    for _ in range(getattr(args, "rounds", 1)):
        one: dict[str, Any] = {}
        if bare_ses:
            one["bare_aioboto3"] = await support.bare_ses_loop(
                f"http://127.0.0.1:{port}", min(args.messages, 20_000), args.concurrency or 64
            )
        if "floor" not in args.skip:
            await phases.fill_due(dsn, args.messages)
            one["floor"] = await phases.floor(dsn, args.messages)
        if "drain" not in args.skip:
            await phases.fill_due(dsn, args.messages)
            one["drain"] = await _drain(dsn, args, settings, port)
        rounds.append(one)
    result: dict[str, Any] = {}
    for reference, key in (("floor", "floor_ratio"), ("bare_aioboto3", "bare_ratio")):
        pairs = [r for r in rounds if reference in r and "drain" in r]
        if pairs:
            ratios = [r["drain"]["rate"] / r[reference]["rate"] for r in pairs]
            result[key] = statistics.median(ratios)
            if len(ratios) > 1:
                result[key + "s"] = [round(ratio, 3) for ratio in ratios]
    # The round whose drain rate is the median stands for the run.
    middle = sorted(rounds, key=lambda r: r.get("drain", {}).get("rate", 0.0))[len(rounds) // 2]
    result.update(middle)
    return result


async def _drain(
    dsn: str, args: argparse.Namespace, settings: Settings, port: int | None
) -> dict[str, Any]:
    if args.processes > 1:
        result = await phases.drain_processes(dsn, args, port)
    else:
        result = await phases.drain(dsn, settings, args.messages)
    result["processes"] = args.processes
    return result


async def _mixed_drains(
    dsn: str, args: argparse.Namespace, settings: Settings, port: int | None
) -> dict[str, Any]:
    """Drains of a plain backlog and of one with ``--notify-share`` of its rows from
    notify, alternating ``--notify-rounds`` times: on a shared machine the load changes
    from one drain to the next, and a pair measured back to back sees much the same."""
    plain, mixed, ratios, cpu_ratios = [], [], [], []
    for _ in range(args.notify_rounds):
        await phases.fill_due(dsn, args.messages)
        plain.append(await _drain(dsn, args, settings, port))
        backlog = await people.fill_mixed(dsn, args.messages, args.notify_share)
        mixed.append(await _drain(dsn, args, settings, port))
        ratios.append(mixed[-1]["rate"] / plain[-1]["rate"])
        side = next(iter(plain[-1]["cpu_us"]))  # outboxd, or whatever ran the drain
        cpu_ratios.append(mixed[-1]["cpu_us"][side] / max(plain[-1]["cpu_us"][side], 0.1))
    middle = sorted(range(len(ratios)), key=ratios.__getitem__)[len(ratios) // 2]
    return {
        **backlog,
        "rate": statistics.median(m["rate"] for m in mixed),
        "plain_rate": statistics.median(p["rate"] for p in plain),
        "ratio": statistics.median(ratios),
        "ratios": [round(r, 3) for r in ratios],
        # The CPU outboxd spends per message moves less with the machine's load than rates.
        "cpu_ratio": statistics.median(cpu_ratios),
        # CPU of the median pair.
        "cpu_us": mixed[middle]["cpu_us"],
        "plain": {"cpu_us": plain[middle]["cpu_us"]},
    }
