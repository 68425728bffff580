"""Duration estimates and time budgets: measure step time, plan steps, re-plan while training.

A budget is a number of optimizer steps (the LR schedule spans exactly `total_steps`),
re-solved from measured times every few steps and after every epoch, so that training, the
per-epoch validations and the final evaluation all end inside the budget.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

RETIME_EVERY = 4  # steps between speed re-measurements


@dataclass(frozen=True)
class Timing:
    step_s: float        # one training step
    eval_image_s: float  # one evaluated image


def probe_timing(model: nn.Module, batches, amp_ctx, steps: int = 3) -> Timing:
    """Time training steps and an eval pass on a throwaway copy, after a warm-up of each
    (the first call of a mode creates its kernels: not what the run will pay per step)."""
    probe = copy.deepcopy(model).train()
    opt = torch.optim.SGD(probe.parameters(), lr=0.0)
    x, y, _ = next(iter(batches))
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        with amp_ctx():
            loss = F.cross_entropy(probe(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        float(loss.detach())  # wait for the device
        times.append(time.perf_counter() - t0)
    probe.eval()
    with torch.inference_mode(), amp_ctx():
        evals = []
        for _ in range(2):
            t0 = time.perf_counter()
            float(probe(x).sum())
            evals.append(time.perf_counter() - t0)
    return Timing(sorted(times[1:])[len(times[1:]) // 2], evals[-1] / len(x))


class Budget:
    """The steps that still fit in `seconds`, kept up to date by two calls: `steps_allowed`
    during an epoch and `after_epoch` after its validation."""

    def __init__(self, seconds: float, steps_per_epoch: int, step_s: float, val_s: float,
                 final_s: float, val_per_epoch: float = 1.0):
        self.seconds, self.steps_per_epoch = seconds, steps_per_epoch
        self.step_s, self.val_s, self.final_s = step_s, val_s, final_s
        self.val_per_epoch = val_per_epoch  # validations per epoch (train.eval_every)
        self.start = time.perf_counter()
        self._mark: tuple[float, int] | None = None
        self.total_steps = self._fit(0)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def _fit(self, done: int) -> int:
        # Keep back this epoch's validation (if any run), the final evaluation and 2 % for
        # checkpoints.
        val_s = self.val_s if self.val_per_epoch else 0.0
        left = self.seconds - self.elapsed() - val_s - self.final_s - 0.02 * self.seconds
        per_step = self.step_s + val_s * self.val_per_epoch / self.steps_per_epoch
        return max(1, done, done + math.floor(max(0.0, left) / per_step))

    def steps_allowed(self, steps_done: int, step_in_epoch: int) -> int:
        """Steps the phase may take in all; re-measured every few steps (a shared machine's
        speed drifts). The first step of an epoch only starts the clock."""
        if step_in_epoch % RETIME_EVERY:
            return self.total_steps
        now = time.perf_counter()
        if step_in_epoch and self._mark is not None and steps_done > self._mark[1]:
            measured = (now - self._mark[0]) / (steps_done - self._mark[1])
            self.step_s = 0.5 * self.step_s + 0.5 * measured
        self._mark = (now, steps_done)
        self.total_steps = self._fit(steps_done)
        return self.total_steps

    def after_epoch(self, steps_done: int, val_seconds: float | None,
                    final_share: float) -> bool:
        """Re-plan with the measured validation time (None: the epoch was not validated, the
        estimates stand); True when the budget is spent. `final_share`: the final
        evaluation's cost relative to one validation."""
        if val_seconds is not None:
            self.val_s, self.final_s = val_seconds, val_seconds * final_share
        self.total_steps = self._fit(steps_done)
        return steps_done >= self.total_steps


def describe(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
