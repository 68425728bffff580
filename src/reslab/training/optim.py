"""Optimizers and LR schedules from the config (torch's own classes, stepped per batch)."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from ..config import TrainConfig
from ..models import split_parameters


def param_groups(model: nn.Module, lr: float, backbone_scale: float,
                 weight_decay: float) -> list[dict]:
    """No weight decay on norms and biases; optionally a lower LR for the backbone (the model
    says which parameters are its head)."""
    head, _ = split_parameters(model, "train.backbone_lr_scale" if backbone_scale != 1 else None)
    head_ids = {id(p) for _, p in head}
    groups: dict[tuple, list] = {}
    for p in model.parameters():
        is_head = id(p) in head_ids
        decay = p.ndim > 1
        groups.setdefault((is_head, decay), []).append(p)
    out = []
    for (is_head, decay), params in groups.items():
        scale = 1.0 if is_head or not head else backbone_scale
        out.append({"params": params, "lr": lr * scale, "initial_lr": lr * scale,
                    "weight_decay": weight_decay if decay else 0.0, "head": is_head})
    return out


# torch's fused kernels (one kernel updates every parameter): SGD, Adam and AdamW have them on
# CUDA and, since torch 2.4, on CPU. Adadelta and other devices (e.g. MPS's SGD) take the
# foreach path, which batches the per-parameter updates into far fewer small ops.
FUSED = {"sgd": ("cuda", "cpu"), "adam": ("cuda", "cpu"), "adamw": ("cuda", "cpu")}


def step_kernels(name: str, device: torch.device) -> dict:
    """The optimizer's implementation flag: {'fused': True} where FUSED has one for this
    device, else {'foreach': True}."""
    return {"fused": True} if device.type in FUSED.get(name, ()) else {"foreach": True}


def build_optimizer(groups: list[dict], name: str, lr: float, momentum: float,
                    nesterov: bool) -> torch.optim.Optimizer:
    fast = step_kernels(name, groups[0]["params"][0].device)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum,
                               nesterov=nesterov and momentum > 0, **fast)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, **fast)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **fast)
    return torch.optim.Adadelta(groups, lr=lr, **fast)


def lr_factor(cfg: TrainConfig, step: int, total: int, steps_per_epoch: int) -> float:
    """Multiplier of the base LR at `step` of `total` (warm-up, then the chosen decay)."""
    if cfg.scheduler == "onecycle":
        # Linear warm-up from base/25 over the first 25% (or warmup_epochs), then linear to 0.
        warm = round(cfg.warmup_epochs * steps_per_epoch) or max(1, round(0.25 * total))
        if step < warm:
            return 1 / 25 + (1 - 1 / 25) * step / warm
        return max(0.0, (total - step) / max(1, total - warm))
    warm = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    if cfg.scheduler == "cosine":
        t = min(1.0, (step - warm) / max(1, total - warm))
        return 0.5 * (1 + math.cos(math.pi * t))
    if cfg.scheduler == "step":
        return cfg.gamma ** (step // (cfg.step_size * steps_per_epoch))
    return 1.0


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int,
                    total_steps: Callable[[], int]):
    """Returns (scheduler, stepped_per_batch). Plateau is stepped per epoch with a metric.
    `total_steps()` is read at every step: a time budget re-plans it while training, so the
    schedule always ends (LR -> 0) when the budget does."""
    if cfg.scheduler == "plateau":
        mode = "max" if cfg.plateau.monitor.endswith("acc") else "min"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode=mode, factor=cfg.plateau.factor, patience=cfg.plateau.patience), False
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(cfg, step, total_steps(), steps_per_epoch)), True
