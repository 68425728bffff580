"""STUDY.yaml for `reslab study`: the schema, its scales and the variants it expands to.

    name: s0-formats                  # default: the file's stem
    base: ../format-study/jpeg.yaml   # a train config (path relative to this file, or inline)
    overrides: {data.split_seed: 0}   # optional: config keys set for every variant
    prepare:                          # optional: image trees made once, before any training
      source: ../data/jpegs           # a folder of class folders (relative to this file)
      per_class: null                 # the first K images per folder (sorted), null = all
      trees: {jpeg: source, linear: linear-tiff, log: log-exr}
    axes:                             # the variants: the cartesian product of the axes
      model: {resnet34: {model.arch: "tv:resnet34"}, vgg16: {model.arch: "tv:vgg16"}}
      format: {jpeg: {data.root: "prepared:jpeg"}, linear: {...}, log: {...}}
      train.lr: [0.01, 0.1]           # shorthand: one key's values (axis "lr")
    sweep: {sampler: ofat, space: {...}}   # optional: a sweep file's body, per variant
    confirm: {repeats: 3}             # seeds of each variant's best config (default 1)
    robustness: {suite: seed, raw: true}   # optional
    scale:                            # --scale tiny|full (default full): overrides
      tiny: {data.max_per_class: 20, train.epochs: 2, sweep.space: {...}, confirm.repeats: 2}

A variant is the base with `overrides`, its axis values' overrides, then the scale's. Scale keys
under sweep., confirm., robustness. and prepare. change the study itself (a whole value, e.g.
`sweep.space`); every other key is a config key. A config value `prepared:<tree>` is that
prepared tree's path. Variants are named by their axis value names joined with '-'.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..config import (
    PATH_KEYS,
    Config,
    ModelConfig,
    fan_out_keys,
    is_path_value,
    parse_mapping,
    read_config_file,
    read_yaml,
    resolve_path,
    set_key,
    validate,
)
from ..data.convert import TARGETS
from ..errors import ReslabError
from ..evaluate.robustness import SUITE_CHOICES
from ..runs.rundir import StudyDir, safe_name
from ..sweep.spec import Sweep, sweep_from_mapping

SCALES = ("tiny", "full")
STUDY_SECTIONS = ("sweep", "confirm", "robustness", "prepare")  # scale keys on the study
PREPARED = "prepared:"    # a config value naming a tree of `prepare:`
SOURCE_TREE = "source"    # a tree that is the (subset of the) source itself, not converted
Scalar = bool | int | float | str


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PrepareSpec(_Strict):
    source: str
    per_class: int | None = Field(None, ge=1)
    trees: dict[str, str] = Field(min_length=1)

    @field_validator("trees")
    @classmethod
    def _encodings(cls, v: dict[str, str]) -> dict[str, str]:
        known = (SOURCE_TREE, *TARGETS)
        for tree, encoding in v.items():
            if encoding not in known:
                raise ValueError(f"{tree}: {encoding!r}: expected one of {', '.join(known)}")
        return v


class ConfirmSpec(_Strict):
    repeats: int = Field(1, ge=1, le=100)


class RobustnessSpec(_Strict):
    suite: str = "seed"
    raw: bool = False

    @field_validator("suite")
    @classmethod
    def _suite(cls, v: str) -> str:
        if v not in SUITE_CHOICES:
            raise ValueError(f"expected one of {', '.join(SUITE_CHOICES)}")
        return v


class StudySpec(_Strict):
    name: str | None = None
    base: str | dict[str, Any]
    overrides: dict[str, Any] = Field(default_factory=dict)   # on the base, for every variant
    axes: dict[str, dict[str, dict[str, Any]] | list[Scalar]] = Field(min_length=1)
    prepare: PrepareSpec | None = None
    sweep: dict[str, Any] | None = None
    confirm: ConfirmSpec = Field(default_factory=ConfirmSpec)
    robustness: RobustnessSpec | None = None
    scale: dict[Literal["tiny", "full"], dict[str, Any]] = Field(default_factory=dict)

    @field_validator("axes")
    @classmethod
    def _values(cls, v: dict) -> dict:
        for axis, values in v.items():
            if not values:
                raise ValueError(f"{axis}: expected at least one value")
        return v

    @field_validator("sweep")
    @classmethod
    def _no_base(cls, v: dict | None) -> dict | None:
        for key in ("base", "name", "confirm"):
            if v is not None and key in v:
                raise ValueError(f"{key}: not allowed in a study's sweep (each variant is the "
                                 "base; confirm: is the study's own)")
        return v


@dataclass
class Variant:
    name: str
    values: dict[str, str]      # axis -> the value's name
    cfg: Config
    sweep: Sweep | None         # validated sweep over this variant (None: no sweep)


@dataclass
class StudyPlan:
    path: Path
    name: str
    scale: str
    spec: StudySpec             # after the scale's study overrides
    source: Path | None         # prepare.source, absolute
    variants: list[Variant]
    out: StudyDir               # where it runs (the prepared trees' paths point into it)

    @property
    def axes(self) -> list[str]:
        """The axes' names (a shorthand axis `train.lr` is named `lr`)."""
        return list(self.variants[0].values) if self.variants else []

    def describe(self) -> dict:
        """What study.yaml records: a re-run of the same study must expand to the same."""
        spec = self.spec.model_dump(exclude={"scale", "base", "axes"})
        return {"name": self.name, "scale": self.scale, **spec,
                "variants": {v.name: {"axes": v.values, "config": v.cfg.to_dict()}
                             for v in self.variants}}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.describe(), sort_keys=False)


# ----------------------------------------------------------------------------- loading
def load_study_plan(path: str | Path, scale: str = "full", out: StudyDir | None = None,
                    sets: list[str] | None = None) -> StudyPlan:
    """Read, validate and expand STUDY.yaml at `scale`: every variant's config and sweep are
    checked here, before anything trains. `out` places the prepared trees (default: the
    study's default directory); `sets` (--set KEY=VALUE) go on every variant's config last."""
    path = Path(path)
    if scale not in SCALES:
        raise ReslabError(f"--scale {scale!r}: expected one of {', '.join(SCALES)}")
    raw = read_yaml(path, "name, base, axes, ...")
    first = parse_mapping(StudySpec, raw, str(path), "name, base, axes, ...")
    overrides = first.scale.get(scale) or {}
    study_keys = {k: v for k, v in overrides.items() if k.split(".")[0] in STUDY_SECTIONS}
    config_keys = {k: v for k, v in overrides.items() if k not in study_keys}
    config_keys.update(parse_sets(sets))
    spec = parse_mapping(StudySpec, _with_keys(raw, study_keys), f"{path}: scale.{scale}",
                         "name, base, axes, ...")
    name = spec.name or path.stem
    out = out if out is not None else StudyDir(default_out(name, scale))
    source = (path.parent / spec.prepare.source).resolve() if spec.prepare else None
    spec.sweep = _sweep_paths(spec.sweep, path)
    base = _base_raw(spec, path)
    variants = [_variant(path, spec, base, combo, config_keys, out)
                for combo in itertools.product(*(_axis_values(a, v)
                                                  for a, v in spec.axes.items()))]
    return StudyPlan(path, name, scale, spec, source, variants, out)


def parse_sets(sets: list[str] | None) -> dict[str, Any]:
    """--set KEY=VALUE strings -> {KEY: value parsed as YAML}; a path there is relative to the
    current folder (made absolute here, before the study file's paths are resolved)."""
    out = {}
    for item in sets or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ReslabError(f"--set {item!r:.80}: expected section.key=value")
        value = yaml.safe_load(text)
        out[key.strip()] = str(Path(value).resolve()) if key.strip() in PATH_KEYS and \
            is_path_value(value) else value
    return out


def _sweep_paths(sweep: dict | None, path: Path) -> dict | None:
    """The study's sweep with the path values of its space made absolute against the study
    file's folder: each variant's sweep.yaml is written elsewhere (variants/<v>/)."""
    space = (sweep or {}).get("space")
    if not isinstance(space, dict) or not any(k in PATH_KEYS for k in space):
        return sweep
    space = copy.deepcopy(space)
    for key in [k for k in PATH_KEYS if isinstance(space.get(k), dict)]:
        values = space[key].get("values")
        if isinstance(values, list):
            space[key]["values"] = [resolve_path(v, path.parent.resolve(), str(path),
                                                 f"sweep.space.{key}") for v in values]
    return {**sweep, "space": space}


def default_out(name: str, scale: str) -> Path:
    return Path("studies") / f"{safe_name(name)}-{scale}"


def _with_keys(raw: dict, keys: dict[str, Any]) -> dict:
    raw = copy.deepcopy(raw)
    for key, value in keys.items():
        set_key(raw, key, value)
    return raw


def _base_raw(spec: StudySpec, path: Path) -> dict:
    """The base config as a mapping, its user model path made absolute against its file."""
    if isinstance(spec.base, dict):
        raw, folder = copy.deepcopy(spec.base), path.parent
    else:
        base_path = path.parent / spec.base
        raw, folder = read_config_file(base_path), base_path.parent
    arch = (raw.get("model") or {}).get("arch")
    if isinstance(arch, str):
        raw["model"]["arch"] = ModelConfig.resolve_arch(arch, folder)
    return raw


def _axis_values(axis: str, values: dict | list) -> list[tuple[str, str, dict]]:
    """(axis, value name, overrides) per value; a list is the shorthand for one key."""
    if isinstance(values, list):
        short = axis.rpartition(".")[2]
        return [(short, safe_name(str(v)), {axis: v}) for v in values]
    return [(axis, safe_name(str(name)), overrides or {}) for name, overrides in values.items()]


def _flatten(overrides: dict, prefix: str = "") -> dict[str, Any]:
    """{model: {arch: x}} and {model.arch: x} alike -> {"model.arch": x}: a nested mapping
    sets its keys, never replaces a whole config section."""
    flat = {}
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _variant(path: Path, spec: StudySpec, base: dict, combo: tuple, config_keys: dict,
             out: StudyDir) -> Variant:
    name = "-".join(value for _, value, _ in combo)
    where = f"{path}: variant {name}"
    raw = copy.deepcopy(base)
    for overrides in (spec.overrides, *(o for _, _, o in combo), config_keys):
        for key, value in _flatten(overrides).items():
            set_key(raw, key, value)
    # Resolved after every layer is set, so the base's own `prepared:` values count too.
    for key, value in _flatten(raw).items():
        resolved = _resolved(value, key, spec, path, out, where)
        if resolved != value:
            set_key(raw, key, resolved)
    raw["name"] = name
    cfg = validate(raw, where)
    _check_variant(cfg, where)
    sweep = None
    if spec.sweep is not None:
        sweep = sweep_from_mapping({**spec.sweep, "base": cfg.to_dict(), "name": name},
                                   Path(f"{path} (sweep of variant {name})"))
    return Variant(name, {axis: value for axis, value, _ in combo}, cfg, sweep)


def _resolved(value: Any, key: str, spec: StudySpec, path: Path, out: StudyDir,
              where: str) -> Any:
    """`prepared:<tree>` -> the tree's path; a user model path and the other paths
    (PATH_KEYS) -> absolute, against this file's folder."""
    if isinstance(value, str) and value.startswith(PREPARED):
        tree = value.removeprefix(PREPARED)
        trees = spec.prepare.trees if spec.prepare else {}
        if tree not in trees:
            raise ReslabError(f"{where}: {key} = {value!r}: no tree {tree!r} under prepare.trees"
                              f" (expected one of: {', '.join(trees) or 'none given'})")
        return str(prepared_tree(out, tree, trees[tree]).resolve())
    if key == "model.arch" and isinstance(value, str):
        return ModelConfig.resolve_arch(value, path.parent)
    if key in PATH_KEYS:  # relative to this file (a base file's own are absolute by now)
        return resolve_path(value, path.parent.resolve(), str(path), key)
    return value


def prepared_tree(out: StudyDir, tree: str, encoding: str) -> Path:
    """Where a prepared tree lies: a `source` tree is prepare/source itself."""
    return out.prepared(SOURCE_TREE if encoding == SOURCE_TREE else tree)


def _check_variant(cfg: Config, where: str) -> None:
    if fan_out_keys(cfg):
        raise ReslabError(f"{where}: {', '.join(fan_out_keys(cfg))} names several runs; a "
                          "variant is one config (its seeds: confirm: {repeats: N})")
    if cfg.data.test_fraction == 0 and cfg.data.source != "folder":
        raise ReslabError(f"{where}: data.test_fraction = 0: a study evaluates every variant "
                          "on a held-out test split; set data.test_fraction (e.g. 0.1)")
