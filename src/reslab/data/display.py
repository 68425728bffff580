"""Stored values <-> display sRGB, for perturbations, figures and previews.

A cache holds 8-bit sRGB as uint8, 16-bit/float data as linear light and EXR data as
ln(linear + LOG_EPS) (`fmt`: srgb, linear, log); people and the seed perturbations think in
display sRGB [0, 1]. These functions convert a batch either way, on any device.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ..errors import ReslabError
from .imageio import linear_to_log, linear_to_srgb, log_to_linear, srgb_to_linear

FORMATS = ("srgb", "linear", "log")


def _check_fmt(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ReslabError(f"unknown image format {fmt!r}; choose from {', '.join(FORMATS)}")


def to_display(x: Tensor, fmt: str) -> Tensor:
    """Stored values in `fmt` (as [0,1]-scaled floats for srgb/linear) -> display sRGB."""
    _check_fmt(fmt)
    if fmt == "srgb":
        return x
    return linear_to_srgb(log_to_linear(x) if fmt == "log" else x)


def from_display(x: Tensor, fmt: str) -> Tensor:
    """Inverse of `to_display`."""
    _check_fmt(fmt)
    if fmt == "srgb":
        return x
    lin = srgb_to_linear(x)
    return linear_to_log(lin) if fmt == "log" else lin


def to_display_uint8(images: Tensor, scale: float, fmt: str) -> np.ndarray:
    """Cached images (N,C,H,W) -> (N,H,W,3) uint8 for figures, decoding linear/log data."""
    x = to_display(images.float() / scale, fmt)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    return x.permute(0, 2, 3, 1).numpy()


# ITU-R BT.601 luma: grey from RGB, as torchvision's rgb_to_grayscale.
LUMA = (0.299, 0.587, 0.114)


def match_channels(images: Tensor, channels: int, source: str) -> Tensor:
    """Stored images (N,C,H,W) converted to `channels`: grey is repeated to RGB, RGB becomes
    grey by luma (as the training data was); anything else is a one-line error."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        w = torch.tensor(LUMA, dtype=torch.float32).view(1, 3, 1, 1)
        grey = (images.float() * w).sum(1, keepdim=True)
        if not images.dtype.is_floating_point:
            grey = grey.round().clamp(0, torch.iinfo(images.dtype).max)
        return grey.to(images.dtype)
    raise ReslabError(f"{source}: images have {have} channels; the model takes {channels} "
                      "(only grey <-> RGB is converted)")
