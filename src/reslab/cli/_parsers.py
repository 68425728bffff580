"""Shared pieces of the command modules' parsers."""
from __future__ import annotations

import argparse


def command_parser(sub, name: str, help: str, description: str) -> argparse.ArgumentParser:
    """A subcommand whose --help prints its description with the line breaks it was written
    with (a key list, a file layout)."""
    return sub.add_parser(name, help=help, description=description,
                          formatter_class=argparse.RawDescriptionHelpFormatter)
