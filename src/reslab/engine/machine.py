"""Machine classes: one config whose recipe adapts to the hardware it runs on.

A config's `machine:` mapping gives `--set`-style overrides per machine class:

    machine:
      cpu-fp32: {model.width: 16, train.batch_size: 256}
      cpu-bf16: {model.width: 16, train.batch_size: 256}
      cuda:     {train.batch_size: 1024, train.compile: true}

A new run applies its class's set once its device is known, before the data, the model and
the run directory exist, so everything after (and the run's config.yaml) sees the applied
values. The class is detected from the same facts as `train.amp: auto` (device.amp_dtype):

    cuda      the run's device is a CUDA GPU (bf16 where native, else fp16);
    cpu-bf16  a CPU whose oneDNN runs bf16 natively (AVX512-BF16 or AMX);
    cpu-fp32  any other CPU: AVX2 laptops, and AVX512-BF16 machines run with
              ONEDNN_MAX_CPU_ISA=AVX2 (oneDNN then reports no bf16).

Other devices (mps) have no class: nothing is applied. Keys the user set explicitly (`--set`)
win over the class's set. The run's config.yaml keeps only the set that was applied, so a
resumed run, `reslab eval`, and training that file again on another machine class all see
what ran.
"""
from __future__ import annotations

import json

import torch

from ..config import MACHINE_CLASSES, Config, set_key, validate
from .device import amp_dtype


def machine_class(device: torch.device) -> str | None:
    """'cuda', 'cpu-bf16', 'cpu-fp32', or None for devices without a class (mps)."""
    if device.type == "cuda":
        return "cuda"
    if device.type == "cpu":
        return "cpu-bf16" if amp_dtype("auto", device) == torch.bfloat16 else "cpu-fp32"
    return None


def overlaps(key: str, other: str) -> bool:
    """Whether setting `other` sets `key` too (or part of it): equal, or one contains the
    other (train.ema and train.ema.decay)."""
    return key == other or key.startswith(other + ".") or other.startswith(key + ".")


def apply_machine(cfg: Config, device: torch.device, overrides: list[str] | None = None
                  ) -> tuple[Config, str | None]:
    """-> (cfg with its machine class's overrides applied, the line that says so), or cfg and
    None when it has no `machine:` mapping. `overrides`: the user's `--set` strings, whose
    keys keep the user's values."""
    if not cfg.machine:
        return cfg, None
    name = machine_class(device)
    out, applied = apply_machine_class(cfg, name, overrides)
    chosen = cfg.machine.get(name, {}) if name else {}
    return out, describe(name, device, applied, [k for k in chosen if k not in applied])


def apply_machine_class(cfg: Config, name: str | None, overrides: list[str] | None = None
                        ) -> tuple[Config, dict]:
    """-> (cfg with the set of machine class `name` applied, the keys and values applied):
    what a new run on a machine of that class trains (`reslab config --machine` shows it)."""
    if not cfg.machine:
        return cfg, {}
    chosen = cfg.machine.get(name, {}) if name else {}
    explicit = [item.partition("=")[0].strip() for item in overrides or []]
    applied = {k: v for k, v in chosen.items() if not any(overlaps(k, e) for e in explicit)}
    raw = cfg.to_dict()
    for key, value in applied.items():
        set_key(raw, key, value)
    raw["machine"] = {name: applied} if applied else {}
    return validate(raw, f"machine.{name}"), applied


def describe(name: str | None, device: torch.device, applied: dict, kept: list[str]) -> str:
    """The one line a run prints about its machine class."""
    if name is None:
        return (f"machine: device {device.type} has no machine class "
                f"({', '.join(MACHINE_CLASSES)}); the config's own values apply")
    values = ", ".join(f"{k}={v if isinstance(v, str) else json.dumps(v)}"
                       for k, v in applied.items())
    values = values or ("nothing" if kept else "nothing (the config has no set for it)")
    note = f" (kept from --set: {', '.join(kept)})" if kept else ""
    return f"machine class {name}: applied {values}{note}"
