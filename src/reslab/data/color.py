"""Colour maths shared by every augmentation (and by evaluation): luma, greyscale, the blends
behind brightness / contrast / saturation / sharpness, and a hue rotation.

Blends take one factor per image, shape (B,), and work on float batches; `restore_dtype` brings
a result back to the input's dtype (uint8: rounded and clipped to 0..255). Float batches are not
clipped: HDR values above 1 survive. One-channel (grey) batches pass through the colour-only
steps unchanged (their luma is themselves), so saturation and hue are no-ops on them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# ITU-R BT.601 luma weights (R, G, B): the one copy in reslab.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# RGB -> YIQ and back: rotating the (I, Q) chroma plane shifts hue and keeps luma Y.
_YIQ = torch.tensor([LUMA_WEIGHTS, [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_RGB = torch.linalg.inv(_YIQ)


def luma(x: torch.Tensor) -> torch.Tensor:
    """(B,1,H,W) float luma of an NCHW batch: BT.601 for RGB, the channel itself for grey,
    the channel mean for any other channel count."""
    x = x if x.dtype.is_floating_point else x.float()
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    w = torch.tensor(LUMA_WEIGHTS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def restore_dtype(y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A float result back in `dtype`; integer types are rounded and clipped to their range."""
    if dtype.is_floating_point:
        return y.to(dtype)
    return y.round().clamp_(0, torch.iinfo(dtype).max).to(dtype)


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma replicated to every channel, in the input dtype (grey input: unchanged)."""
    if x.shape[1] == 1:
        return x
    return restore_dtype(luma(x), x.dtype).expand_as(x)


def per_image(factor: torch.Tensor) -> torch.Tensor:
    return factor.view(-1, 1, 1, 1)


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with black: x * factor."""
    return x * per_image(factor)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image's mean luma (torchvision's contrast)."""
    return torch.lerp(luma(x).mean((2, 3), keepdim=True), x, per_image(factor))


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the image's own greyscale (torchvision's saturation, PIL's Color)."""
    if x.shape[1] == 1:
        return x
    return torch.lerp(luma(x), x, per_image(factor))


def adjust_hue(x: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """Rotate each image's chroma by `turns` (fractions of a full turn) in YIQ space: one 3x3
    colour matrix per image, a cheap linear stand-in for torchvision's HSV hue shift."""
    if x.shape[1] != 3:
        return x
    angle = turns * 2 * torch.pi
    cos, sin = angle.cos(), angle.sin()
    one, zero = torch.ones_like(cos), torch.zeros_like(cos)
    rot = torch.stack([torch.stack([one, zero, zero], 1), torch.stack([zero, cos, -sin], 1),
                       torch.stack([zero, sin, cos], 1)], 1)
    mats = _RGB.to(x.device, x.dtype) @ rot.to(x.dtype) @ _YIQ.to(x.device, x.dtype)
    return torch.einsum("bij,bjhw->bihw", mats, x)


def smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's SMOOTH filter (3x3, centre weight 5, the rest 1, /13) with the one-pixel border
    left as it was: the 'degenerate' image that sharpness blends away from."""
    c = x.shape[1]
    kernel = torch.ones(3, 3, device=x.device, dtype=x.dtype)
    kernel[1, 1] = 5.0
    blurred = F.conv2d(x, (kernel / 13).expand(c, 1, 3, 3), padding=1, groups=c)
    inner = torch.zeros_like(x[:1, :1], dtype=torch.bool)
    inner[..., 1:-1, 1:-1] = True
    return torch.where(inner, blurred, x)


def adjust_sharpness(x: torch.Tensor, factor: torch.Tensor, integer: bool) -> torch.Tensor:
    """Blend with the smoothed image; `integer`: round the smoothed image first, as
    torchvision does for uint8 input."""
    blurred = smooth(x)
    if integer:
        blurred = blurred.round()
    return torch.lerp(blurred, x, per_image(factor))
