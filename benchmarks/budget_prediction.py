"""Predicted held-out accuracy of a recipe at a wall-clock budget on a machine, from the two
measurements that separate what depends on the hardware from what does not:

  the epoch curve   acc(E): held-out accuracy at the end of a one-cycle schedule of E epochs
                    (epoch_curves.py; the mean over the seeds measured at each E),
  the throughput    img/s(M): images per second of training epochs (validations included) on
                    machine / CPU setting M (throughput.py).

    E(B, M) = (B - overhead) x img/s(M) / N_train
    predicted acc(B, M) = acc(E(B, M)), linear in E between the two measured E around it.

Outside the measured E the curve is not extrapolated: `predict` refuses (OutsideCurve, naming
the measured range) unless `clamp=True`, which returns the nearest end point's accuracy (an
over-estimate below the first E, an under-estimate above the last). `overhead` is what a run
spends outside its epochs: start-up, the final evaluation with TTA, compilation.

    python benchmarks/budget_prediction.py --budgets 10m,30m     # tables from results/
"""
from __future__ import annotations

import argparse
import bisect
import statistics
import sys
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from reslab.config import parse_duration

RESULTS = Path(__file__).resolve().parent / "results"


class OutsideCurve(ValueError):
    """The epochs a budget buys lie outside the measured E: no prediction without clamping."""


def epochs_in_budget(budget_s: float, img_s: float, n_train: int, overhead_s: float = 0.0
                     ) -> float:
    """E = (B - overhead) x img/s / N: the epochs a budget fits (0 when the overhead eats it)."""
    return max(0.0, budget_s - overhead_s) * img_s / n_train


def interpolate(curve: Mapping[float, float], epochs: float, clamp: bool = False) -> float:
    """acc at `epochs`: linear between the neighbouring measured E; outside them OutsideCurve,
    or with `clamp` the nearest end point's value."""
    if not curve:
        raise OutsideCurve("no measured points")
    xs = sorted(curve)
    if epochs < xs[0] or epochs > xs[-1]:
        if clamp:
            return curve[xs[0]] if epochs < xs[0] else curve[xs[-1]]
        raise OutsideCurve(f"E = {epochs:.2f} is outside the measured {xs[0]:g}..{xs[-1]:g}")
    i = bisect.bisect_left(xs, epochs)
    if xs[i] == epochs:
        return curve[xs[i]]
    lo, hi = xs[i - 1], xs[i]
    return curve[lo] + (curve[hi] - curve[lo]) * (epochs - lo) / (hi - lo)


def predict(curve: Mapping[float, float], budget_s: float, img_s: float, n_train: int,
            overhead_s: float = 0.0, clamp: bool = False) -> float:
    """Predicted held-out accuracy at budget B on a machine of `img_s` images/s."""
    return interpolate(curve, epochs_in_budget(budget_s, img_s, n_train, overhead_s), clamp)


def curves(rows: list[dict], subset: str = "full") -> dict[str, dict[int, float]]:
    """epoch_curves.py rows -> {candidate: {E: mean held-out acc over its seeds}}."""
    accs: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get("subset") == subset and r.get("heldout_acc") is not None:
            accs[r["candidate"]][r["epochs"]].append(r["heldout_acc"])
    return {c: {e: statistics.fmean(v) for e, v in sorted(by_e.items())}
            for c, by_e in accs.items()}


def seed_spread(rows: list[dict], candidate: str, epochs: int, subset: str = "full"
                ) -> float | None:
    """max - min held-out accuracy over the seeds at (candidate, E); None under 2 seeds."""
    accs = [r["heldout_acc"] for r in rows if (r["candidate"], r["epochs"], r.get("subset"))
            == (candidate, epochs, subset) and r.get("heldout_acc") is not None]
    return max(accs) - min(accs) if len(accs) >= 2 else None


def throughputs(rows: list[dict]) -> dict[str, dict[str, float]]:
    """throughput.py rows -> {setting: {candidate: img/s}} (the latest row of each wins)."""
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for r in sorted(rows, key=lambda r: r.get("date", "")):
        out[f"{r['isa']} ({r['machine_class']})"][r["candidate"]] = r["img_s"]
    return dict(out)


def kept(rows: list[dict], candidate: str, epochs: int, subset: str = "full",
         spread_at: int = 8) -> bool | None:
    """The issue's rule: a candidate is kept at E where its curve is above the baseline's by
    more than the baseline's seed spread at E = `spread_at`; None while either is unmeasured."""
    by_candidate, spread = curves(rows, subset), seed_spread(rows, "baseline", spread_at, subset)
    mine = by_candidate.get(candidate, {}).get(epochs)
    base = by_candidate.get("baseline", {}).get(epochs)
    if None in (mine, base, spread):
        return None
    return mine - base > spread


def curve_table(rows: list[dict], subset: str = "full") -> str:
    """Markdown: candidate x E, mean held-out accuracy (the seeds' range where 2+); a `*`
    marks a cell kept by `kept` (above the baseline by more than its E = 8 spread)."""
    by_candidate = curves(rows, subset)
    es = sorted({e for c in by_candidate.values() for e in c})
    lines = ["| candidate | " + " | ".join(f"E {e}" for e in es) + " |", "|---" * (1 + len(es))
             + "|"]
    for name, curve in by_candidate.items():
        cells = [name]
        for e in es:
            accs = sorted(r["heldout_acc"] for r in rows if (r["candidate"], r["epochs"],
                          r.get("subset")) == (name, e, subset) and r.get("heldout_acc")
                          is not None)
            if not accs:
                cells.append("")
                continue
            spread = f" ({accs[0]:.4f}..{accs[-1]:.4f})" if len(accs) > 1 else ""
            cells.append(f"{curve[e]:.4f}{spread}{'*' if kept(rows, name, e, subset) else ''}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def prediction_table(curve_rows: list[dict], speed_rows: list[dict], budget_s: float,
                     n_train: int, overhead_s: float = 0.0, subset: str = "full") -> str:
    """Markdown: candidate x CPU setting, predicted acc (E in brackets); n/a outside."""
    by_candidate, speeds = curves(curve_rows, subset), throughputs(speed_rows)
    head = ["candidate", *speeds]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, curve in by_candidate.items():
        cells = [name]
        for setting in speeds.values():
            img_s = setting.get(name, setting.get("baseline"))
            if img_s is None:
                cells.append("n/a")
                continue
            e = epochs_in_budget(budget_s, img_s, n_train, overhead_s)
            try:
                cells.append(f"{interpolate(curve, e):.4f} (E {e:.1f})")
            except OutsideCurve:
                cells.append(f"n/a (E {e:.1f} outside)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from epoch_curves import read_rows  # a script's import: tests import this module alone

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--curves", type=Path, default=RESULTS / "epoch_curves.jsonl")
    ap.add_argument("--throughput", type=Path, default=RESULTS / "throughput.jsonl")
    ap.add_argument("--budgets", default="10m,30m")
    ap.add_argument("--subset", default="full", help="the curve rows' subset, e.g. per_class=100")
    ap.add_argument("--n-train", type=int, default=45_000)
    ap.add_argument("--overhead-s", type=float, default=0.0,
                    help="seconds of a run outside its epochs (start-up, final TTA eval)")
    args = ap.parse_args(argv)
    curve_rows, speed_rows = read_rows(args.curves), read_rows(args.throughput)
    if curve_rows:
        print("held-out accuracy after E epochs (mean of seeds; * = kept):")
        print(curve_table(curve_rows, args.subset))
    if not curve_rows or not speed_rows:
        print("predictions: not measured yet: need both", args.curves, "and", args.throughput)
        return 1
    for budget in args.budgets.split(","):
        print(f"\npredicted held-out accuracy at {budget}:")
        print(prediction_table(curve_rows, speed_rows, parse_duration(budget), args.n_train,
                               args.overhead_s, args.subset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
