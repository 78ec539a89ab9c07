"""Every option of every command says what it is for in ``--help``."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from daemon.cli.main import build_parser


def _actions(
    parser: argparse.ArgumentParser, path: str = "outboxd"
) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        else:
            yield path, action


def test_every_option_has_help_text() -> None:
    without = [
        f"{path} {'/'.join(action.option_strings) or action.dest}"
        for path, action in _actions(build_parser())
        if not isinstance(action, argparse._HelpAction)
        and action.help != argparse.SUPPRESS
        and not (action.help or "").strip()
    ]
    assert without == []


def test_every_command_has_help_text() -> None:
    [commands] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert {c.dest: bool((c.help or "").strip()) for c in commands._choices_actions} == {
        name: True for name in commands.choices
    }
