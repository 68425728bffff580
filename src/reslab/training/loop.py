"""The training loop: config -> data + model -> epochs -> run directory.

Read top to bottom: `train()` builds a `Session`, `fit()` runs the phases, `run_phase()` is
the epoch loop (train -> validate -> record -> stop?), `train_one_epoch()` the step loop and
`train_step()` one optimizer step: `train.accumulate` micro-batches, gradient clipping, the
optimizer and LR schedule, then Lookahead and the weights' EMA. Metrics accumulate on the
device; the host syncs once per epoch (and, on CPUs where it is free, once per step for the
divergence check).
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..config import Config, PhaseConfig, load_config, parse_duration, require_single_run
from ..data import DataBundle, load_data
from ..data.augment import build_train_augment
from ..data.display import to_display_uint8
from ..data.loader import BatchLoader, Normalizer, epoch_generator, memory_format
from ..data.sources import load_listing
from ..errors import ReslabError
from ..models import (
    build_model,
    check_param_budget,
    count_params,
    freeze_backbone,
    require_classifier,
)
from ..progress import progress_enabled, track
from ..runs.checkpoint import load_checkpoint, load_weights, save_checkpoint
from ..runs.claim import RunClaim
from ..runs.device import (
    amp_dtype,
    autocast,
    configure_threads,
    deterministic_algorithms,
    grad_scaler,
)
from ..runs.env import collect_env, env_differences
from ..runs.infer import (
    confusion_matrix,
    loss_and_accuracy,
    most_confident_mistakes,
    predict_batches,
)
from ..runs.machine import apply_machine
from ..runs.metrics import classification_metrics
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
    """The loss became non-finite or grew past DIVERGENCE_FACTOR x its starting value."""


@dataclass
class Session:
    """Everything a run needs, built once by `train()`."""
    cfg: Config
    run: RunDir
    data: DataBundle
    model: nn.Module                 # the bare model: checkpoints and evaluation
    module: nn.Module                # what the steps run through (DDP and/or compiled)
    device: torch.device
    dist: Dist
    amp: torch.dtype | None
    scaler: torch.amp.GradScaler
    tracker: Tracker
    log: Callable[[str], None]
    state: TrainState = field(default_factory=TrainState)
    timing: Timing | None = None     # measured once, at the first phase's start
    estimate: float | None = None    # the printed duration estimate, seconds
    resume: dict | None = None       # last.pt of a run resumed mid-phase, until used
    on_epoch: EpochCallback | None = None
    budget: Budget | None = None
    stop_detail: str | None = None
    eval_loaders: dict[str, BatchLoader] = field(default_factory=dict)
    ema: WeightEma | None = None     # train.ema: the averaged weights, for the whole run
    lookahead: Lookahead | None = None  # train.lookahead: the slow weights, per phase
    claim: RunClaim | None = None    # this process's claim on the run (rank 0)

    @property
    def phases(self) -> list[PhaseConfig]:
        return self.cfg.train.phases or [PhaseConfig(epochs=self.cfg.train.epochs)]

    def phase_end(self, p: int) -> int:
        return sum(ph.epochs for ph in self.phases[: p + 1])

    def check_loss(self, value: float, what: str) -> None:
        """Raise Diverged per the rule above (the first value checked sets the reference)."""
        if not math.isfinite(value):
            raise Diverged(f"{what} is {value}")
        if self.state.loss_ref is None:
            self.state.loss_ref = max(value, math.log(max(2, len(self.data.classes))))
        elif value > DIVERGENCE_FACTOR * self.state.loss_ref:
            raise Diverged(f"{what} {value:.3g} is over {DIVERGENCE_FACTOR:g}x its starting "
                           f"value {self.state.loss_ref:.3g}")


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
    dist = Dist.from_env()
    try:
        with ExitStack() as held:
            s = build_session(config, out, resume, overrides, dist, quiet, claim, held)
            s.on_epoch = on_epoch
            with deterministic_algorithms(s.cfg.train.deterministic):
                return s.run, fit(s)
    finally:
        dist.close()


def hold_claim(run: RunDir, claim: RunClaim | None, held: ExitStack, dist: Dist
               ) -> RunClaim | None:
    """The caller's claim on `run`, else one taken now (rank 0 writes; other ranks don't)."""
    if claim is not None or not dist.is_main:
        return claim
    return held.enter_context(run.take_claim())


def build_session(config, out, resume, overrides, dist: Dist, quiet: bool,
                  claim: RunClaim | None, held: ExitStack) -> Session:
    run = RunDir.open(resume) if resume is not None else None
    if run is not None:  # before anything is read or written: the run may be in use
        claim = hold_claim(run, claim, held, dist)
    cfg = run.read_config(overrides) if run else load_config(config, overrides)
    require_single_run(cfg)  # a train.seed list or data.folds alone: execute/repeats.py
    ckpt = load_checkpoint(run.last) if run and run.has_started() else None
    cfg, device, threads, data, model, notes = build_parts(cfg, dist, overrides,
                                                           new_run=run is None,
                                                           from_scratch=ckpt is None)
    if run is None:
        run = RunDir.create(cfg, out) if dist.is_main else RunDir(out or "")
        run = dist.broadcast_run(run)
        claim = hold_claim(run, claim, held, dist)
        run.require_new()
    if dist.is_main:
        if ckpt is None:  # from scratch: rows of an attempt that never reached a checkpoint go
            run.truncate_metrics(0)
        run.write_start(cfg, data.classes, session_env(run, threads, device, dist.world_size))
        preload_metrics()
    amp = amp_dtype(cfg.train.amp, device)
    log = (lambda line: None) if quiet or not dist.is_main else print
    for note in notes:
        log(note)
    module = dist.wrap(model, unused_params=cfg.train.freeze_backbone_epochs > 0)
    s = Session(cfg, run, data, model, torch.compile(module) if cfg.train.compile else module,
                device, dist, amp, grad_scaler(amp, device), Tracker(cfg, run.path), log,
                claim=claim)
    s.ema = WeightEma(model, cfg.train.ema) if cfg.train.ema is not None else None
    if ckpt is not None:
        restore(s, ckpt)
    elif resume is not None:
        log(f"{run.path} has no checkpoint yet: starting the run over")
    return s


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
        print(f"warning: {run.path} is resumed in another environment ("
              + "; ".join(changed) + ")", file=sys.stderr)
    earlier = {k: v for k, v in before.items() if k != "earlier"}
    return {**env, "earlier": [earlier, *before.get("earlier", [])]}


def preload_metrics() -> None:
    """The final evaluation's ECE imports torchmetrics (~2 s; runs/metrics.py imports it late
    for the commands that never need it). Imported here, before any clock starts, so a time
    budget or the duration estimate does not pay for it at the run's end."""
    import torchmetrics.functional.classification  # noqa: F401


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


def initialise(cfg: Config, data: DataBundle, model: nn.Module, device: torch.device
               ) -> str | None:
    """`train.init` of a new run's weights (a resumed run has its own in last.pt), before the
    run directory exists: a model it does not fit is refused without leaving one behind."""
    if cfg.train.init != "whiten":
        return None
    norm = Normalizer(data.mean, data.std, data.scale, device)
    return whiten_first_conv(model, data.train, norm, cfg.train.channels_last,
                             pretrained=bool(cfg.model.pretrained))


def restore(s: Session, ckpt: dict) -> None:
    """Continue from last.pt: weights, progress, loss scale; the optimizer, schedule and early
    stopping come back when their phase restarts (`s.resume`)."""
    load_weights(s.model, ckpt["model"], s.run.last)
    s.state.load_state_dict(ckpt)
    if ckpt.get("scaler"):
        s.scaler.load_state_dict(ckpt["scaler"])
    if s.ema is not None and ckpt.get("ema"):  # else (EMA turned on at resume): starts anew
        s.ema.load_state_dict(ckpt["ema"])
    s.resume = ckpt
    if s.dist.is_main:
        s.run.truncate_metrics(s.state.epoch)
    s.log(f"Resuming {s.run.path} after epoch {s.state.epoch}")


def fit(s: Session) -> dict:
    params = count_params(s.model)
    s.log(f"{s.cfg.model.arch}: {params:,} parameters, {len(s.data.train):,} train / "
          f"{len(s.data.val or []):,} val / {len(s.data.test or []):,} test images, "
          f"device {s.device}, run {s.run.path}")
    started, stop = time.perf_counter(), "completed"
    for p in range(s.state.phase, len(s.phases)):
        if phase_finished(s, p):
            continue
        stop = run_phase(s, p)
        if stop in ("diverged", "time_budget"):
            break
    result = finish(s, params, stop)
    if s.estimate is not None:
        result.update(estimated_seconds=s.estimate,
                      measured_seconds=time.perf_counter() - started)
        s.log(f"Took {describe(result['measured_seconds'])} (estimated {describe(s.estimate)})")
        if s.dist.is_main:
            s.run.write_result(result)
    return result


def phase_finished(s: Session, p: int) -> bool:
    st = s.state
    return p < st.phase or (p == st.phase and (st.early_stopped or st.epoch >= s.phase_end(p)))


def run_phase(s: Session, p: int) -> str:
    """One phase of epochs: train -> validate -> record -> stop?"""
    cfg = s.cfg.train
    loader = start_phase(s, p)
    steps_per_epoch = optimizer_steps(s, loader)
    opt, sched, per_step, early = phase_optimizer(s, p, steps_per_epoch)
    if s.budget is not None:  # progressive resizing follows the budget's plan
        loader.epochs = max(1, round(s.budget.total_steps / steps_per_epoch))
        loader.first_epoch = s.state.epoch + 1
    while s.budget is not None or s.state.epoch < s.phase_end(p):  # a budget sets its end
        epoch, t0 = s.state.epoch + 1, time.perf_counter()
        lr = head_lr(opt)
        try:
            train, steps = train_one_epoch(s, loader, opt, sched if per_step else None, epoch)
            if steps == 0:  # the time budget ran out before a step
                return "time_budget"
            train_s, validated = time.perf_counter() - t0, validation_due(s, p, epoch)
            evaluated = validate(s) if validated else not_validated(s)
            row = {"epoch": epoch, **train, **evaluated, "lr": lr}
        except Diverged as err:
            return diverged(s, epoch, err)
        row["seconds"] = time.perf_counter() - t0
        if not per_step:
            sched.step(monitored(row, cfg.plateau.monitor))
        stop = early.update(epoch, monitored(row, cfg.early_stopping.monitor))
        out_of_time = s.budget is not None and s.budget.after_epoch(
            s.state.phase_step, row["seconds"] - train_s if validated else None,
            final_eval_share(s))
        record_epoch(s, row, p, opt, sched, early, stop or out_of_time)
        if stop:
            return early_stopped(s, epoch)
        if out_of_time:
            return "time_budget"
    return "completed"


def start_phase(s: Session, p: int) -> BatchLoader:
    """The phase's training loader; a new phase may start from best.pt and always starts its
    epoch numbering after the previous phase's last epoch."""
    phase = s.phases[p]
    if s.resume is not None and s.resume.get("phase", 0) != p:
        s.resume = None  # last.pt ended the previous phase: this one starts afresh
    if s.resume is None:
        if p > 0 and phase.start_from == "best" and s.run.best.exists():
            load_weights(s.model, load_checkpoint(s.run.best)["model"], s.run.best)
            s.log(f"Phase {p + 1}: starting from best.pt (epoch {s.state.best_epoch})")
            if s.ema is not None:
                s.ema.restart()  # average from these weights on, not from the ones left
        s.state.epoch = max(s.state.epoch, s.phase_end(p) - phase.epochs)
        s.state.phase_step = 0
    loader = make_loader(s.cfg, s.data, s.device, s.dist, train=True,
                         augment=phase.augment or s.cfg.data.augment)
    if s.timing is None:  # once per run: the phases share the measurement
        # Epoch 1 of a progressive resize is the smallest: time the full size (progress 1).
        s.timing = probe_timing(s.model, loader.epoch(s.phase_end(len(s.phases) - 1) + 1),
                                lambda: autocast(s.device, s.amp))
        s.estimate = estimate_duration(s, optimizer_steps(s, loader))
    return loader


def phase_optimizer(s: Session, p: int, steps_per_epoch: int):
    """(optimizer, scheduler, stepped per batch, early stopping) for phase p, restored from
    last.pt when the run is resumed in the middle of it; also the phase's Lookahead."""
    cfg, phase = s.cfg.train, s.phases[p]
    lr = phase_lr(s.phases, p, cfg.lr)
    momentum = phase.momentum if phase.momentum is not None else cfg.momentum
    opt = build_optimizer(param_groups(s.model, lr, cfg.backbone_lr_scale, cfg.weight_decay),
                          phase.optimizer or cfg.optimizer, lr, momentum, cfg.nesterov)
    s.lookahead = Lookahead(s.model.parameters(), cfg.lookahead) if cfg.lookahead else None
    s.budget = plan_budget(s, p, steps_per_epoch)
    planned = steps_per_epoch * phase.epochs
    total = (lambda: s.budget.total_steps) if s.budget else (lambda: planned)
    sched, per_step = build_scheduler(opt, cfg, steps_per_epoch, total)
    early = EarlyStopping(cfg.early_stopping)
    if s.resume is not None:
        warn_if_schedule_ended(s, planned)
        opt.load_state_dict(s.resume["optimizer"])
        sched.load_state_dict(s.resume["scheduler"])
        early.load_state_dict(s.resume["early_stop"])
        if s.lookahead is not None and s.resume.get("lookahead"):
            s.lookahead.load_state_dict(s.resume["lookahead"])
        s.resume = None
    s.state.schedule_steps = total()
    return opt, sched, per_step, early


def warn_if_schedule_ended(s: Session, planned: int) -> None:
    st = s.state
    if s.cfg.train.scheduler in ("cosine", "onecycle") and st.phase_step >= st.schedule_steps \
            and planned > st.schedule_steps:
        print(f"warning: the {s.cfg.train.scheduler} LR schedule of this run had ended (step "
              f"{st.phase_step}); extending it re-plans the schedule over {planned} steps, so "
              "the LR rises again from where that curve is now", file=sys.stderr)


def train_one_epoch(s: Session, loader: BatchLoader, opt, sched, epoch: int
                    ) -> tuple[dict, int]:
    """The optimizer steps of one epoch -> (train metrics of the row, steps taken)."""
    cfg = s.cfg.train
    torch.manual_seed(epoch_generator(cfg.seed, epoch, DROPOUT_SALT).initial_seed())
    s.module.train()
    freeze_backbone(s.model, epoch <= cfg.freeze_backbone_epochs)
    sums = torch.zeros(5, device=s.device)  # loss, correct, images, grad norms, their count
    # Checking the loss syncs with the device: every step on CPU (free), rarely on GPUs.
    # Under DDP only the all-reduced epoch loss decides, so every rank stops together.
    check = 0 if s.dist.world_size > 1 else 1 if s.device.type == "cpu" else 50
    steps = 0
    batches = track(loader.epoch(epoch), total=len(loader), description=f"epoch {epoch}",
                    enabled=progress_enabled(cfg.progress) and s.dist.is_main)
    for group in micro_batch_groups(batches, cfg.accumulate):
        if s.budget is not None and s.state.phase_step >= s.budget.steps_allowed(
                s.state.phase_step, steps):
            break
        stats = train_step(s, group, opt, sched)
        sums += stats
        if check and steps % check == 0:
            s.check_loss(stats[0].item() / stats[2].item(), f"train loss at step {steps + 1}")
        steps += 1
    total_loss, correct, seen, norms, counted = s.dist.all_reduce(sums).tolist()
    s.check_loss(total_loss / max(1.0, seen), "epoch train loss")
    out = {"train_loss": total_loss / max(1.0, seen), "train_acc": correct / max(1.0, seen)}
    if cfg.grad_clip is not None:  # the mean pre-clip norm (non-finite ones left out)
        out["grad_norm"] = norms / counted if counted else None
    return out, steps


def train_step(s: Session, group: list[tuple[torch.Tensor, torch.Tensor, float]], opt,
               sched) -> torch.Tensor:
    """One optimizer step over `group`'s micro-batches (x, y, weight), the gradients summed
    as one batch of all their images -> [summed loss, correct, images, pre-clip grad norm,
    1 if that norm counts], detached, on the device."""
    stats = torch.zeros(5, device=s.device)
    opt.zero_grad(set_to_none=True)
    weight = group_weight(group, s.dist.world_size)
    for i, (x, y, _) in enumerate(group):
        with s.dist.no_sync(s.module, skip=i < len(group) - 1):
            loss, logits = forward_backward(s, x, y, weight)
        labels = y.argmax(1) if y.is_floating_point() else y  # soft targets: their top class
        # torch.full, not torch.tensor: a tensor from a Python number is copied from the
        # host, and that blocking copy waits for the GPU queue every step.
        stats[:3] += torch.stack([loss.float(), (logits.argmax(1) == labels).sum().float(),
                                  torch.full((), float(len(y)), device=s.device)])
    stats[3:] = clip_gradients(s, opt)
    s.scaler.step(opt)
    s.scaler.update()
    if sched is not None:
        sched.step()
    s.state.step, s.state.phase_step = s.state.step + 1, s.state.phase_step + 1
    if s.lookahead is not None:
        s.lookahead.step()
    if s.ema is not None:  # after Lookahead: it averages the weights the next step starts from
        s.ema.update(s.model, s.state.step)
    return stats


def forward_backward(s: Session, x: torch.Tensor, y: torch.Tensor, weight: float
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (summed loss, logits), both detached; the gradient of loss * weight accumulates.
    `y` holds class indices, or soft targets (mixup/cutmix) that already include the label
    smoothing."""
    smoothing = 0.0 if y.is_floating_point() else s.cfg.train.label_smoothing
    with autocast(s.device, s.amp):
        logits = s.module(x)
        loss = F.cross_entropy(logits, y, label_smoothing=smoothing, reduction="sum")
    s.scaler.scale(loss * weight).backward()
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


def clip_gradients(s: Session, opt) -> torch.Tensor:
    """`train.grad_clip`: scale the gradients to that total norm at most (fp16 ones unscaled
    first) -> [pre-clip norm, 1], or zeros when off or the norm is not finite (GradScaler then
    skips the step)."""
    if s.cfg.train.grad_clip is None:
        return torch.zeros(2, device=s.device)
    s.scaler.unscale_(opt)
    params = [p for group in opt.param_groups for p in group["params"]]
    norm = torch.nn.utils.clip_grad_norm_(params, s.cfg.train.grad_clip).float()
    finite = torch.isfinite(norm)
    return torch.stack([torch.where(finite, norm, 0.0), finite.float()])


def validation_due(s: Session, p: int, epoch: int) -> bool:
    """`train.eval_every` N: validate every N-th epoch and the phase's last one (under a time
    budget: the epoch that used up its planned steps); 0: never (the final evaluation only)."""
    every = s.cfg.train.eval_every
    if every <= 1:
        return every == 1
    last = s.state.phase_step >= s.budget.total_steps if s.budget else epoch >= s.phase_end(p)
    return epoch % every == 0 or last


def not_validated(s: Session) -> dict:
    """The row's validation keys of an epoch not validated (`train.eval_every`): all None."""
    splits = ["val"] + (["test"] if s.data.test is not None else [])
    suffixes = ["", "_ema"] if s.ema is not None else [""]
    return {f"{split}_{m}{x}": None for x in suffixes for split in splits for m in ("loss", "acc")}


def validate(s: Session) -> dict:
    """Each epoch's evaluation: the raw weights, and the EMA's beside them (keys + `_ema`)."""
    out = evaluate_splits(s, s.model, "")
    if s.ema is not None:
        s.ema.sync(s.dist)
        out.update(evaluate_splits(s, s.ema.model, "_ema"))
    return out


def evaluate_splits(s: Session, model: nn.Module, suffix: str) -> dict:
    out = {f"val_loss{suffix}": None, f"val_acc{suffix}": None}
    for split in ("val", "test"):
        if getattr(s.data, split) is None:
            continue
        logits, labels = predict_batches(model, eval_loader(s, split), amp_dtype=s.amp)
        loss, out[f"{split}_acc{suffix}"] = loss_and_accuracy(logits, labels)
        out[f"{split}_loss{suffix}"] = loss
        if not math.isfinite(loss):
            raise Diverged(f"{split} loss{' of the EMA weights' if suffix else ''} is {loss}")
    return out


def record_epoch(s: Session, row: dict, p: int, opt, sched, early: EarlyStopping,
                 phase_over: bool) -> None:
    cfg, st = s.cfg.train, s.state
    if s.claim is not None:
        s.claim.check()  # taken over while this process looked dead: write nothing more
    st.epoch, st.phase, st.early_stopped = row["epoch"], p, phase_over
    st.seconds += row["seconds"]
    s.log(epoch_line(row))
    if not s.dist.is_main:
        return
    s.run.append_metrics(row)
    s.tracker.log(row)
    meta = {"classes": s.data.classes, "norm": s.data.norm(), "config": s.cfg.to_dict()}
    value, weights = selected_weights(s, row)
    if better(value, st.best, cfg.monitor):
        st.best, st.best_epoch = value, row["epoch"]
        save_checkpoint(s.run.best, s.ema.model if weights == "ema" else s.model,
                        epoch=row["epoch"], weights=weights, **meta)
    save_checkpoint(s.run.last, s.model, optimizer=opt.state_dict(),
                    scheduler=sched.state_dict(), early_stop=early.state_dict(),
                    scaler=s.scaler.state_dict(), **averaging_state(s), **st.state_dict(),
                    **meta)
    if s.on_epoch is not None:
        s.on_epoch(row)


def selected_weights(s: Session, row: dict) -> tuple[float, str]:
    """(train.monitor's value, 'raw' or 'ema'): the weights of this epoch that may become
    best.pt. `train.ema.select`: raw, ema, or best = the EMA's when its value is strictly
    better than the raw weights' (ties keep the raw ones). Without a validation split nothing
    scores the EMA: its value is the raw weights' train metric (`monitored`)."""
    raw = monitored(row, s.cfg.train.monitor)
    ema = s.cfg.train.ema
    if ema is None or ema.select == "raw":
        return raw, "raw"
    value = row.get(f"{s.cfg.train.monitor}_ema")
    value = raw if value is None else value
    if ema.select == "ema" or better(value, raw, s.cfg.train.monitor):
        return value, "ema"
    return raw, "raw"


def averaging_state(s: Session) -> dict:
    """last.pt's entries for the EMA and Lookahead, when they are on."""
    out = {}
    if s.ema is not None:
        out["ema"] = s.ema.state_dict()
    if s.lookahead is not None:
        out["lookahead"] = s.lookahead.state_dict()
    return out


def early_stopped(s: Session, epoch: int) -> str:
    es = s.cfg.train.early_stopping
    s.log(f"Early stopping after epoch {epoch}: {es.monitor} improved by < {es.min_delta} "
          f"for {es.patience} epochs")
    return "early_stopping"


def diverged(s: Session, epoch: int, err: Diverged) -> str:
    s.stop_detail = f"epoch {epoch}: {err}"
    s.state.epoch = epoch
    s.log(f"Epoch {epoch}: diverged ({err}); stopping (lower train.lr?)")
    return "diverged"


def finish(s: Session, params: int, stop: str) -> dict:
    """Final evaluation with the chosen weights; writes the confusion matrix and result.json."""
    rows = s.run.read_metrics() if s.dist.is_main else []
    st = s.state
    result = {"best_val_acc": max((r["val_acc"] for r in rows if r["val_acc"] is not None),
                                  default=None),
              "final_val_acc": rows[-1]["val_acc"] if rows else None, "test_acc": None,
              "params": params, "epochs_run": st.epoch, "best_epoch": st.best_epoch,
              "stop_reason": stop, "seconds_per_epoch": st.seconds / max(1, len(rows)),
              "seconds_total": st.seconds}
    if s.ema is not None:
        result["best_val_acc_ema"] = best_of(rows, "val_acc_ema")
    if s.stop_detail:
        result["stop_detail"] = s.stop_detail
    if not s.dist.is_main:
        return result
    if s.run.best.exists() and stop != "diverged":
        result["eval_weights"] = load_final_weights(s, rows)
        result.update(final_evaluation(s))
    if s.budget is not None:
        result.update(time_budget_s=s.budget.seconds, time_used_s=s.budget.elapsed(),
                      steps=st.phase_step, planned_steps=s.budget.total_steps)
    s.run.write_result(result)
    s.tracker.summary(result)
    s.tracker.close()
    s.log(summary_line(result, s.run.path))
    return result


def load_final_weights(s: Session, rows: list[dict]) -> str:
    """Put the weights of the final evaluation in s.model -> 'raw' or 'ema': best.pt's
    (`train.final_weights: best`), else the last epoch's, raw or EMA by `train.ema.select`."""
    if s.cfg.train.final_weights == "best":
        ckpt = load_checkpoint(s.run.best)
        load_weights(s.model, ckpt["model"], s.run.best)
        return ckpt.get("weights", "raw")
    weights = selected_weights(s, rows[-1])[1] if rows else "raw"
    if weights == "ema":
        load_weights(s.model, s.ema.model.state_dict(), "the EMA weights")
    return weights


def final_evaluation(s: Session) -> dict:
    split = "test" if s.data.test is not None else "val"
    data = getattr(s.data, split)
    if data is None:
        return {}
    logits, labels = predict_batches(s.model, eval_loader(s, split), tta=s.cfg.train.tta,
                                     amp_dtype=s.amp)
    loss, acc = loss_and_accuracy(logits, labels)
    confidence, pred = logits.float().softmax(1).max(1)  # per image: McNemar's test pairs runs
    s.run.write_predictions(labels.numpy(), pred.numpy(), confidence.numpy())
    metrics = classification_metrics(logits, labels, s.data.classes)
    s.run.write_evaluation(confusion_matrix(labels, logits.argmax(1), len(s.data.classes)),
                           s.data.classes, {"split": split, "n": len(labels), **metrics})
    mistakes = most_confident_mistakes(labels, logits)
    images = to_display_uint8(data.images[torch.from_numpy(mistakes["index"])], s.data.scale,
                              s.data.fmt)
    s.run.write_misclassified(images, mistakes)
    return {f"{split}_acc_best_model": acc, "eval_split": split,
            **({"test_acc": acc, "test_loss": loss} if split == "test" else {}),
            **{k: metrics[k] for k in RESULT_METRICS}}


# ---------------------------------------------------------------------------- small helpers
def make_loader(cfg: Config, data: DataBundle, device: torch.device, dist: Dist, train: bool,
                split: str = "train", augment: str | None = None) -> BatchLoader:
    """A phase's training loader (augmented; progressive resizing follows the run's epochs,
    or the time budget's plan), or a split's evaluation loader (as stored)."""
    norm = Normalizer(data.mean, data.std, data.scale, device)
    if not train:
        return BatchLoader(getattr(data, split), cfg.train.eval_batch_size, device, norm,
                           channels_last=cfg.train.channels_last)
    pipeline = build_train_augment(cfg.data, len(data.classes), cfg.train.label_smoothing,
                                   preset=augment)
    epochs = None if cfg.train.time_budget else \
        sum(ph.epochs for ph in cfg.train.phases) or cfg.train.epochs
    return BatchLoader(data.train, cfg.train.batch_size, device, norm, pipeline, shuffle=True,
                       seed=cfg.train.seed, channels_last=cfg.train.channels_last,
                       rank=dist.rank, world_size=dist.world_size, epochs=epochs)


def eval_loader(s: Session, split: str) -> BatchLoader:
    """Built once per run: building one copies the split into the channels-last layout."""
    if split not in s.eval_loaders:
        s.eval_loaders[split] = make_loader(s.cfg, s.data, s.device, s.dist, False, split)
    return s.eval_loaders[split]


def estimate_duration(s: Session, steps: int) -> float | None:
    """Print the expected duration of what is left of the run (None under a time budget,
    which plans its own steps per phase)."""
    if s.cfg.train.time_budget is not None:
        return None
    epochs = sum(s.phase_end(p) - max(s.state.epoch, s.phase_end(p) - ph.epochs)
                 for p, ph in enumerate(s.phases) if not phase_finished(s, p))
    per_epoch = steps * step_seconds(s) + eval_images(s)[0] * s.timing.eval_image_s * \
        validations_per_epoch(s)
    total = epochs * per_epoch + eval_images(s)[1] * s.timing.eval_image_s
    s.log(f"Estimated duration: {describe(total)} ({epochs} epochs of {steps} steps, "
          f"~{describe(per_epoch)} each)")
    return total


def plan_budget(s: Session, p: int, steps_per_epoch: int) -> Budget | None:
    if s.cfg.train.time_budget is None:
        return None
    n_val, n_final = eval_images(s)
    seconds = parse_duration(s.cfg.train.time_budget) - s.state.seconds
    budget = Budget(seconds, steps_per_epoch, step_seconds(s), n_val * s.timing.eval_image_s,
                    n_final * s.timing.eval_image_s, validations_per_epoch(s))
    s.log(f"Time budget {describe(seconds)}: planning {budget.total_steps} steps "
          f"(~{budget.total_steps / steps_per_epoch:.1f} epochs at "
          f"{s.cfg.train.batch_size / s.timing.step_s:.0f} img/s), re-planned every epoch")
    return budget


def optimizer_steps(s: Session, loader: BatchLoader) -> int:
    """Optimizer steps per epoch: `train.accumulate` of the loader's batches make one."""
    return math.ceil(len(loader) / s.cfg.train.accumulate)


def step_seconds(s: Session) -> float:
    """The measured time of one optimizer step (the probe times one micro-batch)."""
    return s.timing.step_s * s.cfg.train.accumulate


def eval_images(s: Session) -> tuple[int, float]:
    """(images evaluated after each epoch, image-passes of the final evaluation)."""
    n_val = sum(len(d) for d in (s.data.val, s.data.test) if d is not None)
    n_val *= 2 if s.ema is not None else 1  # the EMA weights are evaluated too
    return n_val, len(s.data.test or s.data.val or []) * (4 if s.cfg.train.tta else 1)


def validations_per_epoch(s: Session) -> float:
    """1 / `train.eval_every` (0 when only the final evaluation runs)."""
    every = s.cfg.train.eval_every
    return 1.0 / every if every else 0.0


def final_eval_share(s: Session) -> float:
    n_val, n_final = eval_images(s)
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


def summary_line(result: dict, path: Path) -> str:
    final_val = result.get("val_acc_best_model")  # the only one under train.eval_every: 0
    parts = [f"best val acc {result['best_val_acc']:.4f}" if result["best_val_acc"] is not None
             else f"final val acc {final_val:.4f}" if final_val is not None
             else "no validation split"]
    if result["test_acc"] is not None:
        parts.append(f"test acc {result['test_acc']:.4f}")
    return (f"Done ({result['stop_reason']}, {result['epochs_run']} epochs): "
            + ", ".join(parts) + f". Run directory: {path}")
