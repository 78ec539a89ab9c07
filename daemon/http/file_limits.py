"""The open-files budget of the HTTP servers: :func:`raise_file_limit` lifts the soft
RLIMIT_NOFILE to the hard limit at start, and :func:`connection_budget` keeps the public
server's connection cap to a quarter of it (connections being closed and those accepted
in one turn of the loop come on top: at most twice the cap in all), so that delivery keeps
its share of descriptors whatever clients do."""

from __future__ import annotations

import logging
import resource

logger = logging.getLogger(__name__)

#: Share of the file-descriptor limit the public HTTP server may hold.
HTTP_SHARE_OF_FILES = 4


def raise_file_limit() -> int:
    """Raise the soft open-files limit to the hard one; returns the soft limit now set."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open-files limit: %s", exc)
    return soft


def connection_budget(wanted: int, file_limit: int) -> int:
    """``wanted`` connections, at most a quarter of ``file_limit`` (the rest stays for the
    database pool, SMTP and AWS connections, files and the claim loops)."""
    budget = max(1, min(wanted, file_limit // HTTP_SHARE_OF_FILES))
    if budget < wanted:
        logger.warning(
            "HTTP connections capped at %d: a quarter of the open-files limit (%d)",
            budget,
            file_limit,
            extra={"action": "start"},
        )
    return budget
