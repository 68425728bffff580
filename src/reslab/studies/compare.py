"""`reslab compare COMPARE.yaml`: train (or reuse) several runs and put them side by side.

COMPARE.yaml (a `CompareSpec` once loaded; `reslab study` files are another schema,
studies/study_spec.py)::

    name: resnet-widths            # optional; default: the file's stem
    robustness: false              # true (= seed suite), seed, corruptions or all
    overrides: [train.seed=0]      # --set strings applied to every config trained here
    repeats: 3                     # optional: each config trained with seeds s..s+2
    runs:
      - configs/a.yaml             # a train config, relative to the comparison file
      - {name: b, model: {arch: resnet20, width: 8}, train: {epochs: 2}}   # inline config
      - runs/old-run               # an existing run directory (has config.yaml): read only

Configs are trained into DIR/runs/<name>/ (name: the config's `name`, else the file stem or
the arch, de-duplicated with -2, -3...). An existing run directory is linked there so the
report finds it; it is never retrained. A run directory with result.json is reused as it is,
one with last.pt is resumed, so re-running a study picks up where it stopped.

With `repeats: N` (or a config whose train.seed is a list) an entry is N seed runs in
DIR/runs/<name>/seed-K/ with its summary.json (training/repeats.py), reused and resumed the
same way; an existing repeats directory can be listed as an entry too.

Same data for every run: the split is fixed by data.source/root, the fractions and
data.split_seed, which are kept as each config gives them (use `overrides` to force one
value); a warning names any of them that differ between runs. train.seed is likewise kept.

Outputs: DIR/compare.csv and compare.md (one row per entry: an entry with repeats gives the
mean over its seeds, `runs`, and <metric>_ci95_low/high for best_val_acc and test_acc),
DIR/significance.csv (every pair: test, p, Holm-adjusted p, difference, significant; see
significance.py), DIR/plots/overlaid_curves.png (one line per run) or, with repeats,
mean_curves.png (mean per epoch with a 95 % band), and DIR/report.html.
With robustness, each run also gets its robustness.csv (an existing one that covers the suite
is reused) and the table gains clean_acc, one <perturbation>_acc column per perturbation
(mean over severities) and mean_corruption_acc.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..config import (
    Config,
    absolute_paths,
    apply_overrides,
    fan_out_keys,
    load_config,
    parse_mapping,
    read_yaml,
    resolve_override_paths,
    resolve_paths,
    validate,
)
from ..errors import ReslabError
from ..evaluate.perturb import SUITES
from ..evaluate.robustness import SUITE_CHOICES, mean_corruption_accuracy, suite_levels
from ..execute import ExecOptions, RunSpec, ensure_robustness, execute
from ..execute.repeats import Plan, finished_runs, member_specs, plan, write_summary
from ..formatting import is_number, markdown_table
from ..output import info, warn
from ..report import write_report
from ..report.html import significance_sentence
from ..runs.rundir import CompareDir, RepeatsDir, RunDir, environment_warning, safe_name
from ..stats import Comparison, summarize
from .significance import SPLIT_KEYS, Trained, pair_tests

BASE_COLUMNS = ("name", "model", "format", "params", "best_val_acc", "test_acc", "epochs",
                "seconds_per_epoch", "runs", "device")
CI_COLUMNS = ("best_val_acc", "test_acc")  # with repeats: <key>_ci95_low, <key>_ci95_high
Log = Callable[[str], None]


class CompareFile(BaseModel):
    """The comparison file as written (validated by pydantic)."""
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    runs: list[Any]
    robustness: bool | str = False
    overrides: list[str] = Field(default_factory=list)
    repeats: int | None = Field(None, ge=1, le=1000)

    @field_validator("runs")
    @classmethod
    def _some_runs(cls, v: list[Any]) -> list[Any]:
        if not v:
            raise ValueError("expected at least one run (a config path, an inline config or "
                             "a run directory)")
        return v

    @field_validator("robustness")
    @classmethod
    def _suite(cls, v: bool | str) -> bool | str:
        if isinstance(v, str) and v not in SUITE_CHOICES:
            raise ValueError(f"expected true, false or a suite: {', '.join(SUITE_CHOICES)}")
        return v


@dataclass
class Entry:
    name: str
    cfg: Config
    run_dir: Path | None = None   # an existing run or repeats directory: read, never trained
    fan: Plan | None = None       # repeats: the seed runs to train


@dataclass
class CompareSpec:
    """The comparison file resolved: its entries with their configs."""
    path: Path
    name: str
    entries: list[Entry]
    suite: str | None             # robustness suite, None for no robustness


# ----------------------------------------------------------------------------- loading
def load_compare(path: str | Path, overrides: list[str] | None = None) -> CompareSpec:
    """Read and validate STUDY.yaml (every entry's config too) or raise a one-line error.
    `overrides` (--set) go after the file's own `overrides:`."""
    path = Path(path)
    spec = parse_mapping(CompareFile, _read_compare(path), str(path), "a runs: list")
    # The file's own overrides are part of it: their paths are relative to its folder.
    extra = [*resolve_override_paths(spec.overrides, path.parent, str(path)), *(overrides or [])]
    entries = [_entry(item, i, path, extra) for i, item in enumerate(spec.runs)]
    for i, entry in enumerate(entries):
        _plan_repeats(entry, spec.repeats, f"{path}: runs[{i}]")
    _dedupe(entries)
    suite = "seed" if spec.robustness is True else (spec.robustness or None)
    return CompareSpec(path, spec.name or path.stem, entries, suite)


def _read_compare(path: Path) -> dict:
    if path.is_file():
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            raw = {}  # read_yaml below reports it with its line number
        if raw is not None and not isinstance(raw, dict):
            raise ReslabError(f"{path}: expected a mapping with a runs: list")
    return read_yaml(path)


def _entry(item: Any, i: int, path: Path, overrides: list[str]) -> Entry:
    where = f"{path}: runs[{i}]"
    if isinstance(item, dict):
        raw = apply_overrides(resolve_paths(item, path.parent.resolve(), where), overrides)
        cfg = validate(absolute_paths(raw), where)
        return Entry(safe_name(cfg.name or cfg.model.arch), cfg)
    if not isinstance(item, str):
        raise ReslabError(f"{where}: expected a config path, a run directory or an inline "
                          f"config mapping, got {type(item).__name__}")
    target = Path(item).expanduser()
    target = target if target.is_absolute() else path.parent / target
    if target.is_dir() and RepeatsDir(target).plan_yaml.is_file():
        return Entry(safe_name(target.resolve().name), RepeatsDir(target).read_plan(), target)
    if target.is_dir():
        run = RunDir(target)
        if not run.config.is_file():
            raise ReslabError(f"{where}: {target} is a directory without {run.config.name} "
                              "(not a run or repeats directory)")
        return Entry(safe_name(target.resolve().name), run.read_config(), target)
    if not target.is_file():
        raise ReslabError(f"{where}: {target} not found (expected a config file or a run "
                          "directory)")
    cfg = load_config(target, overrides)
    return Entry(safe_name(cfg.name or target.stem), cfg)


def _plan_repeats(entry: Entry, repeats: int | None, where: str) -> None:
    """Seed runs for a config entry with `repeats: N` > 1 or a train.seed list."""
    if entry.run_dir is not None:
        return
    if entry.cfg.data.folds and entry.cfg.data.fold is None:
        raise ReslabError(f"{where}: data.folds = {entry.cfg.data.folds} without data.fold; a "
                          "comparison trains seeds: give data.fold (k-fold runs: reslab train "
                          "--folds)")
    if (repeats or 1) > 1 or fan_out_keys(entry.cfg):
        try:
            entry.fan = plan(entry.cfg, repeats if (repeats or 1) > 1 else None)
        except ReslabError as err:
            raise ReslabError(f"{where}: {err}") from None


def _dedupe(entries: list[Entry]) -> None:
    seen: set[str] = set()
    for e in entries:
        base, k = e.name, 2
        while e.name in seen:
            e.name, k = f"{base}-{k}", k + 1
        seen.add(e.name)


def split_warnings(entries: list[Entry]) -> list[str]:
    """One line per data key that changes the split and differs between runs."""
    out = []
    for key in SPLIT_KEYS:
        values = {e.name: getattr(e.cfg.data, key) for e in entries}
        if len(set(map(repr, values.values()))) > 1:
            shown = ", ".join(f"{n}: {v}" for n, v in values.items())
            why = ("the splits match only if every root holds the same images under the same "
                   "names (e.g. trees made by reslab convert)" if key == "root"
                   else "their train/val/test splits differ")
            out.append(f"runs differ in data.{key} ({shown}): {why}")
    return out


# ----------------------------------------------------------------------------- running
def run_compare(compare_path: str | Path, out: str | Path | None = None, quiet: bool = False,
                log: Log | None = None, options: ExecOptions | None = None,
                overrides: list[str] | None = None) -> list[dict]:
    """Train or reuse every run of the comparison through the run executor (`options`:
    workers, GPUs, backend), then write compare.csv/.md, significance.csv, plots and report.
    `overrides` (--set) apply to every config trained here, after the file's own."""
    log = log or info
    spec = load_compare(compare_path, overrides)
    out = CompareDir(out if out is not None else Path("compare") / safe_name(spec.name))
    out.claim()
    for warning in split_warnings(spec.entries):
        warn(warning)
    robustness = (spec.suite, False) if spec.suite else None
    runs = [run for e in spec.entries for run in entry_specs(e, out, robustness)]
    execute(runs, options or ExecOptions(quiet=quiet), log)
    trained = [finished_entry(e, out, spec.suite, log) for e in spec.entries]
    if differs := environment_warning({f"{t.name}/seed-{seed}" if len(t.runs) > 1 else t.name:
                                       run for t in trained for seed, run in t.runs.items()}):
        warn(differs)
    rows = [entry_row(t, spec.suite) for t in trained]
    results = pair_tests(trained)
    write_outputs(out, rows, trained, results, spec, log)
    log(f"comparison: {out.compare_csv}, {out.compare_md}, {out.significance_csv}")
    return rows


def entry_specs(entry: Entry, out: CompareDir, robustness: tuple[str, bool] | None
                ) -> list[RunSpec]:
    """The runs an entry needs trained: none for an existing run (linked, read only), one
    run, or its seed runs (a repeats directory under runs/<name>/)."""
    if entry.run_dir is not None:
        return []
    if entry.fan is None:
        return [RunSpec(entry.name, entry.cfg.to_dict(), str(out.entry(entry.name)),
                        robustness=robustness)]
    target = RepeatsDir.create(entry.fan.cfg, out.entry(entry.name))
    target.write_plan(entry.fan.cfg)
    return member_specs(target, entry.fan, f"{entry.name}/", robustness)


def finished_entry(entry: Entry, out: CompareDir, suite: str | None, log: Log) -> Trained:
    """The entry's finished runs by seed, once the executor is done."""
    if entry.run_dir is not None:
        path = _link_existing(entry, out.entry(entry.name), log)
        if RepeatsDir(path).plan_yaml.is_file():  # an existing repeats directory, linked
            trained = repeats_entry(entry.name, RepeatsDir(path))
        else:
            trained = Trained(entry.name, RunDir(path).read_config(),
                              {entry.cfg.train.seed: RunDir(path)})
        for run in trained.runs.values() if suite else ():
            ensure_robustness(run, suite, log=log)
    elif entry.fan is None:
        run = RunDir(out.entry(entry.name))
        trained = Trained(entry.name, run.read_config(), {entry.cfg.train.seed: run})
    else:
        trained = repeats_entry(entry.name, out.entry_repeats(entry.name))
    repeats = out.entry_repeats(entry.name)
    if repeats.plan_yaml.is_file():  # its summary gains the robustness rows
        write_summary(repeats)
    return trained


def repeats_entry(name: str, target: RepeatsDir) -> Trained:
    fan = plan(target.read_plan())
    return Trained(name, fan.cfg, {m.key: run for m, run in finished_runs(target, fan)})


def _link_existing(entry: Entry, target: Path, log: Log) -> Path:
    source = entry.run_dir.resolve()
    finished = (RepeatsDir(source).summary_json if RepeatsDir(source).plan_yaml.is_file()
                else RunDir(source).result)
    if not finished.is_file():
        raise ReslabError(f"{entry.run_dir}: no {finished.name} (unfinished); finish it with "
                          f"reslab train --resume {entry.run_dir}")
    if target.is_symlink() or not target.exists():
        # A link, not a copy: the report reads DIR/runs/*; the run itself stays where it is.
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.unlink(missing_ok=True)
            target.symlink_to(source, target_is_directory=True)
        except OSError as err:
            log(f"warning: could not link {target} -> {source} ({err}); the report's learning "
                "curves will miss this run")
            return source
    elif target.resolve() != source:
        raise ReslabError(f"{target} already exists and is not {source}; rename the entry "
                          "or remove that directory")
    log(f"{entry.name}: existing run {source}, not retrained")
    return target


# ----------------------------------------------------------------------------- rows
def entry_row(entry: Trained, suite: str | None) -> dict:
    """One table row: the run's values, or with several runs their means (plus the 95 %
    t-interval of best_val_acc and test_acc)."""
    rows = [compare_row(entry.name, run, suite) for run in entry.runs.values()]
    if len(rows) == 1:
        return {**rows[0], "runs": 1}
    out = {k: v for k, v in rows[0].items() if not is_number(v)}
    for key in [k for k in rows[0] if is_number(rows[0][k])]:
        values = [r[key] for r in rows if is_number(r.get(key))]
        entry_summary = summarize(values) if values else None
        out[key] = entry_summary["mean"] if entry_summary else None
        if all(isinstance(v, int) for v in values) and len(set(values)) == 1:
            out[key] = values[0]  # the same count in every run (params, epochs) stays a count
        if key in CI_COLUMNS and entry_summary:
            out[f"{key}_ci95_low"] = entry_summary["ci95_low"]
            out[f"{key}_ci95_high"] = entry_summary["ci95_high"]
    out["runs"] = len(rows)
    out["device"] = ", ".join(sorted({r["device"] for r in rows}))
    return out




def compare_row(name: str, run: RunDir, suite: str | None) -> dict:
    cfg = run.read_config()
    result = run.read_result()
    row = {"name": name, "model": cfg.model.arch, "format": data_format(run, cfg),
           "params": result.get("params"), "best_val_acc": result.get("best_val_acc"),
           "test_acc": result.get("test_acc"), "epochs": result.get("epochs_run"),
           "seconds_per_epoch": result.get("seconds_per_epoch"), "device": run.device_label()}
    if suite:
        row.update(robustness_columns(run.read_robustness(), suite))
    return row


def data_format(run: RunDir, cfg: Config) -> str:
    """The format the run was trained on, from its checkpoint's normalisation record."""
    try:
        return run.read_norm().get("fmt") or cfg.data.format
    except ReslabError:  # an unreadable checkpoint only costs this column its detail
        return cfg.data.format


def robustness_columns(rows: list[dict], suite: str) -> dict:
    """clean_acc, <perturbation>_acc (mean over its severities), mean_corruption_acc."""
    wanted = {n for n, _, _ in suite_levels(suite)}
    accs: dict[str, list[float]] = {}
    for r in rows:
        accs.setdefault(r["perturbation"], []).append(float(r["accuracy"]))
    cols = {"clean_acc": accs["clean"][0]}
    cols.update({f"{n}_acc": sum(v) / len(v) for n, v in accs.items() if n in wanted})
    if wanted & set(SUITES["corruptions"]):
        cols["mean_corruption_acc"] = mean_corruption_accuracy(
            [{"perturbation": n, "accuracy": a} for n, v in accs.items() if n in wanted
             for a in v])
    return cols


# ----------------------------------------------------------------------------- outputs
def columns_of(rows: list[dict]) -> list[str]:
    cols = list(BASE_COLUMNS)
    for row in rows:
        cols += [k for k in row if k not in cols]
    return cols


def shown_columns(rows: list[dict]) -> list[str]:
    """The table's columns for people: the CI bounds are shown inside their metric's cell."""
    return [c for c in columns_of(rows) if "_ci95_" not in c]


def cell(value: Any, key: str, row: dict | None = None) -> str:
    """Table text: rates to 4 decimals (a mean with its CI as mean ± half-width), seconds to
    2, params with thousands separators."""
    if value is None:
        return "—"
    low, high = (row or {}).get(f"{key}_ci95_low"), (row or {}).get(f"{key}_ci95_high")
    if isinstance(value, float) and low is not None and high is not None:
        return f"{value:.4f} ± {(high - low) / 2:.4f}"
    if isinstance(value, float) and key.endswith("_acc"):
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def to_markdown(rows: list[dict], spec: CompareSpec,
                results: list[tuple[str, Comparison]] = ()) -> str:
    cols = shown_columns(rows)
    lines = [f"# Comparison: {spec.name}", "", f"Comparison file `{spec.path}`, {len(rows)} "
             "entries.", "",
             markdown_table(cols, [[cell(r.get(c), c, r) for c in cols] for r in rows],
                            [c not in ("name", "model", "format", "device") for c in cols])]
    if any(r.get("runs", 1) > 1 for r in rows):
        lines += ["", "Entries with several runs show the mean over their seeds; ± is the "
                  "half-width of the 95 % t-interval of that mean (compare.csv: *_ci95_low/high)."]
    return "\n".join(lines + significance_markdown(results)) + "\n"


def significance_markdown(results: list[tuple[str, Comparison]]) -> list[str]:
    """The significance table and its one-sentence reading (empty with a single entry)."""
    if not results:
        return []
    rows = [[f"{r.a} vs {r.b}", metric, r.test, r.n,
             "—" if r.p_value is None else f"{r.p_value:.3g}",
             "—" if r.p_holm is None else f"{r.p_holm:.3g}",
             "—" if r.mean_difference is None else f"{100 * r.mean_difference:+.2f} pp",
             "yes" if r.significant else "no"] for metric, r in results]
    table = markdown_table(["pair", "metric", "test", "n", "p", "p (Holm)", "difference",
                            "significant (0.05)"], rows, [False] * 3 + [True] * 4 + [False])
    return ["", "## Significance", "", table, "", significance_sentence([r for _, r in results])]


def write_outputs(out: CompareDir, rows: list[dict], trained: list[Trained],
                  results: list[tuple[str, Comparison]], spec: CompareSpec, log: Log) -> None:
    for t in trained:  # a damaged metrics.jsonl stops the command before a table is rewritten
        for run in t.runs.values():
            run.read_metrics()
    out.write_table(columns_of(rows), rows, to_markdown(rows, spec, results))
    out.write_significance(results)
    if results:
        log(significance_sentence([r for _, r in results]))
    html, _ = write_report(out.path)  # which draws the curves: only the report draws plots
    log(f"report: {html}")
