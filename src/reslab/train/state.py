"""Early stopping and best-metric tracking: small, serialisable state objects."""
from __future__ import annotations

from dataclasses import dataclass

from ..config import EarlyStopConfig


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
