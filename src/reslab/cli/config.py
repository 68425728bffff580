"""reslab config [CONFIG] [--set K=V ...] [--machine CLASS] | --defaults [--markdown]"""
from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from types import UnionType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from ..config import MACHINE_CLASSES, Config, load_config
from ..config_reference import ROWS, markdown_table, meaning
from ._parsers import command_parser

DESCRIPTION = """\
Print the fully resolved config that `reslab train CONFIG` would run, as YAML: every default
filled in, `base:` files merged, --set overrides and the machine class's `machine:` set applied
(the class of train.device on this machine, or --machine), user model paths absolute. The
output is what the run's config.yaml will hold; `reslab train` of it trains the same run.

--defaults lists every config key with its default and meaning (the README's reference is
generated from the same table: --defaults --markdown)."""


def add_parser(sub) -> argparse.ArgumentParser:
    p = command_parser(sub, "config", "print the resolved config train would run, or the "
                       "defaults", DESCRIPTION)
    p.add_argument("config", nargs="?", metavar="CONFIG", help="YAML config file (default: "
                   "all defaults)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=0.01 (repeatable)")
    p.add_argument("--machine", choices=MACHINE_CLASSES, help="apply this machine class's set "
                   "(default: the class of train.device here)")
    p.add_argument("--defaults", action="store_true",
                   help="list every key with its default and meaning")
    p.add_argument("--markdown", action="store_true",
                   help="with --defaults: the README's reference tables (data, model, train)")
    return p


def run(args: argparse.Namespace) -> int:
    if args.defaults:
        print(defaults_markdown() if args.markdown else defaults_text())
        return 0
    print(resolved_yaml(args.config, args.overrides, args.machine), end="")
    return 0


def resolved_yaml(config: str | None, overrides: list[str], machine: str | None) -> str:
    """config.yaml of a new run of `config` on a machine of class `machine` (None: here)."""
    from ..engine.machine import apply_machine_class

    cfg = load_config(config, overrides)
    cfg, _ = apply_machine_class(cfg, machine or local_class(cfg), overrides)
    return cfg.to_yaml()


def local_class(cfg: Config) -> str | None:
    from ..engine.device import resolve_device
    from ..engine.machine import machine_class

    return machine_class(resolve_device(cfg.train.device))


def leaf_defaults(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, default) for every key of `model`: a section's keys one by one; a key that
    may be a section (train.ema: null, model.head: linear) by itself and then the section's
    keys as they default when it is one."""
    for key, field in model.model_fields.items():
        dotted = f"{prefix}{key}"
        nested = _submodel(field.annotation)
        default = field.get_default(call_default_factory=True)
        if not isinstance(default, BaseModel):  # a value, or a section that is off
            yield dotted, _plain(default)
        if nested is not None:
            yield from leaf_defaults(nested, dotted + ".")


def defaults_text() -> str:
    keys = [next(leaf_defaults(Config)), ("base", None), *list(leaf_defaults(Config))[1:]]
    rows = [(key, json.dumps(value), _meaning_of(key)) for key, value in keys]
    width = max(len(k) + len(v) for k, v, _ in rows) + 4
    return "\n".join(f"{f'{k} = {v}':<{width}}# {m}" for k, v, m in rows)


def defaults_markdown() -> str:
    return "\n\n".join(f"### `{name}`\n{markdown_table(name)}" for name in ROWS)


def _meaning_of(dotted: str) -> str:
    section, _, rest = dotted.partition(".")
    if not rest:
        return meaning("", section)
    return meaning(section, rest.partition(".")[0])


def _submodel(annotation) -> type[BaseModel] | None:
    """The section a key holds (X, or X in X | None), not a list of them (train.phases)."""
    union = get_origin(annotation) in (Union, UnionType)
    for candidate in (annotation, *(get_args(annotation) if union else ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
