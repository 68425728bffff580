"""Report plots. Each function renders one PNG, writes it atomically and returns its path.

Figures are built with `matplotlib.figure.Figure` (Agg canvas) instead of pyplot: no global
figure registry, no GUI backend selection, safe to call from worker threads and headless CI.
"""
from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..stats import summarize
from ..utils import atomic_write_bytes

DPI = 110
LEGEND_MAX = 12  # more lines than this and a legend hides the plot; colour alone must do

_STYLE = {
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linestyle": "-",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 12,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "font.family": "DejaVu Sans",
}

_LABELS = {
    "train_loss": "train loss", "val_loss": "val loss", "test_loss": "test loss",
    "train_acc": "train accuracy", "val_acc": "val accuracy", "test_acc": "test accuracy",
    "lr": "learning rate", "seconds": "seconds / epoch",
}
_SPLIT_COLORS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}


def styled():
    """The report plots' style, for figures drawn by other libraries (Optuna's)."""
    return matplotlib.rc_context(_STYLE)


def save_figure(fig: Figure, out: Path) -> Path:
    """Save a figure drawn elsewhere the way this module saves its own."""
    with styled():
        return _save(fig, out)


@contextmanager
def _figure(out: Path, width: float, height: float) -> Iterator[Figure]:
    """A styled figure saved to `out` on exit. Saving happens inside the rc context because
    ticks are created lazily at draw time and read their style from rcParams then."""
    with matplotlib.rc_context(_STYLE):
        fig = Figure(figsize=(width, height), layout="constrained")
        yield fig
        _save(fig, out)


def _save(fig: Figure, out: Path) -> Path:
    out = Path(out)
    buf = io.BytesIO()
    # Software metadata would embed matplotlib's URL in the PNG; reports must carry no URLs.
    # bbox_inches="tight" as a backstop: constrained layout under-sizes margins for long tick
    # labels beside fixed-aspect heatmaps and would clip them.
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white", bbox_inches="tight",
                pad_inches=0.12, metadata={"Software": None})
    atomic_write_bytes(out, buf.getvalue())
    return out


def _series(rows: Sequence[Mapping], key: str) -> tuple[list[float], list[float]]:
    """(epochs, values) for rows that carry a numeric `key`; missing/null entries are gaps."""
    xs, ys = [], []
    for i, row in enumerate(rows):
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            xs.append(row.get("epoch", i + 1))
            ys.append(float(value))
    return xs, ys


def _has(rows: Sequence[Mapping], key: str) -> bool:
    return bool(_series(rows, key)[0])


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.5")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_learning_curves(rows: list[dict], out: Path) -> Path:
    """Loss and accuracy vs epoch for train/val (and test when logged) from metrics.jsonl."""
    with _figure(out, 11, 4.2) as fig:
        axes = fig.subplots(1, 2)
        for ax, metric, title in ((axes[0], "loss", "Loss"), (axes[1], "acc", "Accuracy")):
            drawn = False
            for split, color in _SPLIT_COLORS.items():
                xs, ys = _series(rows, f"{split}_{metric}")
                if xs:
                    ax.plot(xs, ys, color=color, label=split, marker="o" if len(xs) <= 30 else None,
                            markersize=3.5, linewidth=1.8)
                    drawn = True
            _mark_best(ax, rows, metric)
            ax.set_title(title)
            ax.set_xlabel("epoch")
            ax.set_ylabel(title.lower())
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            _widen_single_epoch(ax)
            if drawn:
                ax.legend()
            else:
                _empty(ax, f"no {title.lower()} logged")
    return Path(out)


def _mark_best(ax, rows: Sequence[Mapping], metric: str) -> None:
    """Highlight the epoch a checkpoint would be chosen from (best val accuracy)."""
    if metric != "acc":
        return
    xs, ys = _series(rows, "val_acc")
    if xs:
        i = int(np.argmax(ys))
        ax.axvline(xs[i], color="0.6", linestyle=":", linewidth=1)
        # Label on the side with room: a best epoch at the right edge would clip the text.
        left = i >= len(xs) / 2
        ax.annotate(f"best {ys[i]:.4f}", (xs[i], ys[i]), textcoords="offset points",
                    xytext=(-6 if left else 6, -14), ha="right" if left else "left",
                    fontsize=8, color="0.3",
                    bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85})


def plot_overlaid_curves(runs: dict[str, list[dict]], out: Path,
                         keys: Sequence[str] = ("train_loss", "val_acc", "test_acc")) -> Path:
    """One panel per key that any run logged, one line per run (comparisons and sweeps)."""
    present = [k for k in keys if any(_has(rows, k) for rows in runs.values())] or list(keys[:1])
    legend = len(runs) <= LEGEND_MAX
    legend_rows = math.ceil(len(runs) / 4) if legend else 0
    with _figure(out, 3.9 * len(present) + 0.6, 3.7 + 0.25 * legend_rows) as fig:
        axes = np.atleast_1d(fig.subplots(1, len(present)))
        colors = _run_colors(len(runs))
        for ax, key in zip(axes, present):
            for color, (name, rows) in zip(colors, runs.items()):
                xs, ys = _series(rows, key)
                if xs:
                    ax.plot(xs, ys, color=color, label=name, linewidth=1.6, alpha=0.9,
                            marker="o" if len(xs) <= 30 else None, markersize=3)
            _label_epoch_axes(ax, key)
        handles, labels = axes[0].get_legend_handles_labels()
        if handles and legend:
            fig.legend(handles, labels, loc="outside lower center", ncol=min(len(runs), 4))
        elif handles:
            fig.suptitle(f"{len(runs)} runs", fontsize=10, color="0.35")
    return Path(out)


def _run_colors(n: int) -> list:
    if n <= 10:
        return [f"C{i}" for i in range(n)]
    cmap = matplotlib.colormaps["viridis"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def plot_confusion(matrix: np.ndarray, classes: list[str], out: Path) -> Path:
    """Heatmap coloured by row-normalised rate (recall), annotated with raw counts."""
    counts = np.asarray(matrix, dtype=float)
    n = len(classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.nan_to_num(counts / counts.sum(axis=1, keepdims=True))
    side = min(max(4.5, 0.5 * n + 2.5), 12)
    with _figure(out, side + 1.2, side) as fig:
        ax = fig.subplots()
        image = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, label="fraction of true class")
        ax.grid(False)
        ax.set_title("Confusion matrix")
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if n <= 60:  # beyond that the labels overlap into a black smear
            ax.set_xticks(range(n), classes, rotation=45, ha="right", rotation_mode="anchor")
            ax.set_yticks(range(n), classes)
        if n <= 20:
            _annotate_counts(ax, counts, norm)
    return Path(out)


def _annotate_counts(ax, counts: np.ndarray, norm: np.ndarray) -> None:
    size = 9 if counts.shape[0] <= 12 else 7
    for (i, j), value in np.ndenumerate(counts):
        color = "white" if norm[i, j] > 0.55 else "#1f2933"
        ax.text(j, i, f"{int(value)}", ha="center", va="center", fontsize=size, color=color)


def plot_per_class(acc: dict[str, float], out: Path) -> Path:
    """Horizontal bars, classes top to bottom in label order, value printed at each bar."""
    names = list(acc)
    values = [float(acc[n]) for n in names]
    with _figure(out, 7.5, min(max(2.2, 0.32 * len(names) + 1.2), 22)) as fig:
        ax = fig.subplots()
        ax.barh(range(len(names)), values, color="#4c78a8", height=0.7)
        ax.set_yticks(range(len(names)), names, fontsize=9 if len(names) <= 40 else 6)
        ax.set_ylim(len(names) - 0.5, -0.5)  # first class on top, no empty margin rows
        ax.set_xlim(0, 1.12)
        ax.set_xlabel("accuracy")
        ax.set_title("Per-class accuracy")
        ax.grid(axis="y", visible=False)
        if len(names) <= 40:
            for i, value in enumerate(values):
                text = "n/a" if math.isnan(value) else f"{value:.3f}"
                ax.text(0 if math.isnan(value) else value, i, f" {text}", va="center", fontsize=8)
    return Path(out)


def plot_misclassified(images: np.ndarray, true: list[str], pred: list[str],
                       confidence: np.ndarray, out: Path) -> Path:
    """Grid of misclassified images, each titled 'true → pred (confidence)'."""
    images = np.asarray(images)
    n = len(images)
    cols = max(1, min(6, n))  # 6 tiles of 1.8 in fit the report column without shrinking titles
    rows = max(1, math.ceil(n / cols))
    with _figure(out, 1.8 * cols, 1.95 * rows) as fig:
        axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
        longest = max((len(f"{t} → {p} (0.00)") for t, p in zip(true, pred)), default=10)
        fontsize = max(5.5, min(8.5, 8.5 * 22 / longest))  # keep long class names inside the tile
        for i, ax in enumerate(axes):
            ax.axis("off")
            if i < n:
                _show(ax, images[i])
                ax.set_title(f"{true[i]} → {pred[i]} ({float(confidence[i]):.2f})",
                             fontsize=fontsize, color="#b42318", fontweight="normal")
        if n == 0:
            _empty(axes[0], "no misclassified images")
    return Path(out)


def _show(ax, image: np.ndarray) -> None:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")


def plot_robustness(rows: list[dict], out: Path) -> Path:
    """Mean accuracy per perturbation (over severities), clean accuracy as a reference line."""
    by_name: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        by_name[str(row["perturbation"])].append(float(row["accuracy"]))
    clean = by_name.pop("clean", None)
    names = list(by_name)
    means = [float(np.mean(by_name[n])) for n in names]
    with _figure(out, max(6.0, 0.75 * len(names) + 2.5), 4.4) as fig:
        ax = fig.subplots()
        bars = ax.bar(range(len(names)), means, color="#4c78a8", width=0.65, label="perturbed")
        ax.bar_label(bars, labels=[f"{m:.3f}" for m in means], fontsize=8, padding=2)
        if clean:
            ax.axhline(float(np.mean(clean)), color="#d62728", linestyle="--", linewidth=1.5,
                       label=f"clean {np.mean(clean):.4f}")
            ax.legend(loc="upper right", ncol=2)  # headroom above 1.0 keeps it off the bars
        ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 4 else 0,
                      ha="right" if len(names) > 4 else "center")
        ax.set_ylim(0, 1.2)
        ax.set_yticks(np.linspace(0, 1, 6))
        ax.set_ylabel("accuracy (mean over severities)")
        ax.set_title("Robustness to perturbations")
        ax.grid(axis="x", visible=False)
    return Path(out)


def plot_reliability(reliability_bins: Sequence[Mapping], out: Path,
                     ece: float | None = None) -> Path:
    """Reliability diagram: accuracy per confidence bin as bars, the gap up (or down) to the
    bin's mean confidence hatched, and the diagonal of perfect calibration. Bins are
    `classification_metrics(...)["reliability"]` entries ({lo, hi, confidence, accuracy,
    count}; without lo/hi, equal-width bins by position); pass its `ece` to title the figure
    with the reported number (else it is recomputed from the bins)."""
    n = len(reliability_bins)
    filled = [(i, b) for i, b in enumerate(reliability_bins) if b.get("count")]
    ece = _ece_from_bins([b for _, b in filled]) if ece is None else ece
    with _figure(out, 5.4, 5.2) as fig:
        ax = fig.subplots()
        ax.plot([0, 1], [0, 1], linestyle="--", color="0.45", linewidth=1.2,
                label="perfect calibration")
        if filled:
            lefts = [float(b.get("lo", i / n)) for i, b in filled]
            widths = [float(b.get("hi", (i + 1) / n)) - x for (i, b), x in zip(filled, lefts)]
            accuracy = [float(b["accuracy"]) for _, b in filled]
            gap = [float(b["confidence"]) - a for (_, b), a in zip(filled, accuracy)]
            ax.bar(lefts, accuracy, width=widths, align="edge", color="#4c78a8",
                   edgecolor="white", label="accuracy")
            ax.bar(lefts, gap, bottom=accuracy, width=widths, align="edge", color="#d62728",
                   alpha=0.25, hatch="//", edgecolor="#d62728", label="gap to confidence")
            ax.legend(loc="upper left")
        else:
            _empty(ax, "no predictions")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title("Reliability" + (f" (ECE {ece:.4f})" if ece is not None else ""))
    return Path(out)


def _ece_from_bins(bins: Sequence[Mapping]) -> float | None:
    total = sum(int(b["count"]) for b in bins)
    if not total:
        return None
    return sum(int(b["count"]) * abs(float(b["accuracy"]) - float(b["confidence"]))
               for b in bins) / total


def plot_mean_curves(groups: Mapping[str, Sequence[Sequence[Mapping]]], out: Path,
                     keys: Sequence[str] = ("train_loss", "val_acc", "test_acc")) -> Path:
    """Seed-averaged learning curves: one panel per logged key, per group (a comparison entry
    with several seed runs' metrics rows) the mean per epoch and a shaded 95 % Student-t
    interval of that mean (`stats.summarize`). Runs of different lengths (early stopping):
    only epochs at least 2 runs reached are drawn, and hollow markers flag epochs that some
    runs did not reach. A group with one run is drawn as its plain curve, without a band."""
    present = [k for k in keys
               if any(_has(rows, k) for runs in groups.values() for rows in runs)] or [keys[0]]
    legend = len(groups) <= LEGEND_MAX
    with _figure(out, 3.9 * len(present) + 0.6, 4.0 + 0.25 * math.ceil(len(groups) / 4)) as fig:
        axes = np.atleast_1d(fig.subplots(1, len(present)))
        partial = False
        for ax, key in zip(axes, present):
            for color, (name, runs) in zip(_run_colors(len(groups)), groups.items()):
                partial |= _draw_mean(ax, runs, key, color, f"{name} (n={len(runs)})")
            _label_epoch_axes(ax, key)
        handles, labels = axes[0].get_legend_handles_labels()
        if handles and legend:
            fig.legend(handles, labels, loc="outside lower center", ncol=min(len(groups), 4))
        caption = "line: mean over seeds; band: 95 % t-interval of the mean"
        if partial:
            caption += "; hollow markers: epochs some runs did not reach (early stopping)"
        fig.suptitle(caption, fontsize=9, color="0.35", fontweight="normal")
    return Path(out)


def _label_epoch_axes(ax, key: str) -> None:
    ax.set_title(_LABELS.get(key, key))
    ax.set_xlabel("epoch")
    ax.set_ylabel(_LABELS.get(key, key))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _widen_single_epoch(ax)
    if not ax.lines:
        _empty(ax, "not logged")


def _widen_single_epoch(ax) -> None:
    """A run of one epoch is a marker at x = 1: give it half an epoch either side (matplotlib
    would zoom to 0.945-1.05) and label it, so the plot reads as one epoch, not as a bug."""
    xs = {float(x) for line in ax.lines for x in np.atleast_1d(line.get_xdata())}
    if len(xs) == 1:
        x = xs.pop()
        ax.set_xlim(x - 0.5, x + 0.5)
        ax.set_xticks([x])
        ax.set_xlabel(f"epoch (one epoch: one point per {'curve' if len(ax.lines) > 1 else 'run'})")


def _draw_mean(ax, runs: Sequence[Sequence[Mapping]], key: str, color, label: str) -> bool:
    """Mean line (+ band with >= 2 runs) of one group; True if some epoch lacks some run."""
    per_epoch: dict[int, list[float]] = defaultdict(list)
    for rows in runs:
        for epoch, value in zip(*_series(rows, key)):
            per_epoch[epoch].append(value)
    total = sum(1 for rows in runs if _has(rows, key))
    need = min(total, 2)
    epochs = sorted(e for e, values in per_epoch.items() if need and len(values) >= need)
    if not epochs:
        return False
    summaries = [summarize(per_epoch[e]) for e in epochs]
    means = [s["mean"] for s in summaries]
    # Markers for short runs: a one-epoch curve is a single point, invisible as a line.
    ax.plot(epochs, means, color=color, label=label, linewidth=1.8,
            marker="o" if len(epochs) <= 30 else None, markersize=3)
    if total >= 2:
        # An accuracy's interval is clipped to [0, 1]: the t-interval of 2-3 seeds is wide.
        lo, hi = (0.0, 1.0) if key.endswith("_acc") else (-np.inf, np.inf)
        ax.fill_between(epochs, np.clip([s["ci95_low"] for s in summaries], lo, hi),
                        np.clip([s["ci95_high"] for s in summaries], lo, hi),
                        color=color, alpha=0.18, linewidth=0)
    short = [i for i, e in enumerate(epochs) if len(per_epoch[e]) < total]
    if short:
        ax.plot([epochs[i] for i in short], [means[i] for i in short], linestyle="none",
                marker="o", markersize=4.5, markerfacecolor="white", markeredgecolor=color)
    return bool(short)


def plot_lr_find(finding: Mapping, out: Path) -> Path:
    """The LR range test: per-step loss (faint) and its smoothed curve vs LR on a log axis,
    the suggested LR marked (and the minimum and steepest points it was read from).
    `finding` is lr_find.json's content: lrs, losses, smoothed (null: not finite), *_lr."""
    lrs = np.asarray(finding["lrs"], dtype=float)
    raw = np.asarray([np.nan if v is None else v for v in finding["losses"]], dtype=float)
    smooth = np.asarray([np.nan if v is None else v for v in finding["smoothed"]], dtype=float)
    with _figure(out, 7.5, 4.4) as fig:
        ax = fig.subplots()
        ax.set_xscale("log")
        ax.plot(lrs, raw, color="#1f77b4", alpha=0.25, linewidth=1, label="loss per step")
        ax.plot(lrs, smooth, color="#1f77b4", linewidth=2, label="smoothed loss")
        _mark_lr(ax, finding.get("min_loss_lr"), lrs, smooth, "o", "minimum")
        _mark_lr(ax, finding.get("steepest_lr"), lrs, smooth, "v", "steepest")
        suggested = finding.get("suggested_lr")
        if suggested:
            ax.axvline(suggested, color="#d62728", linestyle="--", linewidth=1.5,
                       label=f"suggested {suggested:.3g}")
        _loss_limits(ax, raw, smooth)
        ax.set_xlabel("learning rate (log scale)")
        ax.set_ylabel("training loss")
        stopped = " (stopped: diverged)" if finding.get("stop_reason") == "diverged" else ""
        ax.set_title(f"LR range test{stopped}")
        ax.legend(loc="upper left")
    return Path(out)


def _mark_lr(ax, lr: float | None, lrs: np.ndarray, smooth: np.ndarray, marker: str,
             label: str) -> None:
    if not lr:
        return
    i = int(np.argmin(np.abs(np.log(lrs) - math.log(lr))))
    ax.plot([lrs[i]], [smooth[i]], marker=marker, color="#d62728", markersize=7,
            linestyle="none", label=f"{label} {lrs[i]:.3g}")


def _loss_limits(ax, raw: np.ndarray, smooth: np.ndarray) -> None:
    """Clip the diverged tail, which would squash the useful part of the curve flat."""
    finite = np.concatenate([raw[np.isfinite(raw)], smooth[np.isfinite(smooth)]])
    if not len(finite):
        _empty(ax, "no finite loss recorded")
        return
    first = smooth[np.isfinite(smooth)]
    low = float(finite.min())
    start = float(first[0]) if len(first) else low
    high = min(float(np.percentile(finite, 95)), low + 3 * max(start - low, 0.05 * abs(low)))
    high = max(high, start)
    pad = 0.05 * max(high - low, 1e-3)
    ax.set_ylim(low - pad, high + pad)


def plot_factor_curves(factor: str, series: Mapping[str, Sequence[tuple[str, float]]],
                       metric: str, out: Path) -> Path:
    """One line per variant: the mean objective at each value of one swept factor. Numeric
    values on a numeric axis (logarithmic when they span 20x or more), others as categories
    in the order given."""
    values = [v for points in series.values() for v, _ in points]
    numeric = all(_as_float(v) is not None for v in values)
    categories = list(dict.fromkeys(values))
    with _figure(out, 5.2, 3.9) as fig:
        ax = fig.subplots()
        for color, (name, points) in zip(_run_colors(len(series)), series.items()):
            xs = [_as_float(v) if numeric else categories.index(v) for v, _ in points]
            order = np.argsort(xs)
            ax.plot(np.array(xs)[order], np.array([y for _, y in points])[order], color=color,
                    label=name, marker="o", markersize=4, linewidth=1.6)
        positive = [x for x in map(_as_float, values) if x is not None and x > 0]
        if numeric and positive and len(positive) == len(values) and \
                max(positive) >= 20 * min(positive):
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(range(len(categories)), categories)
        ax.set_xlabel(factor)
        ax.set_ylabel(_LABELS.get(metric, metric))
        if len(series) == 1:  # one line needs no legend: its name is the title
            ax.set_title(next(iter(series)), fontsize=10)
        elif ax.lines and len(series) <= LEGEND_MAX:
            ax.legend(fontsize=8)
    return Path(out)


def _as_float(value: str) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None
