"""`train.ema`: an exponential moving average of the weights, evaluated beside the raw ones.

The field's library does the averaging: `torch.optim.swa_utils.AveragedModel` with
`get_ema_multi_avg_fn` (one foreach lerp over all tensors) and `use_buffers=True`, so the
BatchNorm running statistics are averaged with the weights they belong to (timm's ModelEma
does the same) and the EMA model is evaluated as it is, without a BN re-estimation pass.

Semantics (torchvision's classification reference, not timm's decay ramp):
- `decay` is per optimizer step. Updates run every `every` steps, each with `decay ** every`,
  so the averaging horizon (about 1 / (1 - decay) steps) does not depend on `every`.
- Warm-up: until step `warmup_steps` every update copies the weights instead of averaging
  (an EMA that starts from the random init drags it along for ~1/(1-decay) steps).
- A phase that starts from best.pt restarts the EMA from those weights (`restart`).
- Under DDP every rank holds the same all-reduced weights after a step, so the averaged
  parameters are the same on every rank. BatchNorm buffers are each rank's own (as in the raw
  model, whose buffers DDP broadcasts from rank 0 at each forward): `sync` broadcasts the
  EMA's buffers from rank 0 before each evaluation, so all ranks evaluate the same model.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..config import EmaConfig
from .distributed import Dist


class WeightEma:
    def __init__(self, model: nn.Module, cfg: EmaConfig):
        self.cfg = cfg
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(
            cfg.decay ** cfg.every), use_buffers=True)
        self.averaged.requires_grad_(False)

    @property
    def model(self) -> nn.Module:
        """The averaged network itself (the same class and state-dict keys as the model)."""
        return self.averaged.module

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """After optimizer step `step` (1-based, counted over the whole run)."""
        if step % self.cfg.every:
            return
        if step <= self.cfg.warmup_steps:
            self.restart()  # AveragedModel copies the weights when it has averaged none
        self.averaged.update_parameters(model)

    def restart(self) -> None:
        """The next update copies the model's weights instead of averaging them."""
        self.averaged.n_averaged.zero_()

    def sync(self, dist: Dist) -> None:
        dist.broadcast_(list(self.model.buffers()))

    def state_dict(self) -> dict:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state)
