"""Mixup and CutMix per image, with label smoothing folded into soft targets.

Elementwise mode (timm's `mode="elem"`): every image draws whether it is mixed (`prob`),
whether by CutMix or Mixup (`switch_prob` when both alphas are on), its own lambda and, for
CutMix, its own box; its partner is image `perm[i]` of one random permutation of the batch.
Mixup: pixels lam * x_i + (1 - lam) * x_partner. CutMix: the partner's pixels inside the box,
lam corrected to the area actually kept after clipping the box to the image. Targets:
lam * smooth(y_i) + (1 - lam) * smooth(y_partner), where smooth() is the label-smoothed one-hot
(1 - s + s/C on the label, s/C elsewhere), so every row sums to 1. Lambdas come from numpy's
Beta sampler, seeded by a draw of the caller's CPU generator (torch has no seeded Beta).
Applied after normalisation, on float batches (mixing is linear, so mixing normalised values
equals normalising mixed ones).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class MixDraw:
    lam: torch.Tensor        # (B,) float64: weight of each image's own label (1: not mixed)
    partner: torch.Tensor    # (B,) int64: index of the image mixed in
    cutmix: torch.Tensor     # (B,) bool: pasted box (True) or blended pixels (False)
    box: torch.Tensor        # (B,4) int64: y0, y1, x0, x1 of the pasted box (empty if none)


def smooth_one_hot(y: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    off = smoothing / num_classes
    target = torch.full((len(y), num_classes), off, device=y.device)
    return target.scatter_(1, y[:, None], 1.0 - smoothing + off)


@dataclass(frozen=True)
class Mixup:
    num_classes: int
    alpha: float = 0.0            # Mixup lambda ~ Beta(alpha, alpha); 0: no Mixup
    cutmix_alpha: float = 0.0     # CutMix lambda ~ Beta(cutmix_alpha, cutmix_alpha); 0: none
    prob: float = 1.0             # chance an image is mixed at all
    switch_prob: float = 0.5      # chance of CutMix when both alphas are on
    label_smoothing: float = 0.0

    def draw(self, b: int, h: int, w: int, gen: torch.Generator) -> MixDraw:
        """Partners, then per-image uniforms, then lambdas (one fixed order)."""
        partner = torch.randperm(b, generator=gen)
        u = torch.rand(b, 4, generator=gen, dtype=torch.float64)
        rng = np.random.default_rng(int(torch.randint(2**62, (), generator=gen)))
        lam_mix = rng.beta(self.alpha, self.alpha, b) if self.alpha > 0 else np.ones(b)
        lam_cut = (rng.beta(self.cutmix_alpha, self.cutmix_alpha, b) if self.cutmix_alpha > 0
                   else np.ones(b))
        mixed = u[:, 0] < self.prob
        if self.alpha > 0 and self.cutmix_alpha > 0:
            cutmix = u[:, 1] < self.switch_prob
        else:
            cutmix = torch.full((b,), self.cutmix_alpha > 0)
        cutmix &= mixed
        box = cut_boxes(torch.from_numpy(lam_cut), u[:, 2:], h, w) * cutmix[:, None]
        kept = 1 - ((box[:, 1] - box[:, 0]) * (box[:, 3] - box[:, 2])).double() / (h * w)
        lam = torch.where(cutmix, kept, torch.from_numpy(lam_mix))
        return MixDraw(torch.where(mixed, lam, 1.0), partner, cutmix, box)

    def apply(self, x: torch.Tensor, y: torch.Tensor,
              d: MixDraw) -> tuple[torch.Tensor, torch.Tensor]:
        """(mixed float batch, (B, num_classes) float32 soft targets)."""
        dev = x.device
        partner = d.partner.to(dev)
        other = x.index_select(0, partner)
        lam = d.lam.to(dev, torch.float32)
        # CutMix images keep all their own pixels outside the box, Mixup images a share lam.
        weight = torch.where(d.cutmix.to(dev), 1.0, lam).view(-1, 1, 1, 1).to(x.dtype)
        x = torch.where(box_mask(d.box.to(dev), *x.shape[-2:]), other,
                        torch.lerp(other, x, weight))
        target = smooth_one_hot(y, self.num_classes, self.label_smoothing)
        soft = torch.lerp(target.index_select(0, partner), target, lam[:, None])
        return x, soft

    def __call__(self, x: torch.Tensor, y: torch.Tensor,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        return self.apply(x, y, self.draw(x.shape[0], *x.shape[-2:], gen))


def cut_boxes(lam: torch.Tensor, u: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B,4) boxes y0, y1, x0, x1 covering about 1 - lam of the image, centred at a uniform
    pixel (u: (B,2) uniforms) and clipped to the image (timm's rand_bbox)."""
    ratio = (1 - lam).sqrt()
    ch, cw = (h * ratio).long(), (w * ratio).long()
    cy, cx = (u[:, 0] * h).long(), (u[:, 1] * w).long()
    y0, y1 = (cy - ch // 2).clamp(0, h), (cy + ch // 2).clamp(0, h)
    x0, x1 = (cx - cw // 2).clamp(0, w), (cx + cw // 2).clamp(0, w)
    return torch.stack([y0, y1, x0, x1], 1)


def box_mask(box: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B,1,H,W) bool: inside each image's box."""
    rows = torch.arange(h, device=box.device).view(1, h, 1)
    cols = torch.arange(w, device=box.device).view(1, 1, w)
    inside = ((rows >= box[:, 0, None, None]) & (rows < box[:, 1, None, None])
              & (cols >= box[:, 2, None, None]) & (cols < box[:, 3, None, None]))
    return inside[:, None]
