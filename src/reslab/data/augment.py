"""Batched train-time augmentation: whole-batch tensor ops on the training device.

torchvision's transforms.v2 draw one set of random parameters per call, so on a batch every
image gets the same crop and flip; these ops draw per-sample parameters and apply them with
indexing and `torch.where`, with no per-sample Python. They work on any dtype (uint8 caches
augment before normalisation, as torchvision's PIL pipeline does) and any device.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _uniform(n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    # Draw on the CPU generator so results do not depend on the device.
    return torch.rand(n, generator=gen).to(device)


def random_crop(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Zero-pad by `pad` and take a random HxW crop per image (a random translation)."""
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


def random_flip(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Flip each image left-right with probability p."""
    mask = _uniform(x.shape[0], gen, x.device) < p
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def to_grayscale(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, replicated to every channel, in the input dtype."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)
    gray = (x.float() * weights).sum(1, keepdim=True)
    if not x.dtype.is_floating_point:
        gray = gray.round().clamp(0, torch.iinfo(x.dtype).max)
    return gray.to(x.dtype).expand_as(x)


def random_grayscale(x: torch.Tensor, gen: torch.Generator, p: float = 0.1) -> torch.Tensor:
    mask = _uniform(x.shape[0], gen, x.device) < p
    chosen = mask.nonzero().squeeze(1)
    if len(chosen) == 0:
        return x
    x = x.clone()  # convert only the chosen few, not the whole batch
    x[chosen] = to_grayscale(x[chosen])
    return x


def build_augment(preset: str, pad: int = 4, gray_p: float = 0.1) -> Augment | None:
    """The train-time augmentation of a `data.augment` preset (None: no augmentation)."""
    steps: list[Augment] = []
    if preset == "none":
        return None
    if preset.startswith("imagenet"):
        from .augment_imagenet import build_imagenet_augment

        return build_imagenet_augment(preset)
    if "crop" in preset:
        steps.append(lambda x, g: random_crop(x, g, pad))
    if "flip" in preset:
        steps.append(random_flip)
    if "gray" in preset:
        steps.append(lambda x, g: random_grayscale(x, g, gray_p))

    def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for step in steps:
            x = step(x, gen)
        return x

    return augment
