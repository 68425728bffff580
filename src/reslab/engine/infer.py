"""Batched inference shared by training-time validation, `eval`, `predict` and robustness."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .device import autocast


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
        with autocast(x.device, amp_dtype):
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


def most_confident_mistakes(labels: torch.Tensor, logits: torch.Tensor,
                            limit: int = 64) -> dict[str, np.ndarray]:
    """Indices, labels, predictions and confidences of the most confident wrong predictions
    (the most informative ones to look at)."""
    conf, preds = logits.softmax(1).max(1)
    wrong = torch.nonzero(preds != labels).flatten()
    wrong = wrong[conf[wrong].argsort(descending=True)][:limit]
    return {"index": wrong.numpy(), "true": labels[wrong].numpy(),
            "pred": preds[wrong].numpy(), "confidence": conf[wrong].numpy()}
