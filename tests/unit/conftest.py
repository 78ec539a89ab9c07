"""Virtual time for unit tests of the delivery loops.

``@pytest.mark.virtual_time`` runs a test's event loop on looptime's clock: sleeps,
timeouts and ``call_later`` take no real time, and the loop's ``time()`` moves only when
every task waits. A test can then let the lane sleep a cool-down of a minute, or assert
that a probe came exactly one cool-down after the last, without waiting or flaking on a
loaded machine. The loop is handed to pytest-asyncio through its loop-factory hook (not
looptime's own pytest plugin, which leaves an unclosed event loop behind every
synchronous test).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping

import looptime
import pytest

#: A loop that passes this much virtual time has lost its way: fail instead of spinning.
VIRTUAL_TIME_LIMIT = 24 * 3600.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "virtual_time: run the test's event loop on a fast-forwarding virtual clock"
    )


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    if item.get_closest_marker("virtual_time") is None:
        return {"real_time": asyncio.new_event_loop}
    return {
        "virtual_time": functools.partial(
            looptime.new_event_loop, start=0.0, end=VIRTUAL_TIME_LIMIT
        )
    }
