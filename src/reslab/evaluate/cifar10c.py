"""The official corruption benchmark: a run evaluated on the released CIFAR-10-C arrays.

Layout (Hendrycks & Dietterich, ICLR 2019, as released on Zenodo): a folder with
`labels.npy` and one `<corruption>.npy` per corruption, each (5 * n, 32, 32, 3) uint8: the
same n test images at severity 1 (rows 0..n-1), then severity 2, ... 5 (n = 10,000 in the
release); `labels.npy` holds the n labels once per severity (5 * n). The 15 benchmark
corruptions and the 4 extra ones (speckle_noise, gaussian_blur, spatter, saturate) are read
when present; at least one must be.

Scores, per corruption c and severity s: accuracy and error E(s,c) = 1 - accuracy.
Corruption error CE(c) = sum_s E(s,c) / sum_s E_baseline(s,c) with `--baseline RUN` (the
paper's normalisation, by AlexNet there), else unnormalised CE(c) = mean_s E(s,c).
mCE = mean of CE(c) over the 15 benchmark corruptions present (the extra 4 are reported but,
as in the paper, left out of the mean).

Images go through the run exactly as its test split does (its normaliser, eval batches and
`train.tta`), so they must have the run's channels and size; labels index the run's classes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data import ImageSet
from ..engine.infer import loss_and_accuracy
from ..errors import ReslabError
from ..formatting import markdown_table
from ..progress import track
from .loaded import LoadedRun, load_run

BENCHMARK = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
             "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
             "elastic_transform", "pixelate", "jpeg_compression")
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CORRUPTIONS = BENCHMARK + EXTRA
SEVERITIES = 5


def read_labels(folder: Path) -> np.ndarray:
    path = folder / "labels.npy"
    if not folder.is_dir():
        raise ReslabError(f"--cifar10c {folder}: not a folder (expected labels.npy and "
                          "<corruption>.npy files)")
    if not path.is_file():
        raise ReslabError(f"--cifar10c {folder}: no labels.npy")
    labels = np.load(path, mmap_mode="r")
    if labels.ndim != 1 or len(labels) % SEVERITIES or not len(labels):
        raise ReslabError(f"{path}: shape {labels.shape}; expected ({SEVERITIES} * n,) labels")
    # (5, n): the release repeats the n test labels once per severity; each severity is
    # scored against its own block all the same, so a file whose blocks differ is scored right.
    return np.array(labels, dtype=np.int64).reshape(SEVERITIES, -1)  # a copy: writable


def present_corruptions(folder: Path) -> list[str]:
    found = [c for c in CORRUPTIONS if (folder / f"{c}.npy").is_file()]
    if not found:
        raise ReslabError(f"--cifar10c {folder}: no corruption arrays (expected e.g. "
                          f"{BENCHMARK[0]}.npy; names: {', '.join(CORRUPTIONS)})")
    return found


def read_corruption(folder: Path, name: str, n: int) -> np.ndarray:
    """(5, n, C, H, W) uint8 of one corruption, memory-mapped (the release's files are 150 MB)."""
    path = folder / f"{name}.npy"
    arr = np.load(path, mmap_mode="r")
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[0] != SEVERITIES * n \
            or arr.shape[-1] not in (1, 3):
        raise ReslabError(f"{path}: {arr.dtype} {arr.shape}; expected uint8 "
                          f"({SEVERITIES * n}, H, W, 3) like labels.npy's {SEVERITIES * n} rows")
    return arr.reshape(SEVERITIES, n, *arr.shape[1:])


def evaluate_cifar10c(lr: LoadedRun, folder: Path) -> list[dict]:
    """Rows {corruption, severity, accuracy, error} of a loaded run on the arrays in `folder`."""
    labels = read_labels(folder)
    if labels.min() < 0 or labels.max() >= len(lr.classes):
        raise ReslabError(f"{folder / 'labels.npy'}: labels {labels.min()}..{labels.max()}; "
                          f"the run has {len(lr.classes)} classes")
    names = present_corruptions(folder)
    arrays = {name: read_corruption(folder, name, labels.shape[1]) for name in names}
    rows = []
    levels = [(name, s) for name in names for s in range(1, SEVERITIES + 1)]
    for name, severity in track(levels, total=len(levels), description="CIFAR-10-C"):
        images = torch.from_numpy(np.ascontiguousarray(
            arrays[name][severity - 1].transpose(0, 3, 1, 2)))
        check_shape(lr, images, folder / f"{name}.npy")
        data = ImageSet(images, torch.from_numpy(labels[severity - 1]))
        acc = loss_and_accuracy(*lr.predict(lr.loader(data), tta=lr.cfg.train.tta))[1]
        rows.append({"corruption": name, "severity": severity, "accuracy": acc,
                     "error": 1.0 - acc})
    return rows


def check_shape(lr: LoadedRun, images: torch.Tensor, path: Path) -> None:
    expected = lr.cfg.data.image_size or lr.cfg.data.center_crop
    if images.shape[1] != lr.in_chans or (expected and images.shape[-1] != expected):
        raise ReslabError(f"{path}: images {tuple(images.shape[1:])} (C, H, W); the run takes "
                          f"{lr.in_chans} channel(s)" + (f" at {expected}x{expected}"
                                                         if expected else ""))


def corruption_errors(rows: list[dict], baseline: list[dict] | None = None
                      ) -> dict[str, float]:
    """CE per corruption: sum of errors over severities relative to the baseline's, or the
    mean error over severities without a baseline."""
    out = {}
    for name in dict.fromkeys(r["corruption"] for r in rows):
        errors = [r["error"] for r in rows if r["corruption"] == name]
        if baseline is None:
            out[name] = sum(errors) / len(errors)
            continue
        base = [r["error"] for r in baseline if r["corruption"] == name]
        if not base or sum(base) == 0:
            raise ReslabError(f"--baseline: no error on {name} to normalise by (its accuracy "
                              "is 1.0 at every severity, or it was not evaluated)")
        out[name] = sum(errors) / sum(base)
    return out


def mean_corruption_error(errors: dict[str, float]) -> float | None:
    """mCE: the mean CE over the benchmark's 15 corruptions present (None if none is)."""
    values = [v for k, v in errors.items() if k in BENCHMARK]
    return sum(values) / len(values) if values else None


def run_cifar10c(run_dir: str | Path, folder: str | Path,
                 baseline_dir: str | Path | None = None) -> tuple[list[dict], dict]:
    """Evaluate a run (and the baseline run on the same arrays) and write RUN/cifar10c.csv
    and cifar10c.md; -> (rows, {ce, mce, baseline}). The baseline's directory is not written."""
    folder = Path(folder)
    lr = load_run(run_dir)
    base_lr = load_run(baseline_dir) if baseline_dir is not None else None  # errors first
    rows = evaluate_cifar10c(lr, folder)
    baseline = evaluate_cifar10c(base_lr, folder) if base_lr is not None else None
    summary = summary_of(rows, baseline, baseline_dir)
    lr.run.write_cifar10c(rows, to_markdown(rows, summary, lr.run.path.resolve().name))
    return rows, summary


def summary_of(rows: list[dict], baseline: list[dict] | None,
               baseline_dir: str | Path | None = None) -> dict:
    ce = corruption_errors(rows, baseline)
    return {"ce": ce, "mce": mean_corruption_error(ce),
            "baseline": str(baseline_dir) if baseline_dir else None}


def to_markdown(rows: list[dict], summary: dict, title: str) -> str:
    normalised = summary["baseline"] is not None
    how = (f"relative to the baseline run {summary['baseline']} (sum of errors over severities "
           "/ the baseline's)" if normalised else "unnormalised (mean error over severities)")
    header = ["corruption", *(f"s{s}" for s in range(1, SEVERITIES + 1)), "CE"]
    table = [[name + (" (extra)" if name in EXTRA else ""),
              *(f"{r['accuracy']:.4f}" for r in rows if r["corruption"] == name), f"{ce:.4f}"]
             for name, ce in summary["ce"].items()]
    lines = [f"# CIFAR-10-C: {title}", "", f"Accuracy per corruption and severity; CE {how}.",
             "", markdown_table(header, table)]
    if summary["mce"] is not None:
        lines += ["", f"mCE over the benchmark corruptions present: **{summary['mce']:.4f}**"]
    return "\n".join(lines) + "\n"
