"""outboxd's application library: enqueue notifications inside your own transaction.

Applications import :mod:`outbox.messages` and :mod:`outbox.people`, and mint in-app inbox
tokens with :func:`outbox.inbox.inbox_token`; the daemon builds on the same package.
"""

from __future__ import annotations

from outbox.inbox import inbox_token
from outbox.messages import Enqueued, NewMessage, enqueue, enqueue_cursor, enqueue_many
from outbox.people import notify, notify_cursor, upsert_recipient, upsert_recipient_cursor

__all__ = [
    "Enqueued",
    "NewMessage",
    "enqueue",
    "enqueue_cursor",
    "enqueue_many",
    "inbox_token",
    "notify",
    "notify_cursor",
    "upsert_recipient",
    "upsert_recipient_cursor",
]
