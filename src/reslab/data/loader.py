"""Batches from a decoded ImageSet: gather, move, augment and normalise on the training device.

The only per-step host work is one index gather; everything else is a handful of batched
tensor ops. Randomness comes from a generator seeded by (seed, epoch), so an epoch's batches
are identical whether the run was interrupted or not. Each batch's augmentation also gets a
`BatchContext`: the epoch, the images' dataset indices (alternating flip) and how far the
epoch schedule has got (progressive resizing; needs `epochs`).
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

from ..config import TrainConfig
from . import ImageSet
from .augment import TrainAugment, as_train_augment
from .transforms import Augment, BatchContext


class Normalizer:
    """x -> (x / scale - mean) / std as one fused multiply-add, in float32."""

    def __init__(self, mean: list[float], std: list[float], scale: float, device: torch.device):
        std_t = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.mul = 1.0 / (scale * std_t)
        self.sub = mean_t / std_t

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(-self.sub, x.float(), self.mul)


def epoch_generator(seed: int, epoch: int, salt: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 7919 + salt)


class BatchLoader:
    """`augment`: a TrainAugment (`augment.build_train_augment`) or bare pixel steps.
    `epochs`, `first_epoch`: the schedule that progressive resizing follows: epoch
    `first_epoch` starts at progress 0, each epoch adds 1/epochs (None: progress unknown)."""

    def __init__(self, data: ImageSet, batch_size: int, device: torch.device,
                 normalize: Normalizer, augment: TrainAugment | Augment | None = None,
                 shuffle: bool = False, seed: int = 0, channels_last: bool = True, rank: int = 0,
                 world_size: int = 1, to_device_whole: bool | None = None,
                 epochs: int | None = None, first_epoch: int = 1):
        self.data, self.batch_size, self.device = data, batch_size, device
        self.normalize, self.augment = normalize, as_train_augment(augment)
        self.shuffle, self.epochs, self.first_epoch = shuffle, epochs, first_epoch
        self.seed, self.channels_last = seed, channels_last
        self.rank, self.world_size = rank, world_size
        images, labels = data.images, data.labels
        if to_device_whole is None:
            to_device_whole = device.type == "cuda" and _fits_on_gpu(images, device)
        # Keep pixels channel-last (N,H,W,C) once, so every gathered batch comes out in the
        # channels_last layout that augmentation and the convolutions run fastest on.
        images = images.permute(0, 2, 3, 1).contiguous() if channels_last else images
        if to_device_whole:
            images, labels = images.to(device), labels.to(device)
        elif device.type == "cuda":
            images, labels = images.pin_memory(), labels.pin_memory()
        self.images, self.labels = images, labels

    def _order(self, epoch: int) -> torch.Tensor:
        n = len(self.labels)
        if self.shuffle:
            return torch.randperm(n, generator=epoch_generator(self.seed, epoch))
        return torch.arange(n)

    def _global_batches(self, epoch: int) -> list[torch.Tensor]:
        order = self._order(epoch)
        batches = list(order.split(self.batch_size))
        # A tiny last batch gives noisy BatchNorm statistics, and one image on a process gives
        # a BatchNorm layer on a 1x1 feature map a single value per channel (PyTorch stops):
        # training epochs drop a last batch that leaves any process fewer than 2 images.
        if self.shuffle and batches and len(batches[-1]) < 2 * self.world_size:
            batches.pop()
        return batches

    def __len__(self) -> int:
        return len(self._global_batches(0))

    def progress(self, epoch: int) -> float | None:
        """Fraction of the schedule done when `epoch` starts, in [0, 1] (None: no `epochs`)."""
        if not self.epochs:
            return None
        return min(1.0, max(0.0, (epoch - self.first_epoch) / self.epochs))

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        """(x, y, weight) per step; `weight` turns this rank's summed loss into its share of
        the global batch mean, so DDP's gradient average equals one process on the full batch.
        `y`: (B,) int64 labels, or (B, C) float32 soft targets when the augmentation mixes
        (`augment.soft_targets`; label smoothing is then already in them)."""
        gen = epoch_generator(self.seed, epoch, salt=1 + self.rank)
        progress = self.progress(epoch)
        for idx in self._global_batches(epoch):
            weight = self.world_size / len(idx)
            idx = idx[self.rank:: self.world_size]
            x, y = self._gather(idx.to(self.images.device))
            if self.augment is None:
                x = self.normalize(x)
            else:
                ctx = BatchContext(epoch, idx, self.seed, progress)
                x, y = self.augment(x, y, gen, ctx, self.normalize)
            # Augmentations may return either layout (the crop gathers channels-last):
            # the model gets exactly the configured one.
            yield x_layout(x, self.channels_last), y, weight

    def _gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # index_select copies whole rows; advanced indexing goes element by element.
        x = self.images.index_select(0, idx).to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)  # NCHW shape, channels_last memory
        return x, self.labels.index_select(0, idx).to(self.device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
        return self.epoch(0)


def eval_loader(data: ImageSet, norm: Mapping, train: TrainConfig, device: torch.device
                ) -> BatchLoader:
    """A split as stored (in order, not augmented), normalised by `norm` (a checkpoint's
    `norm`, `DataBundle.norm()`). The one evaluation loader: validation during training, the
    final evaluation and a loaded run's eval/predict/robustness batch the same way, so they
    compute the same numbers."""
    normalize = Normalizer(norm["mean"], norm["std"], norm["scale"], device)
    return BatchLoader(data, train.eval_batch_size, device, normalize,
                       channels_last=train.channels_last)


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def x_layout(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """x with the canonical strides of the chosen layout. `contiguous()` is not enough: with a
    size-1 dimension (grey images) a tensor counts as contiguous in both layouts, and its
    strides then decide which layout every convolution after it picks."""
    fmt = memory_format(channels_last)
    if x.stride() == torch.empty(x.shape, device="meta", memory_format=fmt).stride():
        return x
    return x.clone(memory_format=fmt)


def _fits_on_gpu(images: torch.Tensor, device: torch.device) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return images.numel() * images.element_size() < free // 4
