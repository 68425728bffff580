"""SWEEP.yaml: the schema (pydantic, extra keys forbidden) and the search space it describes.

Every space key is checked against the train config schema before anything starts: each
categorical value (and each range's low/high) is applied to the base config and validated,
so a typo or an out-of-range value fails in a second, not after an hour of trials.
"""
from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..config import (
    PATH_KEYS,
    Config,
    ModelConfig,
    absolute_paths,
    apply_overrides,
    fan_out_keys,
    get_key,
    parse_mapping,
    read_config_file,
    read_yaml,
    resolve_path,
    resolve_paths,
    set_key,
    validate,
)
from ..errors import ReslabError

Scalar = bool | int | float | str | None
RESULT_KEYS = ("best_val_acc", "final_val_acc", "test_acc")
ROW_KEYS = ("val_acc", "val_loss", "train_acc", "train_loss", "test_acc", "test_loss")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Factor(_Strict):
    values: list[Scalar] | None = None
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: int | float | None = None

    @model_validator(mode="after")
    def _shape(self) -> Factor:
        if self.values is not None:
            if any(v is not None for v in (self.low, self.high, self.step)) or self.log:
                raise ValueError("give either values: [...] or low:/high:, not both")
            if not self.values:
                raise ValueError("values: expected a non-empty list")
            if len({json.dumps(v) for v in self.values}) < len(self.values):
                raise ValueError(f"values: {self.values} has duplicates")
            return self
        if self.low is None or self.high is None:
            raise ValueError("expected values: [...] or both low: and high:")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log: true needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("step cannot be combined with log: true")
        if self.step is not None and self.step <= 0:
            raise ValueError("step must be > 0")
        return self

    @property
    def is_int(self) -> bool:
        """Integer range: both bounds written as ints (and an int step, if any)."""
        return all(isinstance(v, int) and not isinstance(v, bool)
                   for v in (self.low, self.high, self.step if self.step is not None else 1))


class Objective(_Strict):
    metric: str = "best_val_acc"
    direction: Literal["maximize", "minimize"] | None = None

    @model_validator(mode="after")
    def _known(self) -> Objective:
        known = dict.fromkeys(RESULT_KEYS + ROW_KEYS)
        if self.metric not in known:
            raise ValueError(f"metric {self.metric!r}: expected one of {', '.join(known)}")
        return self

    @property
    def resolved_direction(self) -> str:
        return self.direction or ("minimize" if self.metric.endswith("loss") else "maximize")


class Heartbeat(_Strict):
    # A killed worker's trial is failed (and re-queued) `grace` seconds after its last beat.
    interval: int = Field(30, ge=1)
    grace: int | None = Field(None, ge=1)
    max_retry: int = Field(3, ge=0)

    @property
    def grace_period(self) -> int:
        return self.grace or 3 * self.interval


class Confirm(_Strict):
    """Retrain the top_k trials with `repeats` fresh seeds; best.yaml is the best mean."""
    top_k: int = Field(3, ge=1, le=100)
    repeats: int = Field(3, ge=1, le=100)


class SweepSpec(_Strict):
    base: str | dict[str, Any]
    space: dict[str, Factor] = Field(min_length=1)
    sampler: Literal["grid", "random", "tpe", "ofat"] = "tpe"
    n_trials: int | None = Field(None, ge=1)
    pruner: Literal["none", "median", "hyperband"] = "none"
    objective: Objective = Field(default_factory=Objective)
    seed: int = 0
    heartbeat: Heartbeat = Field(default_factory=Heartbeat)
    confirm: Confirm | None = None  # off by default
    name: str | None = None
    # Per-trial report.html, plots and TensorBoard logs cost more than a small trial's
    # training; the sweep's own report covers the trials.
    trial_reports: bool = False

    @model_validator(mode="after")
    def _sampler_needs(self) -> SweepSpec:
        if self.sampler in ("grid", "ofat"):
            for key, factor in self.space.items():
                if factor.values is None:
                    raise ValueError(f"space.{key}: sampler {self.sampler} needs values: [...] "
                                     "for every factor (ranges need random or tpe)")
        elif self.n_trials is None:
            raise ValueError(f"n_trials: required for sampler {self.sampler}")
        return self


@dataclass
class Sweep:
    """A validated sweep: the spec, its base config (raw + resolved) and where it came from."""
    spec: SweepSpec
    path: Path
    base_raw: dict
    base: Config

    @property
    def keys(self) -> list[str]:
        return list(self.spec.space)

    @property
    def name(self) -> str:
        return self.spec.name or self.path.stem

    def config_for(self, params: dict[str, Any], source: str | None = None) -> Config:
        """The base config with a trial's parameters applied, validated."""
        raw = copy.deepcopy(self.base_raw)
        for key, value in params.items():
            set_key(raw, key, value)
        return validate(raw, source or f"{self.path}: trial config")

    def base_value(self, key: str) -> Any:
        node: Any = self.base.to_dict()
        for part in key.split("."):
            node = node[part]
        return node

    def choices(self, key: str) -> list:
        """Categorical choices; ofat adds the base value so its base point is representable."""
        values = list(self.spec.space[key].values or [])
        if self.spec.sampler == "ofat" and self.base_value(key) not in values:
            values.append(self.base_value(key))
        return values

    def points(self) -> list[dict[str, Any]]:
        """Every point a grid or ofat sweep trains, in a fixed order (empty for random/tpe)."""
        space = self.spec.space
        if self.spec.sampler == "grid":
            return [dict(zip(space, combo))
                    for combo in itertools.product(*(f.values for f in space.values()))]
        if self.spec.sampler == "ofat":
            base = {k: self.base_value(k) for k in space}
            points = [{**base, key: v} for key, f in space.items() for v in f.values]
            return list({point_key(p): p for p in points}.values())  # dedup, keeps order
        return []

    def fingerprint(self) -> str:
        """What must not change between runs sharing one study."""
        s = self.spec
        return json.dumps({"sampler": s.sampler, "objective": s.objective.model_dump(),
                           "space": {k: f.model_dump() for k, f in s.space.items()}},
                          sort_keys=True)


def point_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def parse_spec(raw: Any, source: str) -> SweepSpec:
    return parse_mapping(SweepSpec, raw, source, "base, space, sampler, ...")


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> Sweep:
    """Read and validate SWEEP.yaml, its base config (with `overrides`, --set, on top) and
    every space key; or raise ReslabError."""
    path = Path(path)
    return sweep_from_mapping(read_yaml(path, "base, space, sampler, ..."), path, overrides)


def sweep_from_mapping(raw: Any, path: Path, overrides: list[str] | None = None) -> Sweep:
    """A sweep from its parsed mapping; `path` names it in errors and anchors a base path
    (reslab study validates each variant's sweep this way before writing its file)."""
    spec = parse_spec(raw, str(path))
    if isinstance(spec.base, str):
        base_path = path.parent / spec.base
        base_raw = _with_absolute_arch(read_config_file(base_path), base_path.parent)
        base = validate(base_raw, str(base_path))
    else:  # an inline base: its paths are relative to this file, as in a config file
        base_raw = resolve_paths(_with_absolute_arch(spec.base, path.parent),
                                 path.parent.resolve(), f"{path}: base")
        base = validate(base_raw, f"{path}: base")
    for key in [k for k in spec.space if k in PATH_KEYS and spec.space[k].values]:
        spec.space[key].values = [resolve_path(v, path.parent.resolve(), str(path),
                                               f"space.{key}") for v in spec.space[key].values]
    if overrides:  # their paths are relative to the current folder
        base_raw = absolute_paths(apply_overrides(base_raw, overrides))
        base = validate(base_raw, f"{path}: base with --set")
    if fan_out_keys(base):
        raise ReslabError(f"{path}: base: {', '.join(fan_out_keys(base))} names several runs; "
                          "a trial is one run (retrain the best trials over seeds with "
                          "confirm: {top_k: 3, repeats: 3})")
    sweep = Sweep(spec, path, base_raw, base)
    _normalise_space(sweep)
    return sweep


def _with_absolute_arch(base_raw: Any, folder: Path) -> Any:
    """A user model `file.py:Class` in the base is relative to the file that names it (as
    in a config); trials run from the sweep directory, so it is made absolute here."""
    model = base_raw.get("model") if isinstance(base_raw, dict) else None
    if isinstance(model, dict) and isinstance(model.get("arch"), str):
        arch = ModelConfig.resolve_arch(model["arch"], folder.resolve())
        base_raw = {**base_raw, "model": {**model, "arch": arch}}
    return base_raw


def _normalise_space(sweep: Sweep) -> None:
    """Validate each space value through the config schema and store it as the config types it
    (YAML reads `1e-4` as a string; the config makes it 0.0001, and so must the study)."""
    for key, factor in sweep.spec.space.items():
        samples = factor.values if factor.values is not None else [factor.low, factor.high]
        typed = []
        for value in samples:
            cfg = sweep.config_for({key: value}, f"{sweep.path}: space.{key}")
            node = get_key(cfg.to_dict(), key)
            if isinstance(node, (dict, list)):
                raise ReslabError(f"{sweep.path}: space.{key}: names a config section, "
                                  "expected a single key like train.lr")
            typed.append(node)
        if factor.values is not None:
            factor.values = typed
