"""The `imagenet-phase1` / `imagenet-phase2` presets: fine-tuning augmentation, batched.

Geometry (random resized crop, flips, rotation, translation) is composed into one 2x3 matrix
per image and applied by a single `affine_grid` + `grid_sample` over the batch: one bilinear
resample instead of four, and no per-sample Python. The cache already holds images at the
input size (e.g. resize 256 + centre crop 224), so the crop takes a random region and samples
it back to the same size. Areas rotated or shifted in from outside the image are black, as
with torchvision's default fill. Colour jitter (`transforms.ColorJitter`: brightness, contrast,
saturation, then hue) follows on the stored values before normalisation. All randomness comes
from the caller's CPU generator, drawn in one fixed order, so a seed gives the same batch on
any device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ReslabError
from .affine import warp
from .color import restore_dtype
from .transforms import BatchContext, ColorJitter, alternating_flips

__all__ = ["PRESETS", "ImagenetAugment", "build_imagenet_augment", "warp"]


@dataclass(frozen=True)
class ImagenetAugment:
    scale: tuple[float, float]            # crop area as a fraction of the image
    ratio: tuple[float, float]            # crop aspect ratio (w/h) range
    hflip: float                          # probabilities
    vflip: float
    degrees: float                        # rotation in [-degrees, degrees]
    translate: float                      # shift up to this fraction of the side, per axis
    brightness: float                     # factor in [1-b, 1+b]; likewise contrast, saturation
    contrast: float
    saturation: float
    hue: float                            # fraction of a full turn, in [-hue, hue]
    alternate_flip: bool = False          # left-right flips alternate by epoch (data.flip)

    def __call__(self, x: torch.Tensor, gen: torch.Generator,
                 ctx: BatchContext | None = None) -> torch.Tensor:
        r = torch.rand(x.shape[0], 13, generator=gen, dtype=torch.float64)
        if self.alternate_flip:  # the drawn column is replaced, so the stream stays the same
            r[:, 4] = torch.where(alternating_flips(ctx), 0.0, 1.0)
        y = warp(x.float(), self.matrices(r[:, :9], x.shape[-2:]).to(x.device))
        y = self.jitter(y, r[:, 9:].to(x.device, torch.float32))
        return restore_dtype(y, x.dtype)

    def matrices(self, r: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """(B,2,3) maps from output to input coordinates (affine_grid's normalised units)."""
        h, w = size
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        area = self.scale[0] + (self.scale[1] - self.scale[0]) * r[:, 0]
        aspect = torch.exp(lo + (hi - lo) * r[:, 1])
        sw, sh = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
        cx, cy = (2 * r[:, 2] - 1) * (1 - sw), (2 * r[:, 3] - 1) * (1 - sh)
        fx = torch.where(r[:, 4] < self.hflip, -1.0, 1.0)
        fy = torch.where(r[:, 5] < self.vflip, -1.0, 1.0)
        angle = torch.deg2rad((2 * r[:, 6] - 1) * self.degrees)
        cos, sin = angle.cos(), angle.sin()
        # Rotate in pixel units (x scaled by w/2, y by h/2) so non-square images stay rigid.
        m = torch.stack([torch.stack([sw * fx * cos, sw * fx * sin * (h / w)], 1),
                         torch.stack([-sh * fy * sin * (w / h), sh * fy * cos], 1)], 1)
        t = self.translate * 2 * (2 * r[:, 7:9] - 1)  # normalised units span 2 per side
        offset = torch.stack([cx, cy], 1) - (m @ t[:, :, None])[:, :, 0]
        return torch.cat([m, offset[:, :, None]], 2).float()

    def jitter(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Per-image brightness, contrast, saturation and hue on a float batch."""
        return ColorJitter(self.brightness, self.contrast, self.saturation,
                           self.hue).apply(x, r)


PRESETS = {
    # hue 0.1: the seed study's hand-built phase 1 (S4) jittered hue too.
    "imagenet-phase1": ImagenetAugment(scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5,
                                       vflip=0.0, degrees=15, translate=0.0, brightness=0.1,
                                       contrast=0.1, saturation=0.1, hue=0.1),
    "imagenet-phase2": ImagenetAugment(scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3), hflip=0.5,
                                       vflip=0.2, degrees=30, translate=0.1, brightness=0.3,
                                       contrast=0.3, saturation=0.3, hue=0.05),
}


def build_imagenet_augment(preset: str) -> ImagenetAugment:
    """The batched augmentation of an `imagenet-*` preset (see the module docstring)."""
    if preset not in PRESETS:
        raise ReslabError(f"data.augment = {preset!r}: expected one of {', '.join(PRESETS)}")
    return PRESETS[preset]
