"""Image perturbations for ``reslab robustness``: pure tensor functions, no models or files.

Every public perturbation takes a batch ``x`` of shape (N, 3, H, W) in DISPLAY space: sRGB-encoded
values in [0, 1] (uint8 / 255). It returns a new tensor of the same shape, dtype and device, clamped
to [0, 1]. Work is batched (JPEG is the one per-image step: the codec has no batch API).
Random corruptions draw from an optional ``torch.Generator``; the noise is sampled on the
generator's device and then moved to ``x``'s, so a CPU generator with a fixed seed gives the same
result whatever device ``x`` lives on.

Where perturbations are applied
-------------------------------
Perturbations act in display space. For a model trained on ``linear`` or ``log`` data the stored
values are first mapped to display with :func:`to_display`, perturbed, and mapped back with
:func:`from_display` (display values are clamped to [0, 1], so HDR highlights above 1 do not
survive a perturbation). A separate ``raw`` mode, wired by the caller and not here, instead adds
the seed amounts to the stored values in the files' own units, as the original study did.

Suites
------
``seed``: the original study's four perturbations, amounts in 8-bit display units (/255):
``intensity_plus50`` (+50 on every channel), ``color_balance_b10_g20_r30`` (B+10, G+20, R+30),
``rotate30`` (30 degrees COUNTER-CLOCKWISE as seen on screen, torchvision's convention: positive
angle = counter-clockwise; bilinear, corners filled with 0), ``combined`` (the three in that order).
Each is a single level, reported as severity 1.

``corruptions``: ten CIFAR-10-C corruptions (Hendrycks & Dietterich, 2019) at severities 1..5, using
the reference implementation's 32x32 constants, recomputed on tensors. Constants are in pixels
and are not rescaled for other image sizes, except ``pixelate`` whose factor is relative.
Deliberate differences from the reference:

* ``impulse_noise`` replaces each value independently with probability ``amount`` (half salt,
  half pepper) instead of drawing an exact count; the hit set grows with severity.
* ``brightness`` / ``saturate`` edit HSV value / saturation like the reference, through the exact
  closed form (hue and the other HSV component are preserved) instead of a full HSV round trip.
  ``saturate`` leaves grey pixels grey; the reference (skimage) gives them hue 0 and tints them red.
* ``saturate``'s reference levels desaturate at severities 1-2 and saturate at 3-5, which is not
  monotonic in distortion. Here every level saturates: reference levels 3-5 become 1-3 and
  4-5 continue the same progression: (x1.5, +0), (x2, +0.1), (x2.5, +0.2), (x3, +0.3), (x4, +0.4).
* ``pixelate`` downsamples by exact box (area-overlap) averaging and upsamples nearest-exact
  (reference: PIL BOX both ways; its upscaling is the same nearest rule). At 32 px the levels are
  30, 28, 27, 24, 20 px, so levels 2 and 3 are close: distortion rises with severity on average
  over textured images, but a single smooth image need not be strictly monotone.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..errors import ReslabError

Perturbation = Callable[[Tensor], Tensor]
Corruption = Callable[..., Tensor]  # fn(x, severity, generator=None) -> Tensor

SEVERITIES = (1, 2, 3, 4, 5)


# ----------------------------------------------------------------------------- helpers


def _work(x: Tensor) -> Tensor:
    # half/bfloat16 convolutions are missing or imprecise on CPU; compute in at least float32.
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _finish(y: Tensor, x: Tensor) -> Tensor:
    return y.clamp(0.0, 1.0).to(x.dtype)


def _level(table: tuple, severity: int, name: str):
    if severity not in SEVERITIES:
        raise ReslabError(f"{name}: severity {severity!r} is not one of {list(SEVERITIES)}")
    return table[severity - 1]


def _gen_device(x: Tensor, generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else x.device


def _rand(x: Tensor, generator: torch.Generator | None) -> Tensor:
    u = torch.rand(x.shape, generator=generator, device=_gen_device(x, generator))
    return u.to(device=x.device, dtype=x.dtype)


def _randn(x: Tensor, generator: torch.Generator | None) -> Tensor:
    z = torch.randn(x.shape, generator=generator, device=_gen_device(x, generator))
    return z.to(device=x.device, dtype=x.dtype)


def _depthwise(x: Tensor, kernel: Tensor, pad: tuple[int, int, int, int], mode: str) -> Tensor:
    """Same 2-D kernel on every channel; ``pad`` is (left, right, top, bottom)."""
    c = x.shape[1]
    weight = kernel.to(device=x.device, dtype=x.dtype).expand(c, 1, *kernel.shape)
    return F.conv2d(F.pad(x, pad, mode=mode), weight, groups=c)


def _value_chroma(x: Tensor) -> tuple[Tensor, Tensor]:
    v = x.amax(dim=1, keepdim=True)
    return v, v - x.amin(dim=1, keepdim=True)


# ----------------------------------------------------------------------------- seed suite


def shift_intensity(x: Tensor, amount: float = 50) -> Tensor:
    """Add ``amount``/255 to every channel (8-bit display units)."""
    return _finish(_work(x) + amount / 255.0, x)


def shift_color_balance(x: Tensor, r: float = 30, g: float = 20, b: float = 10) -> Tensor:
    """Add ``r``/``g``/``b`` (8-bit display units) to the R/G/B channels."""
    y = _work(x)
    delta = torch.tensor([r, g, b], device=y.device, dtype=y.dtype).view(1, 3, 1, 1) / 255.0
    return _finish(y + delta, x)


def rotate(x: Tensor, degrees: float = 30) -> Tensor:
    """Rotate about the image centre; positive = counter-clockwise on screen. Bilinear, zero
    fill."""
    y = TF.rotate(_work(x), degrees, interpolation=InterpolationMode.BILINEAR, fill=0.0)
    return _finish(y, x)


def combined(x: Tensor) -> Tensor:
    """Intensity +50, then colour balance R+30/G+20/B+10, then rotation by 30 degrees."""
    return rotate(shift_color_balance(shift_intensity(x)))


SEED_SUITE: dict[str, Perturbation] = {
    "intensity_plus50": shift_intensity,
    "color_balance_b10_g20_r30": shift_color_balance,
    "rotate30": rotate,
    "combined": combined,
}


# ----------------------------------------------------------------------------- corruptions


def gaussian_noise(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    sigma = _level((0.04, 0.06, 0.08, 0.09, 0.10), severity, "gaussian_noise")
    y = _work(x)
    return _finish(y + sigma * _randn(y, generator), x)


def shot_noise(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    photons = _level((500, 250, 100, 75, 50), severity, "shot_noise")
    y = _work(x)
    rate = (y.clamp(0.0, 1.0) * photons).to(_gen_device(y, generator))
    return _finish(torch.poisson(rate, generator=generator).to(y.device) / photons, x)


def impulse_noise(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    amount = _level((0.01, 0.02, 0.03, 0.05, 0.07), severity, "impulse_noise")
    y = _work(x)
    # Separate draws for "hit" and "salt or pepper" keep the hit set nested across severities
    # when the same seed is reused.
    hit = _rand(y, generator) < amount
    salt = (_rand(y, generator) < 0.5).to(y.dtype)
    return _finish(torch.where(hit, salt, y), x)


def _disk_kernel(radius: float, alias_blur: float) -> Tensor:
    """The reference's anti-aliased disk: a 17x17 binary disk, then a 3x3 Gaussian blur."""
    coords = torch.arange(-8, 9, dtype=torch.float64)
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    disk = (xx**2 + yy**2 <= radius**2).to(torch.float64)
    disk /= disk.sum()
    g = torch.exp(-torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64) ** 2 / (2 * alias_blur**2))
    g /= g.sum()
    blurred = F.conv2d(disk[None, None], (g[:, None] * g[None, :])[None, None], padding=1)[0, 0]
    half = int(radius) + 1  # support of the disk plus the 3x3 blur; zero beyond it
    return blurred[8 - half : 9 + half, 8 - half : 9 + half].float()


def defocus_blur(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    radius, alias_blur = _level(
        ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)), severity, "defocus_blur"
    )
    kernel = _disk_kernel(radius, alias_blur)
    p = kernel.shape[0] // 2
    # cv2.filter2D's default border (BORDER_REFLECT_101) is torch's "reflect".
    return _finish(_depthwise(_work(x), kernel, (p, p, p, p), "reflect"), x)


def gaussian_blur(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    sigma = _level((0.4, 0.6, 0.7, 0.8, 1.0), severity, "gaussian_blur")
    r = int(4.0 * sigma + 0.5)  # scipy.ndimage's truncate=4 radius, as skimage used it
    g = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma**2))
    g /= g.sum()
    # skimage.filters.gaussian's default border is "nearest" = torch's "replicate".
    y = _depthwise(_work(x), g[None, :], (r, r, 0, 0), "replicate")
    return _finish(_depthwise(y, g[:, None], (0, 0, r, r), "replicate"), x)


def contrast(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    factor = _level((0.75, 0.5, 0.4, 0.3, 0.15), severity, "contrast")
    y = _work(x)
    mean = y.mean(dim=(2, 3), keepdim=True)  # per image and channel, as the reference
    return _finish((y - mean) * factor + mean, x)


def brightness(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """HSV value += c. With hue and saturation fixed RGB is proportional to V, so scale by V'/V."""
    c = _level((0.05, 0.1, 0.15, 0.2, 0.3), severity, "brightness")
    y = _work(x).clamp(0.0, 1.0)
    v, _ = _value_chroma(y)
    v_new = (v + c).clamp(max=1.0)
    out = torch.where(v > 0, y * (v_new / v.clamp_min(1e-12)), v_new.expand_as(y))
    return _finish(out, x)


def saturate(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    """HSV saturation S' = clip(S*a + b); hue and value preserved, grey pixels stay grey."""
    a, b = _level(((1.5, 0.0), (2.0, 0.1), (2.5, 0.2), (3.0, 0.3), (4.0, 0.4)), severity,
                  "saturate")
    y = _work(x).clamp(0.0, 1.0)
    v, chroma = _value_chroma(y)
    s_new = (chroma / v.clamp_min(1e-12) * a + b).clamp(0.0, 1.0)
    # New chroma is S'*V; each channel keeps its relative position between min and max (= hue).
    out = v - (v - y) * (s_new * v / chroma.clamp_min(1e-12))
    return _finish(torch.where(chroma > 0, out, y), x)


def _jpeg_round_trip(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def jpeg_compression(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    quality = _level((80, 65, 58, 50, 40), severity, "jpeg_compression")
    y = _work(x)
    u8 = (y.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    # The codec works per image; PIL with the reference's qualities (torchvision.io's JPEG codec
    # is deprecated as of 0.29).
    out = np.stack([_jpeg_round_trip(image, quality) for image in u8])
    decoded = torch.from_numpy(out).permute(0, 3, 1, 2).to(device=y.device, dtype=y.dtype)
    return _finish(decoded / 255.0, x)


def _area_matrix(n_out: int, n_in: int) -> Tensor:
    """(n_out, n_in) weights of exact box downsampling: the overlap of each output cell with each
    input pixel. torch's "area" mode uses integer-bounded overlapping windows for non-integer
    ratios, which shifts content by up to a pixel and swamps the resolution loss at 32 px."""
    scale = n_in / n_out
    i = torch.arange(n_out, dtype=torch.float64)[:, None]
    j = torch.arange(n_in, dtype=torch.float64)[None, :]
    overlap = torch.minimum((i + 1) * scale, j + 1) - torch.maximum(i * scale, j)
    return (overlap.clamp_min(0.0) / scale).float()


def pixelate(x: Tensor, severity: int, generator: torch.Generator | None = None) -> Tensor:
    factor = _level((0.95, 0.9, 0.85, 0.75, 0.65), severity, "pixelate")
    y = _work(x)
    h, w = y.shape[-2:]
    rows = _area_matrix(max(1, int(h * factor)), h).to(device=y.device, dtype=y.dtype)
    cols = _area_matrix(max(1, int(w * factor)), w).to(device=y.device, dtype=y.dtype)
    small = torch.einsum("hH,ncHW,wW->nchw", rows, y, cols)
    # nearest-exact picks the low-res cell under each pixel centre, as PIL's BOX upscaling does.
    return _finish(F.interpolate(small, size=(h, w), mode="nearest-exact"), x)


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "gaussian_blur": gaussian_blur,
    "contrast": contrast,
    "brightness": brightness,
    "saturate": saturate,
    "jpeg_compression": jpeg_compression,
    "pixelate": pixelate,
}


def corrupt(x: Tensor, name: str, severity: int,
            generator: torch.Generator | None = None) -> Tensor:
    """Apply corruption ``name`` at ``severity`` (1..5)."""
    if name not in CORRUPTIONS:
        raise ReslabError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[name](x, severity, generator=generator)


# ----------------------------------------------------------------------------- suites

SUITES: dict[str, dict[str, Callable[..., Tensor]]] = {"seed": SEED_SUITE,
                                                      "corruptions": CORRUPTIONS}


def iter_suite(name: str, seed: int = 0) -> Iterator[tuple[str, int, Perturbation]]:
    """Yield (perturbation, severity, fn(x)) for suite ``name``: "seed", "corruptions" or "all".

    Seed perturbations are yielded once at severity 1; corruptions at severities 1..5. Each random
    corruption level owns a CPU generator seeded with ``seed``, so calling its fn on the same
    batches in the same order reproduces the same result, and levels share their noise pattern.
    """
    choices = (*SUITES, "all")
    if name not in choices:
        raise ReslabError(f"unknown robustness suite {name!r}; choose from {', '.join(choices)}")
    if name in ("seed", "all"):
        for pert, fn in SEED_SUITE.items():
            yield pert, 1, fn
    if name in ("corruptions", "all"):
        for pert, cfn in CORRUPTIONS.items():
            for severity in SEVERITIES:
                gen = torch.Generator().manual_seed(seed)
                yield pert, severity, partial(cfn, severity=severity, generator=gen)
