"""reslab completion bash|zsh"""
from __future__ import annotations

import argparse

from ._parsers import command_parser

DESCRIPTION = """\
Print a shell completion script for reslab (commands, flags, choices and file arguments).

  bash:  reslab completion bash > ~/.local/share/bash-completion/completions/reslab
  zsh:   reslab completion zsh > ~/.zfunc/_reslab   (with fpath+=~/.zfunc before compinit)"""


def add_parser(sub) -> argparse.ArgumentParser:
    p = command_parser(sub, "completion", "print a bash or zsh completion script", DESCRIPTION)
    p.add_argument("shell", choices=("bash", "zsh"), help="the shell to complete in")
    return p


def run(args: argparse.Namespace) -> int:
    import shtab

    from . import build_parser

    print(shtab.complete(build_parser(), shell=args.shell))
    return 0
