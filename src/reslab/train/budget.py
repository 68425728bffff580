"""Time budgets and duration estimates: measure step time, plan steps, re-plan each epoch.

The plan is in optimizer steps (the LR schedule spans exactly `plan.total_steps`), re-solved
after every epoch from measured times so that training, the per-epoch validations and the
final evaluation all end inside the budget.
"""
from __future__ import annotations

import copy
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from .optim import StepPlan


def probe_seconds(model: nn.Module, batches, amp_ctx, steps: int = 3) -> tuple[float, float]:
    """(seconds per training step, seconds per eval image), timed on a throwaway copy."""
    probe = copy.deepcopy(model).train()
    opt = torch.optim.SGD(probe.parameters(), lr=0.0)
    it = iter(batches)
    x, y, _ = next(it)
    times = []
    for i in range(steps + 1):  # the first step pays one-off allocation costs
        t0 = time.perf_counter()
        with amp_ctx():
            loss = F.cross_entropy(probe(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        float(loss.detach())  # wait for the device
        if i:
            times.append(time.perf_counter() - t0)
    probe.eval()
    with torch.inference_mode(), amp_ctx():
        evals = []
        for _ in range(2):  # the first eval-mode pass creates its own kernels: not timed
            t0 = time.perf_counter()
            float(probe(x).sum())
            evals.append(time.perf_counter() - t0)
        eval_per_image = evals[-1] / len(x)
    return sorted(times)[len(times) // 2], eval_per_image


class Budget:
    """Keeps `plan.total_steps` equal to the steps that still fit in the budget.

    `tick()` runs every few steps: it re-measures seconds per step (the machine may be shared
    and its speed drift) and re-solves the plan, so the LR schedule ends with the budget.
    """

    def __init__(self, seconds: float, steps_per_epoch: int, step_s: float, val_s: float,
                 final_s: float):
        self.seconds, self.steps_per_epoch = seconds, steps_per_epoch
        self.step_s, self.val_s, self.final_s = step_s, val_s, final_s
        self.start = time.perf_counter()
        self._mark: tuple[float, int] | None = None
        self.plan = StepPlan(self._steps_that_fit(0, self._left()))

    def _left(self) -> float:
        # Keep back this epoch's validation, the final evaluation and 2% for checkpoints.
        return (self.seconds - self.elapsed() - self.val_s - self.final_s - 0.02 * self.seconds)

    def _steps_that_fit(self, done: int, seconds: float) -> int:
        per_step = self.step_s + self.val_s / self.steps_per_epoch
        return max(done, done + math.floor(max(0.0, seconds) / per_step))

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def epoch_start(self) -> None:
        self._mark = None

    def tick(self, steps_done: int) -> None:
        now = time.perf_counter()
        if self._mark is not None and steps_done > self._mark[1]:
            measured = (now - self._mark[0]) / (steps_done - self._mark[1])
            self.step_s = 0.5 * self.step_s + 0.5 * measured
        self._mark = (now, steps_done)
        self.plan.total_steps = self._steps_that_fit(steps_done, self._left())

    def end_epoch(self, steps_done: int, val_seconds: float, n_val: int, n_final: int,
                  tta: bool) -> None:
        self.val_s = val_seconds
        if n_val:
            self.final_s = val_seconds * n_final / n_val * (4 if tta else 1)
        self.plan.total_steps = self._steps_that_fit(steps_done, self._left())

    def done(self, steps_done: int) -> bool:
        return steps_done >= self.plan.total_steps


def describe(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
