"""Significance between a comparison's entries: which pairs share a test split, and the tests.

Only entries evaluated on the same images are tested against each other: the data keys that
decide the split (`SPLIT_KEYS`) must be equal. `data.root` alone may differ when the final
evaluations saw the same labels in the same order (trees made by `reslab convert` from one
source). Per tested group, `stats.compare_all`: entries with >= 2 seeds -> paired t over common
seeds (Welch's t otherwise); single runs -> McNemar's test on per-image correctness
(`predictions.npz`). Then Holm over every tested pair of the comparison.

The metric is the final evaluation's accuracy: `test_acc` when the group has a test split,
else `val_acc_best_model` (the evaluation on the validation split). best_val_acc is not tested:
it is the maximum over epochs on the split that chose the checkpoint, biased upwards.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from ..config import Config
from ..runs.rundir import RunDir
from ..stats import Comparison, compare_all, holm

SPLIT_KEYS = ("source", "root", "val_fraction", "test_fraction", "split_seed", "max_per_class",
              "folds", "fold")
METRICS = ("test_acc", "val_acc_best_model")


@dataclass
class Trained:
    """A comparison entry's finished runs, by seed (one run: {its seed: run})."""
    name: str
    cfg: Config
    runs: dict[int, RunDir]

    def results(self) -> dict[int, dict]:
        return {seed: run.read_result() for seed, run in self.runs.items()}


def split_differences(a: Config, b: Config) -> list[str]:
    """The data keys deciding the split that differ (val_fraction is unused with folds)."""
    keys = [k for k in SPLIT_KEYS if not (k == "val_fraction" and a.data.folds and b.data.folds)]
    return [k for k in keys if getattr(a.data, k) != getattr(b.data, k)]


def _labels(t: Trained) -> np.ndarray | None:
    run = next(iter(t.runs.values()))
    predictions = run.read_predictions()
    return None if predictions is None else predictions["labels"]


def why_not_shared(a: Trained, b: Trained) -> str | None:
    """None when a and b were evaluated on the same images; else the reason they were not."""
    keys = split_differences(a.cfg, b.cfg)
    if keys == ["root"]:
        la, lb = _labels(a), _labels(b)
        if la is not None and lb is not None and np.array_equal(la, lb):
            return None
        return "data.root differs and the evaluated labels do not match"
    if not keys:
        return None
    return ", ".join(f"data.{k}" for k in keys) + (" differ" if len(keys) > 1 else " differs")


def split_groups(entries: list[Trained]) -> list[list[Trained]]:
    """Entries grouped by the test split they share (first-come order)."""
    groups: list[list[Trained]] = []
    for entry in entries:
        home = next((g for g in groups if why_not_shared(g[0], entry) is None), None)
        if home is None:
            groups.append([entry])
        else:
            home.append(entry)
    return groups


def group_metric(group: list[Trained]) -> str:
    """test_acc when every run has one, else the final evaluation on the validation split."""
    results = [r for t in group for r in t.results().values()]
    return next((m for m in METRICS if all(r.get(m) is not None for r in results)), METRICS[0])


def scores(t: Trained, metric: str) -> dict[int, float]:
    return {seed: float(r[metric]) for seed, r in t.results().items()
            if r.get(metric) is not None}


def correctness(group: list[Trained]) -> dict[str, np.ndarray]:
    """Per-image correctness of each single-run entry's final evaluation, for the entries
    whose predictions.npz lists the same labels in the same order as the group's first such
    entry (McNemar pairs images by position; anything else stays untested)."""
    found: dict[str, np.ndarray] = {}
    reference = None
    for t in (t for t in group if len(t.runs) == 1):
        predictions = next(iter(t.runs.values())).read_predictions()
        if predictions is None:
            continue
        reference = predictions["labels"] if reference is None else reference
        if np.array_equal(predictions["labels"], reference):
            found[t.name] = predictions["pred"] == predictions["labels"]
    return found


def pair_tests(entries: list[Trained]) -> list[tuple[str, Comparison]]:
    """(metric, result) for every pair of entries: tested within a shared split (Holm over all
    tested pairs), and a "not compared" result naming the reason for pairs across splits."""
    results: list[tuple[str, Comparison]] = []
    groups = split_groups(entries)
    for group in groups:
        metric = group_metric(group)
        # An entry without the metric (every run diverged) has nothing to test.
        group_scores = {t.name: s for t in group if (s := scores(t, metric))}
        if len(group_scores) < 2:
            continue
        results += [(metric, r) for r in compare_all(group_scores, correctness(group),
                                                     adjust=False)]
    results += [(group_metric([a]), _not_compared(a, b)) for ga, gb in combinations(groups, 2)
                for a in ga for b in gb]
    adjusted = holm([r for _, r in results])
    return [(metric, r) for (metric, _), r in zip(results, adjusted)]


def _not_compared(a: Trained, b: Trained) -> Comparison:
    return Comparison.apart(a.name, b.name, why_not_shared(a, b) or "", len(a.runs) + len(b.runs))
