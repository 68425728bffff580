"""Optimizers and LR schedules from the config (torch's own classes, stepped per batch)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..config import TrainConfig


def param_groups(model: nn.Module, head: nn.Module | None, lr: float, backbone_scale: float,
                 weight_decay: float) -> list[dict]:
    """No weight decay on norms and biases; optionally a lower LR for the backbone."""
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    groups: dict[tuple, list] = {}
    for name, p in model.named_parameters():
        is_head = id(p) in head_ids
        decay = p.ndim > 1
        groups.setdefault((is_head, decay), []).append(p)
    out = []
    for (is_head, decay), params in groups.items():
        scale = 1.0 if is_head or head is None else backbone_scale
        out.append({"params": params, "lr": lr * scale, "initial_lr": lr * scale,
                    "weight_decay": weight_decay if decay else 0.0})
    return out


def build_optimizer(groups: list[dict], name: str, lr: float, momentum: float, nesterov: bool,
                    device: torch.device) -> torch.optim.Optimizer:
    # foreach kernels batch the per-parameter updates: far fewer small ops per step.
    fast = {"foreach": True}
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum,
                               nesterov=nesterov and momentum > 0, **fast)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, **fast)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, **fast)
    return torch.optim.Adadelta(groups, lr=lr, **fast)


def build_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int,
                    epochs: int, total_steps: int | None = None):
    """Returns (scheduler, stepped_per_batch). Plateau is stepped per epoch with a metric."""
    total = total_steps or steps_per_epoch * epochs
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if cfg.scheduler == "plateau":
        mode = "max" if cfg.plateau.monitor.endswith("acc") else "min"
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode=mode, factor=cfg.plateau.factor, patience=cfg.plateau.patience), False
    if cfg.scheduler == "onecycle":
        max_lr = [g["lr"] for g in opt.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=max_lr, total_steps=max(total, 2),
            pct_start=max(warmup / max(total, 1), 0.25) if warmup else 0.25,
            cycle_momentum=cfg.optimizer == "sgd" and cfg.momentum > 0), True

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if cfg.scheduler == "cosine":
            t = (step - warmup) / max(1, total - warmup)
            return 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        if cfg.scheduler == "step":
            return cfg.gamma ** (step // (cfg.step_size * steps_per_epoch))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(opt, factor), True
