"""The training loop: config -> data + model -> epochs -> run directory.

Read top to bottom: `train()` builds a `Trainer` (what the run is made of, fixed once built)
and a `TrainState` (what it has done: checkpointed), `fit()` runs the phases, `run_phase()`
is the epoch loop on one screen (train -> validate -> record -> stop?), `train_one_epoch()`
the step loop and `train_step()` one optimizer step: `train.accumulate` micro-batches,
gradient clipping, the optimizer and LR schedule, then Lookahead and the weights' EMA. Each
phase's optimizer, schedule, loader and stopping rule come from `start_phase()` as a
`Phase`. Metrics accumulate on the device; the host syncs once per epoch (and, on CPUs where
it is free, once per step for the divergence check).
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, PhaseConfig, load_config, parse_duration, require_single_run
from ..data import DataBundle, check_split, load_data
from ..data.augment import build_train_augment
from ..data.display import to_display_uint8
from ..data.loader import BatchLoader, Normalizer, epoch_generator, eval_loader, memory_format
from ..data.sources import load_listing
from ..engine.device import (
    amp_dtype,
    autocast,
    configure_threads,
    deterministic_algorithms,
    grad_scaler,
)
from ..engine.infer import (
    confusion_matrix,
    loss_and_accuracy,
    most_confident_mistakes,
    predict_batches,
)
from ..engine.machine import apply_machine
from ..engine.metrics import classification_metrics
from ..errors import ReslabError
from ..models import (
    build_model,
    check_param_budget,
    count_params,
    freeze_backbone,
    require_classifier,
)
from ..output import info, warn
from ..progress import progress_enabled, track
from ..runs.checkpoint import load_checkpoint, load_weights, save_checkpoint
from ..runs.claim import RunClaim
from ..runs.env import collect_env, env_differences
from ..runs.rundir import RESULT_METRICS, RunDir
from .budget import Budget, Timing, describe, probe_timing
from .distributed import Dist
from .ema import WeightEma
from .init import whiten_first_conv
from .lookahead import Lookahead
from .optim import build_optimizer, build_scheduler, param_groups
from .state import EarlyStopping, TrainState, better
from .tracking import Tracker

EpochCallback = Callable[[dict], None]
# A run has diverged when a train or val loss is NaN/inf, or a training step's mean loss
# exceeds this multiple of its starting value (the first step's loss, at least ln(classes):
# chance-level cross-entropy). Hardware-independent: a run that blows up to 1e13 on one CPU
# and to NaN on another stops in the same epoch on both.
DIVERGENCE_FACTOR = 10.0
DROPOUT_SALT = 7  # epoch_generator salt of the per-epoch global seed (dropout draws)


class Diverged(Exception):
    """The loss became non-finite or grew past DIVERGENCE_FACTOR x its starting value
    (`blowup`: the second, the one a lower learning rate cures)."""

    def __init__(self, message: str, blowup: bool = False):
        super().__init__(message)
        self.blowup = blowup


@dataclass(frozen=True)
class Trainer:
    """What a run is built from (`build_trainer`), fixed once built: nothing is assigned to
    it afterwards. What changes as the run goes is a `TrainState` (checkpointed) and each
    phase's `Phase` (returned by `start_phase`)."""
    cfg: Config
    run: RunDir
    data: DataBundle
    model: nn.Module                 # the bare model: checkpoints and evaluation
    module: nn.Module                # what the steps run through (DDP and/or compiled)
    device: torch.device
    dist: Dist
    amp: torch.dtype | None
    scaler: torch.amp.GradScaler
    tracker: Tracker | None
    log: Callable[[str], None]
    ema: WeightEma | None = None     # train.ema: the averaged weights, for the whole run
    claim: RunClaim | None = None    # this process's claim on the run (rank 0)
    on_epoch: EpochCallback | None = None
    eval_loaders: dict[str, BatchLoader] = field(default_factory=dict)  # val/test, as stored

    @property
    def phases(self) -> list[PhaseConfig]:
        return self.cfg.train.phases or [PhaseConfig(epochs=self.cfg.train.epochs)]

    def phase_end(self, p: int) -> int:
        return sum(ph.epochs for ph in self.phases[: p + 1])


@dataclass
class Phase:
    """One phase's training loader, optimizer, LR schedule (stepped per batch or per epoch),
    early stopping, Lookahead and time budget."""
    index: int
    loader: BatchLoader
    opt: torch.optim.Optimizer
    sched: Any
    per_step: bool
    early: EarlyStopping
    lookahead: Lookahead | None
    budget: Budget | None


def check_loss(st: TrainState, value: float, what: str, classes: int) -> None:
    """Raise Diverged per the rule above (the first value checked sets the reference)."""
    if not math.isfinite(value):
        raise Diverged(f"{what} is {value}")
    if st.loss_ref is None:
        st.loss_ref = max(value, math.log(max(2, classes)))
    elif value > DIVERGENCE_FACTOR * st.loss_ref:
        raise Diverged(f"{what} {value:.3g} is over {DIVERGENCE_FACTOR:g}x its starting "
                       f"value {st.loss_ref:.3g}", blowup=True)


def train(config=None, out: str | Path | None = None, resume: str | Path | None = None,
          overrides: list[str] | None = None, on_epoch: EpochCallback | None = None,
          quiet: bool = False) -> dict:
    """Train from a config (path, mapping or Config) into a run directory; returns result.json.

    `resume` continues the run in that directory from its last.pt. `on_epoch` is called with
    each epoch's metrics row on rank 0 and may raise (e.g. optuna.TrialPruned) to stop.
    """
    return run_training(config, out, resume, overrides, on_epoch, quiet)[1]


def run_training(config=None, out: str | Path | None = None, resume: str | Path | None = None,
                 overrides: list[str] | None = None, on_epoch: EpochCallback | None = None,
                 quiet: bool = False, claim: RunClaim | None = None) -> tuple[RunDir, dict]:
    """`train`, also returning the run directory it trained into. The run's claim
    (runs/claim.py: one writer per run directory) is taken here and held to the end, unless
    the caller (the run executor) already holds it and passes it in."""
    dist, started = Dist.from_env(), time.perf_counter()
    try:
        with ExitStack() as held:
            t, state, ckpt = build_trainer(config, out, resume, overrides, dist, quiet, claim,
                                           on_epoch, held)
            with deterministic_algorithms(t.cfg.train.deterministic):
                result = fit(t, state, ckpt)
            t.log(f"Time: training {describe(result['seconds_total'])} of "
                  f"{describe(time.perf_counter() - started)} in all (reading the data, "
                  "building the model and the final evaluation are outside train.time_budget)")
            return t.run, result
    finally:
        dist.close()


def hold_claim(run: RunDir, claim: RunClaim | None, held: ExitStack, dist: Dist
               ) -> RunClaim | None:
    """The caller's claim on `run`, else one taken now (rank 0 writes; other ranks don't)."""
    if claim is not None or not dist.is_main:
        return claim
    return held.enter_context(run.take_claim())


def build_trainer(config, out, resume, overrides, dist: Dist, quiet: bool,
                  claim: RunClaim | None, on_epoch: EpochCallback | None, held: ExitStack
                  ) -> tuple[Trainer, TrainState, dict | None]:
    """-> (the trainer, the run's state so far, last.pt of a resumed run or None)."""
    run = RunDir.open(resume) if resume is not None else None
    if run is not None:  # before anything is read or written: the run may be in use
        claim = hold_claim(run, claim, held, dist)
    cfg = run.read_config(overrides) if run else load_config(config, overrides)
    require_single_run(cfg)  # a train.seed list or data.folds alone: execute/repeats.py
    ckpt = load_checkpoint(run.last) if run and run.has_started() else None
    cfg, device, threads, data, model, notes = build_parts(cfg, dist, overrides,
                                                           new_run=run is None,
                                                           from_scratch=ckpt is None)
    if ckpt is not None:  # everything a resume can refuse, before anything is written
        check_split(ckpt["norm"].get("split"), data, str(run.path))
        load_weights(model, ckpt["model"], run.last)
        if run.best.is_file():  # read at the end (the final weights): refused now if damaged
            load_checkpoint(run.best)
    if run is None:
        run = RunDir.create(cfg, out) if dist.is_main else RunDir(out or "")
        run = dist.broadcast_run(run)
        claim = hold_claim(run, claim, held, dist)
        if dist.is_main:
            run.require_new()
    if dist.is_main:
        if ckpt is None:  # from scratch: rows of an attempt that never reached a checkpoint go
            run.truncate_metrics(0)
        run.write_start(cfg, data.classes, session_env(run, threads, device, dist.world_size))
    amp = amp_dtype(cfg.train.amp, device)
    log = (lambda line: None) if quiet or not dist.is_main else info
    for note in notes:
        log(note)
    module = dist.wrap(model, unused_params=cfg.train.freeze_backbone_epochs > 0)
    t = Trainer(cfg, run, data, model, torch.compile(module) if cfg.train.compile else module,
                device, dist, amp, grad_scaler(amp, device), Tracker(cfg, run.path), log,
                WeightEma(model, cfg.train.ema) if cfg.train.ema is not None else None,
                claim, on_epoch, eval_loaders(cfg, data, device))
    state = TrainState()
    if ckpt is not None:
        restore(t, state, ckpt)
    elif resume is not None:
        log(f"{run.path} has no checkpoint yet: starting the run over")
    return t, state, ckpt


def restore(t: Trainer, state: TrainState, ckpt: dict) -> None:
    """Continue from last.pt (its weights are in the model already): progress, loss scale;
    the optimizer, schedule and early stopping come back when their phase starts
    (`start_phase` gets `ckpt`)."""
    state.load_state_dict(ckpt)
    if ckpt.get("scaler"):
        t.scaler.load_state_dict(ckpt["scaler"])
    if t.ema is not None and ckpt.get("ema"):  # else (EMA turned on at resume): starts anew
        t.ema.load_state_dict(ckpt["ema"])
    if t.dist.is_main:
        t.run.truncate_metrics(state.epoch)
    t.log(f"Resuming {t.run.path} after epoch {state.epoch}")


def fit(t: Trainer, st: TrainState, ckpt: dict | None) -> dict:
    """The phases, then the final evaluation -> result.json."""
    params = count_params(t.model)
    t.log(f"{t.cfg.model.arch}: {params:,} parameters, {len(t.data.train):,} train / "
          f"{len(t.data.val or []):,} val / {len(t.data.test or []):,} test images, "
          f"device {t.device}, run {t.run.path}")
    started, stop, detail, timing, estimate = time.perf_counter(), "completed", None, None, None
    budget = None
    for p in range(st.phase, len(t.phases)):
        if phase_finished(t, st, p):
            continue
        resume = ckpt if ckpt is not None and ckpt.get("phase", 0) == p else None
        ckpt = None  # last.pt serves the phase it was saved in, once
        loader = training_loader(t, p)
        if timing is None:  # once per run, at the first phase's start: the phases share it
            # Epoch 1 of a progressive resize is the smallest: time the full size.
            timing = probe_timing(t.model, loader.epoch(t.phase_end(len(t.phases) - 1) + 1),
                                  lambda: autocast(t.device, t.amp))
            estimate = estimate_duration(t, st, timing, optimizer_steps(t, loader))
        phase = start_phase(t, st, p, resume, timing, loader)
        budget = phase.budget
        stop, detail = run_phase(t, st, phase)
        if stop in ("diverged", "time_budget"):
            break
    result = finish(t, st, params, stop, detail, budget)
    if estimate is not None:
        result.update(estimated_seconds=estimate, measured_seconds=time.perf_counter() - started)
        t.log(f"Took {describe(result['measured_seconds'])} (estimated {describe(estimate)})")
        if t.dist.is_main:
            t.run.write_result(result)
    return result


def phase_finished(t: Trainer, st: TrainState, p: int) -> bool:
    return p < st.phase or (p == st.phase and (st.early_stopped or st.epoch >= t.phase_end(p)))


def run_phase(t: Trainer, st: TrainState, ph: Phase) -> tuple[str, str | None]:
    """One phase of epochs: train -> validate -> record -> stop? -> (stop reason, detail)."""
    cfg, end = t.cfg.train, t.phase_end(ph.index)
    while ph.budget is not None or st.epoch < end:  # a time budget sets its own end
        epoch, t0 = st.epoch + 1, time.perf_counter()
        lr = head_lr(ph.opt)
        try:
            train_metrics, steps = train_one_epoch(t, st, ph, epoch)
            if steps == 0:  # the time budget ran out before a step
                return "time_budget", None
            train_s, validated = time.perf_counter() - t0, validation_due(t, st, ph, epoch)
            evaluated = validate(t, st) if validated else not_validated(t)
        except Diverged as err:
            st.epoch = epoch
            t.log(f"Epoch {epoch}: diverged ({err}); stopping"
                  + (" (lower train.lr?)" if err.blowup else ""))
            return "diverged", f"epoch {epoch}: {err}"
        row = {"epoch": epoch, **train_metrics, **evaluated, "lr": lr,
               "seconds": time.perf_counter() - t0}
        if not ph.per_step:  # plateau: stepped on the epoch's monitored value
            ph.sched.step(monitored(row, cfg.plateau.monitor))
        stop = ph.early.update(epoch, monitored(row, cfg.early_stopping.monitor))
        out_of_time = ph.budget is not None and ph.budget.after_epoch(
            st.phase_step, row["seconds"] - train_s if validated else None,
            final_eval_share(t))
        record_epoch(t, st, ph, row, stop or out_of_time)
        if stop:
            es = cfg.early_stopping
            t.log(f"Early stopping after epoch {epoch}: {es.monitor} improved by < "
                  f"{es.min_delta} for {es.patience} epochs")
            return "early_stopping", None
        if out_of_time:
            return "time_budget", None
    return "completed", None


def start_phase(t: Trainer, st: TrainState, p: int, resume: dict | None, timing: Timing,
                loader: BatchLoader) -> Phase:
    """Phase p's loader, optimizer, schedule, early stopping and Lookahead: restored from
    `resume` (last.pt saved in this phase), else fresh; a new phase may start from best.pt
    and numbers its epochs after the previous phase's last one."""
    cfg, phase = t.cfg.train, t.phases[p]
    if resume is None:
        if p > 0 and phase.start_from == "best" and t.run.best.exists():
            load_weights(t.model, load_checkpoint(t.run.best)["model"], t.run.best)
            t.log(f"Phase {p + 1}: starting from best.pt (epoch {st.best_epoch})")
            if t.ema is not None:
                t.ema.restart()  # average from these weights on, not from the ones left
        st.epoch = max(st.epoch, t.phase_end(p) - phase.epochs)
        st.phase_step = 0
    steps_per_epoch = optimizer_steps(t, loader)
    lr = phase_lr(t.phases, p, cfg.lr)
    momentum = phase.momentum if phase.momentum is not None else cfg.momentum
    opt = build_optimizer(param_groups(t.model, lr, cfg.backbone_lr_scale, cfg.weight_decay),
                          phase.optimizer or cfg.optimizer, lr, momentum, cfg.nesterov)
    lookahead = Lookahead(t.model.parameters(), cfg.lookahead) if cfg.lookahead else None
    budget = plan_budget(t, st, steps_per_epoch, timing)
    planned = steps_per_epoch * phase.epochs
    total = (lambda: budget.total_steps) if budget else (lambda: planned)
    sched, per_step = build_scheduler(opt, cfg, steps_per_epoch, total)
    early = EarlyStopping(cfg.early_stopping)
    if resume is not None:
        warn_if_schedule_ended(t, st, planned)
        opt.load_state_dict(resume["optimizer"])
        sched.load_state_dict(resume["scheduler"])
        early.load_state_dict(resume["early_stop"])
        if lookahead is not None and resume.get("lookahead"):
            lookahead.load_state_dict(resume["lookahead"])
    st.schedule_steps = total()
    log_phase_start(t, p, lr, phase.augment or t.cfg.data.augment)
    if budget is not None:  # progressive resizing follows the budget's plan
        loader.epochs = max(1, round(budget.total_steps / steps_per_epoch))
        loader.first_epoch = st.epoch + 1
    return Phase(p, loader, opt, sched, per_step, early, lookahead, budget)


def log_phase_start(t: Trainer, p: int, lr: float, augment: str) -> None:
    """One line per phase of a phased run, and one when a frozen backbone starts."""
    cfg, phase = t.cfg.train, t.phases[p]
    first, last = t.phase_end(p) - phase.epochs + 1, t.phase_end(p)
    frozen = [e for e in range(first, last + 1) if e <= cfg.freeze_backbone_epochs]
    if len(t.phases) > 1:
        t.log(f"Phase {p + 1} of {len(t.phases)}: epochs {first}-{last}, lr {lr:g}, "
              f"{phase.optimizer or cfg.optimizer}, augment {augment}"
              + (f", backbone frozen in epochs {frozen[0]}-{frozen[-1]}" if frozen else ""))
    elif frozen:
        t.log(f"Backbone frozen in epochs {frozen[0]}-{frozen[-1]} (the head trains alone), "
              f"then trained at lr x {cfg.backbone_lr_scale:g}")


def warn_if_schedule_ended(t: Trainer, st: TrainState, planned: int) -> None:
    if t.cfg.train.scheduler in ("cosine", "onecycle") and st.phase_step >= st.schedule_steps \
            and planned > st.schedule_steps:
        warn(f"the {t.cfg.train.scheduler} LR schedule of this run had ended (step "
             f"{st.phase_step}); extending it re-plans the schedule over {planned} steps, so "
             "the LR rises again from where that curve is now")


def train_one_epoch(t: Trainer, st: TrainState, ph: Phase, epoch: int) -> tuple[dict, int]:
    """The optimizer steps of one epoch -> (train metrics of the row, steps taken)."""
    cfg = t.cfg.train
    torch.manual_seed(epoch_generator(cfg.seed, epoch, DROPOUT_SALT).initial_seed())
    t.module.train()
    freeze_backbone(t.model, epoch <= cfg.freeze_backbone_epochs)
    sums = torch.zeros(5, device=t.device)  # loss, correct, images, grad norms, their count
    # Checking the loss syncs with the device: every step on CPU (free), rarely on GPUs.
    # Under DDP only the all-reduced epoch loss decides, so every rank stops together.
    check = 0 if t.dist.world_size > 1 else 1 if t.device.type == "cpu" else 50
    classes, steps = len(t.data.classes), 0
    batches = track(ph.loader.epoch(epoch), total=len(ph.loader), description=f"epoch {epoch}",
                    enabled=progress_enabled(cfg.progress) and t.dist.is_main)
    for group in micro_batch_groups(batches, cfg.accumulate):
        if ph.budget is not None and st.phase_step >= ph.budget.steps_allowed(st.phase_step,
                                                                               steps):
            break
        stats = train_step(t, st, group, ph.opt, ph.sched if ph.per_step else None,
                           ph.lookahead)
        sums += stats
        if check and steps % check == 0:
            check_loss(st, stats[0].item() / stats[2].item(),
                       f"train loss at step {steps + 1}", classes)
        steps += 1
    total_loss, correct, seen, norms, counted = t.dist.all_reduce(sums).tolist()
    check_loss(st, total_loss / max(1.0, seen), "epoch train loss", classes)
    out = {"train_loss": total_loss / max(1.0, seen), "train_acc": correct / max(1.0, seen)}
    if cfg.grad_clip is not None:  # the mean pre-clip norm (non-finite ones left out)
        out["grad_norm"] = norms / counted if counted else None
    return out, steps


def train_step(t: Trainer, st: TrainState, group: list[tuple[torch.Tensor, torch.Tensor, float]],
               opt, sched, lookahead: Lookahead | None = None) -> torch.Tensor:
    """One optimizer step over `group`'s micro-batches (x, y, weight), the gradients summed
    as one batch of all their images -> [summed loss, correct, images, pre-clip grad norm,
    1 if that norm counts], detached, on the device."""
    stats = torch.zeros(5, device=t.device)
    opt.zero_grad(set_to_none=True)
    weight = group_weight(group, t.dist.world_size)
    for i, (x, y, _) in enumerate(group):
        with t.dist.no_sync(t.module, skip=i < len(group) - 1):
            loss, logits = forward_backward(t, x, y, weight)
        labels = y.argmax(1) if y.is_floating_point() else y  # soft targets: their top class
        # torch.full, not torch.tensor: a tensor from a Python number is copied from the
        # host, and that blocking copy waits for the GPU queue every step.
        stats[:3] += torch.stack([loss.float(), (logits.argmax(1) == labels).sum().float(),
                                  torch.full((), float(len(y)), device=t.device)])
    stats[3:] = clip_gradients(t, opt)
    t.scaler.step(opt)
    t.scaler.update()
    if sched is not None:
        sched.step()
    st.step, st.phase_step = st.step + 1, st.phase_step + 1
    if lookahead is not None:
        lookahead.step()
    if t.ema is not None:  # after Lookahead: it averages the weights the next step starts from
        t.ema.update(t.model, st.step)
    return stats


def forward_backward(t: Trainer, x: torch.Tensor, y: torch.Tensor, weight: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (summed loss, logits), both detached; the gradient of loss * weight accumulates.
    `y` holds class indices, or soft targets (mixup/cutmix) that already include the label
    smoothing."""
    smoothing = 0.0 if y.is_floating_point() else t.cfg.train.label_smoothing
    with autocast(t.device, t.amp):
        logits = t.module(x)
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing, reduction="sum")
    t.scaler.scale(loss * weight).backward()
    return loss.detach(), logits.detach()


def group_weight(group: list, world_size: int) -> float:
    """The factor that turns this rank's summed loss into its share of the mean over all the
    group's images on all ranks (DDP then averages the ranks' gradients). The loader's weight
    of a micro-batch is world_size / (its images on all ranks): that count comes back exactly
    by rounding, and one micro-batch keeps the loader's own weight bit for bit."""
    images = sum(round(world_size / w) for _, _, w in group)
    return world_size / images


def micro_batch_groups(batches: Iterator, k: int) -> Iterator[list]:
    """Consecutive groups of k batches (the last group of an epoch may be shorter)."""
    group: list = []
    for batch in batches:
        group.append(batch)
        if len(group) == k:
            yield group
            group = []
    if group:
        yield group


def clip_gradients(t: Trainer, opt) -> torch.Tensor:
    """`train.grad_clip`: scale the gradients to that total norm at most (fp16 ones unscaled
    first) -> [pre-clip norm, 1], or zeros when off or the norm is not finite (GradScaler then
    skips the step)."""
    if t.cfg.train.grad_clip is None:
        return torch.zeros(2, device=t.device)
    t.scaler.unscale_(opt)
    params = [p for group in opt.param_groups for p in group["params"]]
    norm = torch.nn.utils.clip_grad_norm_(params, t.cfg.train.grad_clip).float()
    finite = torch.isfinite(norm)
    return torch.stack([torch.where(finite, norm, 0.0), finite.float()])


def validation_due(t: Trainer, st: TrainState, ph: Phase, epoch: int) -> bool:
    """`train.eval_every` N: validate every N-th epoch and the phase's last one (under a time
    budget: the epoch that used up its planned steps); 0: never (the final evaluation only)."""
    every = t.cfg.train.eval_every
    if every <= 1:
        return every == 1
    last = st.phase_step >= ph.budget.total_steps if ph.budget else \
        epoch >= t.phase_end(ph.index)
    return epoch % every == 0 or last


def not_validated(t: Trainer) -> dict:
    """The row's validation keys of an epoch not validated (`train.eval_every`): all None."""
    splits = ["val"] + (["test"] if t.data.test is not None else [])
    suffixes = ["", "_ema"] if t.ema is not None else [""]
    return {f"{split}_{m}{x}": None for x in suffixes for split in splits for m in ("loss", "acc")}


def validate(t: Trainer, st: TrainState) -> dict:
    """Each epoch's evaluation: the raw weights, and the EMA's beside them (keys + `_ema`)."""
    out = evaluate_splits(t, t.model, "")
    if t.ema is not None:
        t.ema.sync(t.dist)
        out.update(evaluate_splits(t, t.ema.model, "_ema"))
    return out


def evaluate_splits(t: Trainer, model: nn.Module, suffix: str) -> dict:
    out = {f"val_loss{suffix}": None, f"val_acc{suffix}": None}
    for split, loader in t.eval_loaders.items():
        logits, labels = predict_batches(model, loader, amp_dtype=t.amp)
        loss, out[f"{split}_acc{suffix}"] = loss_and_accuracy(logits, labels)
        out[f"{split}_loss{suffix}"] = loss
        if not math.isfinite(loss):
            raise Diverged(f"{split} loss{' of the EMA weights' if suffix else ''} is {loss}")
    return out


def record_epoch(t: Trainer, st: TrainState, ph: Phase, row: dict, phase_over: bool) -> None:
    """The epoch's row, last.pt and (when the monitored value improved) best.pt; then the
    caller's on_epoch."""
    if t.claim is not None:
        t.claim.check()  # taken over while this process looked dead: write nothing more
    st.epoch, st.phase, st.early_stopped = row["epoch"], ph.index, phase_over
    st.seconds += row["seconds"]
    t.log(epoch_line(row))
    if not t.dist.is_main:
        return
    t.run.append_metrics(row)
    t.tracker.log(row)
    meta = {"classes": t.data.classes, "norm": t.data.norm(), "config": t.cfg.to_dict()}
    value, weights = selected_weights(t, row)
    if better(value, st.best, t.cfg.train.monitor):
        st.best, st.best_epoch = value, row["epoch"]
        save_checkpoint(t.run.best, t.ema.model if weights == "ema" else t.model,
                        epoch=row["epoch"], weights=weights, **meta)
    save_checkpoint(t.run.last, t.model, optimizer=ph.opt.state_dict(),
                    scheduler=ph.sched.state_dict(), early_stop=ph.early.state_dict(),
                    scaler=t.scaler.state_dict(), **averaging_state(t, ph), **st.state_dict(),
                    **meta)
    if t.on_epoch is not None:
        t.on_epoch(row)


def build_parts(cfg: Config, dist: Dist, overrides: list[str] | None, new_run: bool,
                from_scratch: bool) -> tuple[Config, torch.device, int, DataBundle, nn.Module,
                                             list[str]]:
    """What `train` and `lr-find` build alike -> (config, device, threads, data, model,
    notes to print). A new run takes its machine class's overrides (a resumed one has them
    in config.yaml); a model trained from scratch gets its pretrained weights and
    `train.init` (a resumed one takes its weights from last.pt). The parameter budget is
    checked from the data's listing, before any image is read."""
    device = dist.device(cfg.train.device)
    cfg, machine_note = apply_machine(cfg, device, overrides) if new_run else (cfg, None)
    threads = configure_threads(cfg.train.threads, dist.local_world_size)
    if cfg.model.max_params is not None:
        check_param_budget(cfg.model, *listing_shape(cfg))
    data = load_data(cfg.data, progress=progress_enabled(cfg.train.progress) and dist.is_main)
    model = make_model(cfg, data, device, dist, pretrained=from_scratch)
    refuse_one_image_batches(cfg, model, dist.world_size)
    init_note = initialise(cfg, data, model, device) if from_scratch else None
    return cfg, device, threads, data, model, [n for n in (machine_note, init_note) if n]


def listing_shape(cfg: Config) -> tuple[int, int]:
    """(classes, input channels) from the data's listing alone: no image decoded."""
    listing = load_listing(cfg.data)
    chans = int(listing.arrays.shape[1]) if listing.arrays is not None else 3
    return cfg.model.num_classes or len(listing.classes), chans


def session_env(run: RunDir, threads: int, device: torch.device, world_size: int) -> dict:
    """env.json of this training session. A resumed run keeps the sessions that trained it
    before under `earlier` (latest first) and warns when they ran elsewhere: its times mix
    both. (A run started over, killed before its first checkpoint, has no earlier session.)"""
    env = {**collect_env(threads=threads, device=device), "world_size": world_size}
    before = run.read_env() if run.has_started() else None
    if before is None:
        return env
    changed = env_differences({"before": before, "now": env})
    if changed:
        warn(f"{run.path} is resumed in another environment (" + "; ".join(changed) + ")")
    earlier = {k: v for k, v in before.items() if k != "earlier"}
    return {**env, "earlier": [earlier, *before.get("earlier", [])]}


def make_model(cfg: Config, data: DataBundle, device: torch.device, dist: Dist,
               pretrained: bool) -> nn.Module:
    num_classes = cfg.model.num_classes or len(data.classes)
    if num_classes < len(data.classes):
        raise ReslabError(f"model.num_classes = {num_classes}: the data has "
                          f"{len(data.classes)} classes")
    torch.manual_seed(cfg.train.seed)
    # A resumed run takes its weights from last.pt: don't load pretrained ones first.
    model_cfg = cfg.model if pretrained else cfg.model.model_copy(update={"pretrained": False})
    model = build_model(model_cfg, num_classes, data.in_chans)
    if cfg.train.freeze_backbone_epochs:  # before any epoch, not when freezing starts
        require_classifier(model, "train.freeze_backbone_epochs")
    if cfg.train.sync_bn:
        model = dist.convert_sync_bn(model.to(device))
    return model.to(device, memory_format=memory_format(cfg.train.channels_last))


BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def refuse_one_image_batches(cfg: Config, model: nn.Module, world_size: int) -> None:
    """A BatchNorm layer normalises over the images of a batch: with one image per step (per
    process under DDP, unless train.sync_bn pools them) it gets a single value per channel
    from a 1x1 feature map or a head, and PyTorch stops mid-run with a traceback. Refused
    here, before the run directory exists. (The loader drops a last partial batch of fewer
    than 2 images per process, so full batches are what counts.)"""
    size = cfg.train.batch_size
    if size < world_size:
        raise ReslabError(f"train.batch_size = {size}: fewer images than the {world_size} "
                          f"processes that share each batch; set it to {2 * world_size} or "
                          "more")
    pooled = cfg.train.sync_bn and world_size > 1
    per_step = size if pooled else size // world_size
    if per_step >= 2 or not any(isinstance(m, BATCH_NORMS) for m in model.modules()):
        return
    where = "" if world_size == 1 else f" over {world_size} processes ({per_step} each)"
    raise ReslabError(f"train.batch_size = {size}{where}: {cfg.model.arch} has BatchNorm "
                      "layers, which need at least 2 images per training batch (one image "
                      "gives them a single value per channel); set train.batch_size to "
                      f"{2 * (1 if pooled else world_size)} or more")


def initialise(cfg: Config, data: DataBundle, model: nn.Module, device: torch.device
               ) -> str | None:
    """`train.init` of a new run's weights (a resumed run has its own in last.pt), before the
    run directory exists: a model it does not fit is refused without leaving one behind."""
    if cfg.train.init != "whiten":
        return None
    norm = Normalizer(data.mean, data.std, data.scale, device)
    return whiten_first_conv(model, data.train, norm, cfg.train.channels_last,
                             pretrained=bool(cfg.model.pretrained))


def selected_weights(t: Trainer, row: dict) -> tuple[float, str]:
    """(train.monitor's value, 'raw' or 'ema'): the weights of this epoch that may become
    best.pt. `train.ema.select`: raw, ema, or best = the EMA's when its value is strictly
    better than the raw weights' (ties keep the raw ones). Without a validation split nothing
    scores the EMA: its value is the raw weights' train metric (`monitored`)."""
    raw = monitored(row, t.cfg.train.monitor)
    ema = t.cfg.train.ema
    if ema is None or ema.select == "raw":
        return raw, "raw"
    value = row.get(f"{t.cfg.train.monitor}_ema")
    value = raw if value is None else value
    if ema.select == "ema" or better(value, raw, t.cfg.train.monitor):
        return value, "ema"
    return raw, "raw"


def averaging_state(t: Trainer, ph: Phase) -> dict:
    """last.pt's entries for the EMA and Lookahead, when they are on."""
    out = {}
    if t.ema is not None:
        out["ema"] = t.ema.state_dict()
    if ph.lookahead is not None:
        out["lookahead"] = ph.lookahead.state_dict()
    return out


def finish(t: Trainer, st: TrainState, params: int, stop: str, detail: str | None,
           budget: Budget | None) -> dict:
    """Final evaluation with the chosen weights; writes the confusion matrix and result.json."""
    rows = t.run.read_metrics() if t.dist.is_main else []
    result = {"best_val_acc": max((r["val_acc"] for r in rows if r["val_acc"] is not None),
                                  default=None),
              "final_val_acc": rows[-1]["val_acc"] if rows else None, "test_acc": None,
              "params": params, "epochs_run": st.epoch, "best_epoch": st.best_epoch,
              "stop_reason": stop, "seconds_per_epoch": st.seconds / max(1, len(rows)),
              "seconds_total": st.seconds}
    if t.ema is not None:
        result["best_val_acc_ema"] = best_of(rows, "val_acc_ema")
    if detail:
        result["stop_detail"] = detail
    if not t.dist.is_main:
        return result
    if t.run.best.exists() and stop != "diverged":
        result["eval_weights"] = load_final_weights(t, rows)
        result.update(final_evaluation(t))
    if budget is not None:
        result.update(time_budget_s=budget.seconds, time_used_s=budget.elapsed(),
                      steps=st.phase_step, planned_steps=budget.total_steps)
    t.run.write_result(result)
    t.tracker.summary(result)
    t.tracker.close()
    t.log(summary_line(result, t.run.path, t.data.val is not None))
    return result


def load_final_weights(t: Trainer, rows: list[dict]) -> str:
    """Put the weights of the final evaluation in t.model -> 'raw' or 'ema': best.pt's
    (`train.final_weights: best`), else the last epoch's, raw or EMA by `train.ema.select`."""
    if t.cfg.train.final_weights == "best":
        ckpt = load_checkpoint(t.run.best)
        load_weights(t.model, ckpt["model"], t.run.best)
        return ckpt.get("weights", "raw")
    weights = selected_weights(t, rows[-1])[1] if rows else "raw"
    if weights == "ema":
        load_weights(t.model, t.ema.model.state_dict(), "the EMA weights")
    return weights


def final_evaluation(t: Trainer) -> dict:
    split = "test" if t.data.test is not None else "val"
    data = getattr(t.data, split)
    if data is None:
        return {}
    logits, labels = predict_batches(t.model, t.eval_loaders[split], tta=t.cfg.train.tta,
                                     amp_dtype=t.amp)
    loss, acc = loss_and_accuracy(logits, labels)
    confidence, pred = logits.float().softmax(1).max(1)  # per image: McNemar's test pairs runs
    t.run.write_predictions(labels.numpy(), pred.numpy(), confidence.numpy())
    metrics = classification_metrics(logits, labels, t.data.classes)
    t.run.write_evaluation(confusion_matrix(labels, logits.argmax(1), len(t.data.classes)),
                           t.data.classes, {"split": split, "n": len(labels), **metrics})
    mistakes = most_confident_mistakes(labels, logits)
    images = to_display_uint8(data.images[torch.from_numpy(mistakes["index"])], t.data.scale,
                              t.data.fmt)
    t.run.write_misclassified(images, mistakes)
    return {f"{split}_acc_best_model": acc, "eval_split": split,
            **({"test_acc": acc, "test_loss": loss} if split == "test" else {}),
            **{k: metrics[k] for k in RESULT_METRICS}}


# ---------------------------------------------------------------------------- small helpers
def make_loader(cfg: Config, data: DataBundle, device: torch.device, dist: Dist,
                augment: str | None = None) -> BatchLoader:
    """A phase's training loader (augmented; progressive resizing follows the run's epochs,
    or the time budget's plan)."""
    norm = Normalizer(data.mean, data.std, data.scale, device)
    pipeline = build_train_augment(cfg.data, len(data.classes), cfg.train.label_smoothing,
                                   preset=augment)
    epochs = None if cfg.train.time_budget else \
        sum(ph.epochs for ph in cfg.train.phases) or cfg.train.epochs
    return BatchLoader(data.train, cfg.train.batch_size, device, norm, pipeline, shuffle=True,
                       seed=cfg.train.seed, channels_last=cfg.train.channels_last,
                       rank=dist.rank, world_size=dist.world_size, epochs=epochs)


def training_loader(t: Trainer, p: int) -> BatchLoader:
    return make_loader(t.cfg, t.data, t.device, t.dist,
                       augment=t.phases[p].augment or t.cfg.data.augment)


def eval_loaders(cfg: Config, data: DataBundle, device: torch.device
                 ) -> dict[str, BatchLoader]:
    """The val and test splits' loaders, built once per run (each copies its split into the
    channels-last layout)."""
    return {split: eval_loader(getattr(data, split), data.norm(), cfg.train, device)
            for split in ("val", "test") if getattr(data, split) is not None}


def estimate_duration(t: Trainer, st: TrainState, timing: Timing, steps: int) -> float | None:
    """Print the expected duration of what is left of the run (None under a time budget,
    which plans its own steps per phase)."""
    if t.cfg.train.time_budget is not None:
        return None
    epochs = sum(t.phase_end(p) - max(st.epoch, t.phase_end(p) - ph.epochs)
                 for p, ph in enumerate(t.phases) if not phase_finished(t, st, p))
    n_val, n_final = eval_images(t)
    per_epoch = steps * step_seconds(t, timing) + n_val * timing.eval_image_s * \
        validations_per_epoch(t)
    total = epochs * per_epoch + n_final * timing.eval_image_s
    t.log(f"Estimated duration: {describe(total)} ({epochs} epochs of {steps} steps, "
          f"~{describe(per_epoch)} each)")
    return total


def plan_budget(t: Trainer, st: TrainState, steps_per_epoch: int, timing: Timing
                ) -> Budget | None:
    if t.cfg.train.time_budget is None:
        return None
    n_val, n_final = eval_images(t)
    seconds = parse_duration(t.cfg.train.time_budget) - st.seconds
    budget = Budget(seconds, steps_per_epoch, step_seconds(t, timing),
                    n_val * timing.eval_image_s, n_final * timing.eval_image_s,
                    validations_per_epoch(t))
    t.log(f"Time budget {describe(seconds)}: planning {budget.total_steps} steps "
          f"(~{budget.total_steps / steps_per_epoch:.1f} epochs at "
          f"{t.cfg.train.batch_size / timing.step_s:.0f} img/s), re-planned every epoch")
    return budget


def optimizer_steps(t: Trainer, loader: BatchLoader) -> int:
    """Optimizer steps per epoch: `train.accumulate` of the loader's batches make one."""
    return math.ceil(len(loader) / t.cfg.train.accumulate)


def step_seconds(t: Trainer, timing: Timing) -> float:
    """The measured time of one optimizer step (the probe times one micro-batch)."""
    return timing.step_s * t.cfg.train.accumulate


def eval_images(t: Trainer) -> tuple[int, float]:
    """(images evaluated after each epoch, image-passes of the final evaluation)."""
    n_val = sum(len(d) for d in (t.data.val, t.data.test) if d is not None)
    n_val *= 2 if t.ema is not None else 1  # the EMA weights are evaluated too
    return n_val, len(t.data.test or t.data.val or []) * (4 if t.cfg.train.tta else 1)


def validations_per_epoch(t: Trainer) -> float:
    """1 / `train.eval_every` (0 when only the final evaluation runs)."""
    every = t.cfg.train.eval_every
    return 1.0 / every if every else 0.0


def final_eval_share(t: Trainer) -> float:
    n_val, n_final = eval_images(t)
    return n_final / n_val if n_val else 0.0


def head_lr(opt) -> float:
    """The LR logged per epoch: the head's, which is the base LR when the backbone is scaled."""
    return next((g["lr"] for g in opt.param_groups if g.get("head")), opt.param_groups[0]["lr"])


def phase_lr(phases: list[PhaseConfig], p: int, base: float) -> float:
    """A phase's LR: its own `lr`, else the previous phase's LR times its `lr_scale`."""
    lr = base
    for ph in phases[: p + 1]:
        lr = ph.lr if ph.lr is not None else lr * (ph.lr_scale or 1.0)
    return lr


def best_of(rows: list[dict], key: str) -> float | None:
    return max((r[key] for r in rows if r.get(key) is not None), default=None)


def monitored(row: dict, metric: str) -> float:
    value = row.get(metric)
    return row[metric.replace("val_", "train_")] if value is None else value


def epoch_line(row: dict) -> str:
    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    return (f"Epoch {row['epoch']}, Train loss {fmt(row['train_loss'])}, Val loss "
            f"{fmt(row['val_loss'])}, Train acc {fmt(row['train_acc'])}, Val acc "
            f"{fmt(row['val_acc'])}, lr {row['lr']:.3g}, {row['seconds']:.1f} s")


def summary_line(result: dict, path: Path, has_val: bool = True) -> str:
    final_val = result.get("val_acc_best_model")  # the only one under train.eval_every: 0
    parts = [f"best val acc {result['best_val_acc']:.4f}" if result["best_val_acc"] is not None
             else f"final val acc {final_val:.4f}" if final_val is not None
             else "no validation split" if not has_val else "no validation result"]
    if result["test_acc"] is not None:
        parts.append(f"test acc {result['test_acc']:.4f}")
    return (f"Done ({result['stop_reason']}, {result['epochs_run']} epochs): "
            + ", ".join(parts) + f". Run directory: {path}")
