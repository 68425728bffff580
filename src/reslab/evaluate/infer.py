"""Batched inference shared by training-time validation, `eval`, `predict` and robustness."""
from __future__ import annotations

import csv
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..utils import atomic_write_text


def autocast_for(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def tta_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean logits over the image, its mirror, and both shifted by one pixel (airbench-style)."""
    views = [x, x.flip(3)]
    shifted = F.pad(x, (1, 0, 1, 0), mode="replicate")[..., :-1, :-1]
    views += [shifted, shifted.flip(3)]
    return torch.stack([model(v).float() for v in views]).mean(0)


@torch.inference_mode()
def predict_batches(model: nn.Module, batches, tta: bool = False,
                    amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `model` over (x, y) batches -> (logits (N,K) float32 on CPU, labels (N,))."""
    model.eval()
    logits, labels = [], []
    for x, y, *_ in batches:
        with autocast_for(x.device, amp_dtype):
            out = tta_logits(model, x) if tta else model(x)
        logits.append(out.float())
        labels.append(y)
    return torch.cat(logits).cpu(), torch.cat(labels).cpu()


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    loss = F.cross_entropy(logits, labels).item()
    return loss, (logits.argmax(1) == labels).float().mean().item()


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, num_classes: int) -> np.ndarray:
    idx = labels.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes**2).view(num_classes, num_classes).numpy()


def per_class_accuracy(matrix: np.ndarray, classes: list[str]) -> dict[str, float | None]:
    rows = matrix.sum(1)
    return {c: (float(matrix[i, i] / rows[i]) if rows[i] else None) for i, c in enumerate(classes)}


def write_confusion_csv(path: Path, matrix: np.ndarray, classes: list[str]) -> None:
    lines = [",".join(["true\\pred", *classes])]
    lines += [",".join([c, *map(str, row)]) for c, row in zip(classes, matrix.tolist())]
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_confusion_csv(path: Path) -> tuple[np.ndarray, list[str]]:
    with open(path) as f:
        rows = list(csv.reader(f))
    return np.array([[int(v) for v in r[1:]] for r in rows[1:]]), rows[0][1:]


def to_display_uint8(images: torch.Tensor, scale: float, fmt: str) -> np.ndarray:
    """Cached images (N,C,H,W) -> (N,H,W,3) uint8 for figures, decoding linear/log data."""
    from .perturb import to_display

    x = to_display(images.float() / scale, fmt)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).numpy()


def save_misclassified(path: Path, images: torch.Tensor, labels: torch.Tensor,
                       logits: torch.Tensor, scale: float, fmt: str, limit: int = 64) -> None:
    probs = logits.softmax(1)
    conf, preds = probs.max(1)
    wrong = torch.nonzero(preds != labels).flatten()
    # Most confident mistakes first: the most informative ones to look at.
    wrong = wrong[conf[wrong].argsort(descending=True)][:limit]
    np.savez_compressed(path, images=to_display_uint8(images[wrong], scale, fmt),
                        true=labels[wrong].numpy(), pred=preds[wrong].numpy(),
                        confidence=conf[wrong].numpy(), index=wrong.numpy())
