"""A finished (or interrupted) run, loaded back: its config, classes, normalisation and model
with the chosen weights, ready to run data through exactly as training evaluated it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import Config
from ..data import ImageSet
from ..data.loader import BatchLoader, eval_loader
from ..engine.device import amp_dtype, resolve_device
from ..engine.infer import predict_batches
from ..errors import ReslabError, short_repr
from ..models import build_model
from ..output import note
from ..runs.checkpoint import load_checkpoint, load_weights
from ..runs.rundir import RunDir


@dataclass
class LoadedRun:
    run: RunDir
    cfg: Config
    classes: list[str]
    model: nn.Module
    norm: dict
    device: torch.device
    weights: Path

    @property
    def amp(self) -> torch.dtype | None:
        return amp_dtype(self.cfg.train.amp, self.device)

    @property
    def in_chans(self) -> int:
        return len(self.norm["mean"])

    def predict(self, batches, tta: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, labels) in the precision the run trained and validated in."""
        return predict_batches(self.model, batches, tta=tta, amp_dtype=self.amp)

    def loader(self, data: ImageSet) -> BatchLoader:
        return eval_loader(data, self.norm, self.cfg.train, self.device)


def load_run(path: str | Path, checkpoint: str | None = None, device: str = "auto") -> LoadedRun:
    """Rebuild a run's model from its config and load `checkpoint` (default: the weights its
    final evaluation used, `train.final_weights`)."""
    run = RunDir.open(path)
    cfg = run.read_config()
    weights = choose_weights(run, checkpoint or cfg.train.final_weights)
    ckpt = load_checkpoint(weights)
    classes = run_classes(run, ckpt, weights)
    model = build_model(cfg.model.model_copy(update={"pretrained": False}),
                        cfg.model.num_classes or len(classes), len(ckpt["norm"]["mean"]))
    load_weights(model, ckpt["model"], weights)
    dev = resolve_device(device)
    return LoadedRun(run, cfg, classes, model.to(dev).eval(), ckpt["norm"], dev, weights)


def run_classes(run: RunDir, ckpt: dict, weights: Path) -> list[str]:
    """classes.json, which the checkpoint's own class list (when it has one) must equal: a
    checkpoint of another run would otherwise score against the wrong names."""
    stored = ckpt.get("classes")
    if stored is not None and not run.classes.exists():
        return list(stored)
    classes = run.read_classes()
    if stored is not None and list(stored) != classes:
        raise ReslabError(f"checkpoint {weights} was trained on {len(stored)} classes "
                          f"({short_list(stored)}), but {run.classes} lists {len(classes)} "
                          f"({short_list(classes)}); it belongs to another run")
    return classes


def short_list(names: list[str], limit: int = 4) -> str:
    shown = ", ".join(short_repr(n, 30) for n in names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def choose_weights(run: RunDir, which: str) -> Path:
    if which == "best" and run.best.is_file():
        return run.best
    if not run.last.is_file():
        raise ReslabError(f"{run.path}: no checkpoint (best.pt or last.pt); the run never "
                          "finished an epoch")
    if which == "best":
        note(f"note: {run.best} not found; using last.pt (epoch weights, not the best ones)")
    return run.last
