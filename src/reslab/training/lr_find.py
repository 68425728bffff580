"""The LR range test (Smith 2015, "Cyclical Learning Rates for Training Neural Networks";
fastai's `lr_find`): train a throwaway copy of the configured model while the learning rate
grows exponentially from `start_lr` to `end_lr`, one step per batch (cycling the training
data when it has fewer batches than steps), and watch the loss.

The per-step loss is smoothed with a bias-corrected exponential moving average (beta 0.98);
the test stops early once that smoothed loss exceeds DIVERGE_FACTOR x its best value so far,
or a step's loss is not finite. Two suggestions are computed from the smoothed curve (both
are reported; `suggested_lr` is the first):
- `min_loss_lr / 10`: the LR at the lowest smoothed loss, divided by ten (fastai v1's rule);
- `steepest_lr`: the LR where the smoothed loss falls fastest per decade of LR.
Why the first: the EMA lags the ramp by ~1/(1-beta) = 50 steps, a large LR factor for a
short ramp, so the steepest point sits late and varies with the step count; the minimum / 10
stays put, lands in the useful range of the curve, and is the conservative of the two.

Nothing is kept: the model is built from the config's init (seeded like `train`), trained in
the run's precision with the training step itself (`loop.train_step`), then dropped.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..config import Config, load_config
from ..data.loader import BatchLoader, epoch_generator
from ..engine.device import (
    amp_dtype,
    deterministic_algorithms,
    grad_scaler,
)
from ..errors import ReslabError
from ..progress import progress_enabled, track
from .distributed import Dist
from .loop import DROPOUT_SALT, Trainer, build_parts, head_lr, make_loader, train_step
from .optim import build_optimizer, param_groups
from .state import TrainState

BETA = 0.98             # smoothing of the per-step loss (fastai's value)
DIVERGE_FACTOR = 4.0    # stop once the smoothed loss exceeds this multiple of its best
SKIP_START = 0.1        # the first 10% of steps (bias-corrected warm-up) never set a minimum
MIN_STEPS = 10


@dataclass
class LrFinding:
    """The recorded curve (one entry per step taken) and what was read off it."""
    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    stop_reason: str            # "completed" (reached end_lr) or "diverged"
    suggested_lr: float | None  # = min_loss_lr / 10
    min_loss_lr: float | None
    min_smoothed_loss: float | None
    steepest_lr: float | None
    start_lr: float
    end_lr: float
    steps: int                  # steps planned (len(lrs) is the steps taken)

    def to_json(self, cfg: Config) -> dict:
        """lr_find.json: the suggestion first, the rule that chose it, then the curve."""
        curve = {k: [finite_or_none(v) for v in vs] if isinstance(vs, list) else vs
                 for k, vs in asdict(self).items()}  # NaN/inf are not JSON: null
        head = {k: curve.pop(k) for k in ("suggested_lr", "min_loss_lr", "steepest_lr",
                                          "min_smoothed_loss", "stop_reason")}
        return {**head, "rule": "suggested_lr = min_loss_lr / 10 (the LR at the lowest "
                "smoothed loss, over ten); steepest_lr = steepest descent of the smoothed "
                "loss per decade of LR", "steps_taken": len(self.lrs), "beta": BETA,
                "diverge_factor": DIVERGE_FACTOR, **curve, "config": cfg.to_dict()}


# The minimum counts as "at the end of the range" within this share of the steps taken.
EDGE_SHARE = 0.05


def range_warning(finding: LrFinding) -> str | None:
    """One line when the minimum sits at an end of the tested range, where the curve does
    not show that it is a minimum: at the top (the loss was still falling at end_lr) or at
    the bottom (it only rose from start_lr). None otherwise."""
    if finding.min_loss_lr is None or len(finding.lrs) < MIN_STEPS:
        return None
    lrs = np.asarray(finding.lrs)
    at = int(np.argmin(np.abs(np.log(lrs) - math.log(finding.min_loss_lr))))
    edge = max(1, round(len(lrs) * EDGE_SHARE))
    if at >= len(lrs) - edge and finding.stop_reason == "completed":
        return (f"the loss was still falling at the end of the range (lowest at lr "
                f"{finding.min_loss_lr:.3g}, end {finding.end_lr:g}): the suggestion may be "
                "too low; rerun with a larger --end-lr")
    first = int(len(lrs) * SKIP_START)
    if at <= first + edge:
        return (f"the loss only rose from the start of the range (lowest at lr "
                f"{finding.min_loss_lr:.3g}, start {finding.start_lr:g}): the suggestion may "
                "be too high; rerun with a smaller --start-lr")
    return None


def finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def lr_find(config=None, overrides: list[str] | None = None, steps: int = 200,
            start_lr: float = 1e-7, end_lr: float = 10.0,
            log: Callable[[str], None] = print) -> tuple[Config, LrFinding]:
    """Run the range test for a config (path, mapping or Config) -> (resolved config, finding).
    Deterministic for a seed on a given machine and thread count, like `train`."""
    check_range(steps, start_lr, end_lr)
    s = throwaway_session(load_config(config, overrides), log, overrides)
    cfg = s.cfg  # with the machine class's overrides, as train would run it
    loader = make_loader(cfg, s.data, s.device, s.dist,
                         augment=first_phase_augment(cfg))
    log(f"LR range test: {cfg.model.arch}, {steps} steps from {start_lr:g} to {end_lr:g} "
        f"({len(loader)} batches per epoch), device {s.device}")
    with deterministic_algorithms(cfg.train.deterministic):
        lrs, losses, smoothed, stop = ramp(s, loader, steps, start_lr, end_lr)
    return cfg, LrFinding(lrs, losses, smoothed, stop, **suggest(lrs, smoothed),
                          start_lr=start_lr, end_lr=end_lr, steps=steps)


def check_range(steps: int, start_lr: float, end_lr: float) -> None:
    if steps < MIN_STEPS:
        raise ReslabError(f"--steps {steps}: expected at least {MIN_STEPS}")
    if not (0 < start_lr < end_lr) or not math.isfinite(end_lr):
        raise ReslabError(f"--start-lr {start_lr:g} / --end-lr {end_lr:g}: expected "
                          "0 < start-lr < end-lr")


def throwaway_session(cfg: Config, log: Callable[[str], None],
                      overrides: list[str] | None = None) -> Trainer:
    """The pieces `train_step` uses, built by `train`'s own builder (loop.build_parts: the
    machine class's overrides, pretrained weights, `train.init`), with no run directory,
    tracker, DDP or torch.compile: a compile would cost more than the whole test, and one
    process samples the curve well enough."""
    dist = Dist()
    cfg, device, _, data, model, notes = build_parts(cfg, dist, overrides, new_run=True,
                                                     from_scratch=True)
    for note in notes:
        log(note)
    amp = amp_dtype(cfg.train.amp, device)
    return Trainer(cfg, run=None, data=data, model=model, module=model, device=device,
                   dist=dist, amp=amp, scaler=grad_scaler(amp, device), tracker=None, log=log)


def first_phase_augment(cfg: Config) -> str:
    phases = cfg.train.phases
    return (phases[0].augment if phases else None) or cfg.data.augment


def ramp_optimizer(s: Trainer, start_lr: float, end_lr: float, steps: int):
    """The configured optimizer (first phase's, if set) at `start_lr`, and a per-step schedule
    multiplying every group's LR by (end/start)^(i/(steps-1)): backbone scaling is kept."""
    cfg = s.cfg.train
    first = cfg.phases[0] if cfg.phases else None
    momentum = first.momentum if first and first.momentum is not None else cfg.momentum
    opt = build_optimizer(param_groups(s.model, start_lr, cfg.backbone_lr_scale,
                                       cfg.weight_decay),
                          (first and first.optimizer) or cfg.optimizer, start_lr, momentum,
                          cfg.nesterov)
    ratio = end_lr / start_lr
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: ratio ** (i / (steps - 1)))
    return opt, sched


def batches(s: Trainer, loader: BatchLoader) -> Iterator[tuple]:
    """The training batches, epoch after epoch, seeded as `train` seeds them."""
    epoch = 1
    while True:
        torch.manual_seed(epoch_generator(s.cfg.train.seed, epoch, DROPOUT_SALT).initial_seed())
        yield from loader.epoch(epoch)
        epoch += 1


def ramp(s: Trainer, loader: BatchLoader, steps: int, start_lr: float, end_lr: float
         ) -> tuple[list[float], list[float], list[float], str]:
    """Train `steps` steps on the exponential ramp -> (lrs, losses, smoothed, stop reason)."""
    opt, sched = ramp_optimizer(s, start_lr, end_lr, steps)
    state = TrainState()  # a throwaway run's step counts
    s.module.train()
    lrs, losses, smoothed = [], [], []
    avg, best = 0.0, math.inf
    enabled = progress_enabled(s.cfg.train.progress)
    for i, (x, y, weight) in enumerate(track(batches(s, loader), total=steps,
                                             description="lr-find", enabled=enabled)):
        lrs.append(head_lr(opt))
        stats = train_step(s, state, [(x, y, weight)], opt, sched)  # loss, correct, images
        losses.append((stats[0] / stats[2]).item())  # the step's mean loss
        avg = BETA * avg + (1 - BETA) * losses[-1]
        smoothed.append(avg / (1 - BETA ** (i + 1)))
        if not math.isfinite(smoothed[-1]) or smoothed[-1] > DIVERGE_FACTOR * best:
            s.log(f"Stopped at step {i + 1}, lr {lrs[-1]:.3g}: the smoothed loss "
                  f"{smoothed[-1]:.3g} is over {DIVERGE_FACTOR:g}x its best {best:.3g}")
            return lrs, losses, smoothed, "diverged"
        best = min(best, smoothed[-1])
        if i + 1 == steps:
            break
    return lrs, losses, smoothed, "completed"


def suggest(lrs: list[float], smoothed: list[float]) -> dict:
    """The suggestions read off the smoothed curve, before any diverged final point."""
    lr, loss = np.asarray(lrs, dtype=float), np.asarray(smoothed, dtype=float)
    usable = np.flatnonzero(np.isfinite(loss))
    skip = int(len(lr) * SKIP_START)
    usable = usable[usable >= skip]
    if len(usable) < 3:
        return {"suggested_lr": None, "min_loss_lr": None, "min_smoothed_loss": None,
                "steepest_lr": None}
    lowest = usable[np.argmin(loss[usable])]
    # Only the descent counts: the slope is read up to the minimum (per decade of LR).
    descent = usable[usable <= lowest]
    steepest = None
    if len(descent) >= 3:
        slope = np.gradient(loss[descent], np.log10(lr[descent]))
        steepest = float(lr[descent[np.argmin(slope)]])
    return {"suggested_lr": float(lr[lowest]) / 10, "min_loss_lr": float(lr[lowest]),
            "min_smoothed_loss": float(loss[lowest]), "steepest_lr": steepest}
