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
Applies the *seed* suite to the STORED values, as the original study did: the amounts are
added in stored units (/255), with no display conversion. For uint8 sRGB data this is exactly
display mode (values saturate at 0 and 255). For float (linear/log) data the amount/255 is added
to the stored values directly and nothing is clamped; rotation fills corners with stored 0
(black for linear data, near-white for log data). Corruptions have no raw form: they are
defined in display space and always run there.

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
from ..errors import ReslabError
from ..progress import track
from ..runs.infer import loss_and_accuracy
from ..runs.loaded import LoadedRun, load_run
from . import evaluation_data
from .perturb import SEED_SUITE, SUITES, iter_suite

SUITE_CHOICES = (*SUITES, "all")
Level = tuple[str, int, Callable[[Tensor], Tensor]]


def run_robustness(run_dir: str | Path, data_root: str | Path | None = None,
                   suite: str = "seed", raw: bool = False, seed: int = 0,
                   write: bool = True) -> list[dict]:
    """Rows {perturbation, severity, accuracy, drop}: `clean` first, then one per level.

    Writes robustness.csv, robustness.md and plots/robustness.png into the run when `write`.
    """
    levels = suite_levels(suite, seed)
    lr = load_run(run_dir)
    data, split = evaluation_data(lr, data_root, None)
    fmt = lr.norm.get("fmt") or ("srgb" if lr.norm["scale"] == 255.0 else "linear")
    tta = lr.cfg.train.tta
    # Same call as evaluate_run, so the clean row equals `reslab eval` bit for bit.
    clean = loss_and_accuracy(*lr.predict(lr.loader(data), tta=tta))[1]
    mode = "raw" if raw else "display"
    rows = [{"perturbation": "clean", "severity": 0, "accuracy": clean, "drop": 0.0,
             "mode": mode}]
    for name, severity, fn in track(levels, total=len(levels), description="robustness"):
        encode = level_encoder(name, fn, raw, data.images.dtype, fmt, lr.norm["scale"])
        logits, labels = lr.predict(perturbed_batches(lr, data, encode), tta=tta)
        acc = loss_and_accuracy(logits, labels)[1]
        rows.append({"perturbation": name, "severity": severity, "accuracy": acc,
                     "drop": clean - acc, "mode": mode})
    if write:
        info = {"split": split, "n": len(data), "suite": suite, "raw": raw, "fmt": fmt}
        lr.run.write_robustness(rows, to_markdown(rows, info, lr.run.path.resolve().name))
    return rows


def suite_levels(suite: str, seed: int = 0) -> list[Level]:
    """Validate the suite name up front (before any data is loaded) and list its levels."""
    if suite not in SUITE_CHOICES:
        raise ReslabError(f"--suite {suite!r}: expected one of {', '.join(SUITE_CHOICES)}")
    return list(iter_suite(suite, seed))


# ----------------------------------------------------------------------------- perturbing
def level_encoder(name: str, fn: Callable[[Tensor], Tensor], raw: bool, dtype: torch.dtype,
                  fmt: str, scale: float) -> Callable[[Tensor], Tensor]:
    """stored batch -> perturbed stored batch, for one (perturbation, severity)."""
    if raw and name in SEED_SUITE:
        return partial(raw_stored, fn=raw_seed_fn(name, dtype), scale=scale)
    return partial(through_display, fn=fn, fmt=fmt, scale=scale)


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
    """`fn` on the stored values themselves (in /scale units); see the module docstring."""
    return encode_stored(on_rgb(fn, stored.float() / scale), stored.dtype, scale)


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


# Raw mode on float data must not clamp (stored linear values may exceed 1, log values are
# negative), so it has its own add/rotate steps with perturb.py's amounts.
def _add(x: Tensor, rgb: tuple[float, float, float]) -> Tensor:
    return x + torch.tensor(rgb, dtype=x.dtype, device=x.device).view(1, 3, 1, 1) / 255.0


def _rotate(x: Tensor, degrees: float = 30) -> Tensor:
    return TF.rotate(x, degrees, interpolation=InterpolationMode.BILINEAR, fill=0.0)


def _chain(*steps: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    def apply(x: Tensor) -> Tensor:
        for step in steps:
            x = step(x)
        return x
    return apply


_PLUS50, _BALANCE = partial(_add, rgb=(50, 50, 50)), partial(_add, rgb=(30, 20, 10))
UNCLAMPED_SEED: dict[str, Callable[[Tensor], Tensor]] = {
    "intensity_plus50": _PLUS50,
    "color_balance_b10_g20_r30": _BALANCE,
    "rotate30": _rotate,
    "combined": _chain(_PLUS50, _BALANCE, _rotate),
}


def raw_seed_fn(name: str, dtype: torch.dtype) -> Callable[[Tensor], Tensor]:
    """uint8 values saturate like 8-bit arithmetic: perturb.py's clamped functions are exact."""
    return SEED_SUITE[name] if dtype == torch.uint8 else UNCLAMPED_SEED[name]


# ----------------------------------------------------------------------------- outputs
def mean_corruption_accuracy(rows: list[dict]) -> float | None:
    """Mean accuracy over every corruption level (CIFAR-10-C style), None if none ran."""
    accs = [r["accuracy"] for r in rows if r["perturbation"] in SUITES["corruptions"]]
    return sum(accs) / len(accs) if accs else None


def to_markdown(rows: list[dict], info: dict, title: str) -> str:
    mode = "raw stored values" if info["raw"] else "display space"
    lines = [f"# Robustness: {title}", "",
             f"Suite `{info['suite']}` ({mode}, data format {info['fmt']}) on the "
             f"{info['split']} data, {info['n']} images.", "",
             f"Clean accuracy: **{rows[0]['accuracy']:.4f}**", "",
             "| perturbation | severity | accuracy | drop |", "|---|---:|---:|---:|"]
    lines += [f"| {r['perturbation']} | {r['severity']} | {r['accuracy']:.4f} | {r['drop']:.4f} |"
              for r in rows]
    mca = mean_corruption_accuracy(rows)
    if mca is not None:
        lines += ["", f"Mean corruption accuracy: **{mca:.4f}** "
                  f"(drop {rows[0]['accuracy'] - mca:.4f})"]
    return "\n".join(lines) + "\n"
