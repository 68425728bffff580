"""`train.init: whiten`: the first convolution starts as a whitening filter bank (airbench).

Computed once before training from up to WHITEN_IMAGES training images (evenly spaced over
the split, normalised exactly as training normalises them; no augmentation):

1. every valid (unpadded) patch the first conv sees, at its stride, flattened to D = C*kh*kw
   values; their second-moment matrix M = E[p p^T] in float64 (airbench's estimate: not
   mean-centred, the images are normalised);
2. M's eigenvectors v_i, largest eigenvalue first, each scaled by 1 / sqrt(lambda_i + eps),
   sign fixed so that its largest-magnitude entry is positive (deterministic across LAPACKs);
3. the conv's output channels get them as +/- pairs (a ReLU follows: both signs of every
   direction survive it): channels [0, n) = +v_i/sqrt(..), [n, 2n) = -v_i/sqrt(..), with
   n = min(D, out_channels // 2) of the largest-eigenvalue directions. Channels past 2n (a stem
   wider than 2*D) keep the model's own init; a stem narrower than 2*D drops the directions
   of smallest variance (noise, which 1/sqrt(lambda) would amplify most).

On those patches the first n outputs are then decorrelated with variances lambda/(lambda+eps),
about 1. A bias, if the conv has one, is zeroed. Any first conv fits that is a plain Conv2d
(groups 1) applied to the image itself; anything else is refused with one line.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ImageSet
from ..data.loader import Normalizer, x_layout
from ..errors import ReslabError

WHITEN_IMAGES = 5000         # airbench's count
WHITEN_MAX_PATCHES = 5_000_000  # fewer images when they are large (bounds the cost)
WHITEN_EPS = 5e-4            # airbench's eps, for inputs of unit variance per channel
CHUNK = 64                   # images per step of the moment sum


def whiten_first_conv(model: nn.Module, train: ImageSet, normalize: Normalizer,
                      channels_last: bool, pretrained: bool = False) -> str:
    """Initialise the model's first convolution from the training images' patch statistics;
    returns a one-line description. Deterministic: no random draws."""
    if pretrained:
        raise ReslabError("train.init = 'whiten' would overwrite the first convolution of the "
                          "model.pretrained weights; use one or the other")
    device = next(model.parameters()).device
    images = whitening_images(train, device)
    conv = first_conv(model, normalize(images[:2]), channels_last)
    moment = patch_moment(images, normalize, conv)
    filters = whitening_filters(moment, conv.weight.shape[1:])
    n = min(len(filters), conv.out_channels // 2)
    with torch.no_grad():
        conv.weight[:n] = filters[:n]
        conv.weight[n:2 * n] = -filters[:n]
        if conv.bias is not None:
            conv.bias.zero_()
    kept = conv.out_channels - 2 * n
    return (f"Whitening init: first conv {tuple(conv.weight.shape)} from {len(images):,} "
            f"images, {n} of {len(filters)} patch directions as +/- pairs"
            + (f", {kept} channels keep their init" if kept else ""))


def whitening_images(train: ImageSet, device: torch.device) -> torch.Tensor:
    n, _, h, w = train.images.shape
    count = max(1, min(n, WHITEN_IMAGES, WHITEN_MAX_PATCHES // (h * w)))
    idx = torch.linspace(0, n - 1, count).round().long()
    return train.images.index_select(0, idx).to(device)


def first_conv(model: nn.Module, x: torch.Tensor, channels_last: bool) -> nn.Conv2d:
    """The first Conv2d the forward pass runs, when it runs on the image itself."""
    calls: list[tuple[nn.Module, torch.Tensor]] = []
    hooks = [m.register_forward_pre_hook(lambda m, args: calls.append((m, args[0])))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(x_layout(x, channels_last))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    name = type(model).__name__
    if not calls:
        raise ReslabError(f"train.init = 'whiten': {name} runs no Conv2d to initialise")
    conv, seen = calls[0]
    if seen.shape != x.shape or not torch.equal(seen.float(), x.float()):
        raise ReslabError(f"train.init = 'whiten': the first convolution of {name} does not "
                          f"take the normalised image itself (input {tuple(seen.shape)}); "
                          "whitening needs a first conv applied to the image")
    if conv.groups != 1:
        raise ReslabError(f"train.init = 'whiten': the first convolution of {name} is grouped "
                          f"(groups={conv.groups}); whitening needs a plain convolution")
    return conv


def patch_moment(images: torch.Tensor, normalize: Normalizer, conv: nn.Conv2d) -> torch.Tensor:
    """E[p p^T] over the conv's valid patches p (float64, D x D)."""
    dim = conv.weight[0].numel()
    total = torch.zeros(dim, dim, dtype=torch.float64, device=images.device)
    count = 0
    for chunk in images.split(CHUNK):
        patches = F.unfold(normalize(chunk).double(), conv.kernel_size, conv.dilation,
                           stride=conv.stride)  # (B, D, L)
        p = patches.transpose(1, 2).reshape(-1, dim)
        total += p.T @ p
        count += len(p)
    return (total / max(1, count)).cpu()


def whitening_filters(moment: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """(D, C, kh, kw) filters: eigenvectors / sqrt(eigenvalue + eps), largest first."""
    eigenvalues, eigenvectors = torch.linalg.eigh(moment)  # ascending
    eigenvalues, vectors = eigenvalues.flip(0), eigenvectors.T.flip(0)
    sign = vectors.gather(1, vectors.abs().argmax(1, keepdim=True)).sign()
    vectors = vectors * sign / (eigenvalues.clamp_min(0) + WHITEN_EPS).sqrt()[:, None]
    return vectors.float().reshape(len(vectors), *shape)
