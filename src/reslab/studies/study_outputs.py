"""What a study writes from its variants' files, every time it runs (so a re-run of a finished
study only redraws): Tables I-III and the factor means as tables/<name>.csv (raw numbers) and
.tex (booktabs, formatted), one figure per swept factor, significance.csv, summary.md (the
plain-language reading) and the report (learning curves drawn there).

Significance is the comparison's (significance.py): variants sharing a test split are tested
pairwise on test accuracy (paired t over the common confirmation seeds, McNemar on per-image
correctness with one seed each), Holm-adjusted over all pairs.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import get_key
from ..formatting import is_number
from ..report import write_report
from ..report.html import significance_sentence
from ..report.plots import plot_factor_curves
from ..report.tables import column_label, latex_table
from ..runs.rundir import STUDY_TABLES, RunDir, StudyDir, safe_name
from ..stats import Comparison
from ..sweep.outputs import fmt_value
from .compare import cell, entry_row, repeats_entry
from .significance import Trained, pair_tests
from .study_spec import StudyPlan, Variant

Log = Callable[[str], None]
# Table I's columns besides the swept factors: what a reader needs to rerun the recipe.
HYPERPARAMETERS = ("train.optimizer", "train.lr", "train.batch_size", "train.momentum",
                   "train.weight_decay", "train.scheduler")


def write_study_outputs(study_plan: StudyPlan, target: StudyDir, log: Log) -> None:
    trained = finished_variants(study_plan, target)
    rows = {t.name: entry_row(t, None) for t in trained}
    write_hyperparameters(study_plan, target)
    write_accuracy(target, trained, rows)
    write_robustness(study_plan, target, trained)
    write_factors(study_plan, target)
    results = pair_tests(trained) if trained else []
    target.write_significance(results)
    summary = summary_text(study_plan, rows, results)
    target.write_summary(summary + "\n")
    log(summary)
    html, _ = write_report(target.path)
    log(f"Study directory: {target.path} (tables in {target.tables}, report {html})")


def finished_variants(study_plan: StudyPlan, target: StudyDir) -> list[Trained]:
    """The variants with finished confirmation runs, as comparison entries."""
    found = []
    for variant in study_plan.variants:
        repeats = target.confirmation(variant.name)
        if repeats.plan_yaml.is_file():
            entry = repeats_entry(variant.name, repeats)
            if entry.runs:
                found.append(entry)
    return found


def save_table(target: StudyDir, name: str, header: list[str], rows: list[list[Any]],
               shown: list[list[str]] | None = None, shown_header: list[str] | None = None
               ) -> None:
    """tables/<name>.csv from `rows`, tables/<name>.tex from their display text `shown` under
    `shown_header` (default: the values and header as written); a column is right-aligned
    when its values are all numbers."""
    shown = shown if shown is not None else [[fmt_value(v) or "—" for v in row] for row in rows]
    shown_header = shown_header or header
    numeric = [bool(rows) and all(is_number(r[header.index(h)]) or r[header.index(h)] is None
                                  for r in rows) for h in shown_header]
    tex = latex_table([column_label(h) for h in shown_header], shown, STUDY_TABLES[name],
                      f"tab:{name}", numeric)
    target.write_table(name, header, [[_blank(v) for v in row] for row in rows], tex)




def _blank(value: Any) -> Any:
    return "" if value is None else value


# ----------------------------------------------------------------------------- Table I
def hyperparameter_keys(study_plan: StudyPlan) -> list[str]:
    first = study_plan.variants[0] if study_plan.variants else None
    swept = first.sweep.keys if first is not None and first.sweep else []
    return swept + [k for k in HYPERPARAMETERS if k not in swept]


def write_hyperparameters(study_plan: StudyPlan, target: StudyDir) -> None:
    keys = hyperparameter_keys(study_plan)
    rows = []
    for variant in study_plan.variants:
        best = target.read_best(variant.name)
        if best is not None:
            cfg = best.to_dict()
            rows.append([variant.name, *(variant.values[a] for a in study_plan.axes),
                         *(get_key(cfg, k) for k in keys)])
    save_table(target, "table1-hyperparameters", ["variant", *study_plan.axes, *keys], rows)


# ----------------------------------------------------------------------------- Table II
ACCURACY_COLUMNS = ["variant", "test_acc", "test_acc_ci95_low", "test_acc_ci95_high", "seeds",
                    "test_images", "params", "epochs", "seconds_per_epoch", "device", "isa"]


def write_accuracy(target: StudyDir, trained: list[Trained], rows: dict[str, dict]) -> None:
    """Test accuracy with its 95 % t-interval over the seeds (n: the seeds, and the test
    images each seed was scored on), size, epochs run, seconds per epoch and the machine those
    seconds were measured on (the runs' env.json)."""
    shown_header = [c for c in ACCURACY_COLUMNS if "_ci95_" not in c]
    values, shown = [], []
    for entry in trained:
        runs = list(entry.runs.values())
        row = {**rows[entry.name], "variant": entry.name, "seeds": rows[entry.name]["runs"],
               "test_images": test_images(runs), **hardware(runs)}
        values.append([row.get(c) for c in ACCURACY_COLUMNS])
        shown.append([mean_cell(row, c) for c in shown_header])
    save_table(target, "table2-accuracy", ACCURACY_COLUMNS, values, shown, shown_header)


def mean_cell(row: dict, key: str) -> str:
    """A table cell; a mean over the seeds shows its n, and one seed says "n = 1" instead of
    an interval (the 95 % interval of one value does not exist)."""
    text = cell(row.get(key), key, row)
    if key not in MEAN_COLUMNS or row.get(key) is None:
        return text
    return f"{text} (n = {row.get('runs', 1)})"


MEAN_COLUMNS = ("test_acc", "best_val_acc")


def test_images(runs: list[RunDir]) -> int | str | None:
    """How many images each run's final evaluation scored (eval_metrics.json's n); distinct
    counts (runs on different splits) joined with '; '."""
    counts = dict.fromkeys(m.get("n") for m in (run.read_eval_metrics() for run in runs) if m)
    counts.pop(None, None)
    if len(counts) > 1:
        return "; ".join(str(c) for c in counts)
    return next(iter(counts), None)


def hardware(runs: list[RunDir]) -> dict[str, str]:
    """{device, isa} from the runs' env.json; distinct values joined with '; '."""
    envs = [env for env in (run.read_env() for run in runs) if env]
    devices = dict.fromkeys(str(env.get("device")) for env in envs)
    isas = dict.fromkeys(_isa(env.get("cpu_isa") or {}) for env in envs)
    return {"device": "; ".join(devices) or None, "isa": "; ".join(isas) or None}


def _isa(isa: dict) -> str:
    """'AVX2' or 'AVX2 (ONEDNN_MAX_CPU_ISA=AVX2)': the kernels' level and what capped it."""
    capped = ", ".join(f"{k}={v}" for k, v in (isa.get("env") or {}).items())
    return f"{isa.get('capability', '?')}" + (f" ({capped})" if capped else "")


# ----------------------------------------------------------------------------- Table III
ROBUSTNESS_COLUMNS = ["variant", "mode", "perturbation", "severity", "clean_acc",
                      "perturbed_acc", "drop", "seeds"]


def write_robustness(study_plan: StudyPlan, target: StudyDir, trained: list[Trained]) -> None:
    """Per variant and perturbation level: clean and perturbed accuracy and the drop, means
    over the seed runs, in the study's mode (display or raw)."""
    if study_plan.spec.robustness is None:
        return
    mode = "raw" if study_plan.spec.robustness.raw else "display"
    rows = [row for entry in trained for row in robustness_rows(entry, mode)]
    shown = [[*(str(v) for v in row[:4]), *(f"{v:.4f}" for v in row[4:7]), str(row[7])]
             for row in rows]
    save_table(target, "table3-robustness", ROBUSTNESS_COLUMNS, rows, shown)


def robustness_rows(entry: Trained, mode: str) -> list[list[Any]]:
    levels: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for run in entry.runs.values():
        found = run.read_robustness(mode)
        clean = next((r["accuracy"] for r in found if r["perturbation"] == "clean"), None)
        for r in found:
            if r["perturbation"] != "clean" and clean is not None:
                levels.setdefault((r["perturbation"], r["severity"]), []).append(
                    (clean, r["accuracy"]))
    rows = []
    for (name, severity), pairs in levels.items():
        clean = sum(c for c, _ in pairs) / len(pairs)
        perturbed = sum(a for _, a in pairs) / len(pairs)
        rows.append([entry.name, mode, name, severity, clean, perturbed, clean - perturbed,
                     len(pairs)])
    return rows


# ----------------------------------------------------------------------------- factors
def write_factors(study_plan: StudyPlan, target: StudyDir) -> None:
    """The mean objective per value of each swept factor, per variant: tables/factors.csv
    and one figure per factor that has two or more settings (a line per variant)."""
    swept = [v for v in study_plan.variants
             if v.sweep and target.sweep(v.name).trials_csv.is_file()]
    if not swept:
        return
    points = {v.name: factor_points(v, target) for v in swept}
    rows = [[name, key, value, mean, n] for name, per_key in points.items()
            for key, found in per_key.items() for value, mean, n in found]
    save_table(target, "factors", ["variant", "factor", "setting", "mean_value", "trials"],
               rows)
    metric = swept[0].sweep.spec.objective.metric
    for key in swept[0].sweep.keys:
        settings = {value for per_key in points.values() for value, _, _ in per_key.get(key, [])}
        if len(settings) < 2:
            continue  # one setting (e.g. a tiny scale's single batch size): no curve to draw
        series = {name: [(value, mean) for value, mean, _ in per_key.get(key, [])]
                  for name, per_key in points.items()}
        plot_factor_curves(key, series, metric, target.plot(f"factor-{safe_name(key)}"))


def factor_points(variant: Variant, target: StudyDir) -> dict[str, list[tuple[str, float, int]]]:
    """{factor: [(value, mean objective, trials)]} over the COMPLETE trials; for ofat only the
    trials with every other factor at its base value (the factor's own line)."""
    sweep = variant.sweep
    done = [r for r in target.sweep(variant.name).read_trials()
            if r["state"] == "COMPLETE" and r["value"] not in ("", None)]
    base = {k: fmt_value(sweep.base_value(k)) for k in sweep.keys}
    found = {}
    for key in sweep.keys:
        rows = [r for r in done if sweep.spec.sampler != "ofat"
                or all(r[k] == base[k] for k in sweep.keys if k != key)]
        groups: dict[str, list[float]] = {}
        for r in rows:
            groups.setdefault(r[key], []).append(float(r["value"]))
        found[key] = [(value, sum(vs) / len(vs), len(vs)) for value, vs in groups.items()]
    return found


# ----------------------------------------------------------------------------- summary
def summary_text(study_plan: StudyPlan, rows: dict[str, dict],
                 results: list[tuple[str, Comparison]]) -> str:
    """One paragraph: what was run, the best variant, which differences are significant."""
    repeats = study_plan.spec.confirm.repeats
    what = "best swept config" if study_plan.spec.sweep else "config"
    names = [v.name for v in study_plan.variants]
    ran = [n for n in names if n in rows]
    text = (f"Study {study_plan.name} ({study_plan.scale} scale): {len(ran)} of {len(names)} "
            f"variants ({' x '.join(study_plan.axes)}) finished"
            f"{': ' + ', '.join(ran) if ran else ''}")
    missing = [n for n in names if n not in rows]
    text += f"; not run or unfinished: {', '.join(missing)}." if missing else "."
    text += (f" Each variant's {what} is trained with {repeats} seed{'s' if repeats > 1 else ''}"
             " and evaluated on its test split.")
    if not rows:
        return text
    scored = {n: r for n, r in rows.items() if r.get("test_acc") is not None}
    if len(scored) == 1:
        only = next(iter(scored))
        text += f" Test accuracy of {only}: {mean_cell(scored[only], 'test_acc')}."
    elif scored:
        best = max(scored, key=lambda n: scored[n]["test_acc"])
        text += (f" Highest mean test accuracy: {best} "
                 f"({mean_cell(scored[best], 'test_acc')}).")
    sentence = significance_sentence([r for _, r in results])
    if sentence:
        text += (" Significance (0.05, Holm-adjusted over all pairs): " + sentence +
                 " Pairs not named as beating one another are not distinguishable with these "
                 "seeds.")
    return text
