"""`reslab COMMAND --help` lists every flag the command takes (issue 20)."""
from __future__ import annotations

import argparse

import pytest

from reslab.cli import COMMANDS, build_parser, main


def command_parser(name: str) -> argparse.ArgumentParser:
    parser = build_parser(name)
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sub.choices[name]


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_lists_every_flag(name, capsys):
    flags = [flag for action in command_parser(name)._actions for flag in action.option_strings]
    assert "--help" in flags
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    missing = [flag for flag in flags if flag not in shown]
    assert not missing, f"reslab {name} --help does not show {missing}"
    assert shown.startswith(f"usage: reslab {name}")


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    shown = capsys.readouterr().out
    assert [c for c in COMMANDS if c not in shown] == []
