"""Repeats: one config trained several times and summarised, so a result comes with its noise.

A fan-out differs only in `train.seed` (seeds s..s+N-1: `--repeats N`, or a `train.seed`
list) or in `data.fold` (`--folds K`, or `data.folds` without `data.fold`); the data split is
fixed by `data.split_seed` either way. The runs live in a `RepeatsDir` (runs/rundir.py):
`seed-K/` or `fold-i/` run directories, `repeats.yaml` (the config naming them all) and
`summary.json`/`summary.csv` (per metric of result.json and per robustness row: mean, std,
95 % t-interval, n, values; `stats.summarize_metrics`).

The runs go to the run executor as specs (executor.py), so re-running continues by its one
rule: a finished run is reused, an interrupted one resumed, one that never reached a
checkpoint started over, one trained with another config refused (never mixed into the
summary); two copies of the command share the runs through the runs' claims. Sweeps
(confirmation) and studies (compare, confirmation) fan out through the same code.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import Config, fan_out_keys, load_config, validate
from ..errors import ReslabError
from ..runs.rundir import RepeatsDir, RunDir
from ..stats import summarize_metrics
from .executor import execute
from .spec import ExecOptions, RunSpec

Log = Callable[[str], None]
EpochCallback = Callable[[dict], None]


@dataclass(frozen=True)
class Member:
    """One run of a fan-out: its directory name, the seed or fold it varies, its config."""
    name: str
    key: int          # the seed (seed-K) or fold index (fold-i): what pairs runs up
    cfg: Config


@dataclass(frozen=True)
class Plan:
    by: str                 # "seed" | "fold"
    cfg: Config             # repeats.yaml: a train.seed list, or data.folds without data.fold
    members: list[Member]


def is_fan_out(cfg: Config, repeats: int | None = None, folds: int | None = None) -> bool:
    """Does this config (with --repeats / --folds) name several runs?"""
    return repeats is not None or folds is not None or bool(fan_out_keys(cfg))


def plan(cfg: Config, repeats: int | None = None, folds: int | None = None) -> Plan:
    """The runs of a fan-out. `repeats` N: seeds train.seed .. train.seed+N-1 (a train.seed
    list is its own seeds; N, if given, must match its length). `folds` K: folds 0..K-1
    (data.folds = K, one run per data.fold). Seeds and folds together are refused."""
    raw = cfg.to_dict()
    if folds is not None or (cfg.data.folds and cfg.data.fold is None):
        if repeats is not None or isinstance(cfg.train.seed, list):
            raise ReslabError("--folds with --repeats (or a train.seed list): one at a time; "
                              "k-fold runs use one seed, repeats one split")
        return _fold_plan(raw, folds or cfg.data.folds)
    return _seed_plan(raw, _seeds(cfg.train.seed, repeats))


def _seeds(seed: int | list[int], repeats: int | None) -> list[int]:
    if repeats is not None and repeats < 1:
        raise ReslabError(f"--repeats {repeats}: expected 1 or more")
    if isinstance(seed, list):
        if repeats is not None and repeats != len(seed):
            raise ReslabError(f"--repeats {repeats} with train.seed = {seed} ({len(seed)} "
                              "seeds): give one or the other")
        return list(seed)
    return list(range(seed, seed + (repeats or 1)))


def _seed_plan(raw: dict, seeds: list[int]) -> Plan:
    members = [Member(f"seed-{s}", s, validate(_with(raw, "train", seed=s))) for s in seeds]
    return Plan("seed", validate(_with(raw, "train", seed=seeds)), members)


def _fold_plan(raw: dict, folds: int) -> Plan:
    if folds < 2:
        raise ReslabError(f"--folds {folds}: expected 2 or more")
    members = [Member(f"fold-{i}", i, validate(_with(raw, "data", folds=folds, fold=i),
                                               f"fold {i}")) for i in range(folds)]
    return Plan("fold", validate(_with(raw, "data", folds=folds, fold=None)), members)


def _with(raw: dict, section: str, **values: Any) -> dict:
    return {**raw, section: {**raw[section], **values}}


def member_dir(target: RepeatsDir, plan_: Plan, member: Member) -> RunDir:
    return target.seed_run(member.key) if plan_.by == "seed" else target.fold_run(member.key)


# ----------------------------------------------------------------------------- running
def member_specs(target: RepeatsDir, fan: Plan, prefix: str = "",
                 robustness: tuple[str, bool] | None = None) -> list[RunSpec]:
    """The fan-out's runs as executor specs, named `<prefix><member>`."""
    return [RunSpec(f"{prefix}{m.name}", m.cfg.to_dict(), str(member_dir(target, fan, m).path),
                    robustness=robustness) for m in fan.members]


def run_repeats(config=None, out: str | Path | None = None, repeats: int | None = None,
                folds: int | None = None, overrides: list[str] | None = None,
                on_epoch: EpochCallback | None = None, quiet: bool = False,
                log: Log | None = None, options: ExecOptions | None = None
                ) -> tuple[RepeatsDir, dict]:
    """Train (or reuse, or resume) every run of the fan-out into `out` through the run
    executor (`options`: workers, GPUs, backend); write and return the summary."""
    log = log or (lambda line: None)
    cfg = load_config(config, overrides)
    fan = plan(cfg, repeats, folds)
    target = RepeatsDir.create(cfg, out)
    target.write_plan(fan.cfg)
    options = options or ExecOptions(quiet=quiet)
    log(f"{len(fan.members)} run(s) in {target.path}")
    execute(member_specs(target, fan), options, log, on_epoch)
    return target, write_summary(target, fan)


def resume_repeats(path: str | Path, **kwargs: Any) -> tuple[RepeatsDir, dict]:
    """Continue the fan-out in `path` from its repeats.yaml (see run_repeats for kwargs)."""
    return run_repeats(RepeatsDir.open(path).read_plan(), out=path, **kwargs)


# ----------------------------------------------------------------------------- summary
def finished_runs(target: RepeatsDir, fan: Plan) -> list[tuple[Member, RunDir]]:
    """The plan's runs that have a result.json, in plan order."""
    runs = [(m, member_dir(target, fan, m)) for m in fan.members]
    return [(m, r) for m, r in runs if r.result.is_file()]


def run_metrics(run: RunDir) -> dict[str, Any]:
    """result.json plus one accuracy and one drop per robustness row, keyed
    robustness/<perturbation>/<severity>/accuracy|drop (robustness-raw/... in raw mode)."""
    metrics = dict(run.read_result())
    for row in run.read_robustness():
        prefix = "robustness-raw" if row["mode"] == "raw" else "robustness"
        name = f"{prefix}/{row['perturbation']}/{row['severity']}"
        metrics[f"{name}/accuracy"], metrics[f"{name}/drop"] = row["accuracy"], row["drop"]
    return metrics


def write_summary(target: RepeatsDir, fan: Plan | None = None) -> dict:
    """summary.json/.csv over the finished runs; every numeric metric any run has."""
    fan = fan or plan(target.read_plan())
    summary = summarize_metrics([run_metrics(r) for _, r in finished_runs(target, fan)])
    target.write_summary(summary)
    return summary


def scores(target: RepeatsDir, metric: str, fan: Plan | None = None) -> dict[int, float]:
    """{seed or fold: metric} over the finished runs that have it (what paired tests pair)."""
    fan = fan or plan(target.read_plan())
    out = {}
    for member, run in finished_runs(target, fan):
        value = run_metrics(run).get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[member.key] = float(value)
    return out


SHOWN_METRICS = ("best_val_acc", "test_acc", "val_acc_best_model")


def summary_line(summary: dict, path: Path) -> str:
    """'Summary of 3 runs: best_val_acc 0.9512 (95 % CI 0.9470 to 0.9554), ...'."""
    parts = []
    for key in SHOWN_METRICS:
        entry = summary.get(key)
        if entry is None:
            continue
        ci = ("" if entry["ci95_low"] is None
              else f" (95 % CI {entry['ci95_low']:.4f} to {entry['ci95_high']:.4f})")
        parts.append(f"{key} {entry['mean']:.4f}{ci}")
    n = max((e["n"] for e in summary.values()), default=0)
    return f"Summary of {n} run(s): " + (", ".join(parts) or "no metrics") + f". In {path}"
