"""Run, sweep, comparison, repeats, study, data and LR-finder directories: the contract
between commands.

Every file name is spelled here and every file is read and written here; nothing else in
reslab touches a directory's files by name (tests/runs/test_file_names.py fails on a file
name spelled elsewhere). Each directory reslab makes carries a `.reslab`
marker naming its kind, so reslab never writes into a folder it did not make (a user's
project folder given as --out is refused, not overwritten).
"""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
import time
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image

from ..config import Config, first_line_of, load_config
from ..errors import ReslabError, short_repr
from ..stats import SUMMARY_COLUMNS, Comparison, summary_rows
from ..utils import (
    TMP_SUFFIX,
    append_jsonl,
    atomic_write_bytes,
    atomic_write_text,
    natural_key,
    natural_sorted,
    read_csv,
    read_json,
    read_jsonl,
    remove_stale_temp_files,
    write_csv,
    write_json,
)
from .claim import CLAIM, CLAIM_LOCK, RunClaim, grace_seconds, read_holder
from .env import env_differences

MARKER = ".reslab"
ROBUSTNESS_COLUMNS = ("perturbation", "severity", "accuracy", "drop", "mode")
ROBUSTNESS_MODES = ("display", "raw")
CIFAR10C_COLUMNS = ("corruption", "severity", "accuracy", "error")
# `reslab export` formats -> the file name ending under RUN/export/ (after the weights' name).
# significance.csv: the metric, the pair, then stats.Comparison's fields (difference = a - b,
# a being the better entry; p_holm: Holm-adjusted over every tested pair of the comparison).
SIGNIFICANCE_FIELDS = ("a", "b", "test", "n", "statistic", "p_value", "p_holm",
                       "mean_difference", "ci95_low", "ci95_high", "significant")
SIGNIFICANCE_COLUMNS = ("metric", "pair", *SIGNIFICANCE_FIELDS)
EXPORT_SUFFIXES = {"onnx": ".onnx", "torchscript": ".torchscript.pt",
                   "safetensors": ".safetensors"}
# The final evaluation's headline metrics in result.json (all of them: eval_metrics.json).
RESULT_METRICS = ("top5", "macro_f1", "ece", "nll")
# result.json values that tables, summaries and significance tests compute with: numbers (or
# null); anything else is a damaged file, refused when it is read.
RESULT_NUMBERS = ("best_val_acc", "final_val_acc", "test_acc", "params", "epochs_run",
                  "seconds_per_epoch", *RESULT_METRICS)


# data.* keys a --resume of a started (unfinished) run may change: where the images are, how
# they are decoded and cached; none changes which image is in which split or its pixels.
RESUME_DATA_KEYS = frozenset({"data.root", "data.workers", "data.cache_dir"})


def _write_yaml(path: Path, mapping: Mapping) -> Path:
    """A mapping as YAML in its own key order, written atomically; returns `path`."""
    atomic_write_text(path, yaml.safe_dump(dict(mapping), sort_keys=False))
    return path


def text_or_none(path: Path) -> str | None:
    """A text file reslab wrote (None if absent); one line naming it if it is not UTF-8 any
    more (edited or damaged by hand), never a traceback."""
    if not path.is_file():
        return None
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ReslabError(f"{path}: not UTF-8 text (byte {err.start}); reslab writes it as "
                          "UTF-8: restore it or delete it") from None


def marked_kind(path: Path) -> str | None:
    marker = Path(path) / MARKER
    text = text_or_none(marker)
    return text.strip() if text is not None else None


def claim_dir(path: Path, kind: str, flag: str = "--out",
              own_files: tuple[str, ...] = ()) -> Path:
    """Make `path` a `kind` directory: new, empty (or holding only `own_files`, e.g. a sweep's
    SQLite study opened before the sweep started), or already reslab's of this kind.
    Anything else (a file, a user's folder with files in it) is refused with one line."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ReslabError(f"{flag} {path} is a file; expected a directory (new or empty)")
    # A claim, its lock and temp files may appear while another process sets the run up.
    ignored = {*own_files, CLAIM, CLAIM_LOCK}
    if path.is_dir() and any(p.name not in ignored and not p.name.endswith(TMP_SUFFIX)
                             for p in path.iterdir()):
        found = marked_kind(path)
        if found is None:
            raise ReslabError(f"{flag} {path} is not empty and was not made by reslab; choose "
                              "a new or empty directory (reslab never writes into other files)")
        if found != kind:
            raise ReslabError(f"{flag} {path} holds a reslab {found}, not a {kind}; choose "
                              "another directory")
    path.mkdir(parents=True, exist_ok=True)
    if marked_kind(path) is None:
        atomic_write_text(path / MARKER, kind + "\n")
    clean_temp_files(path)
    return path


def clean_temp_files(path: Path) -> None:
    """Remove the temp files a killed write left behind, unless a live process holds the
    directory's claim: those are its writes in flight."""
    holder = read_holder(path)
    if holder is None or holder.is_stale():
        # Only temp files older than the claim grace: a fresh one is another process's write
        # in flight (two copies of a command set up the same comparison or repeats directory).
        remove_stale_temp_files(path, older_than=grace_seconds())


class Directory:
    """What every reslab directory has: plots/ and the report written from its files."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    plots = property(lambda self: self.path / "plots")
    report_html = property(lambda self: self.path / "report.html")
    report_md = property(lambda self: self.path / "report.md")

    def plot(self, name: str) -> Path:
        return self.plots / f"{name}.png"

    # Learning curves a planner draws and its report redraws: the mean over each group's runs
    # (with its band), or one line per run.
    mean_curves_png = property(lambda self: self.plot("mean_curves"))
    overlaid_curves_png = property(lambda self: self.plot("overlaid_curves"))


class RunDir(Directory):
    """One training run. Each file below sits with its readers and writers."""

    @staticmethod
    def create(cfg: Config, out: str | Path | None, root: Path = Path("runs")) -> RunDir:
        """A directory for a new run. Refused: a user's folder or another kind of reslab
        directory. The trainer then takes the run's claim and calls `require_new` (a run
        killed before its first checkpoint is started over)."""
        return RunDir(claim_dir(Path(out) if out is not None else default_out(cfg, root), "run"))

    def require_new(self) -> None:
        """Refuse to start over a run that has a checkpoint (checked under the run's claim)."""
        if self.has_started():
            raise ReslabError(f"--out {self.path} already holds a run; use --resume {self.path} "
                              "to continue it or choose another directory")

    @staticmethod
    def open(path: str | Path) -> RunDir:
        run = RunDir(path)
        if not run.config.is_file():
            raise ReslabError(f"{run.path} is not a run directory (no config.yaml)")
        # A user's folder with a config.yaml of its own is not ours to write into (--resume).
        if marked_kind(run.path) != "run" and not (run.last.exists() or run.metrics.exists()):
            raise ReslabError(f"{run.path} is not a run directory reslab made (no {MARKER} "
                              "marker, checkpoint or metrics.jsonl); nothing was changed")
        run.verify_records()
        clean_temp_files(run.path)
        return run

    def take_claim(self) -> RunClaim:
        """Become the run's one writer (runs/claim.py), or raise RunClaimed naming the live
        holder; then clear what a killed earlier writer left half-written."""
        claim = RunClaim.take(self.path)
        remove_stale_temp_files(self.path)
        return claim

    def verify_records(self) -> None:
        """classes.json, env.json and metrics.jsonl parse (one line naming a damaged one),
        checked when the run is opened, before a resume or eval writes anything."""
        if self.classes.exists():
            self.read_classes()
        self.read_env()
        self.read_metrics(warn=False)

    def discard(self) -> None:
        """Delete this run directory; only one reslab made (marked) is ever deleted."""
        if marked_kind(self.path) != "run":
            raise ReslabError(f"{self.path}: not a run directory reslab made; not deleting it")
        shutil.rmtree(self.path)

    # Written when training starts: what ran, on what classes, where.
    config = property(lambda self: self.path / "config.yaml")
    classes = property(lambda self: self.path / "classes.json")
    env = property(lambda self: self.path / "env.json")

    def tracked_files(self) -> tuple[Path, ...]:
        """The records an experiment tracker (MLflow) keeps as the run's artifacts."""
        return (self.config, self.classes, self.metrics, self.metrics_csv, self.result,
                self.eval_metrics, self.best, self.last)

    def write_start(self, cfg: Config, classes: list[str], env: dict | None = None) -> None:
        atomic_write_text(self.config, cfg.to_yaml())
        write_json(self.classes, classes)
        if env is not None:
            write_json(self.env, env)

    def read_config(self, overrides: list[str] | None = None) -> Config:
        """The run's resolved config; an empty or unparsable file is an error, never defaults.
        Its paths were made absolute when it was written (a relative one, from an older
        reslab, is taken relative to the current folder, as it was then).
        `overrides` (a resume's --set) may not change the data of a run that has started: a
        re-split would test on images it trained on (see refuse_data_overrides)."""
        if overrides:
            self.refuse_data_overrides(overrides)
        return load_config(self.config, overrides, allow_empty=False, file_relative=False)

    def refuse_data_overrides(self, overrides: list[str]) -> None:
        """No `--set data.*` on a finished run (its result.json describes its data), and no
        split-defining key on a started one; where the images are read from, how many
        workers decode them and the cache folder may change."""
        keys = [item.partition("=")[0].strip() for item in overrides]
        data = [k for k in keys if k.startswith("data.")]
        if data and self.result.is_file():
            raise ReslabError(f"--set {data[0]}: {self.path} has finished; its data cannot "
                              "change (train a new run with --out instead); nothing was changed")
        split = [k for k in data if k not in RESUME_DATA_KEYS]
        if split and self.has_started():
            raise ReslabError(f"--set {split[0]}: {self.path} has started; changing its data "
                              "would change its split or images mid-run (only "
                              f"{', '.join(sorted(RESUME_DATA_KEYS))} may change on --resume); "
                              "nothing was changed")

    def read_config_text(self) -> str | None:
        return text_or_none(self.config)

    def read_classes(self) -> list[str]:
        if not self.classes.exists():
            raise ReslabError(f"{self.path}: classes.json missing; not a complete run")
        classes = _read_json_file(self.classes, "the run's class names")
        if (not isinstance(classes, list) or not classes
                or not all(isinstance(c, str) for c in classes)):
            raise ReslabError(f"{self.classes}: expected a JSON list of class names, got "
                              f"{short_repr(classes)}")
        return classes

    def read_env(self) -> dict | None:
        if not self.env.is_file():
            return None
        env = _read_json_file(self.env, "the run's environment record")
        if not isinstance(env, dict):
            raise ReslabError(f"{self.env}: expected a JSON object (the run's environment "
                              "record)")
        return env

    def device_label(self) -> str:
        """Where the run trained, for tables: 'gpu 1' (the CUDA_VISIBLE_DEVICES its worker
        was given), 'gpu', or 'cpu' ('cpu (CUDA_VISIBLE_DEVICES=1)' when a GPU was assigned
        but CUDA was not there)."""
        env = self.read_env() or {}
        gpu = env.get("cuda_visible_devices")
        if env.get("cuda"):
            return f"gpu {gpu}" if gpu else "gpu"
        return f"cpu (CUDA_VISIBLE_DEVICES={gpu})" if gpu else "cpu"

    # Written every epoch: a metrics row, last.pt, best.pt when it improved, TensorBoard.
    metrics = property(lambda self: self.path / "metrics.jsonl")
    last = property(lambda self: self.path / "last.pt")
    best = property(lambda self: self.path / "best.pt")
    tb = property(lambda self: self.path / "tb")

    def has_started(self) -> bool:
        """Has a checkpoint: --resume continues it (else it restarts from scratch)."""
        return self.last.is_file()

    # metrics.jsonl as a table (rewritten from it each epoch: spreadsheets, pandas, R).
    metrics_csv = property(lambda self: self.path / "metrics.csv")

    def append_metrics(self, row: dict) -> None:
        append_jsonl(self.metrics, row)
        self._write_metrics_csv(self.read_metrics(warn=False))

    def _write_metrics_csv(self, rows: list[dict]) -> None:
        if not rows:
            self.metrics_csv.unlink(missing_ok=True)
            return
        header = list(dict.fromkeys(k for r in rows for k in r))
        write_csv(self.metrics_csv, header, ([r.get(k, "") for k in header] for r in rows))

    def read_metrics(self, warn: bool = True) -> list[dict]:
        try:
            rows = read_jsonl(self.metrics, warn=warn)
        except ValueError as err:  # a damaged line before the last one (or not UTF-8)
            raise ReslabError(f"{self.metrics}: {str(err).removeprefix(f'{self.metrics}: ')} "
                              "(damaged; the rows cannot be trusted)") from None
        bad = next((i for i, r in enumerate(rows) if not isinstance(r, dict) or "epoch" not in r),
                   None)
        if bad is not None:
            raise ReslabError(f"{self.metrics}: line {bad + 1} is not a metrics row (no epoch)")
        return rows

    def truncate_metrics(self, last_epoch: int) -> list[dict]:
        """Keep rows up to `last_epoch` (a resumed run rewrites the epochs after its checkpoint)."""
        if not self.metrics.is_file():
            return []
        rows = [r for r in self.read_metrics() if r["epoch"] <= last_epoch]
        atomic_write_text(self.metrics, "".join(_jsonl_line(r) for r in rows))
        self._write_metrics_csv(rows)
        return rows

    def read_norm(self) -> dict:
        """The normalisation (mean, std, scale, fmt) stored in the run's checkpoints."""
        ckpt = self.best if self.best.is_file() else self.last
        try:
            return torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)["norm"]
        except Exception as err:
            raise ReslabError(f"{ckpt}: cannot read its normalisation ({err})") from None

    # Written by the final evaluation and by `eval`.
    result = property(lambda self: self.path / "result.json")
    confusion = property(lambda self: self.path / "confusion_matrix.csv")
    misclassified = property(lambda self: self.path / "misclassified.npz")

    def write_result(self, result: dict) -> None:
        write_json(self.result, result)

    def read_result(self) -> dict:
        """result.json; one line naming it when it is damaged (empty, cut short, not an
        object, a headline value that is not a number): tables and tests must not read it."""
        if not self.result.is_file():
            raise ReslabError(f"{self.path}: no result.json (an unfinished run); finish it with "
                              f"reslab train --resume {self.path}")
        result = _read_json_file(self.result, "the run's final results")
        if not isinstance(result, dict):
            raise ReslabError(f"{self.result}: expected a JSON object (the run's final "
                              f"results), got {short_repr(result)}; the file is damaged")
        bad = next((k for k in RESULT_NUMBERS if not _number_or_null(result.get(k))), None)
        if bad is not None:
            raise ReslabError(f"{self.result}: {bad} = {short_repr(result[bad])}: expected a "
                              "number; the file is damaged")
        return result

    def write_confusion(self, matrix: np.ndarray, classes: list[str]) -> None:
        write_csv(self.confusion, ["true\\pred", *classes],
                  ([c, *row] for c, row in zip(classes, matrix.tolist())))

    def read_confusion(self) -> tuple[list[str], np.ndarray]:
        with self.confusion.open(newline="") as f:
            rows = [r for r in csv.reader(f) if r]
        classes = rows[0][1:]
        matrix = np.array([[int(v) for v in r[1:]] for r in rows[1:]], dtype=np.int64)
        if matrix.shape != (len(classes), len(classes)):
            raise ValueError(f"expected a {len(classes)}x{len(classes)} matrix, got "
                             f"{matrix.shape}")
        return classes, matrix

    # The full metrics of the same evaluation as confusion_matrix.csv (engine/metrics.py's
    # classification_metrics plus split and n): per-class table, reliability bins, pairs.
    eval_metrics = property(lambda self: self.path / "eval_metrics.json")

    def write_evaluation(self, matrix: np.ndarray, classes: list[str], metrics: dict) -> None:
        """confusion_matrix.csv and eval_metrics.json, written together so they agree."""
        self.write_confusion(matrix, classes)
        write_json(self.eval_metrics, metrics)

    def read_eval_metrics(self) -> dict | None:
        return read_json(self.eval_metrics) if self.eval_metrics.is_file() else None
    predictions = property(lambda self: self.path / "predictions.npz")

    def write_predictions(self, labels: np.ndarray, pred: np.ndarray,
                          confidence: np.ndarray) -> None:
        """Per image of the final evaluation's split, in its order: the label, the predicted
        class and its softmax confidence (McNemar's test pairs two runs image by image)."""
        atomic_write_bytes(self.predictions, _npz_bytes(labels=labels, pred=pred,
                                                        confidence=confidence))

    def read_predictions(self) -> dict[str, np.ndarray] | None:
        """{labels, pred, confidence}, or None for a run written before the file existed."""
        if not self.predictions.is_file():
            return None
        try:
            with np.load(self.predictions, allow_pickle=False) as data:
                found = {k: data[k] for k in ("labels", "pred", "confidence")}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            raise ReslabError(f"{self.predictions}: cannot read the final evaluation's "
                              f"predictions ({type(err).__name__}: {first_line_of(err)}); the "
                              "file is damaged") from None
        if len({len(v) for v in found.values()}) != 1:
            raise ReslabError(f"{self.predictions}: labels, pred and confidence differ in "
                              "length; the file is damaged")
        return found

    def write_misclassified(self, images: np.ndarray, mistakes: dict[str, np.ndarray]) -> None:
        atomic_write_bytes(self.misclassified, _npz_bytes(images=images, **mistakes))

    def read_misclassified(self) -> dict[str, np.ndarray]:
        with np.load(self.misclassified, allow_pickle=False) as data:
            return {k: data[k] for k in ("images", "true", "pred", "confidence")}

    # Written by `robustness`: one pair of files per mode (display: robustness.csv/.md, raw:
    # robustness-raw.csv/.md), so running one mode never replaces the other's results.
    robustness_csv = property(lambda self: self.path / "robustness.csv")
    robustness_md = property(lambda self: self.path / "robustness.md")

    def robustness_files(self, mode: str) -> tuple[Path, Path]:
        """(csv, md) of a mode: display or raw."""
        if mode == "raw":
            return self.path / "robustness-raw.csv", self.path / "robustness-raw.md"
        return self.robustness_csv, self.robustness_md

    def robustness_plot(self, mode: str) -> Path:
        """The figure of a mode's rows, beside the other plots."""
        return self.plot("robustness-raw" if mode == "raw" else "robustness")

    # Written by `robustness --cifar10c`: accuracy and error per corruption and severity.
    cifar10c_csv = property(lambda self: self.path / "cifar10c.csv")
    cifar10c_md = property(lambda self: self.path / "cifar10c.md")

    def write_cifar10c(self, rows: list[dict], markdown: str) -> None:
        write_csv(self.cifar10c_csv, list(CIFAR10C_COLUMNS),
                  ([r[k] for k in CIFAR10C_COLUMNS] for r in rows))
        atomic_write_text(self.cifar10c_md, markdown)

    def read_cifar10c(self) -> list[dict] | None:
        if not self.cifar10c_csv.is_file():
            return None
        return [{"corruption": r["corruption"], "severity": int(r["severity"]),
                 "accuracy": float(r["accuracy"]), "error": float(r["error"])}
                for r in read_csv(self.cifar10c_csv)]

    def robustness_modes(self) -> list[str]:
        """The modes with results here, display first."""
        return [m for m in ROBUSTNESS_MODES if self.read_robustness(m)]

    def write_robustness(self, rows: list[dict], markdown: str) -> None:
        csv, md = self.robustness_files(rows[0].get("mode") or "display")
        write_csv(csv, list(ROBUSTNESS_COLUMNS),
                  ([r.get(k, "") for k in ROBUSTNESS_COLUMNS] for r in rows))
        atomic_write_text(md, markdown)

    def read_robustness(self, mode: str | None = None) -> list[dict]:
        """Rows with typed values; `mode` is display/raw (files older than the column: '').
        Without a mode: the most recently written mode's rows (one mode, never mixed)."""
        if mode is None:
            written = [p for p in (self.robustness_files(m)[0] for m in ROBUSTNESS_MODES)
                       if p.is_file()]
            newest = max(written, key=lambda p: p.stat().st_mtime_ns, default=None)
            return self._robustness_rows(newest) if newest else []
        rows = self._robustness_rows(self.robustness_files(mode)[0])
        if mode == "raw" and not rows:  # written before raw mode had its own file
            return [r for r in self._robustness_rows(self.robustness_csv) if r["mode"] == "raw"]
        return [r for r in rows if mode == "raw" or r["mode"] != "raw"]

    @staticmethod
    def _robustness_rows(csv: Path) -> list[dict]:
        if not csv.is_file():
            return []
        try:
            return [{"perturbation": r["perturbation"], "severity": int(r["severity"] or 0),
                     "accuracy": float(r["accuracy"]), "drop": float(r["drop"]),
                     "mode": r.get("mode") or ""} for r in read_csv(csv)]
        except KeyError as err:
            raise ReslabError(f"{csv}: no {err.args[0]} column (expected "
                              f"{', '.join(ROBUSTNESS_COLUMNS)}); the file is damaged") from None
        except (ValueError, TypeError) as err:  # a cell that is no number, not UTF-8
            raise ReslabError(f"{csv}: {first_line_of(err)}; the file is damaged") from None

    def read_robustness_md(self, mode: str = "display") -> str | None:
        return text_or_none(self.robustness_files(mode)[1])

    # Written by `export`.
    export = property(lambda self: self.path / "export")

    def export_file(self, fmt: str, weights: str) -> Path:
        """`export/<weights><suffix>`, e.g. export/best.onnx for best.pt exported to ONNX."""
        return self.export / f"{weights}{EXPORT_SUFFIXES[fmt]}"

    # `reslab demo`: the small sweep it runs from the trained run, kept beside it.
    demo_sweep_yaml = property(lambda self: self.path / "sweep.yaml")
    demo_sweep = property(lambda self: SweepDir(self.path / "sweep"))

    def write_demo_sweep(self, spec: Mapping) -> Path:
        return _write_yaml(self.demo_sweep_yaml, spec)


class SweepDir(Directory):
    """A sweep directory:

    study.txt, study.db    the Optuna study's name (one study per directory), its SQLite storage
    trials.csv             one row per trial: number, state, value, reason, seconds, parameters
    best.yaml, factors.md  the best trial's full config; the objective per factor value
    trials/N/              trial N's run directory
    plots/, report.*       Optuna's plots and the trials' curves; the report
    tb/trial-N/            TensorBoard HParams: trial N's parameters and result
    """

    study_txt = property(lambda self: self.path / "study.txt")
    tb = property(lambda self: self.path / "tb")

    def tb_trial(self, number: int) -> Path:
        return self.tb / f"trial-{number}"
    study_db = property(lambda self: self.path / "study.db")
    trials_csv = property(lambda self: self.path / "trials.csv")
    best_yaml = property(lambda self: self.path / "best.yaml")
    factors_md = property(lambda self: self.path / "factors.md")
    # The trials' validation curves labelled by their parameters (drawn by the sweep), and
    # the confirmed trials' mean curves (drawn by the report).
    trial_curves_png = property(lambda self: self.plot("trial_learning_curves"))
    confirm_curves_png = property(lambda self: self.plot("confirm_curves"))

    def claim(self, study: str) -> None:
        """Trial directories are named by trial number, so one directory holds one study."""
        db = self.study_db.name
        claim_dir(self.path, "sweep", own_files=(db, f"{db}-journal", f"{db}-wal", f"{db}-shm"))
        held = text_or_none(self.study_txt)
        if held is not None and held.strip() != study:
            raise ReslabError(f"{self.path} holds study {held.strip()!r}, "
                              f"not {study!r}; give another --out DIR for a different study")
        if held is None:
            atomic_write_text(self.study_txt, study + "\n")

    trials = property(lambda self: self.path / "trials")

    def trial(self, number: int) -> RunDir:
        """Trial N's run directory, `trials/N/`."""
        return RunDir(self.trials / str(number))

    def trial_runs(self) -> list[RunDir]:
        found = [RunDir(p.parent) for p in self.trials.glob("*/metrics.jsonl")]
        return sorted(found, key=lambda r: natural_key(r.path.name))

    def write_trials(self, header: list[str], rows: list[list[Any]]) -> None:
        write_csv(self.trials_csv, header, rows)

    def read_trials(self) -> list[dict]:
        return read_csv(self.trials_csv)

    def write_best(self, text: str) -> None:
        atomic_write_text(self.best_yaml, text)

    def read_best(self) -> str | None:
        return text_or_none(self.best_yaml)

    def read_factors(self) -> str | None:
        return text_or_none(self.factors_md)

    def write_factors(self, markdown: str) -> None:
        atomic_write_text(self.factors_md, markdown)

    # Written by the confirmation (`confirm:`): the top trials retrained with fresh seeds.
    confirm_csv = property(lambda self: self.path / "confirm.csv")

    def confirmation(self, number: int) -> RepeatsDir:
        """Trial N's confirmation runs, `confirm/trial-N/` (seed-K/ inside)."""
        return RepeatsDir(self.path / "confirm" / f"trial-{number}")

    def confirmations(self) -> dict[int, RepeatsDir]:
        """Every confirm/trial-N/ directory, by trial number."""
        found = {int(p.parent.name.removeprefix("trial-")): RepeatsDir(p.parent)
                 for p in (self.path / "confirm").glob("trial-*/repeats.yaml")
                 if p.parent.name.removeprefix("trial-").isdigit()}
        return dict(sorted(found.items()))

    def write_confirm(self, header: list[str], rows: list[list[Any]]) -> None:
        write_csv(self.confirm_csv, header, rows)

    def read_confirm(self) -> list[dict]:
        return read_csv(self.confirm_csv) if self.confirm_csv.is_file() else []


class SignificanceFiles:
    """significance.csv: one row per pair of entries (comparisons) or variants (studies)."""

    path: Path
    significance_csv = property(lambda self: self.path / "significance.csv")

    def write_significance(self, results: list[tuple[str, Comparison]]) -> None:
        """One row per pair of entries: (metric, the test's result); None is an empty cell."""
        rows = ([metric, f"{r.a} vs {r.b}", *(_blank(r.as_dict()[f]) for f in
                                              SIGNIFICANCE_FIELDS)] for metric, r in results)
        write_csv(self.significance_csv, list(SIGNIFICANCE_COLUMNS), rows)

    def read_significance(self) -> list[tuple[str, Comparison]]:
        if not self.significance_csv.is_file():
            return []
        return [(row["metric"], _comparison(row)) for row in read_csv(self.significance_csv)]


class CompareDir(SignificanceFiles, Directory):
    """A comparison: one run per entry under runs/<name>, the table, plots, the report."""

    compare_csv = property(lambda self: self.path / "compare.csv")
    compare_md = property(lambda self: self.path / "compare.md")
    runs = property(lambda self: self.path / "runs")

    def claim(self) -> None:
        claim_dir(self.path, "comparison")

    def entry(self, name: str) -> Path:
        return self.runs / name

    def entry_runs(self) -> list[RunDir]:
        found = [RunDir(p.parent) for p in self.runs.glob("*/metrics.jsonl")]
        return sorted(found, key=lambda r: natural_key(r.path.name))

    def write_table(self, columns: list[str], rows: list[dict], markdown: str) -> None:
        write_csv(self.compare_csv, columns, ([r.get(c) for c in columns] for r in rows))
        atomic_write_text(self.compare_md, markdown)

    def read_table(self) -> list[dict]:
        return read_csv(self.compare_csv)

    def entry_repeats(self, name: str) -> RepeatsDir:
        """An entry trained with repeats: runs/<name>/ holds its seed-K/ runs and summary."""
        return RepeatsDir(self.entry(name))

    def entry_groups(self) -> dict[str, list[RunDir]]:
        """Each entry's runs: its seed runs (repeats) or its one run, by entry name."""
        found = {}
        for path in sorted(self.runs.glob("*"), key=lambda p: natural_key(p.name)):
            if RepeatsDir(path).plan_yaml.is_file():
                found[path.name] = RepeatsDir(path).member_runs()
            elif RunDir(path).metrics.is_file():
                found[path.name] = [RunDir(path)]
        return {name: runs for name, runs in found.items() if runs}



class RepeatsDir(Directory):
    """One config trained several times, differing only in train.seed or data.fold:

    repeats.yaml           the config naming every run (a train.seed list, or data.folds with
                           no data.fold): `reslab train repeats.yaml` trains the same set
    seed-K/, fold-i/       the run directory of seed K / fold i
    summary.json           per metric: {mean, std, ci95_low, ci95_high, n, values} over the
                           finished runs (values in run order)
    summary.csv            the same, one row per metric (values joined with ';')
    plots/, report.*       mean curves with their band; the report
    """

    plan_yaml = property(lambda self: self.path / "repeats.yaml")
    summary_json = property(lambda self: self.path / "summary.json")
    summary_csv = property(lambda self: self.path / "summary.csv")

    @staticmethod
    def create(cfg: Config, out: str | Path | None, root: Path = Path("runs")) -> RepeatsDir:
        """`out` (new, empty or a repeats directory: re-running continues it), or
        runs/NAME-TIME; a user's folder is refused (see claim_dir)."""
        return RepeatsDir(claim_dir(Path(out) if out is not None else default_out(cfg, root),
                                    "repeats"))

    @staticmethod
    def open(path: str | Path) -> RepeatsDir:
        found = RepeatsDir(path)
        if not found.plan_yaml.is_file():
            raise ReslabError(f"{found.path} is not a repeats directory (no repeats.yaml)")
        return found

    def read_plan_text(self) -> str | None:
        return text_or_none(self.plan_yaml)

    def seed_run(self, seed: int) -> RunDir:
        return RunDir(self.path / f"seed-{seed}")

    def fold_run(self, fold: int) -> RunDir:
        return RunDir(self.path / f"fold-{fold}")

    def member_runs(self) -> list[RunDir]:
        """The seed-K/ and fold-i/ runs that have started (hold a config.yaml), in order."""
        found = [RunDir(p.parent) for pattern in ("seed-*/config.yaml", "fold-*/config.yaml")
                 for p in self.path.glob(pattern)]
        return sorted(found, key=lambda r: natural_key(r.path.name))

    def write_plan(self, cfg: Config) -> None:
        atomic_write_text(self.plan_yaml, cfg.to_yaml())

    def read_plan(self) -> Config:
        return load_config(self.plan_yaml, file_relative=False)

    def write_summary(self, summary: dict[str, dict]) -> None:
        write_json(self.summary_json, summary)
        write_csv(self.summary_csv, list(SUMMARY_COLUMNS),
                  ([row[c] for c in SUMMARY_COLUMNS] for row in summary_rows(summary)))

    def read_summary(self) -> dict[str, dict]:
        if not self.summary_json.is_file():
            raise ReslabError(f"{self.path}: no summary.json (the runs have not finished); "
                              f"continue them with reslab train --resume {self.path}")
        return read_json(self.summary_json)


# A study's tables: tables/<name>.csv and .tex, and their titles (in the report too).
STUDY_TABLES = {"table1-hyperparameters": "Table I: best hyperparameters per variant",
                "table2-accuracy": "Table II: test accuracy (mean ± 95 % CI over seeds), "
                                   "size and speed",
                "table3-robustness": "Table III: robustness (accuracy clean, perturbed and "
                                     "the drop; means over seeds)",
                "factors": "Mean sweep objective per value of each swept factor"}


class StudyDir(SignificanceFiles, Directory):
    """A study (`reslab study`): variants (an axes product), each swept, confirmed, tested:

    study.yaml             the expanded study: scale, steps and every variant's config (a
                           re-run must match it)
    prepare/<tree>/        image trees made once (prepare/source/: the source, or its per-class
                           subset as links; <tree>.partial/ while a conversion runs)
    variants/<v>/          sweep.yaml + sweep/ (a SweepDir), best.yaml (the chosen config),
                           confirm/ (a RepeatsDir of seed runs), test.json (their test
                           evaluation), steps.json (the finished steps: never redone)
    tables/<name>.csv|tex  Table I-III (and the factor means) for the paper
    significance.csv, summary.md, plots/, report.*
    """

    plan_yaml = property(lambda self: self.path / "study.yaml")
    summary_md = property(lambda self: self.path / "summary.md")

    def write_plan(self, text: str) -> None:
        atomic_write_text(self.plan_yaml, text)

    def read_plan(self) -> str | None:
        return text_or_none(self.plan_yaml)

    def claim(self) -> None:
        claim_dir(self.path, "study")

    def prepared(self, tree: str) -> Path:
        return self.path / "prepare" / tree

    def prepared_partial(self, tree: str) -> Path:
        return self.path / "prepare" / f"{tree}.partial"

    def variant(self, name: str) -> Path:
        return self.path / "variants" / name

    def variant_names(self) -> list[str]:
        return natural_sorted(p.parent.name for p in self.path.glob("variants/*/steps.json"))

    def sweep_yaml(self, variant: str) -> Path:
        return self.variant(variant) / "sweep.yaml"

    def write_sweep_spec(self, variant: str, spec: Mapping) -> Path:
        """The variant's sweep file (the sweep reads it from there); returns its path."""
        return _write_yaml(self.sweep_yaml(variant), spec)

    def sweep(self, variant: str) -> SweepDir:
        return SweepDir(self.variant(variant) / "sweep")

    def best_yaml(self, variant: str) -> Path:
        return self.variant(variant) / "best.yaml"

    def write_best(self, variant: str, text: str) -> None:
        atomic_write_text(self.best_yaml(variant), text)

    def read_best(self, variant: str) -> Config | None:
        """The variant's chosen config (None before its best step)."""
        path = self.best_yaml(variant)
        return load_config(path) if path.is_file() else None

    def confirmation(self, variant: str) -> RepeatsDir:
        return RepeatsDir(self.variant(variant) / "confirm")

    def test_json(self, variant: str) -> Path:
        return self.variant(variant) / "test.json"

    def write_test(self, variant: str, metrics: Mapping[Any, dict]) -> None:
        """Each confirmation run's test evaluation, by its seed."""
        write_json(self.test_json(variant), dict(metrics))

    def steps_json(self, variant: str) -> Path:
        return self.variant(variant) / "steps.json"

    def finished_steps(self, variant: str) -> dict[str, str]:
        """{step: when it finished} for the variant (empty before its first step)."""
        path = self.steps_json(variant)
        return read_json(path) if path.is_file() else {}

    def mark_finished(self, variant: str, step: str) -> None:
        steps = {**self.finished_steps(variant), step: time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_json(self.steps_json(variant), steps)

    def variant_groups(self) -> dict[str, list[RunDir]]:
        """Each variant's confirmation runs that have started, by variant name."""
        found = {name: self.confirmation(name).member_runs() for name in self.variant_names()}
        return {name: runs for name, runs in found.items() if runs}

    tables = property(lambda self: self.path / "tables")

    def table_csv(self, name: str) -> Path:
        return self.tables / f"{name}.csv"

    def table_tex(self, name: str) -> Path:
        return self.tables / f"{name}.tex"

    def write_table(self, name: str, header: list[str], rows: list[list[Any]],
                    tex: str | None) -> None:
        """tables/<name>.csv (raw numbers) and, when given, tables/<name>.tex (formatted)."""
        write_csv(self.table_csv(name), header, rows)
        if tex is not None:
            atomic_write_text(self.table_tex(name), tex)

    def read_table(self, name: str) -> list[dict]:
        path = self.table_csv(name)
        return read_csv(path) if path.is_file() else []

    def write_summary(self, text: str) -> None:
        atomic_write_text(self.summary_md, text)

    def read_summary(self) -> str | None:
        return text_or_none(self.summary_md)


class LrFindDir(Directory):
    """An LR range test (`reslab lr-find`): the suggestion and curve, and its plot."""

    finding = property(lambda self: self.path / "lr_find.json")
    plot_png = property(lambda self: self.path / "lr_find.png")

    @staticmethod
    def create(name: str | None, out: str | Path | None,
               root: Path = Path("runs")) -> LrFindDir:
        """`out`, or runs/<name>-lr-find-<time>; a user's folder is refused (see claim_dir)."""
        if out is None:
            out = root / f"{safe_name(name or 'config')}-lr-find-{time.strftime('%Y%m%d-%H%M%S')}"
        return LrFindDir(claim_dir(Path(out), "lr-find"))

    def write_finding(self, finding: dict) -> None:
        write_json(self.finding, finding)

    def read_finding(self) -> dict:
        if not self.finding.is_file():
            raise ReslabError(f"{self.path}: no lr_find.json (the LR range test did not finish)")
        return read_json(self.finding)


class DataDir(Directory):
    """A dataset overview (`reslab data`): data.json (the numbers), data.md (them as tables),
    samples.png (samples per class) and augmented.png (the train augmentation at work)."""

    overview = property(lambda self: self.path / "data.json")
    overview_md = property(lambda self: self.path / "data.md")
    samples = property(lambda self: self.path / "samples.png")
    augmented = property(lambda self: self.path / "augmented.png")

    @staticmethod
    def create(name: str, out: str | Path | None, root: Path = Path("runs")) -> DataDir:
        """`out`, or runs/<name>-data-<time>; a user's folder is refused (see claim_dir)."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return DataDir(claim_dir(Path(out or root / f"{safe_name(name)}-data-{stamp}"), "data"))

    def write_overview(self, overview: dict, markdown: str, samples: np.ndarray,
                       augmented: np.ndarray) -> None:
        """The numbers, their Markdown, and the two (H, W, 3) uint8 grids as PNGs."""
        atomic_write_bytes(self.samples, _png_bytes(samples))
        atomic_write_bytes(self.augmented, _png_bytes(augmented))
        atomic_write_text(self.overview_md, markdown)
        write_json(self.overview, overview)  # last: its presence marks a complete overview

    def read_overview(self) -> dict:
        if not self.overview.is_file():
            raise ReslabError(f"{self.path}: no data.json (the overview did not finish)")
        return read_json(self.overview)

    def read_overview_md(self) -> str | None:
        return text_or_none(self.overview_md)


def environment_warning(runs: Mapping[str, RunDir]) -> str | None:
    """'these runs ran in different environments ...' and one indented line per env.json field
    that differs between the runs ({name: RunDir}; see runs/env.py COMPARED): device, CPU
    kernels, threads, versions, git commit. Their seconds per epoch, and bf16 results, are
    then not comparable. None when they agree (runs without env.json, from older versions,
    are left out)."""
    lines = env_differences({name: run.read_env() for name, run in runs.items()})
    if not lines:
        return None
    return ("these runs ran in different environments (times are not comparable):\n"
            + "\n".join(f"  {line}" for line in lines))


def open_directory(path: str | Path) -> Directory:
    """The run, sweep, comparison, repeats, data or study directory at `path` (from its marker
    or contract file)."""
    kind = directory_kind(Path(path))
    return {"run": RunDir, "sweep": SweepDir, "comparison": CompareDir,
            "repeats": RepeatsDir, "data": DataDir, "study": StudyDir}[kind](path)


KIND_FILES = {"run": "metrics.jsonl", "sweep": "trials.csv", "comparison": "compare.csv",
              "repeats": "repeats.yaml"}
# Kinds known by their marker alone: a folder's own data.json is no data overview, and its
# study.yaml (a compare study file) no study directory.
MARKED_KIND_FILES = {**KIND_FILES, "data": "data.json", "study": "study.yaml"}


def directory_kind(path: Path) -> str:
    """'run', 'sweep', 'comparison', 'repeats', 'data' or 'study', from the marker or the
    contract file it holds."""
    path = Path(path)
    if not path.is_dir():
        raise ReslabError(f"{path}: no such directory (expected a run, sweep, comparison, "
                          "repeats, data or study directory)")
    marked = marked_kind(path)
    if marked in MARKED_KIND_FILES and (path / MARKED_KIND_FILES[marked]).is_file():
        return marked
    for kind, name in KIND_FILES.items():
        if (path / name).is_file():
            return kind
    raise ReslabError(f"{path}: not a run, sweep, comparison, repeats, data or study directory "
                      f"(expected {', '.join(KIND_FILES.values())})")


def default_out(cfg: Config, root: Path) -> Path:
    """runs/NAME-TIME: the config's name, else its source and arch."""
    name = cfg.name or f"{cfg.data.source}-{cfg.model.arch.replace(':', '-')}"
    return root / f"{safe_name(name)}-{time.strftime('%Y%m%d-%H%M%S')}"


def safe_name(name: str) -> str:
    """A name usable as one path component: no separators, no '..', never empty."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "run"


def _read_json_file(path: Path, what: str) -> Any:
    """JSON from a run's file, or one line naming it (empty, not JSON, not UTF-8)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:  # JSONDecodeError, UnicodeDecodeError
        raise ReslabError(f"{path}: empty or not valid JSON (expected {what}); the file is "
                          "damaged") from None


def _number_or_null(value: Any) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _blank(value: Any) -> Any:
    return "" if value is None else value


def _comparison(row: dict) -> Comparison:
    """A significance.csv row back into the result it was written from."""
    number = lambda key: float(row[key]) if row.get(key) not in (None, "") else None
    return Comparison(row["a"], row["b"], row["test"], number("statistic"), number("p_value"),
                      number("mean_difference"), row["significant"] == "True", int(row["n"]),
                      number("ci95_low"), number("ci95_high"), number("p_holm"))


def _jsonl_line(row: dict) -> str:
    return json.dumps(row) + "\n"


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


def _png_bytes(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()

