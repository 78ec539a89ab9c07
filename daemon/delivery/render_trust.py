"""Which templates may render on the event loop: those that have shown they are quick.

Handing a render to a worker thread and back costs more than most renders: the hand-over,
a wake-up of the loop and the GIL changing hands. Rendering every message in the threads,
the null-provider drain spent 112-114 us of CPU per message and sent 7,500-7,700 a second;
rendering on the loop, 83-90 us and 10,400-11,000 a second (same session).

So a template earns the loop: after :data:`TRUST_AFTER` renders in a row, each under
:data:`INLINE_CPU_LIMIT` of CPU, its next messages render inline. One render over the limit
(in a thread or inline) sends it back to the threads, and each time that happens it needs
twice as many quick renders in a row to come back, up to :data:`TRUST_AFTER` times
``2 ** MAX_DEMOTIONS`` (8,192): a template slow for all contexts, or for one in a few
thousand, stays in the threads; one that was slow once by accident comes back (a render
the garbage collector interrupted is not counted at all, see ``render_threads``). A new
template, or a runaway one, never stops the loop: it renders in a thread first. An inline
render is still bounded by the budget (the watchdog of
:class:`~daemon.delivery.render_threads.RenderThreads` stops it on the loop's thread), so
the most a trusted template that turns slow on one message can cost is one stall of the
loop, no longer than the budget, after which it renders in the threads.
"""

from __future__ import annotations

from collections.abc import Hashable

#: Quick renders in a row before a template renders on the event loop.
TRUST_AFTER = 32
#: CPU seconds a render may take and still count as quick: a stall of the loop this long
#: is no worse than one turn of it under load.
INLINE_CPU_LIMIT = 0.002
#: Slow renders after which the quick renders a template needs stop doubling.
MAX_DEMOTIONS = 8


class InlineTrust:
    """The record of each template's renders; :meth:`inline` says where the next goes.

    Used from the event loop only (the threads' renders are observed when they are settled
    there), so it needs no lock.
    """

    __slots__ = ("_demotions", "_streak", "after", "limit")

    def __init__(self, *, after: int = TRUST_AFTER, limit: float = INLINE_CPU_LIMIT) -> None:
        self.after = after
        self.limit = limit
        self._streak: dict[Hashable, int] = {}
        self._demotions: dict[Hashable, int] = {}

    def inline(self, key: Hashable) -> bool:
        """Whether ``key``'s next render may run on the event loop."""
        return self._streak.get(key, 0) >= self.after << self._demotions.get(key, 0)

    def observe(self, key: Hashable, cpu_seconds: float) -> bool:
        """Record one render of ``key`` that took ``cpu_seconds`` of CPU; true when it was
        slow while ``key`` was trusted (it renders in the threads again)."""
        if cpu_seconds > self.limit:
            was_inline = self.inline(key)
            self._demotions[key] = min(self._demotions.get(key, 0) + 1, MAX_DEMOTIONS)
            self._streak[key] = 0
            return was_inline
        self._streak[key] = self._streak.get(key, 0) + 1
        return False
