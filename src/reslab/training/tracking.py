"""Experiment tracking: TensorBoard scalars by default, Weights & Biases on request.

W&B is an optional extra (`pip install reslab[wandb]`); with `WANDB_MODE=offline` it logs to the
run directory without any network, for `wandb sync` later.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..config import Config
from ..errors import ReslabError


class Tracker:
    def __init__(self, cfg: Config, run_dir: Path):
        self.cfg, self.run_dir = cfg, run_dir
        self._tb = self._wandb = None
        if cfg.train.tracking == "wandb":
            require_wandb()  # before the first epoch, not after it

    def log(self, row: dict) -> None:
        scalars = {k: v for k, v in row.items() if k != "epoch" and v is not None}
        if self.cfg.train.tensorboard:
            self._tensorboard().add_scalars_flat(scalars, row["epoch"])
        if self.cfg.train.tracking == "wandb":
            self._wandb_run().log(scalars, step=row["epoch"])

    def summary(self, result: dict) -> None:
        if self._wandb is not None:
            self._wandb.summary.update({k: v for k, v in result.items() if v is not None})

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()

    def _tensorboard(self) -> _TensorBoard:
        if self._tb is None:
            self._tb = _TensorBoard(self.run_dir / "tb")
        return self._tb

    def _wandb_run(self):
        if self._wandb is None:
            wandb = require_wandb()
            self._wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "reslab"),
                                     name=self.run_dir.name, group=self.cfg.name,
                                     dir=str(self.run_dir), config=self.cfg.to_dict())
        return self._wandb


def require_wandb():
    try:
        import wandb
    except ImportError:
        raise ReslabError("train.tracking = 'wandb': the wandb package is not installed "
                          "(pip install 'reslab[wandb]')") from None
    return wandb


class _TensorBoard:
    def __init__(self, path: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(path))

    def add_scalars_flat(self, scalars: dict, step: int) -> None:
        for key, value in scalars.items():
            # train_loss -> train/loss: TensorBoard groups the curves by split.
            self.writer.add_scalar(key.replace("_", "/", 1), value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
