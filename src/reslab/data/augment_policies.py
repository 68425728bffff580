"""TrivialAugmentWide and RandAugment, batched: every image draws its own ops and magnitudes.

Op sets, magnitude tables and uint8 semantics follow torchvision's `transforms.v2`
(TrivialAugmentWide: one op per image, a random magnitude bin of 31; RandAugment: `n` ops per
image at the fixed bin `m`; signed ops flip sign with probability 1/2). Per op slot, the batch
is split by op on the CPU (the draws live there, so splitting costs no device sync): each colour
op runs once on the images that chose it. Geometric ops (shear, translate, rotate) become
per-image pixel matrices, composed over all slots and applied by one nearest-neighbour
`grid_sample` after the colour ops (torchvision's default interpolation; uint8 values pass
through exactly). Deliberate differences from torchvision: geometry is applied last, so the
black fill is never recoloured by a later colour op; blends round uint8 results (torchvision
truncates). Float batches are taken to have white at 1.0 (posterize, solarize, autocontrast and
equalize use that range; the blends do not clip, so HDR values survive them). Grey (1-channel)
batches work: `color` is then an identity.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from . import affine
from .color import (
    adjust_brightness,
    adjust_contrast,
    adjust_saturation,
    adjust_sharpness,
    restore_dtype,
)
from .transforms import BatchContext

BINS = 31
OPS = ("identity", "shear_x", "shear_y", "translate_x", "translate_y", "rotate", "brightness",
       "color", "contrast", "sharpness", "posterize", "solarize", "autocontrast", "equalize")
GEOMETRIC = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
SIGNED = GEOMETRIC + ("brightness", "color", "contrast", "sharpness")


def trivialaugment_wide_space(h: int, w: int) -> dict[str, float]:
    """Each op's magnitude at the top bin (posterize: bits removed; solarize: see `values`)."""
    return {"shear_x": 0.99, "shear_y": 0.99, "translate_x": 32.0, "translate_y": 32.0,
            "rotate": 135.0, "brightness": 0.99, "color": 0.99, "contrast": 0.99,
            "sharpness": 0.99, "posterize": 6, "solarize": 1.0}


def randaugment_space(h: int, w: int) -> dict[str, float]:
    return {"shear_x": 0.3, "shear_y": 0.3, "translate_x": 150 / 331 * w,
            "translate_y": 150 / 331 * h, "rotate": 30.0, "brightness": 0.9, "color": 0.9,
            "contrast": 0.9, "sharpness": 0.9, "posterize": 4, "solarize": 1.0}


def values(op: str, top: float, frac: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """The op's parameter per image from its bin fraction (0..1) and sign, as torchvision
    computes it: translations truncate to whole pixels, posterize gives bits to keep,
    solarize a threshold in units of white."""
    if op == "posterize":
        return 8 - (frac * top).round()
    if op == "solarize":
        return 1 - frac
    v = torch.where(negative, -top * frac, top * frac)
    return v.trunc() if op.startswith("translate") else v


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """Keep the top `bits` bits of each value (float: 2**bits levels of [0, 1))."""
    bits = bits.view(-1, 1, 1, 1)
    if x.dtype == torch.uint8:
        mask = (255 << (8 - bits.long())) & 255
        return x & mask.to(torch.uint8)
    levels = 2.0 ** bits.to(x.dtype)
    return (x * levels).floor().clamp(min=0).minimum(levels - 1) / levels


def white(x: torch.Tensor) -> float:
    return 1.0 if x.dtype.is_floating_point else float(torch.iinfo(x.dtype).max)


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Invert values at or above threshold * white."""
    bound = white(x)
    t = (threshold * bound).view(-1, 1, 1, 1).to(torch.float32)
    return torch.where(x >= t, (bound - x).to(x.dtype), x)


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each channel to [0, white]; flat channels stay as they are. The arithmetic is
    torchvision's (divide by range / white), so uint8 results truncate exactly as there."""
    bound, xf = white(x), x.float()
    lo, hi = xf.amin((2, 3), keepdim=True), xf.amax((2, 3), keepdim=True)
    flat = hi == lo
    inv_scale = torch.where(flat, 1.0, (hi - lo) * (1.0 / bound))
    y = ((xf - torch.where(flat, 0.0, lo)) / inv_scale).clamp(0, bound)
    return y.to(x.dtype)


def equalize_uint8(x: torch.Tensor) -> torch.Tensor:
    """PIL's histogram equalisation per image and channel: one offset bincount for the batch,
    PIL's lookup table ((cdf[k-1] + step // 2) // step, step = non-max pixels // 255)."""
    b, c = x.shape[:2]
    flat = x.reshape(b * c, -1).long()
    offsets = torch.arange(b * c, device=x.device)[:, None] * 256
    hist = torch.bincount((flat + offsets).view(-1), minlength=b * c * 256).view(b * c, 256)
    cdf = hist.cumsum(1)
    top_count = hist.gather(1, cdf.argmax(1, keepdim=True))  # count of the largest value
    step = (flat.shape[1] - top_count) // 255
    lut = ((cdf[:, :-1] + step // 2) // step.clamp(min=1)).clamp(0, 255)
    lut = torch.cat([torch.zeros_like(lut[:, :1]), lut], 1)
    out = torch.where(step > 0, lut.gather(1, flat), flat)  # step 0: PIL leaves it
    return out.to(torch.uint8).view(b, c, *x.shape[2:])


def equalize(x: torch.Tensor) -> torch.Tensor:
    """uint8: exact PIL/torchvision. Float: equalise 256 levels of [0, 1] and shift each value
    by its level's change, which keeps detail finer than a level (and HDR values above 1)."""
    if x.dtype == torch.uint8:
        return equalize_uint8(x)
    q = (x.float().clamp(0, 1) * 255).round().to(torch.uint8)
    return (x + (equalize_uint8(q).float() - q.float()) / 255).to(x.dtype)


def blend_op(op: str, x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    xf = x.float()
    if op == "brightness":
        y = adjust_brightness(xf, factor)
    elif op == "color":
        y = adjust_saturation(xf, factor)
    elif op == "contrast":
        y = adjust_contrast(xf, factor)
    else:
        y = adjust_sharpness(xf, factor, integer=not x.dtype.is_floating_point)
    if not x.dtype.is_floating_point:
        return restore_dtype(y, x.dtype)
    return y.to(x.dtype)


def colour_op(op: str, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One pixel-value op on the images that chose it; v: their parameters (device)."""
    if op == "posterize":
        return posterize(x, v)
    if op == "solarize":
        return solarize(x, v)
    if op == "autocontrast":
        return autocontrast(x)
    if op == "equalize":
        return equalize(x)
    return blend_op(op, x, 1 + v.to(torch.float32))


def geometry(op: str, v: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B,3,3) pixel-unit sampling maps of one geometric op (see `affine`)."""
    zero = torch.zeros_like(v)
    return {"shear_x": lambda: affine.shear_x(v), "shear_y": lambda: affine.shear_y(v),
            "translate_x": lambda: affine.translate(v, zero),
            "translate_y": lambda: affine.translate(zero, v),
            "rotate": lambda: affine.rotate(v, h, w)}[op]()


@dataclass(frozen=True)
class PolicyDraw:
    ops: torch.Tensor        # (n, B) int64: index into OPS per slot and image
    values: torch.Tensor     # (n, B) float64: each op's parameter (see `values`)


@dataclass(frozen=True)
class AugmentPolicy:
    """`n_ops` random ops per image; `magnitude_bin` None draws a bin per image and op
    (TrivialAugmentWide), an int fixes it (RandAugment's m)."""
    space: str                            # "trivialaugment" or "randaugment"
    n_ops: int = 1
    magnitude_bin: int | None = None

    def draw(self, b: int, h: int, w: int, gen: torch.Generator) -> PolicyDraw:
        """Ops, then bins, then signs: one fixed draw order on the CPU generator."""
        ops = torch.randint(len(OPS), (self.n_ops, b), generator=gen)
        if self.magnitude_bin is None:
            bins = torch.randint(BINS, (self.n_ops, b), generator=gen)
        else:
            bins = torch.full((self.n_ops, b), self.magnitude_bin)
        negative = torch.rand(self.n_ops, b, generator=gen) < 0.5
        frac = bins.double() / (BINS - 1)
        space = (trivialaugment_wide_space if self.space == "trivialaugment"
                 else randaugment_space)(h, w)
        vals = torch.zeros(self.n_ops, b, dtype=torch.float64)
        for k, op in enumerate(OPS):
            hit = ops == k
            if op in space and hit.any():
                vals[hit] = values(op, space[op], frac[hit], negative[hit])
        return PolicyDraw(ops, vals)

    def __call__(self, x: torch.Tensor, gen: torch.Generator,
                 ctx: BatchContext | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        return self.apply(x, self.draw(b, h, w, gen))

    def apply(self, x: torch.Tensor, d: PolicyDraw) -> torch.Tensor:
        x = x.clone()  # ops write their images back in place
        sampling = affine.identity(x.shape[0])
        for slot_ops, slot_values in zip(d.ops, d.values):
            for k, op in enumerate(OPS):
                chosen = (slot_ops == k).nonzero().squeeze(1)
                if op == "identity" or len(chosen) == 0:
                    continue
                if op in GEOMETRIC:  # composed now, resampled once at the end
                    sampling[chosen] = sampling[chosen] @ geometry(op, slot_values[chosen],
                                                                   *x.shape[-2:])
                    continue
                idx = chosen.to(x.device)
                x.index_copy_(0, idx, colour_op(op, x.index_select(0, idx),
                                                slot_values[chosen].to(x.device)))
        return warp_moved(x, sampling)


def warp_moved(x: torch.Tensor, sampling: torch.Tensor) -> torch.Tensor:
    """Resample (nearest) only the images whose composed map is not the identity."""
    moved = (sampling != torch.eye(3, dtype=sampling.dtype)).flatten(1).any(1)
    chosen = moved.nonzero().squeeze(1)
    if len(chosen) == 0:
        return x
    theta = affine.pixel_to_theta(sampling[chosen], *x.shape[-2:]).to(x.device)
    idx = chosen.to(x.device)
    warped = affine.warp(x.index_select(0, idx).float(), theta, mode="nearest")
    x.index_copy_(0, idx, restore_dtype(warped, x.dtype))
    return x


def build_policy(name: str, n: int = 2, m: int = 9) -> AugmentPolicy:
    """`trivialaugment` (TrivialAugmentWide) or `randaugment` with data.randaugment's n, m."""
    if name == "trivialaugment":
        return AugmentPolicy("trivialaugment")
    return AugmentPolicy("randaugment", n_ops=n, magnitude_bin=m)
