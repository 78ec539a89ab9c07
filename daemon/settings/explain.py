"""What is wrong with the settings, in one line a user understands.

pydantic says "Extra inputs are not permitted" or "Input should be a valid number, unable
to parse string as a number"; an operator needs the variable's name, what it wants, and
for a typo the name they meant. Secret values are never repeated.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from daemon.settings.base import ENV_PREFIX

#: Fields whose values are never repeated in a message.
SECRET_FIELDS = frozenset({"password", "secret_key", "database_url", "token"})

#: ``OUTBOXD_`` variables that are not settings: the test suite's database
#: (OUTBOXD_TEST_DATABASE_URL) and what ``outboxd bench`` hands its peers.
NOT_SETTINGS = (f"{ENV_PREFIX}TEST_", f"{ENV_PREFIX}BENCH_")


def env_name(location: Iterable[int | str]) -> str:
    """The environment variable for a pydantic error location, e.g. OUTBOXD_EMAIL__RATE."""
    parts = [str(p) for p in location if not isinstance(p, int)]
    if parts == ["email", "sender"]:
        parts = ["email", "from"]
    return ENV_PREFIX + "__".join(p.upper() for p in parts) if parts else ENV_PREFIX + "*"


def known_variables(tree: type[BaseModel]) -> frozenset[str]:
    """Every variable ``tree`` reads: each field (by name and alias), each section's fields."""
    names: set[str] = set()
    for name, field in tree.model_fields.items():
        for top in {name, field.alias or name}:
            names.add(env_name([top]))
            section = field.annotation
            if isinstance(section, type) and issubclass(section, BaseModel):
                for sub, sub_field in section.model_fields.items():
                    names.update(env_name([top, n]) for n in {sub, sub_field.alias or sub})
    return frozenset(names)


def unknown_variables(environ: Mapping[str, str], known: frozenset[str]) -> str | None:
    """One line naming each ``OUTBOXD_`` variable that is not a setting, or None."""
    complaints = []
    for variable in sorted(environ):
        name = variable.upper()  # pydantic-settings reads names in any case
        if not name.startswith(ENV_PREFIX) or name in known or name.startswith(NOT_SETTINGS):
            continue
        complaint = f"unknown setting {variable}"
        guess = _closest(name, known)
        if guess:
            complaint += f" (did you mean {guess}?)"
        complaints.append(complaint)
    return "; ".join(complaints) or None


def _closest(name: str, known: frozenset[str]) -> str | None:
    # Compared without the prefix every name shares, which would make all look alike.
    stem = name.removeprefix(ENV_PREFIX)
    stems = [k.removeprefix(ENV_PREFIX) for k in known]
    match = difflib.get_close_matches(stem, stems, n=1, cutoff=0.75)
    return ENV_PREFIX + match[0] if match else None


def describe(exc: ValidationError) -> str:
    """One line naming the first bad variable, without echoing secret values."""
    err = exc.errors()[0]
    location = tuple(err.get("loc", ()))
    name = env_name(location)
    if err["type"] == "extra_forbidden":
        return f"unknown setting {name}"
    if not location or location == ("worker",):
        # Rules spanning fields name their variables themselves.
        return f"invalid setting {_wording(err)}"
    message = f"invalid setting {name}: {_wording(err)}"
    secret = any(str(part) in SECRET_FIELDS for part in location)
    if not secret and isinstance(err.get("input"), str):
        message += f" (got {err['input']!r})"
    return message


def _wording(err: ErrorDetails) -> str:
    kind = err["type"]
    ctx: dict[str, Any] = dict(err.get("ctx") or {})
    if kind in ("float_parsing", "float_type", "finite_number"):
        return "must be a number"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be a whole number"
    if kind in ("bool_parsing", "bool_type"):
        return "must be true or false"
    if kind in ("enum", "literal_error"):
        return "must be one of " + str(ctx.get("expected", "")).replace("'", "")
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("more than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        words, key = bounds[kind]
        return f"must be {words} {_number(ctx.get(key))}"
    if kind.startswith("url_"):
        return "must be a URL such as https://notify.example.com"
    return str(err.get("msg", "invalid value")).removeprefix("Value error, ")


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
