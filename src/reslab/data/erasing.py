"""Random erasing (Zhong et al.; timm's RandomErasing), per image, in the normalised space.

Each image is erased with probability p: a box of area scale (0.02, 1/3) of the image and
aspect ratio log-uniform in (0.3, 3.3), up to 10 tries to fit (timm's rule; an image whose
tries all miss stays as it is), at a uniform position. It runs after normalisation, so the
fill is in the units the model sees: one standard-normal value per image and channel (timm's
`mode="rand"`), i.e. a random colour around the dataset mean. timm's per-pixel noise would need
a full-size random tensor drawn on the CPU and copied to the device every step; per-channel
values keep the draws tiny and the result identical on every device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .mixup import box_mask


@dataclass(frozen=True)
class ErasingDraw:
    box: torch.Tensor        # (B,4) int64: y0, y1, x0, x1 (empty: not erased)
    value: torch.Tensor      # (B,C) float32 fill per image and channel


@dataclass(frozen=True)
class RandomErasing:
    p: float
    scale: tuple[float, float] = (0.02, 1 / 3)
    ratio: tuple[float, float] = (0.3, 3.3)
    tries: int = 10

    def draw(self, b: int, c: int, h: int, w: int, gen: torch.Generator) -> ErasingDraw:
        """Which images, box shapes (all tries), positions, fills: one fixed draw order."""
        erase = torch.rand(b, generator=gen) < self.p
        r = torch.rand(b, self.tries, 2, generator=gen, dtype=torch.float64)
        area = h * w * (self.scale[0] + (self.scale[1] - self.scale[0]) * r[..., 0])
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        aspect = torch.exp(lo + (hi - lo) * r[..., 1])
        bh, bw = (area * aspect).sqrt().round().long(), (area / aspect).sqrt().round().long()
        fits = (bh < h) & (bw < w)
        first = fits.long().argmax(1, keepdim=True)  # the first try that fits
        bh, bw = bh.gather(1, first)[:, 0], bw.gather(1, first)[:, 0]
        erase &= fits.any(1)
        pos = torch.rand(b, 2, generator=gen, dtype=torch.float64)
        y0 = (pos[:, 0] * (h - bh + 1)).long()
        x0 = (pos[:, 1] * (w - bw + 1)).long()
        box = torch.stack([y0, y0 + bh, x0, x0 + bw], 1) * erase[:, None]
        return ErasingDraw(box, torch.randn(b, c, generator=gen))

    def apply(self, x: torch.Tensor, d: ErasingDraw) -> torch.Tensor:
        value = d.value.to(x.device, x.dtype)[:, :, None, None]
        return torch.where(box_mask(d.box.to(x.device), *x.shape[-2:]), value, x)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        b, c, h, w = x.shape
        return self.apply(x, self.draw(b, c, h, w, gen))
