"""RenderThreads: results and errors come back; a render over its budget is stopped."""

from __future__ import annotations

import pytest

from daemon.delivery.render_threads import RenderOverrun, RenderThreads


def _forever(_: object) -> None:
    while True:
        pass


def _fail(_: object) -> None:
    raise ValueError("bad value")


async def test_results_errors_and_a_runaway_render() -> None:
    threads = RenderThreads(0.2, threads=2)
    try:
        assert await threads.run(str.upper, "ok") == "OK"
        with pytest.raises(ValueError, match="bad value"):
            await threads.run(_fail, None)
        with pytest.raises(RenderOverrun):
            await threads.run(_forever, None)
        # The thread that ran it takes the next job as if nothing had happened.
        assert [await threads.run(str.lower, "A") for _ in range(4)] == ["a"] * 4
    finally:
        threads.close()
