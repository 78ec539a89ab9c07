"""A real PgBouncer (Debian's /usr/sbin/pgbouncer) in transaction mode, in front of the
suite's PostgreSQL, on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

BINARY = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


def available() -> bool:
    return os.access(BINARY, os.X_OK)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _target(admin_dsn: str) -> tuple[str, int, str]:
    """(host or socket directory, port, user) of the suite's PostgreSQL."""
    parts = urlsplit(admin_dsn)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "127.0.0.1"])[0]
    port = int(query.get("port", [parts.port or 5432])[0])
    return host, port, parts.username or "postgres"


@contextlib.contextmanager
def pgbouncer(admin_dsn: str, *, pool_size: int = 3) -> Iterator[int]:
    """Start PgBouncer (transaction mode, ``pool_size`` server sessions per database) and
    yield its port; every database of the suite's server is reachable through it."""
    host, port, user = _target(admin_dsn)
    directory = Path(tempfile.mkdtemp(prefix="outboxd-pgbouncer-"))
    listen = _free_port()
    run_as: list[str] = []
    if os.geteuid() == 0:
        # PgBouncer refuses to run as root: run it as whoever owns the server's socket
        # directory (or a plain user for a TCP server).
        owner = os.stat(host).st_uid if host.startswith("/") else pwd.getpwnam("nobody").pw_uid
        os.chown(directory, owner, -1)
        run_as = ["-u", pwd.getpwuid(owner).pw_name]
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        f"""[databases]
* = host={host} port={port} user={user}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 200
logfile = {directory / "pgbouncer.log"}
pidfile = {directory / "pgbouncer.pid"}
server_reset_query =
ignore_startup_parameters = extra_float_digits
""",
        encoding="utf-8",
    )
    os.chmod(ini, 0o644)
    process = subprocess.Popen(
        [BINARY, *run_as, str(ini)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", listen), 0.2):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                log = (directory / "pgbouncer.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"pgbouncer did not start (exit {process.poll()}): {log}")
            time.sleep(0.05)
        yield listen
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def through(port: int, database_url: str) -> str:
    """``database_url``'s database, reached through PgBouncer on ``port``."""
    name = urlsplit(database_url).path.lstrip("/")
    return f"postgresql://postgres@127.0.0.1:{port}/{name}"
