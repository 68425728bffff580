"""A picture of what an augmentation does: originals next to augmented copies, as one image."""
from __future__ import annotations

import numpy as np
import torch

from .augment import TrainAugment, as_train_augment
from .loader import Normalizer, epoch_generator
from .transforms import Augment, BatchContext


def augment_preview(images: torch.Tensor, augment: TrainAugment | Augment | None, n: int = 8,
                    seed: int = 0, columns: int = 4, gap: int = 2) -> np.ndarray:
    """(rows, cols, 3) uint8 grid: one row per image (the first `n` of `images`, an NCHW uint8
    or float [0,1] batch such as ImageSet.images), the original on the left, then `columns`
    augmented copies, copy j as drawn in epoch j with `seed`. The pipeline runs in [0,1] units
    (identity normalisation), so erasing fills show as random colours; progressive resizing is
    left out (full size). Grey images are shown grey."""
    x = images[:n]
    scale = 1.0 if x.dtype.is_floating_point else 255.0
    unit = Normalizer([0.0] * x.shape[1], [1.0] * x.shape[1], scale, x.device)
    pipeline = as_train_augment(augment) or TrainAugment()
    num_classes = pipeline.mixup.num_classes if pipeline.mixup else 1
    labels = torch.arange(len(x), device=x.device) % num_classes
    index = torch.arange(len(x))
    tiles = [unit(x)]
    for j in range(columns):
        ctx = BatchContext(epoch=j, index=index, seed=seed)
        tiles.append(pipeline(x, labels, epoch_generator(seed, j), ctx, unit)[0])
    return grid([to_display(t) for t in tiles], gap)


def to_display(x: torch.Tensor) -> np.ndarray:
    """(N,C,H,W) [0,1] floats -> (N,H,W,3) uint8."""
    x = (x.float().clamp(0, 1) * 255).round().to(torch.uint8)
    x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x[:, :3]
    return x.permute(0, 2, 3, 1).cpu().numpy()


def grid(columns: list[np.ndarray], gap: int) -> np.ndarray:
    """Columns of (N,H,W,3) tiles side by side on a white background, `gap` pixels apart."""
    tiles = np.stack(columns)  # (cols, N, H, W, 3)
    tiles = np.pad(tiles, ((0, 0), (0, 0), (0, gap), (0, gap), (0, 0)), constant_values=255)
    cols, n, h, w, _ = tiles.shape
    out = tiles.transpose(1, 2, 0, 3, 4).reshape(n * h, cols * w, 3)
    return out[: n * h - gap, : cols * w - gap]
