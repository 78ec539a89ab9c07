"""outboxd's application library: enqueue notifications inside your own transaction.

Applications import :mod:`outbox.messages`; the daemon builds on the same package.
"""

from __future__ import annotations

from outbox.messages import NewMessage, enqueue, enqueue_cursor, enqueue_many

__all__ = ["NewMessage", "enqueue", "enqueue_cursor", "enqueue_many"]
