"""What a run has done so far (checkpointed, resumed exactly) and early stopping."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..config import EarlyStopConfig


@dataclass
class TrainState:
    epoch: int = 0                  # last finished epoch (1-based numbering)
    phase: int = 0                  # phase of that epoch
    step: int = 0                   # optimizer steps, whole run
    phase_step: int = 0             # optimizer steps in the current phase
    schedule_steps: int = 0         # steps the current phase's LR schedule spans
    seconds: float = 0.0            # training + validation time so far
    best: float | None = None       # best value of train.monitor, and its epoch
    best_epoch: int = 0
    early_stopped: bool = False     # the last epoch ended its phase early
    loss_ref: float | None = None   # starting loss, for the divergence rule

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for f in fields(self):
            if f.name in state:
                setattr(self, f.name, state[f.name])


def better(a: float, b: float | None, metric: str, min_delta: float = 0.0) -> bool:
    """Is `a` an improvement over `b` by more than min_delta, for this metric's direction?"""
    if b is None:
        return True
    return a - b > min_delta if metric.endswith("acc") else b - a > min_delta


@dataclass
class EarlyStopping:
    """Stop once the monitored metric has failed to improve on its best by at least
    `min_delta` for `patience` consecutive epochs, counting only epochs after `start_epoch`.

    The seed rule "stop when val accuracy improves by < 0.005 for 3 consecutive epochs after
    epoch 10" is `{monitor: val_acc, min_delta: 0.005, patience: 3, start_epoch: 10}`.
    """

    cfg: EarlyStopConfig
    best: float | None = None
    bad_epochs: int = 0

    def update(self, epoch: int, value: float) -> bool:
        """Record an epoch's value; True when training should stop."""
        improved = self.best is None or better(value, self.best, self.cfg.monitor,
                                               self.cfg.min_delta - 1e-12)
        if better(value, self.best, self.cfg.monitor):
            self.best = value
        if epoch <= self.cfg.start_epoch:
            self.bad_epochs = 0
            return False
        self.bad_epochs = 0 if improved else self.bad_epochs + 1
        return self.cfg.enabled and self.bad_epochs >= self.cfg.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.bad_epochs = state["best"], state["bad_epochs"]
