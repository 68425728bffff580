"""Reliability diagram and seed-averaged curves: rendered, non-blank, band drawn."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.collections import PolyCollection
from PIL import Image

from reslab.engine.metrics import classification_metrics
from reslab.report import plots
from reslab.report.plots import plot_mean_curves, plot_reliability


@pytest.fixture
def figures(monkeypatch):
    """Every Figure the plots save, so a test can look at what was drawn."""
    saved = []
    real_save = plots._save

    def keep(fig, out):
        saved.append(fig)
        return real_save(fig, out)

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def _non_blank_png(path) -> None:
    assert path.exists() and path.stat().st_size > 0
    pixels = np.asarray(Image.open(path).convert("L"))
    assert pixels.std() > 5  # a blank (all-white) image has std 0


def _rows(n_epochs: int, level: float, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"epoch": e, "train_loss": 2.0 / e + 0.05 * rng.random(),
             "val_acc": min(1.0, level + 0.03 * e + 0.02 * rng.random())}
            for e in range(1, n_epochs + 1)]


def _bands(fig) -> list[PolyCollection]:
    return [c for ax in fig.axes for c in ax.collections if isinstance(c, PolyCollection)]


def test_reliability_diagram_from_classification_metrics(tmp_path, figures):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (200,), generator=g)
    logits = torch.randn(200, 4, generator=g)
    logits[torch.arange(200), labels] += 1.0
    m = classification_metrics(logits, labels, list("abcd"))
    out = plot_reliability(m["reliability"], tmp_path / "reliability.png", ece=m["ece"])
    assert out == tmp_path / "reliability.png"
    _non_blank_png(out)
    ax = figures[0].axes[0]
    assert ax.get_title() == f"Reliability (ECE {m['ece']:.4f})"
    filled = sum(1 for b in m["reliability"] if b["count"])
    assert len(ax.patches) == 2 * filled  # accuracy bar + gap bar per non-empty bin


def test_reliability_title_recomputes_ece_from_bins(tmp_path, figures):
    bins = [{"confidence": 0.25, "accuracy": 0.5, "count": 2},
            {"confidence": 0.75, "accuracy": 0.75, "count": 2}]  # no lo/hi: 2 equal bins
    plot_reliability(bins, tmp_path / "r.png")
    ax = figures[0].axes[0]
    assert ax.get_title() == "Reliability (ECE 0.1250)"
    assert [p.get_x() for p in ax.patches[:2]] == [0.0, 0.5]


def test_reliability_without_predictions_still_renders(tmp_path):
    empty = [{"lo": i / 15, "hi": (i + 1) / 15, "confidence": None, "accuracy": None,
              "count": 0} for i in range(15)]
    _non_blank_png(plot_reliability(empty, tmp_path / "empty.png"))


def test_mean_curves_draw_a_band_per_group_with_repeats(tmp_path, figures):
    groups = {"resnet20": [_rows(6, 0.5, s) for s in range(3)],
              "vgg": [_rows(6, 0.4, s + 10) for s in range(2)]}
    out = plot_mean_curves(groups, tmp_path / "mean.png")
    _non_blank_png(out)
    fig = figures[0]
    assert len(fig.axes) == 2  # test_acc not logged -> no panel
    assert len(_bands(fig)) == 2 * 2  # two groups x two panels
    assert "95 % t-interval" in fig.get_suptitle()
    assert "hollow" not in fig.get_suptitle()
    mean_line = fig.axes[1].lines[0]
    expected = [np.mean([r[e]["val_acc"] for r in groups["resnet20"]]) for e in range(6)]
    assert mean_line.get_ydata() == pytest.approx(expected)


def test_mean_curves_with_early_stopping_use_epochs_two_runs_reached(tmp_path, figures):
    groups = {"a": [_rows(8, 0.5, 0), _rows(5, 0.5, 1), _rows(3, 0.5, 2)]}
    plot_mean_curves(groups, tmp_path / "early.png", keys=("val_acc",))
    fig = figures[0]
    ax = fig.axes[0]
    mean, markers = ax.lines[0], ax.lines[1]
    assert list(mean.get_xdata()) == [1, 2, 3, 4, 5]  # epochs 6-8: one run only
    assert list(markers.get_xdata()) == [4, 5]  # reached by 2 of the 3 runs
    assert markers.get_markerfacecolor() == "white"
    assert "hollow markers" in fig.get_suptitle()


def test_mean_curves_single_run_has_no_band(tmp_path, figures):
    out = plot_mean_curves({"only": [_rows(4, 0.5, 0)]}, tmp_path / "one.png")
    _non_blank_png(out)
    assert _bands(figures[0]) == []
    assert list(figures[0].axes[0].lines[0].get_xdata()) == [1, 2, 3, 4]


def test_mean_curves_accuracy_band_stays_within_0_and_1(tmp_path, figures):
    runs = [[{"epoch": 1, "val_acc": 0.99}], [{"epoch": 1, "val_acc": 0.6}],
            [{"epoch": 1, "val_acc": 0.98}]]
    runs = [r + [{"epoch": 2, "val_acc": r[0]["val_acc"]}] for r in runs]
    plot_mean_curves({"g": runs}, tmp_path / "clip.png", keys=("val_acc",))
    vertices = _bands(figures[0])[0].get_paths()[0].vertices
    assert vertices[:, 1].max() <= 1.0 and vertices[:, 1].min() >= 0.0


def test_a_single_epoch_is_a_marker_with_half_an_epoch_either_side():
    """One epoch: not a dot on an axis from 0.945 to 1.05, but x = 1 in 0.5..1.5, labelled."""
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    ax.plot([1], [0.3], marker="o")
    plots._widen_single_epoch(ax)
    assert ax.get_xlim() == (0.5, 1.5) and list(ax.get_xticks()) == [1.0]
    assert ax.get_xlabel() == "epoch (one epoch: one point per run)"
    many = Figure().subplots()
    many.plot([1, 2, 3], [0.3, 0.4, 0.5])
    before = many.get_xlim()
    plots._widen_single_epoch(many)
    assert many.get_xlim() == before


def test_a_factor_plot_of_one_variant_has_a_title_not_a_legend(tmp_path, monkeypatch):
    seen = {}
    real = plots._save

    def keep(fig, out):
        ax = fig.axes[0]
        seen.update(title=ax.get_title(), legend=ax.get_legend())
        return real(fig, out)

    monkeypatch.setattr(plots, "_save", keep)
    plots.plot_factor_curves("train.lr", {"w4": [("0.01", 0.5), ("0.1", 0.6)]}, "best_val_acc",
                             tmp_path / "f.png")
    assert seen == {"title": "w4", "legend": None}
