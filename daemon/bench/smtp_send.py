"""The SMTP provider alone: CPU per send of the rendered ``welcome`` email (MIME and the
SMTP transaction), no database, no rendering, against the minimal sink.

Run: ``python -m daemon.bench.smtp_send [MESSAGES] [IN_FLIGHT]`` (6,000 and 32: what the
daemon keeps in flight with the default pool of 8 connections).
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime

from daemon.bench import support
from daemon.delivery.render import Renderer
from daemon.providers.smtp import SmtpProvider
from daemon.settings import Settings, SmtpSettings
from outbox.models import Message

_WARM_UP = 100


async def measure(messages: int, in_flight: int) -> dict[str, float]:
    """CPU microseconds per send and sends per second, after a warm-up."""
    context = {"name": "User 1", "login_url": "https://app.example.com/login?u=1"}
    rendered = Renderer.from_settings(Settings()).render(
        channel="email", template="welcome", context={**context, "recipient": "u@example.com"}
    )
    now = datetime.now(UTC)
    batch = [
        Message(i, "email", f"user{i}@example.com", "welcome", {}, "transactional", 1, None,
                {}, 1, None, now)
        for i in range(messages + _WARM_UP)
    ]  # fmt: skip
    with support.smtp_sink("minimal") as port:
        settings = SmtpSettings(host="127.0.0.1", port=port)
        async with SmtpProvider(settings, sender="Acme <hi@acme.example>") as provider:
            slots = asyncio.Semaphore(in_flight)

            async def send(message: Message) -> None:
                async with slots:
                    await provider.send(message, rendered)

            await asyncio.gather(*(send(m) for m in batch[:_WARM_UP]))
            cpu, wall = time.process_time(), time.perf_counter()
            await asyncio.gather(*(send(m) for m in batch[_WARM_UP:]))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {"cpu_us": cpu / messages * 1e6, "rate": messages / wall}


def main() -> None:
    messages = int(sys.argv[1]) if len(sys.argv) > 1 else 6000
    in_flight = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    result = asyncio.run(measure(messages, in_flight))
    print(f"SMTP provider alone: {result['cpu_us']:.0f} us of CPU per send, "
          f"{result['rate']:,.0f} sends/s ({messages} sends, {in_flight} in flight)")  # fmt: skip


if __name__ == "__main__":
    main()
