"""A slowloris attacker, run as its own process so that it does not slow down the clients
measuring the daemon: ``python -m tests.integration.slowloris PORT CONNECTIONS SECONDS``.

Each of CONNECTIONS clients opens a connection to 127.0.0.1:PORT, starts a request head and
adds a header line every two seconds, never finishing it; when the server closes the
connection it reconnects a second later. It prints ``connected`` once as many connections
were opened as there are clients and, after SECONDS (or SIGTERM), what it saw as one JSON
line.
"""

from __future__ import annotations

import asyncio
import json
import resource
import signal
import sys
from dataclasses import asdict, dataclass


@dataclass
class Seen:
    connects: int = 0
    failed_connects: int = 0
    closed_by_server: int = 0
    most_open: int = 0
    open: int = 0


async def _client(
    port: int, connections: int, seen: Seen, number: int, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            seen.failed_connects += 1
            await asyncio.sleep(1)
            continue
        seen.connects += 1
        if seen.connects == connections:
            print("connected", flush=True)
        seen.open += 1
        seen.most_open = max(seen.most_open, seen.open)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: outboxd\r\n")
            while not stop.is_set():
                try:
                    if not await asyncio.wait_for(reader.read(1), 2):
                        seen.closed_by_server += 1
                        break
                except TimeoutError:
                    writer.write(f"X-Slow-{number}: still typing\r\n".encode())
                    await writer.drain()
        except OSError:
            seen.closed_by_server += 1
        finally:
            seen.open -= 1
            writer.close()
        await asyncio.sleep(1)


async def attack(port: int, connections: int, seconds: float) -> Seen:
    seen, stop = Seen(), asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    clients = [
        asyncio.create_task(_client(port, connections, seen, n, stop)) for n in range(connections)
    ]
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        stop.set()
    await asyncio.gather(*clients, return_exceptions=True)
    return seen


def main() -> None:
    port, connections, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(json.dumps(asdict(asyncio.run(attack(port, connections, seconds)))), flush=True)


if __name__ == "__main__":
    main()
