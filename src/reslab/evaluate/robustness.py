"""`reslab robustness`: accuracy of a trained run under the perturbations of `perturb.py`.

Data: a `--data-root` labeled tree (as `reslab eval`), else the run's test split, else val.
The first row is the clean accuracy, computed exactly as `evaluate_run` computes it (same
loader, same `train.tta`), so it equals `reslab eval`'s accuracy on the same data.

Display mode (default)
----------------------
Each batch of cached images is decoded to display space [0, 1] for the run's format
(`norm["fmt"]`: srgb uint8 -> /255; linear/log -> `to_display`), perturbed, and encoded back
to the stored form (`from_display`; uint8 is rounded to the nearest of the 256 levels, as the
original study perturbed uint8 images). Then it goes through the run's Normalizer and model.

Raw mode (`raw=True`, `--raw`)
------------------------------
Applies the *seed* suite to the STORED values, as the original study did, with no display
conversion. The amounts (intensity +50 on every channel; colour balance R+30, G+20, B+10; both
of them in "combined", followed by its rotation) are added in the OWN units of the files the
images were decoded from (`ImageSet.sources`, recorded by the decoded-image cache); rotation by
30 degrees is the same in every format:

* 8-bit files (JPEG/PNG/TIFF, and the digits / CIFAR-10 arrays): +50 of 255, values saturating
  at 0 and 255 as 8-bit arithmetic does. For sRGB data this equals display mode.
* 16-bit files (PNG/TIFF, linear): +50 of 65535, i.e. 50/65535 = 0.00076 of full scale,
  saturating at 0 and 65535 (barely moves anything).
* float files (EXR, float TIFF): +50 on the stored value itself (a log EXR value, a linear
  float), unclamped: far outside the data's range.

The perturbed float values are kept in float32 (the cache's float16 would round a 50/65535 step
to its own spacing). Rotation fills corners with stored 0 (black for 8/16-bit and linear data,
white for log data). Files of more than one kind (16-bit and float TIFFs in one tree) have no
single unit: a one-line error, as is data whose source sample type is unknown. Corruptions have
no raw form: they are defined in display space and always run there.

Channels: perturbations need RGB. One-channel (grey) data is repeated to three channels,
perturbed, and averaged back to one, so a colour-balance shift acts as its mean (+20/255).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import torch
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from ..data import ImageSet
from ..data.display import from_display, to_display
from ..data.imageio import bit_depth_scale
from ..engine.infer import loss_and_accuracy
from ..errors import ReslabError
from ..formatting import markdown_table
from ..progress import track
from . import evaluation_data
from .loaded import LoadedRun, load_run
from .perturb import SEED_SUITE, SUITES, iter_suite

SUITE_CHOICES = (*SUITES, "all")
Level = tuple[str, int, Callable[[Tensor], Tensor]]


def run_robustness(run_dir: str | Path, data_root: str | Path | None = None,
                   suite: str = "seed", raw: bool = False, seed: int = 0,
                   write: bool = True) -> list[dict]:
    """Rows {perturbation, severity, accuracy, drop}: `clean` first, then one per level.

    Writes robustness.csv and robustness.md (raw: robustness-raw.csv/.md) when `write`.
    """
    levels = suite_levels(suite, seed)
    lr = load_run(run_dir)
    data, split = evaluation_data(lr, data_root, None)
    fmt = lr.norm.get("fmt") or ("srgb" if lr.norm["scale"] == 255.0 else "linear")
    raw_seed = raw and any(name in SEED_SUITE for name, _, _ in levels)
    full_scale = source_full_scale(data) if raw_seed else None  # errors before any pass
    tta = lr.cfg.train.tta
    # Same call as evaluate_run, so the clean row equals `reslab eval` bit for bit.
    clean = loss_and_accuracy(*lr.predict(lr.loader(data), tta=tta))[1]
    mode = "raw" if raw else "display"
    rows = [{"perturbation": "clean", "severity": 0, "accuracy": clean, "drop": 0.0,
             "mode": mode}]
    for name, severity, fn in track(levels, total=len(levels), description="robustness"):
        encode = level_encoder(name, fn, full_scale, fmt, lr.norm["scale"])
        logits, labels = lr.predict(perturbed_batches(lr, data, encode), tta=tta)
        acc = loss_and_accuracy(logits, labels)[1]
        rows.append({"perturbation": name, "severity": severity, "accuracy": acc,
                     "drop": clean - acc, "mode": mode})
    if write:
        info = {"split": split, "n": len(data), "suite": suite, "raw": raw, "fmt": fmt,
                "units": full_scale}
        lr.run.write_robustness(rows, to_markdown(rows, info, lr.run.path.resolve().name))
    return rows


def suite_levels(suite: str, seed: int = 0) -> list[Level]:
    """Validate the suite name up front (before any data is loaded) and list its levels."""
    if suite not in SUITE_CHOICES:
        raise ReslabError(f"--suite {suite!r}: expected one of {', '.join(SUITE_CHOICES)}")
    return list(iter_suite(suite, seed))


# ----------------------------------------------------------------------------- perturbing
def level_encoder(name: str, fn: Callable[[Tensor], Tensor], full_scale: float | None,
                  fmt: str, scale: float) -> Callable[[Tensor], Tensor]:
    """stored batch -> perturbed stored batch, for one (perturbation, severity). `full_scale`:
    raw mode's source units (`source_full_scale`), None for display mode."""
    if full_scale is not None and name in SEED_SUITE:
        return partial(raw_stored, fn=raw_seed_fn(name, full_scale), scale=scale)
    return partial(through_display, fn=fn, fmt=fmt, scale=scale)


def source_full_scale(data: ImageSet) -> float:
    """Full white of the files `data` was decoded from, in their own units: 255 (8-bit),
    65535 (16-bit) or 1.0 (float: stored values are their own unit)."""
    scales = {bit_depth_scale(name) for name in data.sources}
    if len(scales) != 1:
        why = (f"come from files of different sample types ({', '.join(data.sources)})"
               if scales else "have no recorded source sample type")
        raise ReslabError(f"robustness --raw: the images {why}, so the amounts have no one "
                          "native unit; convert the tree to one format with `reslab convert`, "
                          "or leave out --raw")
    return scales.pop()


def perturbed_batches(lr: LoadedRun, data: ImageSet,
                      encode: Callable[[Tensor], Tensor]) -> Iterator[tuple[Tensor, Tensor]]:
    """The run's own loader over perturbed chunks of one eval batch each, so batches match
    the clean pass and memory stays bounded by one batch of float images."""
    size = lr.cfg.train.eval_batch_size
    for start in range(0, len(data), size):
        # Perturb on the run's device; the loader expects host tensors, so bring them back.
        chunk = encode(data.images[start:start + size].to(lr.device)).cpu()
        yield from lr.loader(ImageSet(chunk, data.labels[start:start + size]))


def through_display(stored: Tensor, fn: Callable[[Tensor], Tensor], fmt: str,
                    scale: float) -> Tensor:
    """Stored values -> display [0,1] -> fn -> stored encoding (and dtype)."""
    display = to_display(stored.float() / scale, fmt).clamp(0.0, 1.0)
    return encode_stored(from_display(on_rgb(fn, display), fmt), stored.dtype, scale)


def raw_stored(stored: Tensor, fn: Callable[[Tensor], Tensor], scale: float) -> Tensor:
    """`fn` on the stored values themselves (in /scale units); uint8 stays uint8, float data
    comes back as float32 (see the module docstring)."""
    dtype = torch.uint8 if stored.dtype == torch.uint8 else torch.float32
    return encode_stored(on_rgb(fn, stored.float() / scale), dtype, scale)


def encode_stored(values: Tensor, dtype: torch.dtype, scale: float) -> Tensor:
    if dtype == torch.uint8:
        return (values * scale).round().clamp(0, 255).to(torch.uint8)
    return (values * scale).to(dtype)


def on_rgb(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """Perturbations are defined on RGB: grey is repeated to 3 channels and averaged back."""
    channels = x.shape[1]
    if channels == 3:
        return fn(x)
    if channels == 1:
        return fn(x.expand(-1, 3, -1, -1).contiguous()).mean(1, keepdim=True)
    raise ReslabError(f"robustness: perturbations need 1- or 3-channel images, got {channels}")


# Raw mode has its own add/rotate steps with perturb.py's amounts: in the source's units, and
# clamped only for integer sources (stored linear values may exceed 1, log values are negative).
def _add(x: Tensor, rgb: tuple[float, float, float], full_scale: float) -> Tensor:
    y = x + torch.tensor([a / full_scale for a in rgb], dtype=x.dtype,
                         device=x.device).view(1, 3, 1, 1)
    return y.clamp(0.0, 1.0) if full_scale > 1.0 else y


def _rotate(x: Tensor, degrees: float = 30) -> Tensor:
    return TF.rotate(x, degrees, interpolation=InterpolationMode.BILINEAR, fill=0.0)


def _chain(*steps: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    def apply(x: Tensor) -> Tensor:
        for step in steps:
            x = step(x)
        return x
    return apply


def raw_seed_fn(name: str, full_scale: float) -> Callable[[Tensor], Tensor]:
    """Seed perturbation `name` on stored values in [0,1]-of-`full_scale` units, its amounts
    in the source's own units (1/full_scale each; see the module docstring)."""
    plus50 = partial(_add, rgb=(50, 50, 50), full_scale=full_scale)
    balance = partial(_add, rgb=(30, 20, 10), full_scale=full_scale)
    return {"intensity_plus50": plus50, "color_balance_b10_g20_r30": balance,
            "rotate30": _rotate, "combined": _chain(plus50, balance, _rotate)}[name]


def raw_units(full_scale: float) -> str:
    """What raw mode adds, in words (robustness.md)."""
    amounts = ("Raw mode: the seed amounts (intensity +50; colour balance R+30, G+20, B+10) are "
               "added to the stored values in the files' own units: ")
    if full_scale == 1.0:
        return amounts + "float files, so +50 on the stored value itself, unclamped."
    bits = {255.0: 8, 65535.0: 16}[full_scale]
    return amounts + (f"{bits}-bit levels, so +50 of {full_scale:.0f} = {50 / full_scale:.5f} "
                      f"of full scale, saturating at 0 and {full_scale:.0f}.")


# ----------------------------------------------------------------------------- outputs
def mean_corruption_accuracy(rows: list[dict]) -> float | None:
    """Mean accuracy over every corruption level (CIFAR-10-C style), None if none ran."""
    accs = [r["accuracy"] for r in rows if r["perturbation"] in SUITES["corruptions"]]
    return sum(accs) / len(accs) if accs else None


def to_markdown(rows: list[dict], info: dict, title: str) -> str:
    mode = "raw stored values" if info["raw"] else "display space"
    units = info.get("units")
    lines = [f"# Robustness: {title}", "",
             f"Suite `{info['suite']}` ({mode}, data format {info['fmt']}) on the "
             f"{info['split']} data, {info['n']} images.", "",
             *([raw_units(units), ""] if units else []),
             f"Clean accuracy: **{rows[0]['accuracy']:.4f}**", "",
             markdown_table(["perturbation", "severity", "accuracy", "drop"],
                            [[r["perturbation"], r["severity"], f"{r['accuracy']:.4f}",
                              f"{r['drop']:.4f}"] for r in rows])]
    mca = mean_corruption_accuracy(rows)
    if mca is not None:
        lines += ["", f"Mean corruption accuracy: **{mca:.4f}** "
                  f"(drop {rows[0]['accuracy'] - mca:.4f})"]
    return "\n".join(lines) + "\n"
