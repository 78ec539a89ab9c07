"""Enqueueing for tests that hold a pool: the client refuses a pool, so acquire first."""

from __future__ import annotations

from typing import Unpack

import asyncpg

from outbox import Enqueued, enqueue
from outbox.messages import MessageFields


async def enqueue_one(pool: asyncpg.Pool, **fields: Unpack[MessageFields]) -> Enqueued:
    """One message on a connection of ``pool``, committed on its own."""
    async with pool.acquire() as conn:
        return await enqueue(conn, **fields)
