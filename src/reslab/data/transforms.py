"""The call protocol of batched augmentations, and the basic steps: crop, flip, greyscale,
colour jitter.

Every step is `step(x, gen, ctx=None) -> x` on an NCHW batch (uint8 or float, either memory
layout, any device). Random parameters are drawn per image from the CPU generator `gen`, in a
fixed order, then moved to the batch's device: a seed gives the same batch on CPU and GPU, and
the loader's per-epoch generator makes a resumed run repeat the uninterrupted one. `ctx` tells
a step what the loader knows besides the pixels (epoch, dataset indices); only steps that need
it (the alternating flip) read it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from ..errors import ReslabError
from .color import (
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    restore_dtype,
    to_grayscale,
)


@dataclass(frozen=True)
class BatchContext:
    """What the loader knows about a batch besides its pixels."""
    epoch: int = 0                       # the epoch number the loader was asked for
    index: torch.Tensor | None = None    # (B,) int64 CPU: each image's index in the dataset
    seed: int = 0                        # the run's seed (train.seed)
    progress: float | None = None        # fraction of the epoch schedule done (None: unknown)


class Augment(Protocol):
    def __call__(self, x: torch.Tensor, gen: torch.Generator,
                 ctx: BatchContext | None = None) -> torch.Tensor: ...


@dataclass(frozen=True)
class Compose:
    steps: tuple[Augment, ...]

    def __call__(self, x: torch.Tensor, gen: torch.Generator,
                 ctx: BatchContext | None = None) -> torch.Tensor:
        for step in self.steps:
            x = step(x, gen, ctx)
        return x


def per_image_mask(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A (B,) CPU bool mask as a (B,1,1,1) mask on x's device."""
    return mask.to(x.device).view(-1, 1, 1, 1)


@dataclass(frozen=True)
class RandomCrop:
    """Zero-pad by `pad` and take a random HxW crop per image (a random translation)."""
    pad: int = 4

    def __call__(self, x: torch.Tensor, gen: torch.Generator,
                 ctx: BatchContext | None = None) -> torch.Tensor:
        pad = self.pad
        if pad == 0:
            return x
        b, _, h, w = x.shape
        # Work on the NHWC view: each gathered pixel is then one contiguous C-vector, and the
        # result is a channels_last tensor, the layout the convolutions want.
        padded = F.pad(x.permute(0, 2, 3, 1), (0, 0, pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]
        batch = torch.arange(b, device=x.device)[:, None, None]
        return padded[batch, rows, cols].permute(0, 3, 1, 2)


def random_crop(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    return RandomCrop(pad)(x, gen)


def image_bits(index: torch.Tensor, seed: int) -> torch.Tensor:
    """One fixed pseudo-random bit per dataset index and seed: an integer hash (xorshift-multiply
    rounds mod 2**32, every product below 2**63), the same on every device and in every epoch."""
    salt = (seed * 0x9E3779B1 + 0x7F4A7C15) % 2**32
    z = (index.to(torch.int64) ^ salt) & 0xFFFFFFFF
    for mult in (0x7FEB352D, 0x5BD1E995):
        z = ((z ^ (z >> 16)) * mult) & 0xFFFFFFFF
    return ((z ^ (z >> 15)) >> 7) & 1 == 1


def alternating_flips(ctx: BatchContext | None) -> torch.Tensor:
    """airbench's alternating flip: each image's flip is a fixed random bit XOR the epoch's
    parity, so an image is flipped at random in the first epoch and then in exactly every
    other epoch. A pure function of (seed, dataset index, epoch): resumes repeat it."""
    if ctx is None or ctx.index is None:
        raise ReslabError("data.flip = 'alternate': the flip needs each image's dataset index "
                          "and the epoch (pass a BatchContext; BatchLoader does)")
    return image_bits(ctx.index, ctx.seed) ^ (ctx.epoch % 2 == 1)


@dataclass(frozen=True)
class RandomFlip:
    """Left-right flip with probability p, or alternating by epoch (`alternate`)."""
    p: float = 0.5
    alternate: bool = False

    def decide(self, b: int, gen: torch.Generator, ctx: BatchContext | None) -> torch.Tensor:
        """(B,) CPU bool: which images flip. Draws from `gen` in both modes (same stream)."""
        u = torch.rand(b, generator=gen)
        return alternating_flips(ctx) if self.alternate else u < self.p

    def __call__(self, x: torch.Tensor, gen: torch.Generator,
                 ctx: BatchContext | None = None) -> torch.Tensor:
        mask = per_image_mask(self.decide(x.shape[0], gen, ctx), x)
        return torch.where(mask, x.flip(3), x)


def random_flip(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Flip each image left-right with probability p."""
    return RandomFlip(p)(x, gen)


@dataclass(frozen=True)
class RandomGrayscale:
    """Turn each image grey (BT.601 luma in every channel) with probability p."""
    p: float = 0.1

    def __call__(self, x: torch.Tensor, gen: torch.Generator,
                 ctx: BatchContext | None = None) -> torch.Tensor:
        mask = torch.rand(x.shape[0], generator=gen) < self.p
        chosen = mask.nonzero().squeeze(1).to(x.device)  # a CPU mask: no device sync
        if len(chosen) == 0:
            return x
        x = x.clone()  # convert only the chosen few, not the whole batch
        x[chosen] = to_grayscale(x[chosen])
        return x


def random_grayscale(x: torch.Tensor, gen: torch.Generator, p: float = 0.1) -> torch.Tensor:
    return RandomGrayscale(p)(x, gen)


@dataclass(frozen=True)
class ColorJitter:
    """Per-image brightness, contrast, saturation (factors in [1-s, 1+s]) and hue (a rotation
    in [-hue, hue] turns), in that fixed order (torchvision shuffles it), on the stored values
    before normalisation. Steps with strength 0 are skipped."""
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0

    def draw(self, b: int, gen: torch.Generator) -> torch.Tensor:
        return torch.rand(b, 4, generator=gen, dtype=torch.float64)

    def apply(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """x: a float batch; r: (B,4) uniforms from `draw`, on x's device."""
        r = r.to(x.device, torch.float32)
        for i, (amount, adjust) in enumerate(((self.brightness, adjust_brightness),
                                              (self.contrast, adjust_contrast),
                                              (self.saturation, adjust_saturation))):
            if amount > 0:
                x = adjust(x, 1 + amount * (2 * r[:, i] - 1))
        if self.hue > 0:
            x = adjust_hue(x, (2 * r[:, 3] - 1) * self.hue)
        return x

    def __call__(self, x: torch.Tensor, gen: torch.Generator,
                 ctx: BatchContext | None = None) -> torch.Tensor:
        r = self.draw(x.shape[0], gen)
        return restore_dtype(self.apply(x.float(), r), x.dtype)
