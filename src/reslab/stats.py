"""Statistics for conclusions that hold: seed summaries with confidence intervals, and
significance tests between entries that share a test split.

Pure numpy/scipy (layer L0): callers pass plain numbers, mappings and boolean arrays.

* `summarize` is the per-metric entry of a `summary.json` that aggregates seed runs
  (`runs/<name>/seed-K/`); `summary_rows` flattens those entries for `summary.csv`.
* `compare_seeds` tests two entries with repeats (paired t over common seeds, else Welch's t),
  `mcnemar` two single runs on per-image correctness, `compare_all` every pair of a comparison
  (Holm-adjusted), and `describe` turns the results into one plain-language sentence.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from itertools import combinations

import numpy as np
from scipy import stats as st

from .formatting import is_number

ALPHA = 0.05
CONFIDENCE = 0.95
# McNemar: below this many discordant images the chi-square approximation is poor, so the
# exact binomial test is used (the usual rule of thumb, e.g. Wikipedia / Fagerland et al.).
MCNEMAR_EXACT_BELOW = 25
SUMMARY_COLUMNS = ("metric", "mean", "std", "ci95_low", "ci95_high", "n", "values")


# Metrics that live in [0, 1] (accuracies, top-5, precision/recall/F1, ECE), by how their
# names end: their intervals are clipped to [0, 1] (see summarize).
UNIT_INTERVAL_SUFFIXES = ("acc", "accuracy", "top5", "f1", "precision", "recall", "ece")
UNIT_INTERVAL_MARKERS = ("_acc_", "acc_best_model", "_acc_ema")


def metric_bounds(name: str) -> tuple[float, float] | None:
    """(0, 1) for a metric in the unit interval (val_acc, test_acc, best_val_acc_ema,
    macro_f1, top5, ece, ...), (0, inf) for losses and NLL, None for the rest (seconds,
    parameters)."""
    key = name.lower()
    if key.endswith(UNIT_INTERVAL_SUFFIXES) or any(m in key for m in UNIT_INTERVAL_MARKERS):
        return 0.0, 1.0
    if key.endswith(("loss", "nll")):
        return 0.0, math.inf
    return None


# --------------------------------------------------------------------------- summaries
def summarize(values: Iterable[float], bounds: tuple[float, float] | None = None) -> dict:
    """Mean, sample std (ddof=1) and 95 % Student-t interval of the mean over seed runs.

    -> {mean, std, ci95_low, ci95_high, n, values}. With one value the std is 0.0 and the CI
    is None/None: an interval needs at least two runs, and the value itself would claim a
    certainty one run cannot give. Identical values give a zero-width CI at the mean.

    `bounds` (e.g. (0, 1) for an accuracy, see metric_bounds): the t-interval is clipped to
    them. The t-interval of a mean over a few seeds can reach past a metric's range (two
    folds at 0.0 and 0.1: 0.05 +- 0.64); the clipped interval is the t-interval's part that
    the metric can take. It stays a t-interval (wide with few runs), not a binomial one: the
    spread is between runs, which a per-image Wilson interval would not measure.
    """
    data = np.asarray([float(v) for v in values], dtype=np.float64)
    if data.size == 0:
        raise ValueError("summarize: no values")
    if not np.all(np.isfinite(data)):
        raise ValueError(f"summarize: non-finite value in {data.tolist()}")
    mean = float(data.mean())
    std = float(data.std(ddof=1)) if data.size > 1 else 0.0
    low, high = _t_interval(mean, std, data.size)
    if bounds is not None and low is not None:
        low, high = max(low, bounds[0]), min(high, bounds[1])
    return {"mean": mean, "std": std, "ci95_low": low, "ci95_high": high,
            "n": int(data.size), "values": data.tolist()}


def _t_interval(mean: float, std: float, n: int) -> tuple[float | None, float | None]:
    if n < 2:
        return None, None
    if std == 0.0:  # scipy returns nan for a zero scale; the interval is the point itself
        return mean, mean
    low, high = st.t.interval(CONFIDENCE, n - 1, loc=mean, scale=std / math.sqrt(n))
    return float(low), float(high)


def summarize_metrics(results: Sequence[Mapping], keys: Sequence[str] | None = None
                      ) -> dict[str, dict]:
    """Per-metric `summarize` over seed runs' result dicts (e.g. each seed's result.json).

    `keys` defaults to every key holding a number in some result, in first-seen order.
    Null/missing values (a run without a test split) are skipped; a key with no values left
    is left out, so each entry's `n` says how many runs it covers. Bounded metrics' intervals
    are clipped to [0, 1] (metric_bounds).
    """
    if keys is None:
        keys = list(dict.fromkeys(k for r in results for k, v in r.items() if is_number(v)))
    out = {}
    for key in keys:
        values = [r[key] for r in results if is_number(r.get(key))]
        if values:
            out[key] = summarize(values, metric_bounds(key))
    return out




def summary_rows(per_metric: Mapping[str, Mapping]) -> list[dict]:
    """`summary.json`'s {metric: summarize(...)} -> rows for `summary.csv` (SUMMARY_COLUMNS;
    `values` joined with ';' so one cell holds every seed's value)."""
    return [{"metric": name, **{k: entry[k] for k in SUMMARY_COLUMNS[1:-1]},
             "values": ";".join(repr(float(v)) for v in entry["values"])}
            for name, entry in per_metric.items()]


# --------------------------------------------------------------------------- significance
# The `test` of a pair not tested, then why (significance.csv keeps it readable).
NOT_COMPARED = "not compared: "


@dataclass(frozen=True)
class Comparison:
    """One significance test between entries `a` and `b` (difference = a - b).

    `p_value` is the raw p; `p_holm` the Holm-adjusted one when `compare_all` adjusted for
    several pairs, and then `significant` uses it. `p_value` is None when no test was possible
    (`test == "none"`). `ci95_*` is the bootstrap CI of the mean difference, when asked for.
    """

    a: str
    b: str
    test: str  # "paired t" | "Welch t" | "McNemar exact" | "McNemar chi2" | "none"
    statistic: float | None
    p_value: float | None
    mean_difference: float | None
    significant: bool
    n: int  # seeds (paired), seeds of a + seeds of b (Welch), images (McNemar)
    ci95_low: float | None = None
    ci95_high: float | None = None
    p_holm: float | None = None

    @classmethod
    def apart(cls, a: str, b: str, why: str, n: int) -> Comparison:
        """A pair that was not tested: its entries were evaluated on different images."""
        return cls(a, b, NOT_COMPARED + why, None, None, None, False, n)

    @property
    def not_compared(self) -> str | None:
        """Why the pair was not tested (`apart`), or None for a tested pair."""
        return self.test.removeprefix(NOT_COMPARED) if self.test.startswith(NOT_COMPARED) \
            else None

    @property
    def p(self) -> float | None:
        """The p-value significance is judged on (Holm-adjusted when available)."""
        return self.p_holm if self.p_holm is not None else self.p_value

    def as_dict(self) -> dict:
        """Fields as strict-JSON values: an infinite statistic (a constant non-zero
        difference over every seed) becomes None, as JSON has no infinity."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}


def compare_seeds(a: Mapping[int, float], b: Mapping[int, float], names: tuple[str, str] =
                  ("A", "B"), *, bootstrap: int = 0, seed: int = 0) -> Comparison:
    """Two entries' metric per seed ({seed: value}). Same seeds on both sides -> paired t over
    seeds (the seed fixes init and data order, so runs pair up); otherwise Welch's t.
    `bootstrap` > 0 adds a percentile bootstrap CI of the mean difference with that many
    resamples, drawn from `np.random.default_rng(seed)` (reproducible)."""
    paired = set(a) == set(b) and len(a) >= 2
    if paired:
        order = sorted(a)
        xa, xb = _floats(a[s] for s in order), _floats(b[s] for s in order)
    else:
        xa, xb = _floats(a.values()), _floats(b.values())
    if min(len(xa), len(xb)) < 2:
        return _untestable(names, xa, xb)
    test, statistic, p = _test(xa, xb, paired)
    ci = _bootstrap_ci(xa, xb, paired, bootstrap, seed) if bootstrap else (None, None)
    return Comparison(names[0], names[1], test, statistic, p, float(xa.mean() - xb.mean()),
                      p < ALPHA, len(xa) if paired else len(xa) + len(xb), *ci)


def _floats(values: Iterable[float]) -> np.ndarray:
    return np.asarray([float(v) for v in values], dtype=np.float64)


def _test(xa: np.ndarray, xb: np.ndarray, paired: bool) -> tuple[str, float, float]:
    """(test name, statistic, p). Zero variance (every seed's difference the same, or both
    sides constant) is decided here, not left to scipy's 0/0: no difference -> p = 1; a
    constant non-zero difference -> the exact permutation p-value, the smallest any test on
    these seeds can give (2 seeds: 0.5; paired, 6 seeds: 0.031), never a t-test's p = 0."""
    spread = np.ptp(xa - xb) if paired else max(np.ptp(xa), np.ptp(xb))
    name = "paired t" if paired else "Welch t"
    if spread == 0.0:
        diff = float(xa.mean() - xb.mean())
        if diff == 0.0:
            return name, 0.0, 1.0
        # Every sign flip (paired) or relabelling (unpaired) but the observed one and its
        # mirror is less extreme: two-sided p = 2 / number of equally likely arrangements.
        arrangements = 2 ** len(xa) if paired else math.comb(len(xa) + len(xb), len(xa))
        exact = "exact sign-flip" if paired else "exact permutation"
        return exact, math.copysign(math.inf, diff), min(1.0, 2 / arrangements)
    with warnings.catch_warnings():
        # Nearly identical values trigger scipy's "catastrophic cancellation" warning; the
        # result is still the right limit, and this runs inside report generation.
        warnings.simplefilter("ignore", RuntimeWarning)
        res = st.ttest_rel(xa, xb) if paired else st.ttest_ind(xa, xb, equal_var=False)
    return name, float(res.statistic), float(res.pvalue)


def _untestable(names: tuple[str, str], xa: np.ndarray, xb: np.ndarray) -> Comparison:
    diff = float(xa.mean() - xb.mean()) if len(xa) and len(xb) else None
    return Comparison(names[0], names[1], "none", None, None, diff, False, len(xa) + len(xb))


def _bootstrap_ci(xa: np.ndarray, xb: np.ndarray, paired: bool, resamples: int,
                  seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    # Percentile, not BCa: with a handful of seeds BCa's jackknife is degenerate (nan).
    if paired:
        res = st.bootstrap((xa - xb,), np.mean, n_resamples=resamples, method="percentile",
                           confidence_level=CONFIDENCE, rng=rng)
    else:
        res = st.bootstrap((xa, xb), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis),
                           n_resamples=resamples, method="percentile",
                           confidence_level=CONFIDENCE, rng=rng)
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool],
            names: tuple[str, str] = ("A", "B")) -> Comparison:
    """McNemar's test on per-image correctness of two single runs over the same images (same
    order). Only discordant images count: n01 = a right & b wrong, n10 = a wrong & b right.
    Fewer than MCNEMAR_EXACT_BELOW (25) discordant images -> exact two-sided binomial test
    (statistic = min(n01, n10)); otherwise the continuity-corrected chi-square
    (|n01 - n10| - 1)^2 / (n01 + n10) with 1 dof. `mean_difference` = accuracy a - b."""
    ca, cb = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    if ca.shape != cb.shape or ca.ndim != 1:
        raise ValueError(f"mcnemar: correctness arrays differ in shape {ca.shape} vs {cb.shape}")
    n01, n10 = int(np.sum(ca & ~cb)), int(np.sum(~ca & cb))
    discordant = n01 + n10
    if discordant == 0:
        test, statistic, p = "McNemar exact", 0.0, 1.0
    elif discordant < MCNEMAR_EXACT_BELOW:
        test, statistic = "McNemar exact", float(min(n01, n10))
        p = float(st.binomtest(n01, discordant, 0.5).pvalue)
    else:
        test, statistic = "McNemar chi2", (abs(n01 - n10) - 1) ** 2 / discordant
        p = float(st.chi2.sf(statistic, df=1))
    diff = (n01 - n10) / ca.size if ca.size else 0.0
    return Comparison(names[0], names[1], test, float(statistic), p, diff, p < ALPHA, ca.size)


def holm(results: Sequence[Comparison], alpha: float = ALPHA) -> list[Comparison]:
    """Holm-Bonferroni step-down adjustment over the tested pairs (controls the chance of any
    false 'significant' at `alpha`). Sets `p_holm` and re-judges `significant` on it."""
    tested = [i for i, r in enumerate(results) if r.p_value is not None]
    order = sorted(tested, key=lambda i: results[i].p_value)
    m, running, adjusted = len(order), 0.0, {}
    for rank, i in enumerate(order):
        # Monotone: a pair can never look more significant than one with a smaller raw p.
        running = max(running, min(1.0, (m - rank) * results[i].p_value))
        adjusted[i] = running
    return [replace(r, p_holm=adjusted[i], significant=adjusted[i] < alpha) if i in adjusted
            else r for i, r in enumerate(results)]


def compare_all(scores: Mapping[str, Mapping[int, float]],
                correct: Mapping[str, Sequence[bool]] | None = None, *,
                higher_is_better: bool = True, adjust: bool = True, bootstrap: int = 0,
                seed: int = 0) -> list[Comparison]:
    """Every pair of a comparison's entries, each oriented so `a` is the better mean.

    `scores`: entry -> {seed: metric}. Entries with >= 2 seeds each -> `compare_seeds`; one
    seed each -> `mcnemar` on `correct[entry]` (per-image correctness on the shared split)
    when given; otherwise an untestable result. `adjust` applies Holm over all pairs.
    """
    correct = correct or {}
    results = []
    for x, y in combinations(scores, 2):
        mx, my = np.mean(list(scores[x].values())), np.mean(list(scores[y].values()))
        a, b = (x, y) if (mx >= my) == higher_is_better else (y, x)
        if len(scores[a]) == 1 and len(scores[b]) == 1 and a in correct and b in correct:
            results.append(mcnemar(correct[a], correct[b], (a, b)))
        else:
            results.append(compare_seeds(scores[a], scores[b], (a, b), bootstrap=bootstrap,
                                         seed=seed))
    return holm(results) if adjust and len(results) > 1 else results


# --------------------------------------------------------------------------- plain language
def describe(results: Sequence[Comparison], percent_points: bool = True,
             higher_is_better: bool = True) -> str:
    """One sentence for a list of pairwise results, e.g. "A beats B by 1.2 pp (paired t,
    p = 0.003, significant); the ranking of B and C is within noise (McNemar exact,
    p = 0.41)." The winner is read from the sign of the difference and `higher_is_better`;
    `percent_points`: differences are fractions (accuracy) and are shown in pp."""
    clauses = [_clause(r, percent_points, higher_is_better) for r in results]
    if not clauses:
        return ""
    text = "; ".join(clauses) + "."
    return text[0].upper() + text[1:]


def _clause(r: Comparison, percent_points: bool, higher_is_better: bool) -> str:
    if r.p_value is None:
        return (f"{r.a} and {r.b} cannot be tested (needs >= 2 seeds each, or per-image "
                f"predictions of one run each)")
    if not r.significant:
        return f"the ranking of {r.a} and {r.b} is within noise ({_evidence(r)})"
    diff = r.mean_difference or 0.0
    winner, loser = (r.a, r.b) if (diff >= 0) == higher_is_better else (r.b, r.a)
    return (f"{winner} beats {loser} by {_amount(abs(diff), percent_points)}"
            f"{_ci(r, percent_points)} ({_evidence(r)}, significant)")


def _amount(value: float, percent_points: bool) -> str:
    return f"{100 * value:.1f} pp" if percent_points else f"{value:.4g}"


def _ci(r: Comparison, percent_points: bool) -> str:
    if r.ci95_low is None or r.ci95_high is None:
        return ""
    # The CI is of a - b; shown for the winner's margin, i.e. as a positive-going interval.
    sign = 1.0 if (r.mean_difference or 0.0) >= 0 else -1.0
    low, high = sorted((sign * r.ci95_low, sign * r.ci95_high))
    scale, unit, fmt = (100.0, " pp", ".1f") if percent_points else (1.0, "", ".4g")
    return f", 95 % CI {scale * low:{fmt}} to {scale * high:{fmt}}{unit}"


def _evidence(r: Comparison) -> str:
    text = f"{r.test}, {_format_p(r.p_value)}"
    if r.p_holm is not None:
        text += f", Holm-adjusted {_format_p(r.p_holm)}"
    return text


def _format_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"
