"""Many SSE clients in one process, for ``outboxd bench --inbox``: run apart from the server
so that the server's memory and CPU are its own.

Protocol with the parent, one JSON line each way: the parent writes the tokens
(``{"port": p, "tokens": [...]}``) to stdin; this process opens one stream per token, and
when every stream has received its first ``count`` event prints ``{"ready": n}``. It then
records the arrival time (``time.time()``) of every ``item`` event until the parent writes
``{"expect": n}`` and ``n`` items have arrived (or 60 s have passed), prints
``{"arrivals": {id: [times...]}}`` and exits. Plain sockets and a regular expression, not an
HTTP client library: 5,000 of them must stay cheap here too.
"""

from __future__ import annotations

import asyncio
import json
import re
import resource
import sys
import time
from collections import defaultdict

_ITEM = re.compile(rb"event: item\nid: (\d+)\n")
_COUNT = b"event: count\n"
_BATCH = 100


def raise_nofile() -> int:
    """Lift the soft limit on open files to the hard one; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


class Clients:
    def __init__(self, port: int) -> None:
        self.port = port
        self.arrivals: dict[int, list[float]] = defaultdict(list)
        self.items = 0
        self.ready = 0
        self.changed = asyncio.Event()
        self.failures = 0

    async def one(self, token: str, connected: asyncio.Event) -> None:
        for attempt in range(20):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                break
            except OSError:
                await asyncio.sleep(0.1 * (attempt + 1))
        else:
            self.failures += 1
            connected.set()
            return
        writer.write(
            f"GET /inbox/stream?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        tail = b""
        counted = False
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                now = time.time()
                buffer = tail + data
                for match in _ITEM.finditer(buffer):
                    self.arrivals[int(match[1])].append(now)
                    self.items += 1
                    self.changed.set()
                if not counted and _COUNT in buffer:
                    counted = True
                    self.ready += 1
                    connected.set()
                # A frame split across reads is matched on the next one.
                tail = buffer[-64:]
        except OSError:
            pass
        finally:
            if not counted:
                self.failures += 1
                connected.set()
            writer.close()


async def _main() -> None:
    raise_nofile()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**26)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    setup = json.loads(await reader.readline())
    clients = Clients(setup["port"])
    tasks = []
    tokens = setup["tokens"]
    for start in range(0, len(tokens), _BATCH):
        events = []
        for token in tokens[start : start + _BATCH]:
            connected = asyncio.Event()
            events.append(connected)
            tasks.append(asyncio.create_task(clients.one(token, connected)))
        await asyncio.gather(*(e.wait() for e in events))
    print(json.dumps({"ready": clients.ready, "failures": clients.failures}), flush=True)

    expect = json.loads(await reader.readline())["expect"]
    deadline = time.monotonic() + 60
    while clients.items < expect and time.monotonic() < deadline:
        clients.changed.clear()
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await clients.changed.wait()
        except TimeoutError:
            break
    print(json.dumps({"arrivals": clients.arrivals, "items": clients.items}), flush=True)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(_main())
