"""reslab.stats against scipy/numpy and hand computations."""
from __future__ import annotations

import ast
import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as st

from reslab.stats import (
    SUMMARY_COLUMNS,
    Comparison,
    compare_all,
    compare_seeds,
    describe,
    holm,
    mcnemar,
    summarize,
    summarize_metrics,
    summary_rows,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "reslab"


# --------------------------------------------------------------------------- summarize
def test_summarize_matches_numpy_and_scipy_t_interval():
    values = [0.912, 0.905, 0.921, 0.899, 0.917]
    s = summarize(values)
    assert set(s) == {"mean", "std", "ci95_low", "ci95_high", "n", "values"}
    assert s["mean"] == pytest.approx(np.mean(values))
    assert s["std"] == pytest.approx(np.std(values, ddof=1))
    low, high = st.t.interval(0.95, 4, loc=np.mean(values), scale=st.sem(values))
    assert (s["ci95_low"], s["ci95_high"]) == (pytest.approx(low), pytest.approx(high))
    assert s["n"] == 5 and s["values"] == values


def test_summarize_one_value_has_zero_std_and_no_interval():
    assert summarize([0.9]) == {"mean": 0.9, "std": 0.0, "ci95_low": None, "ci95_high": None,
                                "n": 1, "values": [0.9]}


def test_summarize_identical_values_give_a_point_interval():
    s = summarize([0.5, 0.5, 0.5])
    assert (s["std"], s["ci95_low"], s["ci95_high"]) == (0.0, 0.5, 0.5)


@pytest.mark.parametrize("values", [[], [0.5, float("nan")]])
def test_summarize_rejects_empty_and_non_finite(values):
    with pytest.raises(ValueError):
        summarize(values)


def test_summarize_metrics_skips_nulls_and_keeps_keys_any_run_has():
    results = [{"best_val_acc": 0.9, "test_acc": None, "stop_reason": "max_epochs"},
               {"best_val_acc": 0.8, "test_acc": 0.7},
               {"best_val_acc": 0.85, "test_acc": 0.75}]
    out = summarize_metrics(results)
    assert list(out) == ["best_val_acc", "test_acc"]
    assert out["best_val_acc"]["n"] == 3 and out["test_acc"]["n"] == 2
    assert out["test_acc"]["mean"] == pytest.approx(0.725)
    assert list(summarize_metrics(results, keys=["test_acc"])) == ["test_acc"]


def test_summary_rows_write_as_csv():
    rows = summary_rows({"test_acc": summarize([0.7, 0.75]), "one": summarize([1.0])})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    back = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert [r["metric"] for r in back] == ["test_acc", "one"]
    assert [float(v) for v in back[0]["values"].split(";")] == [0.7, 0.75]
    assert float(back[0]["mean"]) == pytest.approx(0.725)
    assert back[1]["ci95_low"] == ""  # None -> empty cell


# --------------------------------------------------------------------------- repeats
def test_same_seeds_use_paired_t_matched_by_seed():
    a = {2: 0.93, 0: 0.91, 1: 0.92}  # insertion order differs from b's: pairing is by seed
    b = {0: 0.89, 1: 0.90, 2: 0.905}
    r = compare_seeds(a, b, ("A", "B"))
    ref = st.ttest_rel([0.91, 0.92, 0.93], [0.89, 0.90, 0.905])
    assert r.test == "paired t" and r.n == 3
    assert r.statistic == pytest.approx(ref.statistic)
    assert r.p_value == pytest.approx(ref.pvalue)
    assert r.mean_difference == pytest.approx(np.mean([0.02, 0.02, 0.025]))
    assert r.significant == (ref.pvalue < 0.05)


def test_different_seeds_use_welch_t():
    a, b = {0: 0.91, 1: 0.92, 2: 0.93}, {3: 0.89, 4: 0.90, 5: 0.92, 6: 0.88}
    r = compare_seeds(a, b)
    ref = st.ttest_ind(list(a.values()), list(b.values()), equal_var=False)
    assert r.test == "Welch t" and r.n == 7
    assert (r.statistic, r.p_value) == (pytest.approx(ref.statistic), pytest.approx(ref.pvalue))


def test_one_seed_cannot_be_tested_with_t():
    r = compare_seeds({0: 0.9}, {0: 0.8})
    assert r.test == "none" and r.p_value is None and not r.significant
    assert r.mean_difference == pytest.approx(0.1)


def test_constant_difference_gets_the_exact_permutation_p_not_zero():
    # 3 seeds, every one 0.25 better: 2 of the 2^3 sign flips are as extreme -> p = 0.25.
    r = compare_seeds({0: 0.5, 1: 0.75, 2: 0.25}, {0: 0.25, 1: 0.5, 2: 0.0})
    assert r.test == "exact sign-flip" and r.p_value == 0.25 and not r.significant
    assert math.isinf(r.statistic)
    assert json.loads(json.dumps(r.as_dict(), allow_nan=False))["statistic"] is None
    six = compare_seeds({s: 0.9 for s in range(6)}, {s: 0.8 for s in range(6)})
    assert six.p_value == pytest.approx(2 / 64) and six.significant
    welch = compare_seeds({0: 0.9, 1: 0.9, 2: 0.9}, {3: 0.8, 4: 0.8, 5: 0.8})
    assert welch.test == "exact permutation" and welch.p_value == pytest.approx(2 / 20)


def test_identical_runs_are_not_different():
    r = compare_seeds({0: 0.9, 1: 0.8}, {0: 0.9, 1: 0.8})
    assert (r.p_value, r.significant, r.mean_difference) == (1.0, False, 0.0)
    welch = compare_seeds({0: 0.9, 1: 0.9}, {2: 0.9, 3: 0.9})
    assert (welch.test, welch.p_value, welch.significant) == ("Welch t", 1.0, False)


def test_bootstrap_ci_is_reproducible_and_brackets_the_difference():
    rng = np.random.default_rng(1)
    a = dict(enumerate(0.90 + 0.01 * rng.standard_normal(8)))
    b = dict(enumerate(0.88 + 0.01 * rng.standard_normal(8)))
    r1 = compare_seeds(a, b, bootstrap=2000, seed=3)
    r2 = compare_seeds(a, b, bootstrap=2000, seed=3)
    r3 = compare_seeds(a, b, bootstrap=2000, seed=4)
    assert (r1.ci95_low, r1.ci95_high) == (r2.ci95_low, r2.ci95_high)
    assert (r1.ci95_low, r1.ci95_high) != (r3.ci95_low, r3.ci95_high)
    assert r1.ci95_low < r1.mean_difference < r1.ci95_high
    assert compare_seeds(a, b).ci95_low is None


# --------------------------------------------------------------------------- McNemar
def _correctness(both_right: int, a_only: int, b_only: int, both_wrong: int):
    a = [True] * both_right + [True] * a_only + [False] * b_only + [False] * both_wrong
    b = [True] * both_right + [False] * a_only + [True] * b_only + [False] * both_wrong
    return np.array(a), np.array(b)


def test_mcnemar_exact_for_few_discordant_images():
    a, b = _correctness(80, 9, 2, 9)
    r = mcnemar(a, b, ("A", "B"))
    assert r.test == "McNemar exact" and r.n == 100 and r.statistic == 2
    assert r.p_value == pytest.approx(st.binomtest(9, 11, 0.5).pvalue)
    assert r.mean_difference == pytest.approx(0.07)


def test_mcnemar_chi2_with_continuity_correction_matches_textbook_example():
    # Wikipedia's McNemar example: b = 121, c = 59 -> corrected chi2 = 61^2 / 180 = 20.672
    a, b = _correctness(101, 121, 59, 33)
    r = mcnemar(a, b)
    assert r.test == "McNemar chi2"
    assert r.statistic == pytest.approx(61**2 / 180)
    assert r.p_value == pytest.approx(st.chi2.sf(61**2 / 180, 1))
    assert r.significant


def test_mcnemar_without_disagreement_and_bad_shapes():
    a, b = _correctness(10, 0, 0, 3)
    assert mcnemar(a, b).p_value == 1.0
    with pytest.raises(ValueError):
        mcnemar([True, False], [True])


# --------------------------------------------------------------------------- many pairs
def _result(p: float) -> Comparison:
    return Comparison("x", "y", "paired t", 1.0, p, 0.01, p < 0.05, 3)


def test_holm_matches_hand_computation():
    # sorted p 0.01, 0.03, 0.04 -> 3*0.01 = 0.03, 2*0.03 = 0.06, max(0.06, 1*0.04) = 0.06
    out = holm([_result(0.01), _result(0.04), _result(0.03)])
    assert [r.p_holm for r in out] == pytest.approx([0.03, 0.06, 0.06])
    assert [r.significant for r in out] == [True, False, False]
    assert [r.p_value for r in out] == [0.01, 0.04, 0.03]


def test_compare_all_orients_pairs_and_dispatches_tests():
    scores = {"B": {0: 0.89, 1: 0.90, 2: 0.905}, "A": {0: 0.91, 1: 0.92, 2: 0.93},
              "C": {0: 0.90, 1: 0.89, 2: 0.91}}
    results = compare_all(scores)
    assert [(r.a, r.b) for r in results] == [("A", "B"), ("C", "B"), ("A", "C")]
    assert all(r.test == "paired t" and r.p_holm is not None for r in results)
    losses = compare_all({"x": {0: 0.5, 1: 0.6}, "y": {0: 0.3, 1: 0.35}},
                         higher_is_better=False)
    assert (losses[0].a, losses[0].b, losses[0].p_holm) == ("y", "x", None)  # one pair


def test_compare_all_uses_mcnemar_for_single_runs():
    a, b = _correctness(80, 12, 1, 7)
    results = compare_all({"a": {0: a.mean()}, "b": {0: b.mean()}, "c": {0: 0.5}},
                          correct={"a": a, "b": b})
    by_pair = {(r.a, r.b): r for r in results}
    assert by_pair[("a", "b")].test == "McNemar exact"
    assert by_pair[("a", "c")].test == "none"


def test_describe_reads_as_a_sentence():
    win = Comparison("A", "B", "paired t", 5.0, 0.003, 0.012, True, 5)
    tie = Comparison("B", "C", "McNemar chi2", 0.7, 0.41, 0.002, False, 1000)
    untested = Comparison("C", "D", "none", None, None, 0.01, False, 2)
    text = describe([win, tie, untested])
    assert text == ("A beats B by 1.2 pp (paired t, p = 0.003, significant); the ranking of "
                    "B and C is within noise (McNemar chi2, p = 0.41); C and D cannot be "
                    "tested (needs >= 2 seeds each, or per-image predictions of one run each).")
    assert describe([]) == ""


def test_describe_names_the_winner_from_the_sign_and_shows_holm_and_ci():
    r = Comparison("A", "B", "Welch t", -4.0, 0.0004, -0.031, True, 6, -0.04, -0.02, 0.0008)
    assert describe([r]) == ("B beats A by 3.1 pp, 95 % CI 2.0 to 4.0 pp (Welch t, p < 0.001, "
                             "Holm-adjusted p < 0.001, significant).")
    assert describe([r], higher_is_better=False).startswith("A beats B by 3.1 pp")
    assert "by 0.031," in describe([r], percent_points=False)


# --------------------------------------------------------------------------- layering
def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


def test_stats_imports_only_numpy_scipy_and_the_standard_library():
    import sys

    allowed = {"numpy", "scipy"} | set(sys.stdlib_module_names)
    imported = _imported_modules(SRC / "stats.py")
    # The one package module it may use is formatting, itself standard library only.
    assert {m for m in imported if m.startswith(".")} <= {".formatting"}, imported
    roots = {m.split(".")[0] for m in imported if not m.startswith(".")}
    assert roots <= allowed, roots - allowed
    formatting = {m.split(".")[0] for m in _imported_modules(SRC / "formatting.py")}
    assert formatting <= set(sys.stdlib_module_names), formatting


@pytest.mark.parametrize("module", ["engine/metrics.py", "runs/env.py"])
def test_low_modules_import_only_errors_and_utils(module):
    relative = {m for m in _imported_modules(SRC / module) if m.startswith(".")}
    assert relative <= {"..", "..errors", "..utils"}, relative
    assert not any(m.startswith("reslab") for m in _imported_modules(SRC / module))


def test_p_values_are_probabilities():
    for r in compare_all({"a": {0: 0.1, 1: 0.2, 2: 0.4}, "b": {0: 0.3, 1: 0.1, 2: 0.2}}):
        assert 0.0 <= r.p_value <= 1.0 and not math.isnan(r.statistic)
