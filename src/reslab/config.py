"""Typed run configuration: YAML -> pydantic models, with `--set section.key=value` overrides.

Every key is validated before any work starts; unknown keys, wrong types and out-of-range
values become one-line `ReslabError`s that name the key, the value and what was expected.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import ReslabError, short_repr
from .output import note, warn

# `data.augment` is a base preset, a policy, or BASE+POLICY (e.g. crop-flip+trivialaugment):
# the base's crop/flip/colour steps run first, then the policy's per-image ops.
AUGMENT_BASES = ("none", "flip", "crop", "crop-flip", "crop-flip-gray", "imagenet-phase1",
                 "imagenet-phase2")
AUGMENT_POLICIES = ("trivialaugment", "randaugment")
AUGMENT_PRESETS = AUGMENT_BASES + AUGMENT_POLICIES
# `machine:` classes (detected in engine/machine.py from the facts `train.amp: auto` uses).
MACHINE_CLASSES = ("cpu-fp32", "cpu-bf16", "cuda")


def number_kinds(annotation: Any) -> set[type]:
    """The plain types among `annotation` (a union's members) when it is a number type:
    {int, NoneType} for `int | None`; empty for anything else."""
    args = set(getattr(annotation, "__args__", ()) or (annotation,))
    return args & {int, float, bool, type(None)} if args & {int, float} else set()


def split_augment(name: str) -> tuple[str, str | None]:
    """'crop-flip+trivialaugment' -> ('crop-flip', 'trivialaugment'); 'randaugment' ->
    ('none', 'randaugment'); ValueError listing the choices for anything else."""
    base, plus, policy = name.partition("+")
    if not plus and base in AUGMENT_POLICIES:
        return "none", base
    if base in AUGMENT_BASES and (not plus or policy in AUGMENT_POLICIES):
        return base, policy or None
    raise ValueError(f"expected one of {', '.join(AUGMENT_PRESETS)}, or BASE+POLICY "
                     f"(e.g. crop-flip+trivialaugment)")


class Section(BaseModel):
    # allow_inf_nan=False: `train.lr=.nan` is "not a finite number", not "should be <= 100".
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v: Any, info: ValidationInfo) -> Any:
        # YAML reads yes/no/on/off/true/false as booleans, and pydantic would take True as 1:
        # `--set train.epochs=yes` must be refused, not train one epoch.
        if isinstance(v, bool) and info.field_name in cls.model_fields:
            kinds = number_kinds(cls.model_fields[info.field_name].annotation)
            if kinds and bool not in kinds:
                raise ValueError("expected a number, not a boolean (YAML reads yes/no/on/off "
                                 "as true/false)")
        return v


class JitterConfig(Section):
    """Colour jitter strengths; null keeps the preset's own value (0 where it has no jitter)."""
    brightness: float | None = Field(None, ge=0.0, le=1.0)   # factor in [1-b, 1+b]
    contrast: float | None = Field(None, ge=0.0, le=1.0)
    saturation: float | None = Field(None, ge=0.0, le=1.0)
    hue: float | None = Field(None, ge=0.0, le=0.5)          # fraction of a turn, in [-h, h]


class RandAugmentConfig(Section):
    n: int = Field(2, ge=1, le=16)                           # ops per image
    m: int = Field(9, ge=0, le=30)                           # magnitude bin of 31 (0..30)


class MixupConfig(Section):
    """Mixup/CutMix per image (off while both alphas are 0)."""
    alpha: float = Field(0.0, ge=0.0, le=100.0)              # mixup lambda ~ Beta(alpha, alpha)
    cutmix_alpha: float = Field(0.0, ge=0.0, le=100.0)       # cutmix lambda ~ Beta(a, a)
    prob: float = Field(1.0, ge=0.0, le=1.0)                 # chance an image is mixed at all
    switch_prob: float = Field(0.5, ge=0.0, le=1.0)          # cutmix share when both are on


class ProgressiveResizeConfig(Section):
    """Train on smaller images first (off while start_size is null); evaluation is full size."""
    start_size: int | None = Field(None, ge=4, le=8192)      # shorter side in the first epoch
    end_epoch_fraction: float = Field(0.5, gt=0.0, le=1.0)   # full size from here on


class CsvColumns(Section):
    """`data.columns`: the header names of a `source: csv` labels file."""
    path: str = "path"                                       # image file, relative to data.root
    label: str = "label"                                     # class name
    split: str = "split"                                     # optional column: train/val/test


class NpzKeys(Section):
    """`data.arrays`: the array names inside a `source: npz` file."""
    x: str = "x"                                             # images (N,H,W[,C]) or (N,C,H,W)
    y: str = "y"                                             # labels 0..K-1
    split: str = "split"                                     # optional: 0/1/2 or train/val/test
    classes: str = "classes"                                 # optional: K class names


class DataConfig(Section):
    source: Literal["digits", "cifar10", "folder", "csv", "npz"] = "digits"
    root: str | None = None
    labels: str | None = None                                # source csv: the labels file
    columns: CsvColumns = Field(default_factory=CsvColumns)
    arrays: NpzKeys = Field(default_factory=NpzKeys)
    download: bool = False
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    test_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    split_seed: int = 0
    # k-fold: the non-test images in `folds` stratified folds (seeded by split_seed); fold
    # `fold` is the validation split, the rest train. fold null = every fold (a fan-out).
    folds: int | None = Field(None, ge=2, le=1000)
    fold: int | None = Field(None, ge=0)
    max_per_class: int | None = Field(None, ge=1)
    image_size: int | None = Field(None, ge=4, le=4096)
    resize: int | None = Field(None, ge=4, le=8192)
    center_crop: int | None = Field(None, ge=4, le=8192)
    augment: str = "crop-flip"
    pad: int = Field(4, ge=0, le=64)
    gray_p: float = Field(0.1, ge=0.0, le=1.0)
    flip_p: float = Field(0.5, ge=0.0, le=1.0)
    flip: Literal["random", "alternate"] = "random"
    jitter: JitterConfig = Field(default_factory=JitterConfig)
    crop_scale: tuple[float, float] | None = None
    randaugment: RandAugmentConfig = Field(default_factory=RandAugmentConfig)
    mixup: MixupConfig = Field(default_factory=MixupConfig)
    erasing: float = Field(0.0, ge=0.0, le=1.0)
    progressive_resize: ProgressiveResizeConfig = Field(default_factory=ProgressiveResizeConfig)
    format: Literal["auto", "srgb", "linear", "log"] = "auto"
    normalize: Literal["dataset", "imagenet", "none"] = "dataset"
    cache_dir: str | None = None
    skip_bad: bool = False
    # Float (EXR, float TIFF) pixels that are NaN, inf or beyond float16's +-65504: `error`
    # names the file; `clamp` sets NaN to 0 and clamps the rest to +-65504.
    nonfinite: Literal["error", "clamp"] = "error"
    workers: int | None = Field(None, ge=1, le=64)
    # Images over this many pixels (width x height) are refused from their header, before
    # decoding (decompression bombs). = reslab.data.imageio.DEFAULT_MAX_PIXELS (a test checks).
    max_pixels: int = Field(90_000_000, ge=1)

    @field_validator("augment")
    @classmethod
    def _known_augment(cls, v: str) -> str:
        split_augment(v)
        return v

    @field_validator("crop_scale")
    @classmethod
    def _crop_scale(cls, v: tuple[float, float] | None) -> tuple[float, float] | None:
        if v is not None and not 0.0 < v[0] <= v[1] <= 1.0:
            raise ValueError("expected [lo, hi] with 0 < lo <= hi <= 1 (crop area fractions)")
        return v

    @model_validator(mode="after")
    def _fractions(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must be < 1")
        if self.source in ("folder", "csv", "npz") and not self.root:
            raise ValueError(f"data.root is required for data.source: {self.source}")
        if (self.source == "csv") != (self.labels is not None):
            raise ValueError("data.labels (a CSV file) goes with data.source: csv, and only "
                             "with it")
        if self.fold is not None and (self.folds is None or self.fold >= self.folds):
            raise ValueError(f"data.fold = {self.fold}: expected 0 <= fold < data.folds "
                             f"({self.folds})")
        return self


class HeadConfig(Section):
    hidden: list[int] = Field(default_factory=list)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    batchnorm: bool = False


class ModelConfig(Section):
    arch: str = "resnet20"
    width: int | None = Field(None, ge=1, le=4096)
    num_classes: int | None = Field(None, ge=2)
    max_params: int | None = Field(None, ge=1)
    block: Literal["basic", "bottleneck"] | None = None
    layers: list[int] | None = None
    stem_width: int | None = Field(None, ge=1, le=4096)
    stem_kernel: int = Field(3, ge=1, le=11)
    kernel_size: int = Field(3, ge=1, le=11)
    pool_size: int = Field(1, ge=1, le=16)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    block_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    shortcut: Literal["projection", "zeropad"] = "projection"
    pretrained: bool | str = False
    pretrained_strict: bool = True
    head: Literal["linear"] | HeadConfig = "linear"
    kwargs: dict[str, Any] = Field(default_factory=dict)

    @staticmethod
    def arch_kind(arch: str) -> str:
        """'tv', 'timm', 'user' (path/file.py:Class or package.module:Class) or 'cifar'."""
        if arch.startswith(("tv:", "timm:")):
            return arch.partition(":")[0]
        return "user" if ":" in arch else "cifar"

    @staticmethod
    def resolve_arch(arch: str, base: Path) -> str:
        """A user arch `relative/file.py:Class`, made absolute against `base` (the config
        file's folder), so that a run's config.yaml finds the file from anywhere."""
        target, _, name = arch.rpartition(":")
        if (ModelConfig.arch_kind(arch) == "user" and target.endswith(".py")
                and not Path(target).expanduser().is_absolute()):
            return f"{(base / target).resolve()}:{name}"
        return arch

    @field_validator("layers")
    @classmethod
    def _layers(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(n < 1 for n in v)):
            raise ValueError("expected a non-empty list of block counts >= 1")
        return v

    @field_validator("stem_width", "block_dropout")
    @classmethod
    def _cifar_only(cls, v: Any, info: ValidationInfo) -> Any:
        arch = info.data.get("arch", "")
        if v and cls.arch_kind(arch) != "cifar":
            raise ValueError(f"only for the CIFAR ResNets (resnet20, resnet18, ...), not {arch}")
        return v

    @field_validator("pretrained")
    @classmethod
    def _library_weights(cls, v: bool | str, info: ValidationInfo) -> bool | str:
        arch = info.data.get("arch", "")
        if v is True and cls.arch_kind(arch) not in ("tv", "timm"):
            raise ValueError(f"true loads a library's ImageNet weights (tv:/timm: archs); for "
                             f"{arch} give the path of a state-dict file or checkpoint")
        return v

    @field_validator("kwargs")
    @classmethod
    def _kwargs(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        arch = info.data.get("arch", "")
        if v and cls.arch_kind(arch) not in ("user", "timm"):
            raise ValueError(f"only for user models (file.py:Class, package.module:Class) and "
                             f"timm: archs; {arch} is configured by the other model.* keys")
        return v


class EarlyStopConfig(Section):
    enabled: bool = False
    monitor: Literal["val_acc", "val_loss", "train_loss", "train_acc"] = "val_acc"
    min_delta: float = Field(0.0, ge=0.0)
    patience: int = Field(5, ge=1)
    start_epoch: int = Field(0, ge=0)


class PlateauConfig(Section):
    monitor: Literal["val_acc", "val_loss", "train_loss", "train_acc"] = "val_loss"
    factor: float = Field(0.1, gt=0.0, lt=1.0)
    patience: int = Field(3, ge=0)


class PhaseConfig(Section):
    epochs: int = Field(..., ge=1)
    augment: str | None = None
    optimizer: Literal["sgd", "adam", "adamw", "adadelta"] | None = None
    lr: float | None = Field(None, gt=0.0)
    lr_scale: float | None = Field(None, gt=0.0)
    momentum: float | None = Field(None, ge=0.0, lt=1.0)
    start_from: Literal["best", "last"] = "last"


class EmaConfig(Section):
    """`train.ema`: an exponential moving average of the weights (and BatchNorm buffers),
    evaluated each epoch beside the raw weights (see training/ema.py)."""
    decay: float = Field(0.999, ge=0.0, lt=1.0)              # per optimizer step
    warmup_steps: int = Field(0, ge=0)                       # the EMA copies the weights until then
    every: int = Field(1, ge=1, le=100_000)                  # optimizer steps between updates
    select: Literal["raw", "ema", "best"] = "best"           # weights of best.pt and the final eval


class LookaheadConfig(Section):
    """`train.lookahead`: every k steps slow += alpha * (fast - slow); fast = slow."""
    k: int = Field(5, ge=1, le=100_000)
    alpha: float = Field(0.5, gt=0.0, le=1.0)


TrackerName = Literal["tensorboard", "wandb", "mlflow"]


class TrainConfig(Section):
    epochs: int = Field(10, ge=1, le=100_000)
    batch_size: int = Field(128, ge=1, le=65_536)
    eval_batch_size: int = Field(512, ge=1)
    optimizer: Literal["sgd", "adam", "adamw", "adadelta"] = "sgd"
    lr: float = Field(0.1, gt=0.0, le=100.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0.0, lt=1.0)
    scheduler: Literal["none", "step", "cosine", "onecycle", "plateau"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0.0)
    step_size: int = Field(30, ge=1)
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    plateau: PlateauConfig = Field(default_factory=PlateauConfig)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    early_stopping: EarlyStopConfig = Field(default_factory=EarlyStopConfig)
    monitor: Literal["val_acc", "val_loss"] = "val_acc"
    final_weights: Literal["best", "last"] = "best"
    seed: int | list[int] = 0                                # a list: one run per seed
    device: str = "auto"
    threads: int | None = Field(None, ge=1, le=1024)
    channels_last: bool = True
    compile: bool = False
    amp: Literal["auto", "off", "bf16", "fp16"] = "auto"
    deterministic: bool = False
    time_budget: str | None = None
    tta: bool = False
    freeze_backbone_epochs: int = Field(0, ge=0)
    backbone_lr_scale: float = Field(1.0, gt=0.0)
    phases: list[PhaseConfig] = Field(default_factory=list)
    sync_bn: bool = False
    progress: bool | None = None
    tensorboard: bool = True
    # One tracker or a list: tensorboard (tb/, on while train.tensorboard), wandb, mlflow.
    tracking: TrackerName | list[TrackerName] = "tensorboard"
    report: bool = True
    ema: EmaConfig | None = None                             # null: off
    lookahead: LookaheadConfig | None = None                 # null: off
    grad_clip: float | None = Field(None, gt=0.0)            # max total grad norm; null: off
    accumulate: int = Field(1, ge=1, le=4096)                # micro-batches per optimizer step
    init: Literal["default", "whiten"] = "default"           # whiten: the first conv (init.py)
    # Validate after every N-th epoch and the last one; 0: only the final evaluation.
    eval_every: int = Field(1, ge=0, le=100_000)

    @field_validator("amp", mode="before")
    @classmethod
    def _amp_off(cls, v: Any) -> Any:
        # YAML 1.1 reads an unquoted `off` as false (and `on` as true).
        return "off" if v is False else v

    @field_validator("ema", "lookahead", mode="before")
    @classmethod
    def _switch(cls, v: Any) -> Any:
        # `--set train.ema=true` turns it on with the defaults; false (or null) turns it off.
        return {} if v is True else None if v is False else v

    @field_validator("seed")
    @classmethod
    def _seeds(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, list) and (not v or len(set(v)) < len(v)):
            raise ValueError("expected a seed or a non-empty list of distinct seeds")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", v):
            raise ValueError("expected auto, cpu, cuda, cuda:N or mps")
        return v

    @field_validator("time_budget")
    @classmethod
    def _budget(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @model_validator(mode="after")
    def _validated_every_epoch(self) -> TrainConfig:
        # Skipped epochs have no val metrics: these would fall back to the train ones.
        es, plateau = self.early_stopping, self.scheduler == "plateau"
        watchers = [k for k, on in (
            ("early stopping", es.enabled and es.monitor.startswith("val_")),
            ("plateau scheduler", plateau and self.plateau.monitor.startswith("val_")),
        ) if on]
        if self.eval_every != 1 and watchers:
            raise ValueError(f"train.eval_every = {self.eval_every}: the {watchers[0]} needs a "
                             f"validation every epoch (eval_every: 1)")
        return self


class Config(Section):
    name: str | None = None
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    # Per machine class, `--set`-style overrides ({train.batch_size: 512, ...}) that a new run
    # applies once its device is known (engine/machine.py); its config.yaml keeps the one applied.
    machine: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("machine")
    @classmethod
    def _machine_keys(cls, v: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, sets in v.items():
            if name not in MACHINE_CLASSES:
                raise ValueError(f"unknown machine class {name!r} (expected "
                                 f"{', '.join(MACHINE_CLASSES)})")
            bad = [k for k in sets if k.partition(".")[0] not in ("data", "model", "train")
                   or "." not in k or k == "train.device"]
            if bad:
                raise ValueError(f"machine.{name}: {bad[0]!r} is not a dotted data.*, model.* "
                                 f"or train.* key (train.device chooses the class itself)")
        return v

    @model_validator(mode="after")
    def _machine_sets(self) -> Config:
        """Each class's overrides must give a valid config on top of the rest of this one."""
        for name, sets in self.machine.items():
            raw = self.model_dump(mode="json", exclude={"machine"})
            for key, value in sets.items():
                set_key(raw, key, value)
            try:
                Config.model_validate(raw)
            except ValidationError as err:
                raise ValueError(format_validation_error(err, f"machine.{name}")) from None
        return self

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def fan_out_keys(cfg: Config) -> list[str]:
    """The keys that make a config several runs: a train.seed list (one run per seed),
    data.folds without data.fold (one run per fold). Empty for a single run."""
    keys = ["train.seed"] if isinstance(cfg.train.seed, list) else []
    return keys + (["data.folds"] if cfg.data.folds and cfg.data.fold is None else [])


def require_single_run(cfg: Config) -> None:
    """One run trains one seed on one fold; a fan-out config goes through reslab train."""
    keys = fan_out_keys(cfg)
    if keys:
        shown = ", ".join(f"{k} = {cfg.train.seed if k == 'train.seed' else cfg.data.folds}"
                          for k in keys)
        raise ReslabError(f"{shown}: several runs, not one; train them with reslab train "
                          "CONFIG (or reslab.train), or give one seed / data.fold")


def parse_duration(text: str | int | float) -> float:
    """'90s', '30m', '1.5h', '1h30m' or a number of seconds -> seconds."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([hms]?)", text.strip())
        if not parts or re.sub(r"[\d.\shms]", "", text):
            raise ValueError(f"expected a duration like 90s, 30m or 1.5h, got {text!r}")
        seconds = sum(float(n) * {"h": 3600, "m": 60, "s": 1, "": 1}[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"expected a positive duration, got {text!r}")
    return seconds


def format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"] if not str(p).startswith(("function-after",)))
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key {key!r}"
    if first["type"] == "missing":
        return f"{source}: {key}: required key missing"
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" = {short_repr(value)}"
    where = f"{key}{shown}: " if key else ""
    return f"{source}: {where}{msg}"


M = TypeVar("M", bound=BaseModel)


def parse_mapping(schema: type[M], raw: Any, source: str, expected: str) -> M:
    """Validate a YAML mapping into `schema`, or raise a one-line ReslabError naming the file,
    the key and what was expected (`expected`: what the mapping should hold)."""
    if not isinstance(raw, dict):
        raise ReslabError(f"{source}: expected a mapping with {expected}")
    try:
        return schema.model_validate(raw)
    except ValidationError as err:
        raise ReslabError(format_validation_error(err, source)) from None


# Overrides applied on top of every config reslab validates (trains, sweeps' trials, studies'
# variants, comparisons), last: a smoke-test setting ("train.epochs=1 data.max_per_class=10")
# that shrinks any command without editing its files. The README's own test uses it.
SMOKE_ENV = "RESLAB_SET"
_smoke_announced: list[str] = []


def smoke_overrides() -> list[str]:
    """The `RESLAB_SET` overrides (shell-quoted KEY=VALUE words), announced once per process."""
    text = os.environ.get(SMOKE_ENV, "").strip()
    if not text:
        return []
    try:
        items = shlex.split(text)
    except ValueError as err:
        raise ReslabError(f"{SMOKE_ENV}={text!r}: {err}") from None
    if text not in _smoke_announced:
        _smoke_announced.append(text)
        note(f"{SMOKE_ENV}: {' '.join(items)} applied on top of every config")
    return items


def validate(raw: dict, source: str = "config") -> Config:
    """Validate a plain mapping into a Config, or raise a one-line ReslabError."""
    smoke = smoke_overrides()
    return parse_mapping(Config, apply_overrides(raw, smoke) if smoke else raw, source,
                         "sections data, model, train")


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    """Apply `section.key=value` strings; values are parsed as YAML (so 0.1, true, [1,2])."""
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ReslabError(f"--set {item!r}: expected KEY=VALUE, e.g. train.lr=0.01")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        set_key(raw, key.strip(), value)
    return raw


def set_key(raw: dict, dotted: str, value: Any) -> None:
    node = raw
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[leaf] = value


# A config, sweep or study file expands to a few hundred YAML nodes; aliases that expand past
# this many (a "billion laughs" file: 9 levels of 9 aliases = 387 million) are refused before
# anything walks the expanded tree (validation, repr in an error message).
MAX_YAML_NODES = 100_000
CONFIG_SECTIONS = "sections data, model, train"


def read_yaml(path: str | Path, expected: str = CONFIG_SECTIONS, allow_empty: bool = True) -> dict:
    """The mapping in a YAML file, or one line naming the file: missing, not UTF-8, invalid
    YAML, aliases expanding past MAX_YAML_NODES, not a mapping (of `expected`), or empty
    when not `allow_empty` (a run's own config.yaml is never empty: never read as defaults)."""
    path = Path(path)
    if not path.is_file():
        raise ReslabError(f"config file {path} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ReslabError(f"{path}: not UTF-8 text (byte {err.start}: "
                          f"{err.object[err.start:err.start + 1]!r}); save it as UTF-8") from None
    raw = parse_yaml_text(text, str(path))
    if raw is None and not allow_empty:
        raise ReslabError(f"{path}: empty; expected a mapping with {expected}")
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ReslabError(f"{path}: expected a mapping with {expected}, got "
                          f"{yaml_kind(raw)}")
    return raw


def yaml_kind(value: Any) -> str:
    return {list: "a list", str: "a string", int: "a number", float: "a number",
            bool: "a boolean"}.get(type(value), type(value).__name__)


def parse_yaml_text(text: str, source: str) -> Any:
    """yaml.safe_load, refusing alias expansion past MAX_YAML_NODES and self-referencing
    aliases, and turning a syntax error into one line naming `source` and the line."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            size = expanded_nodes(node, {}, set())
        except ValueError as err:
            raise ReslabError(f"{source}: {err}") from None
        if size > MAX_YAML_NODES:
            raise ReslabError(f"{source}: its aliases (*name) expand to over {MAX_YAML_NODES:,} "
                              "values; refused (a YAML alias bomb?)")
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or first_line_of(err)
        raise ReslabError(f"{source}:{where} invalid YAML ({problem})") from None
    except RecursionError:
        raise ReslabError(f"{source}: nested too deeply to read") from None
    finally:
        loader.dispose()


def first_line_of(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def expanded_nodes(node: yaml.Node, memo: dict[int, int], open_nodes: set[int]) -> int:
    """How many nodes `node` is once every alias is expanded (shared nodes counted once per
    use, each computed once)."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in open_nodes:
        raise ValueError("a YAML alias refers to itself (a recursive structure); refused")
    open_nodes.add(key)
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(expanded_nodes(child, memo, open_nodes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(expanded_nodes(k, memo, open_nodes) + expanded_nodes(v, memo, open_nodes)
                       for k, v in node.value)
    else:
        size = 1
    open_nodes.discard(key)
    memo[key] = min(size, MAX_YAML_NODES + 1)
    return memo[key]


def load_config(source: str | Path | dict | Config | None = None,
                overrides: list[str] | None = None, allow_empty: bool = True,
                file_relative: bool = True) -> Config:
    """A path, a mapping, a Config or None (all defaults), plus overrides -> validated Config.
    `allow_empty=False`: an empty file is an error, not all defaults (a run's config.yaml).
    Paths (PATH_KEYS) come out absolute: a file's relative to its folder (`file_relative=False`:
    to the current folder, for the files reslab wrote itself, whose paths were resolved when
    they were written), the overrides' and a mapping's relative to the current folder."""
    if isinstance(source, Config):
        raw, name = source.to_dict(), "config"
    elif isinstance(source, dict):
        raw, name = source, "config"
    elif source is None:
        raw, name = {}, "config"
    else:
        raw = read_config_file(source, allow_empty=allow_empty, file_relative=file_relative)
        name = str(source)
    cfg = validate(absolute_paths(apply_overrides(raw, overrides)), name)
    if isinstance(source, (str, Path)):
        cfg.model.arch = ModelConfig.resolve_arch(cfg.model.arch, Path(source).resolve().parent)
    return cfg


def read_config_file(path: str | Path, chain: tuple[Path, ...] = (),
                     allow_empty: bool = True, file_relative: bool = True) -> dict:
    """A train config file as a mapping, with its `base: other.yaml` (relative to the file)
    read first and this file's keys merged on top (mappings key by key, anything else
    replaced). A user model `file.py:Class` in a base stays relative to the base's folder;
    each file's paths (PATH_KEYS) are made absolute against its own folder (see
    resolve_paths)."""
    path = Path(path)
    raw = read_yaml(path, allow_empty=allow_empty)
    if file_relative:
        raw = resolve_paths(raw, path.resolve().parent, str(path))
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base.strip():
        raise ReslabError(f"{path}: base = {base!r}: expected the path of another config file")
    here = path.resolve()
    target = (here.parent / base).resolve()
    if target in (*chain, here):
        names = " -> ".join(str(p) for p in (*chain, here, target))
        raise ReslabError(f"{path}: base: cycle {names}")
    if not target.is_file():
        raise ReslabError(f"{path}: base: config file {target} not found")
    below = read_config_file(target, (*chain, here))
    model = below.get("model")
    if isinstance(model, dict) and isinstance(model.get("arch"), str):
        model["arch"] = ModelConfig.resolve_arch(model["arch"], target.parent)
    return merge_mappings(below, raw)


def merge_mappings(below: dict, above: dict) -> dict:
    """`above` on top of `below`: nested mappings merged key by key, other values replaced."""
    out = copy.deepcopy(below)
    for key, value in above.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_mappings(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# ----------------------------------------------------------------------------- paths
# Config keys holding a file or folder. In a file (a config, or a sweep, comparison or study
# file) a relative one is relative to that file's folder, as `base:` and a user model's
# `file.py:Class` are; given on the command line (--set) or in a mapping, to the current
# folder. Either way it is stored absolute, so a run's config.yaml reads the same from
# anywhere. (`data.labels` is relative to data.root.)
PATH_KEYS = ("data.root", "data.cache_dir", "model.pretrained")
_fallbacks_warned: set[tuple[str, str]] = set()


def get_key(raw: Any, dotted: str) -> Any:
    """The value at a dotted key of nested mappings; None where a level is missing."""
    node = raw
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def is_path_value(value: Any) -> bool:
    """A relative path to resolve: a non-empty string, not absolute (`~` counts as absolute),
    not a `scheme:rest` value (reslab study's `prepared:TREE`)."""
    return (isinstance(value, str) and bool(value.strip())
            and not Path(value).expanduser().is_absolute()
            and re.match(r"[A-Za-z][\w+.-]+:", value) is None)


def resolve_path(value: str, folder: Path, source: str, key: str) -> str:
    """A path from the file `source` (in `folder`), made absolute against `folder`. One that
    exists only relative to the current folder still resolves there (the rule before paths
    were file-relative), with a one-line warning per file and key; one found in neither place
    resolves against `folder`, where the error about it then points."""
    if not is_path_value(value):
        return value
    here = (Path(folder) / value).resolve()
    if here.exists() or not Path(value).exists():
        return str(here)
    if (source, key) not in _fallbacks_warned:
        _fallbacks_warned.add((source, key))
        warn(f"{source}: {key} = {value} is relative to the current folder; paths in a config "
             "are relative to the config's own folder (this fallback will be removed)")
    return str(Path(value).resolve())


def resolve_paths(raw: Any, folder: Path, source: str) -> Any:
    """`raw` (a config mapping from the file `source` in `folder`) with its relative PATH_KEYS,
    also those in `machine:` override sets, made absolute (resolve_path); anything that is
    not a mapping is returned as it is, for validation to report."""
    raw = _map_paths(raw, lambda value, key: resolve_path(value, folder, source, key))
    if not isinstance(raw, dict):
        return raw
    machine = raw.get("machine")
    for name, sets in machine.items() if isinstance(machine, dict) else ():
        for key in [k for k in PATH_KEYS if isinstance(sets, dict) and is_path_value(sets.get(k))]:
            sets[key] = resolve_path(sets[key], folder, source, f"machine.{name}.{key}")
    return raw


def absolute_paths(raw: Any) -> Any:
    """`raw` with relative PATH_KEYS made absolute against the current folder (--set values,
    a mapping passed to the API): the run's config.yaml then means the same from anywhere."""
    return _map_paths(raw, lambda value, key: str(Path(value).resolve()))


def _map_paths(raw: Any, resolve: Callable[[str, str], str]) -> Any:
    """A copy of the mapping `raw` with each relative PATH_KEYS value replaced by
    resolve(value, key); anything that is not a mapping as it is."""
    if not isinstance(raw, dict):
        return raw
    raw = copy.deepcopy(raw)
    for key in PATH_KEYS:
        value = get_key(raw, key)
        if is_path_value(value):
            set_key(raw, key, resolve(value, key))
    return raw


def resolve_override_paths(items: list[str], folder: Path, source: str) -> list[str]:
    """KEY=VALUE overrides written in a file (a comparison's `overrides:`): a path value is
    relative to that file's folder like the file's other paths, rewritten absolute."""
    out = []
    for item in items:
        key, sep, text = item.partition("=")
        try:
            value = yaml.safe_load(text) if sep and key.strip() in PATH_KEYS else None
        except yaml.YAMLError:
            value = text
        if is_path_value(value):
            item = f"{key}={json.dumps(resolve_path(value, folder, source, key.strip()))}"
        out.append(item)
    return out

