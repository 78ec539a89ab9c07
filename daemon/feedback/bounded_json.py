"""JSON from strangers: parsed without letting its nesting reach the interpreter's stack."""

from __future__ import annotations

import json
from typing import Any


class JsonRejected(ValueError):
    """Not JSON, or nested deeper than we accept (the message says which)."""


def loads(data: str | bytes, *, max_depth: int) -> Any:
    """``json.loads(data)``, refusing documents nested deeper than ``max_depth``.

    The C parser recurses once per level: a few kilobytes of ``[`` end in RecursionError,
    and a document just under the interpreter's limit would fail later, when it is
    written back out. Both are refused here, as bad input.
    """
    try:
        value = json.loads(data)
    except RecursionError as exc:
        raise JsonRejected(f"JSON nested deeper than {max_depth} levels") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise JsonRejected("not JSON") from exc
    if _depth(value) > max_depth:
        raise JsonRejected(f"JSON nested deeper than {max_depth} levels")
    return value


def _depth(value: Any) -> int:
    """How deeply ``value`` nests (a scalar is 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest
