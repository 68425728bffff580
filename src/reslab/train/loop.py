"""The training loop: config -> data + model -> epochs -> run directory.

Read top to bottom: `train()` sets up, `fit()` runs phases of epochs, `train_epoch()` is the
inner loop. Metrics accumulate on the device; the host syncs once per epoch.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, PhaseConfig, load_config, parse_duration
from ..data import DataBundle, load_data
from ..data.augment import build_augment
from ..data.loader import BatchLoader, Normalizer, memory_format
from ..errors import ReslabError
from ..evaluate.infer import (autocast_for, confusion_matrix, loss_and_accuracy, predict_batches,
                              save_misclassified, write_confusion_csv)
from ..models import build_model, count_params
from .budget import Budget, describe, probe_seconds
from .checkpoint import load_checkpoint, load_weights, save_checkpoint, unwrap
from .distributed import Dist
from .optim import StepPlan, build_optimizer, build_scheduler, param_groups
from ..progress import progress_enabled, track
from .rundir import RunDir
from .runtime import (amp_dtype, configure_threads, deterministic_algorithms, grad_scaler,
                      head_of, set_backbone_frozen)
from .state import EarlyStopping, better
from .tracking import Tracker

EpochCallback = Callable[[dict], None]


# A run has diverged when a train or val loss is NaN/inf, or a training step's mean loss
# exceeds this multiple of its starting value (the first step's loss, at least ln(classes):
# chance-level cross-entropy). Hardware-independent: a run that blows up to 1e13 on one CPU and
# to NaN on another stops in the same epoch on both.
DIVERGENCE_FACTOR = 10.0


class Diverged(Exception):
    """The loss became non-finite or grew past DIVERGENCE_FACTOR x its starting value."""


@dataclass
class Session:
    cfg: Config
    run: RunDir
    data: DataBundle
    model: nn.Module
    device: torch.device
    dist: Dist
    amp: torch.dtype | None
    log: Callable[[str], None] = print
    rows: list[dict] = field(default_factory=list)
    budget: Budget | None = None
    tracker: Tracker | None = None
    eval_loaders: dict[str, BatchLoader] = field(default_factory=dict)
    scaler: torch.amp.GradScaler | None = None
    loss_ref: float | None = None           # starting loss, for the divergence rule
    stop_detail: str | None = None
    estimate: float | None = None           # printed estimate of the whole run, seconds
    started: float | None = None

    def check_loss(self, value: float, what: str) -> None:
        """Raise Diverged per the rule above (the first value checked sets the reference)."""
        if not math.isfinite(value):
            raise Diverged(f"{what} is {value}")
        if self.loss_ref is None:
            self.loss_ref = max(value, math.log(max(2, len(self.data.classes))))
        elif value > DIVERGENCE_FACTOR * self.loss_ref:
            raise Diverged(f"{what} {value:.3g} is over {DIVERGENCE_FACTOR:g}x its starting "
                           f"value {self.loss_ref:.3g}")


def train(config=None, out: str | Path | None = None, resume: str | Path | None = None,
          overrides: list[str] | None = None, on_epoch: EpochCallback | None = None,
          quiet: bool = False) -> dict:
    """Train from a config (path, mapping or Config) into a run directory; returns result.json.

    `resume` continues the run in that directory from its last.pt. `on_epoch` is called with
    each epoch's metrics row on rank 0 and may raise (e.g. optuna.TrialPruned) to stop.
    """
    dist = Dist.from_env()
    if resume is not None:
        run = RunDir.existing(resume)
        cfg = load_config(run.config, overrides)
    else:
        cfg = load_config(config, overrides)
        run = None
    configure_threads(cfg.train.threads, dist)
    device = dist.device(cfg.train.device)
    data = load_data(cfg.data, progress=progress_enabled(cfg.train.progress) and dist.is_main)
    num_classes = cfg.model.num_classes or len(data.classes)
    if num_classes < len(data.classes):
        raise ReslabError(f"model.num_classes = {num_classes}: the data has "
                          f"{len(data.classes)} classes")
    torch.manual_seed(cfg.train.seed)
    # A resumed run takes its weights from last.pt: don't fetch pretrained ones first.
    model_cfg = cfg.model if run is None else cfg.model.model_copy(update={"pretrained": False})
    model = build_model(model_cfg, num_classes, data.in_chans)
    if cfg.train.sync_bn:
        model = dist.convert_sync_bn(model.to(device))
    if run is None:
        run = RunDir.new(cfg, out) if dist.is_main else RunDir(out or "")
        run = dist.broadcast_run(run)
    if dist.is_main:
        run.write_start(cfg, data.classes)
    model = model.to(device, memory_format=memory_format(cfg.train.channels_last))
    amp = amp_dtype(cfg.train.amp, device)
    session = Session(cfg, run, data, model, device, dist, amp,
                      log=(lambda s: None) if quiet or not dist.is_main else print,
                      tracker=Tracker(cfg, run.path), scaler=grad_scaler(amp, device))
    try:
        with deterministic_algorithms(cfg.train.deterministic):
            return fit(session, resume is not None, on_epoch)
    finally:
        dist.close()


def fit(s: Session, resuming: bool, on_epoch: EpochCallback | None) -> dict:
    cfg, phases = s.cfg, s.cfg.train.phases or [PhaseConfig(epochs=s.cfg.train.epochs)]
    state = {"epoch": 0, "phase": 0, "early_stopped": False, "best": None, "best_epoch": 0,
             "seconds": 0.0, "step": 0, "phase_step": 0, "loss_ref": None}
    ckpt = None
    if resuming:
        ckpt = load_checkpoint(s.run.last)
        load_weights(s.model, ckpt["model"], s.run.last)
        state.update({k: ckpt[k] for k in state if k in ckpt})
        s.loss_ref = state["loss_ref"]
        if ckpt.get("scaler"):
            s.scaler.load_state_dict(ckpt["scaler"])
        s.rows = s.run.truncate_metrics(state["epoch"]) if s.dist.is_main else []
        s.log(f"Resuming {s.run.path} after epoch {state['epoch']}")
    params = count_params(s.model)
    s.log(f"{cfg.model.arch}: {params:,} parameters, {len(s.data.train):,} train / "
          f"{len(s.data.val or []):,} val / {len(s.data.test or []):,} test images, "
          f"device {s.device}, run {s.run.path}")
    stop_reason = "completed"
    # A phase is finished if it stopped early or reached its (possibly extended) epoch count.
    phase_done = state["early_stopped"] or state["epoch"] >= sum(
        ph.epochs for ph in phases[: state["phase"] + 1])
    first = state["phase"] + (1 if resuming and phase_done else 0)
    for p in range(first, len(phases)):
        begin = sum(ph.epochs for ph in phases[:p])
        mid_phase = ckpt is not None and p == state["phase"] and not phase_done
        stop_reason = run_phase(s, phases, p, begin, state, ckpt if mid_phase else None, on_epoch)
        if stop_reason in ("diverged", "time_budget"):
            break
        ckpt = None
    return finish(s, state, params, stop_reason)


def run_phase(s: Session, phases: list[PhaseConfig], p: int, begin: int, state: dict,
              ckpt: dict | None, on_epoch: EpochCallback | None) -> str:
    cfg, phase = s.cfg.train, phases[p]
    if p > 0 and ckpt is None and phase.start_from == "best" and s.run.best.exists():
        load_weights(s.model, load_checkpoint(s.run.best)["model"], s.run.best)
        s.log(f"Phase {p + 1}: starting from best.pt (epoch {state['best_epoch']})")
    lr = phase_lr(phases, p, cfg.lr)
    train_loader = make_loader(s, phase.augment or s.cfg.data.augment, train=True)
    opt = build_optimizer(param_groups(s.model, head_of(s.model), lr, cfg.backbone_lr_scale,
                                       cfg.weight_decay),
                          phase.optimizer or cfg.optimizer, lr,
                          phase.momentum if phase.momentum is not None else cfg.momentum,
                          cfg.nesterov)
    budget = s.budget = plan_run(s, train_loader, phase.epochs, state)
    plan = budget.plan if budget else StepPlan(len(train_loader) * phase.epochs)
    sched, per_step = build_scheduler(opt, cfg, len(train_loader), plan)
    early = EarlyStopping(cfg.early_stopping)
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        sched.load_state_dict(ckpt["scheduler"])
        early.load_state_dict(ckpt["early_stop"])
    model = training_module(s)
    phase_start_step = state["step"] - (state["phase_step"] if ckpt is not None else 0)
    last_epoch = None if budget else begin + phase.epochs
    epoch = max(state["epoch"], begin)
    while last_epoch is None or epoch < last_epoch:
        epoch += 1
        frozen = epoch <= cfg.freeze_backbone_epochs
        t0, lr_used = time.perf_counter(), head_lr(opt)
        steps_left = plan.total_steps - (state["step"] - phase_start_step)
        if budget:
            budget.epoch_start()
        try:
            train_loss, train_acc, steps = train_epoch(
                s, model, train_loader, opt, sched if per_step else None, epoch, frozen,
                steps_left, budget, state["step"] - phase_start_step)
            if steps == 0 and budget is not None:  # the budget ran out before a step
                return "time_budget"
            train_seconds = time.perf_counter() - t0
            row = {"epoch": epoch, "train_loss": train_loss, "train_acc": train_acc,
                   **validate(s, model), "lr": lr_used}
        except Diverged as err:
            s.stop_detail = f"epoch {epoch}: {err}"
            s.log(f"Epoch {epoch}: diverged ({err}); stopping (lower train.lr?)")
            state["epoch"], state["loss_ref"] = epoch, s.loss_ref
            return "diverged"
        state["step"] += steps
        row["seconds"] = time.perf_counter() - t0
        if not per_step:
            sched.step(monitored(row, cfg.plateau.monitor))
        stop = early.update(epoch, monitored(row, cfg.early_stopping.monitor))
        state["phase_step"] = state["step"] - phase_start_step
        if budget:
            budget.end_epoch(state["phase_step"], row["seconds"] - train_seconds,
                             *eval_sizes(s), cfg.tta)
        out_of_time = budget is not None and budget.done(state["phase_step"])
        record_epoch(s, row, state, opt, sched, early, p, stop or out_of_time)
        if on_epoch is not None and s.dist.is_main:
            on_epoch(row)
        if stop:
            s.log(f"Early stopping after epoch {epoch}: {cfg.early_stopping.monitor} improved by "
                  f"< {cfg.early_stopping.min_delta} for {cfg.early_stopping.patience} epochs")
            return "early_stopping"
        if out_of_time:
            return "time_budget"
    return "completed"


def training_module(s: Session) -> nn.Module:
    """The module the steps run through: DDP-wrapped and/or compiled as configured."""
    if getattr(s, "_train_module", None) is None:
        module = s.dist.wrap(s.model, unused_params=s.cfg.train.freeze_backbone_epochs > 0)
        s._train_module = torch.compile(module) if s.cfg.train.compile else module
    return s._train_module


def eval_sizes(s: Session) -> tuple[int, int]:
    """(images evaluated after each epoch, images in the final evaluation)."""
    n_val = sum(len(d) for d in (s.data.val, s.data.test) if d is not None)
    return n_val, len(s.data.test or s.data.val or [])


def plan_run(s: Session, loader: BatchLoader, epochs: int, state: dict) -> Budget | None:
    """Print the expected duration; with train.time_budget, return the step plan that fits it."""
    cfg = s.cfg.train
    n_val, n_final = eval_sizes(s)
    if getattr(s, "_probe", None) is None:  # once per run: phases share the measurement
        s._probe = probe_seconds(unwrap(s.model), loader.epoch(0),
                                 lambda: autocast_for(s.device, s.amp))
    step_s, eval_img_s = s._probe
    val_s, final_s = n_val * eval_img_s, n_final * eval_img_s * (4 if cfg.tta else 1)
    if s.started is None:
        s.started = time.perf_counter()
    if cfg.time_budget is None:
        total = epochs * (len(loader) * step_s + val_s) + final_s
        s.estimate = (s.estimate or 0.0) + total - (final_s if s.estimate else 0.0)
        s.log(f"Estimated duration: {describe(total)} ({epochs} epochs of {len(loader)} steps, "
              f"~{describe(len(loader) * step_s + val_s)} each)")
        return None
    seconds = parse_duration(cfg.time_budget) - state["seconds"]
    budget = Budget(seconds, len(loader), step_s, val_s, final_s)
    steps = budget.plan.total_steps
    s.log(f"Time budget {describe(seconds)}: planning {steps} steps (~{steps / len(loader):.1f} "
          f"epochs at {loader.batch_size / step_s:.0f} img/s), re-planned every epoch")
    return budget


def head_lr(opt) -> float:
    """The LR logged per epoch: the head's, which is the base LR when the backbone is scaled."""
    return next((g["lr"] for g in opt.param_groups if g.get("head")), opt.param_groups[0]["lr"])


def phase_lr(phases: list[PhaseConfig], p: int, base: float) -> float:
    """A phase's LR: its own `lr`, else the previous phase's LR times its `lr_scale`."""
    lr = base
    for ph in phases[: p + 1]:
        lr = ph.lr if ph.lr is not None else lr * (ph.lr_scale or 1.0)
    return lr


def make_loader(s: Session, augment: str, train: bool, split: str = "train") -> BatchLoader:
    """The training loader of a phase, or a split's evaluation loader (built once per run:
    building one copies the split into the channels-last layout)."""
    if not train and split in s.eval_loaders:
        return s.eval_loaders[split]
    data = getattr(s.data, split)
    norm = Normalizer(s.data.mean, s.data.std, s.data.scale, s.device)
    cfg = s.cfg
    loader = BatchLoader(data, cfg.train.batch_size if train else cfg.train.eval_batch_size,
                         s.device, norm, build_augment(augment, cfg.data.pad, cfg.data.gray_p)
                         if train else None, shuffle=train, seed=cfg.train.seed,
                         channels_last=cfg.train.channels_last,
                         rank=s.dist.rank if train else 0,
                         world_size=s.dist.world_size if train else 1)
    if not train:
        s.eval_loaders[split] = loader
    return loader


def train_epoch(s: Session, model: nn.Module, loader: BatchLoader, opt, sched, epoch: int,
                frozen: bool, max_steps: int, budget: Budget | None = None,
                steps_before: int = 0) -> tuple[float, float, int]:
    cfg = s.cfg.train
    torch.manual_seed(cfg.seed * 1_000_003 + epoch)  # dropout: same draws after a resume
    model.train()
    set_backbone_frozen(unwrap(model), frozen)
    loss_sum = torch.zeros((), device=s.device)
    correct = torch.zeros((), device=s.device, dtype=torch.long)
    seen = 0
    # Checking the loss syncs with the device: every step on CPU (free), rarely on GPUs.
    # Under DDP only the all-reduced epoch loss decides, so every rank stops together.
    check_every = 0 if s.dist.world_size > 1 else 1 if s.device.type == "cpu" else 50
    batches = track(loader.epoch(epoch), total=min(len(loader), max_steps),
                    description=f"epoch {epoch}",
                    enabled=progress_enabled(cfg.progress) and s.dist.is_main)
    step = 0
    for x, y, weight in batches:
        if budget is not None and step % 4 == 0:
            budget.tick(steps_before + step)
            max_steps = budget.plan.total_steps - steps_before
        if step >= max_steps:
            break
        with autocast_for(s.device, s.amp):
            logits = model(x)
            loss_sum_batch = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing,
                                             reduction="sum")
        opt.zero_grad(set_to_none=True)
        s.scaler.scale(loss_sum_batch * weight).backward()
        s.scaler.step(opt)
        s.scaler.update()
        if sched is not None:
            sched.step()
        loss_sum += loss_sum_batch.detach()
        correct += (logits.argmax(1) == y).sum()
        seen += len(y)
        if check_every and step % check_every == 0:
            s.check_loss(loss_sum_batch.item() / len(y), f"train loss at step {step + 1}")
        step += 1
    totals = s.dist.all_reduce(torch.stack([loss_sum.float(), correct.float(),
                                            torch.tensor(float(seen), device=s.device)]))
    n = max(1.0, totals[2].item())
    s.check_loss(totals[0].item() / n, "epoch train loss")
    return totals[0].item() / n, totals[1].item() / n, step


def validate(s: Session, model: nn.Module) -> dict:
    out = {"val_loss": None, "val_acc": None}
    for split in ("val", "test"):
        if getattr(s.data, split) is None:
            continue
        logits, labels = predict_batches(unwrap(model), make_loader(s, "none", False, split),
                                         tta=False, amp_dtype=s.amp)
        out[f"{split}_loss"], out[f"{split}_acc"] = loss_and_accuracy(logits, labels)
        if not math.isfinite(out[f"{split}_loss"]):
            raise Diverged(f"{split} loss is {out[f'{split}_loss']}")
    return out


def monitored(row: dict, metric: str) -> float:
    value = row.get(metric)
    return row[metric.replace("val_", "train_")] if value is None else value


def record_epoch(s: Session, row: dict, state: dict, opt, sched, early: EarlyStopping, phase: int,
                 early_stopped: bool) -> None:
    cfg = s.cfg.train
    epoch = row["epoch"]
    value = monitored(row, cfg.monitor)
    state.update(epoch=epoch, phase=phase, early_stopped=early_stopped,
                 seconds=state["seconds"] + row["seconds"], loss_ref=s.loss_ref)
    s.rows.append(row)
    s.log(epoch_line(row))
    if not s.dist.is_main:
        return
    s.run.append_metrics(row)
    s.tracker.log(row)
    meta = {"classes": s.data.classes, "norm": s.data.norm(), "config": s.cfg.to_dict()}
    if better(value, state["best"], cfg.monitor):
        state.update(best=value, best_epoch=epoch)
        save_checkpoint(s.run.best, s.model, epoch=epoch, **meta)
    save_checkpoint(s.run.last, s.model, optimizer=opt.state_dict(),
                    scheduler=sched.state_dict(), early_stop=early.state_dict(),
                    scaler=s.scaler.state_dict(), **state, **meta)


def epoch_line(row: dict) -> str:
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    return (f"Epoch {row['epoch']}, Train loss {fmt(row['train_loss'])}, Val loss "
            f"{fmt(row['val_loss'])}, Train acc {fmt(row['train_acc'])}, Val acc "
            f"{fmt(row['val_acc'])}, lr {row['lr']:.3g}, {row['seconds']:.1f} s")


def finish(s: Session, state: dict, params: int, stop_reason: str) -> dict:
    """Final evaluation with the best weights; write confusion matrix and result.json."""
    rows = s.rows
    result = {"best_val_acc": max((r["val_acc"] for r in rows if r["val_acc"] is not None),
                                  default=None),
              "final_val_acc": rows[-1]["val_acc"] if rows else None, "test_acc": None,
              "params": params, "epochs_run": state["epoch"], "best_epoch": state["best_epoch"],
              "stop_reason": stop_reason,
              "seconds_per_epoch": state["seconds"] / max(1, len(rows)),
              "seconds_total": state["seconds"]}
    if s.stop_detail:
        result["stop_detail"] = s.stop_detail
    if not s.dist.is_main:
        return result
    if s.run.best.exists() and stop_reason != "diverged":
        if s.cfg.train.final_weights == "best":
            load_weights(s.model, load_checkpoint(s.run.best)["model"], s.run.best)
        result.update(final_evaluation(s))
    if s.estimate is not None and s.started is not None:
        result.update(estimated_seconds=s.estimate,
                      measured_seconds=time.perf_counter() - s.started)
        s.log(f"Took {describe(result['measured_seconds'])} (estimated "
              f"{describe(s.estimate)})")
    if s.budget is not None:
        result.update(time_budget_s=s.budget.seconds, time_used_s=s.budget.elapsed(),
                      steps=state["phase_step"], planned_steps=s.budget.plan.total_steps)
    s.run.write_result(result)
    s.tracker.summary(result)
    s.tracker.close()
    s.log(summary_line(result, s.run.path))
    if s.cfg.train.report:
        write_run_report(s)
    return result


def write_run_report(s: Session) -> None:
    """The HTML report is a convenience: a failure to draw it must not fail the run."""
    try:
        from ..report import write_report

        html, _ = write_report(s.run.path)
        s.log(f"Report: {html}")
    except Exception as err:  # noqa: BLE001
        s.log(f"warning: report not written ({str(err).splitlines()[0] if str(err) else err!r})")


def final_evaluation(s: Session) -> dict:
    split = "test" if s.data.test is not None else "val"
    data = getattr(s.data, split)
    if data is None:
        return {}
    logits, labels = predict_batches(s.model, make_loader(s, "none", False, split),
                                     tta=s.cfg.train.tta, amp_dtype=s.amp)
    loss, acc = loss_and_accuracy(logits, labels)
    matrix = confusion_matrix(labels, logits.argmax(1), len(s.data.classes))
    write_confusion_csv(s.run.path / "confusion_matrix.csv", matrix, s.data.classes)
    save_misclassified(s.run.path / "misclassified.npz", data.images, labels, logits,
                       s.data.scale, s.data.fmt)
    return {f"{split}_acc_best_model": acc, "eval_split": split,
            **({"test_acc": acc, "test_loss": loss} if split == "test" else {})}


def summary_line(result: dict, path: Path) -> str:
    parts = [f"best val acc {result['best_val_acc']:.4f}" if result["best_val_acc"] is not None
             else "no validation split"]
    if result["test_acc"] is not None:
        parts.append(f"test acc {result['test_acc']:.4f}")
    return (f"Done ({result['stop_reason']}, {result['epochs_run']} epochs): "
            + ", ".join(parts) + f". Run directory: {path}")
