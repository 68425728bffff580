"""`write_report`: one self-contained report.html (+ report.md) for a run, sweep, comparison
or repeats directory.

The directory is read through the run directory contract (ARCHITECTURE.md). A report is a list
of sections, each a list of blocks (table, image, cards, preformatted text...); the same blocks
render to HTML through the Jinja2 template and to Markdown here, so both stay in step.
"""
from __future__ import annotations

import base64
import datetime as _dt
import math
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import jinja2
import numpy as np
from markdown_it import MarkdownIt
from markdown_it.token import Token

from ..errors import ReslabError
from ..formatting import markdown_table
from ..runs.env import env_differences
from ..runs.rundir import (
    RESULT_METRICS,
    STUDY_TABLES,
    CompareDir,
    DataDir,
    Directory,
    RepeatsDir,
    RunDir,
    StudyDir,
    SweepDir,
    open_directory,
)
from ..stats import Comparison, describe
from ..utils import atomic_write_text, natural_key
from . import plots
from .tables import column_label

TEMPLATES = Path(__file__).with_name("templates")
KINDS = {RunDir: "run", SweepDir: "sweep", CompareDir: "comparison", RepeatsDir: "repeats",
         DataDir: "data", StudyDir: "study"}
# Plots this module draws; everything else under plots/ came from the sweep/compare command.
OWN_PLOTS = {"learning_curves", "confusion_matrix", "per_class_accuracy", "misclassified",
             "robustness", "overlaid_curves", "trial_learning_curves", "reliability",
             "mean_curves", "confirm_curves"}
# The `test` of a significance.csv pair whose entries were evaluated on different images.
CI_NOTE = ("± is the half-width of the 95 % Student-t interval of the mean over the runs "
           "(none with one run).")
# Column names holding rates/losses, as whole words: "val_acc" yes, "train.accum_steps" no.
FOUR_DECIMALS = re.compile(r"(?<![a-z])(acc|accuracy|loss|value|drop|score|top5|f1|ece|nll|"
                           r"precision|recall)(?![a-z])")
SUMMARY_KEYS = ("best_val_acc", "final_val_acc", "test_acc", "params", "epochs_run",
                "best_epoch", "stop_reason", "seconds_per_epoch")
# eval_metrics.json's headline numbers, as cards: key -> label.
METRIC_CARDS = {"accuracy": "accuracy", "top5": "top-5 accuracy",
                "macro_precision": "macro precision", "macro_recall": "macro recall",
                "macro_f1": "macro F1", "nll": "NLL", "ece": "ECE (15 bins)"}


# --------------------------------------------------------------------------- blocks
class Block:
    kind: ClassVar[str]  # table | image | cards | pre | text | heading: picks the template branch


@dataclass
class Table(Block):
    headers: list[str]
    rows: list[list[str]]
    numeric: list[bool]
    kind: ClassVar[str] = "table"


@dataclass
class Image(Block):
    path: Path
    caption: str
    kind: ClassVar[str] = "image"


@dataclass
class Cards(Block):
    items: list[tuple[str, str]]
    kind: ClassVar[str] = "cards"


@dataclass
class Pre(Block):
    text: str
    lang: str = ""
    kind: ClassVar[str] = "pre"


@dataclass
class Text(Block):
    text: str
    kind: ClassVar[str] = "text"


@dataclass
class Heading(Block):
    text: str
    kind: ClassVar[str] = "heading"


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


# --------------------------------------------------------------------------- public API
def write_report(directory: str | Path) -> tuple[Path, Path]:
    """Regenerate plots into `directory/plots/` and write report.html and report.md.

    Raises ReslabError when `directory` is missing or is not a run, sweep, comparison, repeats,
    data or study directory, or when one of its files is malformed.
    """
    target = open_directory(directory)
    builder = {RunDir: _run_sections, SweepDir: _sweep_sections, CompareDir: _compare_sections,
               RepeatsDir: _repeats_sections, DataDir: _data_sections, StudyDir: _study_sections}
    sections = [s for s in builder[type(target)](target) if s.blocks]
    kind = KINDS[type(target)]
    title = target.path.resolve().name or str(target.path)
    atomic_write_text(target.report_html, _render_html(title, kind, sections))
    atomic_write_text(target.report_md, _render_markdown(title, kind, sections, target.path))
    return target.report_html, target.report_md


# --------------------------------------------------------------------------- readers
def _read(what: Path, read: Callable[[], Any]) -> Any:
    """Run a contract reader; malformed content becomes a one-line ReslabError naming it."""
    try:
        return read()
    except (OSError, ValueError, KeyError, IndexError, TypeError, EOFError,
            zipfile.BadZipFile) as err:
        raise ReslabError(f"{what}: cannot read ({type(err).__name__}: {err})") from None


def _metrics_of(runs: list[RunDir], label: str = "{}") -> dict[str, list[dict]]:
    found = {}
    for run in runs:
        rows = _read(run.metrics, run.read_metrics)
        if rows:
            found[label.format(run.path.name)] = rows
    return found


# --------------------------------------------------------------------------- formatting
def fmt(value: Any, key: str = "") -> str:
    """Cell text: accuracies/losses to 4 decimals, other floats (lr, decay) in short form."""
    if value is None or value == "":
        return "—"
    number = _number(value)
    if number is None:
        return str(value)
    if isinstance(number, float) and math.isnan(number):
        return "—"
    if FOUR_DECIMALS.search(key.lower()):
        return f"{number:.4f}"  # also for ints: a drop of "0" must line up with "0.0433"
    if isinstance(number, int):
        return f"{number:,}" if key == "params" else str(number)
    if "second" in key:
        return f"{number:.2f}"
    return f"{number:.4g}"


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, np.integer, np.floating)):
        return value.item() if isinstance(value, np.generic) else value
    try:
        return int(value)
    except (TypeError, ValueError):
        pass
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _table(dict_rows: list[dict], headers: list[str] | None = None) -> Table:
    if headers is None:
        headers = list(dict_rows[0]) if dict_rows else []
    cells = [[fmt(row.get(h), h) for h in headers] for row in dict_rows]
    numeric = [_is_numeric([row.get(h) for row in dict_rows]) for h in headers]
    return Table(headers=headers, rows=cells, numeric=numeric)


def _is_numeric(values: list[Any]) -> bool:
    """Right-align a column when every non-empty cell is a number (and there is one)."""
    present = [v for v in values if v not in (None, "", "—")]
    return bool(present) and all(_number(v) is not None for v in present)


def _markdown_blocks(text: str) -> list[Block]:
    """Markdown (markdown-it-py, with tables) -> report blocks: headings, tables, code, text."""
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    blocks: list[Block] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.type == "heading_open":
            blocks.append(Heading(_plain(tokens[i + 1])))
        elif tok.type == "paragraph_open":
            blocks.append(Text(_plain(tokens[i + 1])))
        elif tok.type in ("fence", "code_block"):
            blocks.append(Pre(tok.content.rstrip("\n"), tok.info.strip()))
        elif tok.type == "table_open":
            end = next(j for j in range(i, len(tokens)) if tokens[j].type == "table_close")
            blocks.append(_md_table(tokens[i:end]))
            i = end
        i += 1
    return blocks


def _plain(inline: Token) -> str:
    """An inline token's text without markup (bold, code spans, links)."""
    parts = [" " if c.type in ("softbreak", "hardbreak") else c.content
             for c in inline.children or [] if c.type in ("text", "code_inline", "softbreak",
                                                        "hardbreak")]
    return "".join(parts).strip()


def _md_table(tokens: list[Token]) -> Table:
    rows: list[list[str]] = []
    for tok in tokens:
        if tok.type == "tr_open":
            rows.append([])
        elif tok.type == "inline":
            rows[-1].append(_plain(tok))
    headers, body = rows[0], rows[1:]
    numeric = [_is_numeric([r[k] for r in body if k < len(r)]) for k in range(len(headers))]
    return Table(headers=headers, rows=body, numeric=numeric)


# --------------------------------------------------------------------------- run
def _run_sections(run: RunDir) -> list[Section]:
    classes = _read(run.classes, run.read_classes) if run.classes.is_file() else None
    sections = [_config_section(run), _environment_section(run), _summary_section(run),
                _curves_section(run), _metrics_section(run)]
    sections += _confusion_sections(run)
    sections += [_misclassified_section(run, classes), _robustness_section(run)]
    return sections


def _config_section(run: RunDir) -> Section:
    text = _read(run.config, run.read_config_text)
    return Section("Config", [Pre(text.rstrip(), "yaml")] if text else [])


def _summary_section(run: RunDir) -> Section:
    section = Section("Summary")
    if run.result.is_file():
        result = _read(run.result, run.read_result)
        items = [(k.replace("_", " "), fmt(result.get(k), k)) for k in SUMMARY_KEYS if k in result]
        items += [(METRIC_CARDS[k], _rate(result[k])) for k in RESULT_METRICS if k in result]
        section.blocks.append(Cards(items))
    return section


def _rate(value: Any) -> str:
    """A metric in [0, 1] (or an NLL) to 4 decimals; None (undefined) as a dash."""
    return "—" if value is None else f"{float(value):.4f}"


def _environment_section(run: RunDir) -> Section:
    """env.json: where the run trained (device, CPU kernels, threads), with what (versions,
    reslab's commit) and how (the command)."""
    env = _read(run.env, run.read_env)
    if not env:
        return Section("Environment")
    rows = [[name, text] for name, text in _env_rows(env) if text]
    blocks: list[Block] = [Table(["", ""], rows, [False, False])]
    earlier = env.get("earlier") or []
    if earlier:
        sessions = {"this session": env, **{f"session -{i + 1}": e for i, e in enumerate(earlier)}}
        changed = env_differences(sessions)
        blocks.append(Text(f"Resumed {len(earlier)} time(s); " + (
            "the sessions differ: " + "; ".join(changed) if changed else
            "every session ran in this environment.")))
    return Section("Environment", blocks)


def _env_rows(env: dict) -> list[tuple[str, str]]:
    git, cuda, ranks = env.get("git"), env.get("cuda"), env.get("world_size") or 1
    commit = (f" (git {git['commit'][:12]}{', uncommitted changes' if git.get('dirty') else ''})"
              if git else "")
    versions = (f"{name} {env[name]}" for name in ("torch", "torchvision", "timm") if env.get(name))
    return [("device", str(env.get("device") or "")),
            ("CPU", str(env.get("cpu") or "") if env.get("cpu") != env.get("device") else ""),
            ("CPU kernels", _kernels(env.get("cpu_isa") or {})),
            ("threads", f"{env.get('threads')}" + (f" x {ranks} processes" if ranks > 1 else "")),
            ("PyTorch", ", ".join(versions)),
            ("CUDA", f"{cuda} (cuDNN {env.get('cudnn')})" if cuda else "none"),
            ("Python", str(env.get("python") or "")),
            ("reslab", f"{env.get('reslab', '')}{commit}"),
            ("OS", str(env.get("os") or "")),
            ("command", str(env.get("command") or ""))]


def _kernels(isa: dict) -> str:
    """'AVX512 (avx2 fma avx512f ...), oneDNN bf16 native; set by ATEN_CPU_CAPABILITY=avx2'."""
    text = str(isa.get("capability") or "unknown")
    if isa.get("flags"):
        text += " (" + " ".join(isa["flags"]) + ")"
    if isa.get("mkldnn_bf16") is not None:
        text += ", oneDNN bf16 " + ("native" if isa["mkldnn_bf16"] else "not native")
    overrides = ", ".join(f"{k}={v}" for k, v in (isa.get("env") or {}).items())
    return text + (f"; set by {overrides}" if overrides else "")


def _metrics_section(run: RunDir) -> Section:
    """eval_metrics.json: headline numbers, per-class precision/recall/F1, the reliability
    diagram and the most-confused pairs of the last evaluation (training's final one or
    `reslab eval`'s)."""
    metrics = _read(run.eval_metrics, run.read_eval_metrics)
    if not metrics:
        return Section("Metrics")
    where = f" on {metrics['data_root']}" if metrics.get("data_root") else ""
    blocks: list[Block] = [
        Cards([(label, _rate(metrics.get(k))) for k, label in METRIC_CARDS.items()
               if k in metrics]),
        Text(f"{metrics.get('split', '?')} split{where}, {metrics.get('n', '?')} images. Macro "
             "averages are over the classes present; ECE: top-label, 15 equal-width bins."),
        Heading("Per class"), _per_class_table(metrics.get("per_class") or {})]
    if metrics.get("reliability"):
        out = plots.plot_reliability(metrics["reliability"], run.plot("reliability"),
                                     metrics.get("ece"))
        blocks += [Heading("Calibration"), Image(out, "Accuracy per confidence bin; hatched: "
                                                      "the gap to the bin's mean confidence")]
    pairs = metrics.get("confused_pairs") or []
    blocks += [Heading("Most confused pairs"), Table(
        ["true", "predicted", "images"], [[p["true"], p["predicted"], str(p["count"])]
                                          for p in pairs], [False, False, True])
        if pairs else Text("No image was misclassified.")]
    return Section("Metrics", blocks)


def _per_class_table(per_class: dict) -> Table:
    rows = [[name, _rate(m.get("precision")), _rate(m.get("recall")), _rate(m.get("f1")),
             str(m.get("support", ""))] for name, m in per_class.items()]
    return Table(["class", "precision", "recall", "f1", "support"], rows,
                 [False, True, True, True, True])


def _curves_section(run: RunDir) -> Section:
    section = Section("Learning curves")
    rows = _read(run.metrics, run.read_metrics)
    if rows:
        out = plots.plot_learning_curves(rows, run.plot("learning_curves"))
        section.blocks.append(Image(out, "Loss and accuracy per epoch"))
        keys = [k for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                            "test_loss", "test_acc", "lr", "seconds") if any(k in r for r in rows)]
        section.blocks.append(_table(rows, keys))
    return section


def _confusion_sections(run: RunDir) -> list[Section]:
    if not run.confusion.is_file():
        return []
    classes, matrix = _read(run.confusion, run.read_confusion)
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.diag(matrix) / support
    per_class = {c: float(a) for c, a in zip(classes, acc)}
    conf = Section("Confusion matrix", [Image(
        plots.plot_confusion(matrix, classes, run.plot("confusion_matrix")),
        "Rows: true class, columns: predicted class; colour is the row-normalised rate")])
    rows = [{"class": c, "support": int(s), "correct": int(matrix[i, i]), "accuracy": a}
            for i, (c, s, a) in enumerate(zip(classes, support, acc))]
    per = Section("Per-class accuracy", [
        Image(plots.plot_per_class(per_class, run.plot("per_class_accuracy")),
              "Correct / total per true class"), _table(rows)])
    return [conf, per]


def _misclassified_section(run: RunDir, classes: list[str] | None) -> Section:
    section = Section("Misclassified examples")
    if not run.misclassified.is_file():
        return section
    data = _read(run.misclassified, run.read_misclassified)
    if len(data["images"]) == 0:
        section.blocks.append(Text("No misclassified images were saved."))
        return section
    name = (lambda i: classes[i] if classes and 0 <= i < len(classes) else str(i))
    true = [name(int(i)) for i in data["true"]]
    pred = [name(int(i)) for i in data["pred"]]
    out = plots.plot_misclassified(data["images"], true, pred, data["confidence"],
                                   run.plot("misclassified"))
    section.blocks.append(Image(out, f"{len(true)} misclassified images: true → predicted "
                                     "(confidence)"))
    return section


MODE_NOTES = {"display": "perturbed in display space", "raw": "amounts added to the stored "
              "values, in the files' own units"}


def _robustness_section(run: RunDir) -> Section:
    modes = _read(run.robustness_csv, run.robustness_modes)
    if not modes:  # a directory written by hand may hold only the Markdown table
        markdown = _read(run.robustness_md, run.read_robustness_md) or ""
        return Section("Robustness", _markdown_blocks(markdown))
    blocks: list = []
    for mode in modes:  # display and raw results side by side, each from its own file
        csv, _ = run.robustness_files(mode)
        rows = _read(csv, lambda m=mode: run.read_robustness(m))
        out = plots.plot_robustness(rows, run.robustness_plot(mode))
        blocks += [Image(out, f"Accuracy per perturbation ({mode} mode; {MODE_NOTES[mode]}); "
                              "dashed line: clean"), _table(rows)]
    return Section("Robustness", blocks)


# --------------------------------------------------------------------------- sweep
def _sweep_sections(sweep: SweepDir) -> list[Section]:
    trials = _read(sweep.trials_csv, sweep.read_trials)
    sections = [_best_section(sweep, trials), _confirm_section(sweep),
                Section("Trials", [_table(trials)] if trials else [])]
    factors = _read(sweep.factors_md, sweep.read_factors)
    if factors:
        sections.append(Section("Factors", _markdown_blocks(factors)))
    sections.append(_trial_curves_section(sweep))
    sections.append(_existing_plots_section(sweep, "Sweep plots"))
    return sections


def _confirm_section(sweep: SweepDir) -> Section:
    """The top trials retrained over fresh seeds: single-run value beside the confirmed mean."""
    rows = _read(sweep.confirm_csv, sweep.read_confirm)
    if not rows:
        return Section("Confirmation")
    shown = [{"trial": r["trial"], "chosen": r["chosen"], "single run": _number(r["value"]),
              "confirmed mean ± CI": _confirm_cell(r), "n": r["n"],
              "single run - mean": _gap(r), "reason": r["reason"],
              **{k: v for k, v in r.items() if k not in CONFIRM_OWN}} for r in rows]
    text = ("The top trials by their single run, retrained with fresh seeds (train.seed + 1000, "
            "+ 1001, ...); best.yaml is the trial with the best confirmed mean. The single run's "
            "excess over its confirmed mean is the winner's curse. " + CI_NOTE)
    blocks: list[Block] = [Text(text), _table(shown)]
    groups = {f"trial {n}": d.member_runs() for n, d in sweep.confirmations().items()}
    groups = {name: runs for name, runs in groups.items() if runs}
    if groups:
        blocks.append(_mean_curves_section(sweep.confirm_curves_png, groups).blocks[0])
    return Section("Confirmation", blocks)


CONFIRM_OWN = {"trial", "chosen", "value", "confirmed_mean", "confirmed_std", "ci95_low",
               "ci95_high", "n", "seeds", "values", "reason"}


def _confirm_cell(row: dict) -> str | None:
    mean, low, high = (_number(row[k]) for k in ("confirmed_mean", "ci95_low", "ci95_high"))
    if mean is None:
        return None
    if low is None or high is None:
        return fmt(mean, "value")
    return f"{fmt(mean, 'value')} ± {fmt((high - low) / 2, 'value')}"


def _gap(row: dict) -> str | None:
    value, mean = _number(row["value"]), _number(row["confirmed_mean"])
    return None if value is None or mean is None else f"{value - mean:+.4f}"


def _trial_curves_section(sweep: SweepDir) -> Section:
    """The sweep's own plot (trials labelled by their parameter values), else one drawn here."""
    drawn = sweep.trial_curves_png
    if drawn.is_file():
        return Section("Trial learning curves", [Image(drawn, "Every trial's validation curves")])
    return _overlaid_section(sweep, sweep.trial_runs(), "Trial learning curves", "trial {}")


def _best_section(sweep: SweepDir, trials: list[dict]) -> Section:
    section = Section("Best trial")
    done = [t for t in trials if str(t.get("state", "")).upper() == "COMPLETE"
            and isinstance(_number(t.get("value")), (int, float))]
    chosen = next((r for r in _read(sweep.confirm_csv, sweep.read_confirm)
                   if r["chosen"] == "yes"), None)
    if done:
        # The sweep objective is an accuracy (maximised); best.yaml, when present, is shown too.
        # With a confirmation, the best is the trial with the best confirmed mean.
        best = max(done, key=lambda t: float(t["value"]))
        best = next((t for t in done if chosen and t["number"] == chosen["trial"]), best)
        items = [("trial" if k == "number" else k, fmt(v, k)) for k, v in best.items()
                 if k not in ("state", "reason")]
        if chosen:
            items.insert(1, ("confirmed mean", _confirm_cell(chosen) or "—"))
        section.blocks.append(Cards(items))
        section.blocks.append(Text(f"{len(done)} of {len(trials)} trials completed."))
    best_yaml = _read(sweep.best_yaml, sweep.read_best)
    if best_yaml:
        section.blocks += [Heading(sweep.best_yaml.name), Pre(best_yaml.rstrip(), "yaml")]
    return section


def _overlaid_section(target: Directory, runs: list[RunDir], title: str,
                      label: str = "{}") -> Section:
    section = Section(title)
    curves = _metrics_of(runs, label)
    if curves:
        out = plots.plot_overlaid_curves(curves, target.overlaid_curves_png)
        section.blocks.append(Image(out, f"{len(curves)} runs overlaid"))
    return section


def _existing_plots_section(target: Directory, title: str) -> Section:
    pngs = sorted((p for p in target.plots.rglob("*.png") if p.stem not in OWN_PLOTS),
                  key=lambda p: natural_key(p.relative_to(target.path).as_posix())) \
        if target.plots.is_dir() else []
    return Section(title, [Image(p, p.stem.replace("_", " ")) for p in pngs])


# --------------------------------------------------------------------------- comparison
def _compare_sections(comparison: CompareDir) -> list[Section]:
    rows = _read(comparison.compare_csv, comparison.read_table)
    groups = comparison.entry_groups()
    curves = (_mean_curves_section(comparison.mean_curves_png, groups)
              if any(len(runs) > 1 for runs in groups.values())
              else _overlaid_section(comparison, comparison.entry_runs(), "Learning curves"))
    return [Section("Comparison", _ci_table_blocks(rows) if rows else []),
            _significance_section(comparison), curves,
            _existing_plots_section(comparison, "Comparison plots")]


# --------------------------------------------------------------------------- data
def _data_sections(data: DataDir) -> list[Section]:
    """A dataset overview: data.md's tables, then the two grids."""
    overview = _read(data.overview, data.read_overview)
    markdown = _read(data.overview_md, data.read_overview_md) or ""
    # data.md's own image links render as empty paragraphs here; the images follow instead.
    blocks = [b for b in _markdown_blocks(markdown) if not isinstance(b, Text) or b.text]
    preview = overview.get("preview", {})
    return [Section("Data", blocks),
            Section("Samples", [Image(data.samples, preview.get("samples_caption", ""))]
                    if data.samples.is_file() else []),
            Section("Augmentation", [Image(data.augmented, preview.get("augmented_caption", ""))]
                    if data.augmented.is_file() else [])]
def _ci_table_blocks(rows: list[dict], readable: bool = False) -> list[Block]:
    """A table whose <key>_ci95_low/high columns are shown in <key>'s cell as mean ±
    half-width (rows without them keep the plain value), and the note saying what ± is.
    `readable` (study tables): headers a reader knows (the CSV keeps the raw keys), and a
    mean over a `seeds` column states its n ("n = 1": one value has no interval)."""
    headers = [h for h in rows[0] if "_ci95_" not in h]
    table = _table(rows, headers)
    with_ci = False
    for row, cells in zip(rows, table.rows):
        for i, key in enumerate(headers):
            low, high = _number(row.get(f"{key}_ci95_low")), _number(row.get(f"{key}_ci95_high"))
            if low is not None and high is not None:
                cells[i] = f"{fmt(row[key], key)} ± {fmt((high - low) / 2, key)}"
                with_ci = True
            if readable and f"{key}_ci95_low" in row and row.get("seeds") not in (None, ""):
                cells[i] += f" (n = {row['seeds']})"
    if readable:
        table.headers = [column_label(h) for h in headers]
    return [table, Text(CI_NOTE)] if with_ci else [table]


def _significance_section(comparison: CompareDir | StudyDir) -> Section:
    results = _read(comparison.significance_csv, comparison.read_significance)
    if not results:
        return Section("Significance")
    rows = [{"pair": f"{r.a} vs {r.b}", "metric": metric, "test": r.test, "n": r.n,
             "p": _p_text(r.p_value), "p (Holm)": _p_text(r.p_holm),
             "difference (pp)": None if r.mean_difference is None
             else f"{100 * r.mean_difference:+.2f}",
             "significant (0.05)": "yes" if r.significant else "no"} for metric, r in results]
    return Section("Significance", [Text(significance_sentence([r for _, r in results])),
                                    _table(rows)])


def _p_text(p: float | None) -> str | None:
    return None if p is None else f"{p:.3g}"


def significance_sentence(results: list[Comparison]) -> str:
    """stats.describe's sentence for the tested pairs, and a clause per pair that was not
    compared because its entries were evaluated on different images."""
    apart = [r for r in results if r.not_compared is not None]
    tested = [r for r in results if r not in apart]
    text = describe(tested)
    for name in (n for r in tested[:1] for n in (r.a, r.b)):
        # describe() capitalises the sentence, and with it an entry name that starts it.
        if text.startswith(name[:1].upper() + name[1:]):
            text = name + text[len(name):]
            break
    if apart:
        pairs = ", ".join(f"{r.a} and {r.b} ({r.not_compared})" for r in apart)
        text = (text + " " if text else "") + f"Not compared (different test images): {pairs}."
    return text


def _mean_curves_section(out: Path, groups: dict[str, list[RunDir]]) -> Section:
    curves = {group: [_read(r.metrics, r.read_metrics) for r in runs if r.metrics.is_file()]
              for group, runs in groups.items()}
    out = plots.plot_mean_curves(curves, out)
    return Section("Learning curves", [Image(out, "Mean over each entry's runs per epoch; band: "
                                                  "95 % t-interval of the mean")])


# --------------------------------------------------------------------------- repeats
def _repeats_sections(repeats: RepeatsDir) -> list[Section]:
    runs = repeats.member_runs()
    plan = repeats.read_plan_text() or ""
    return [Section("Config", [Pre(plan.rstrip(), "yaml")] if plan else []),
            _repeats_summary_section(repeats),
            _mean_curves_section(repeats.mean_curves_png, {repeats.path.resolve().name: runs})
            if runs
            else Section("Learning curves"),
            _overlaid_section(repeats, runs, "Each run's curves"),
            Section("Runs", [_table([_member_row(r) for r in runs])] if runs else [])]


def _repeats_summary_section(repeats: RepeatsDir) -> Section:
    if not repeats.summary_json.is_file():
        return Section("Summary", [Text("No summary yet: the runs have not finished.")])
    summary = _read(repeats.summary_json, repeats.read_summary)
    rows = [{"metric": k, "mean ± CI": _mean_ci(e, k), "95 % CI": _interval(e, k),
             "std": fmt(e["std"], k), "n": e["n"]} for k, e in summary.items()]
    return Section("Summary", [Text(CI_NOTE), _table(rows)])


def _mean_ci(entry: dict, key: str) -> str:
    if entry["ci95_low"] is None:
        return fmt(entry["mean"], key)
    return f"{fmt(entry['mean'], key)} ± {fmt((entry['ci95_high'] - entry['ci95_low']) / 2, key)}"


def _interval(entry: dict, key: str) -> str:
    if entry["ci95_low"] is None:
        return "—"
    return f"{fmt(entry['ci95_low'], key)} to {fmt(entry['ci95_high'], key)}"


def _member_row(run: RunDir) -> dict:
    result = _read(run.result, run.read_result) if run.result.is_file() else {}
    return {"run": run.path.name, "best_val_acc": result.get("best_val_acc"),
            "test_acc": result.get("test_acc"), "epochs_run": result.get("epochs_run"),
            "stop_reason": result.get("stop_reason", "unfinished")}


# --------------------------------------------------------------------------- study
def _study_sections(study: StudyDir) -> list[Section]:
    """The summary paragraph, Tables I-III, significance, the variants' learning curves (mean
    over their seeds) and the study's figures (one per swept factor)."""
    summary = _read(study.summary_md, study.read_summary)
    sections = [Section("Summary", [Text(summary.strip())] if summary else [])]
    for name, title in STUDY_TABLES.items():
        rows = _read(study.table_csv(name), lambda name=name: study.read_table(name))
        sections.append(Section(title, _ci_table_blocks(rows, readable=True) if rows else []))
    groups = study.variant_groups()
    return [*sections, _significance_section(study),
            _mean_curves_section(study.mean_curves_png, groups) if groups
            else Section("Learning curves"),
            _existing_plots_section(study, "Per-factor curves")]


# --------------------------------------------------------------------------- rendering
def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _render_html(title: str, kind: str, sections: list[Section]) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["data_uri"] = _data_uri
    return env.get_template("page.html").render(
        title=title, kind=kind, sections=sections,
        generated=_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))


def _md_block(block: Block, root: Path) -> str:
    if isinstance(block, Table):
        return markdown_table(block.headers, block.rows, block.numeric)
    if isinstance(block, Image):
        return f"![{block.caption}]({block.path.relative_to(root).as_posix()})"
    if isinstance(block, Cards):
        return markdown_table(["", ""], block.items, [False, True])
    if isinstance(block, Pre):
        return f"```{block.lang}\n{block.text}\n```"
    if isinstance(block, Heading):
        return f"### {block.text}"
    return block.text


def _render_markdown(title: str, kind: str, sections: list[Section], root: Path) -> str:
    parts = [f"# {title}", f"*reslab {kind} report*"]
    for section in sections:
        parts.append(f"## {section.title}")
        parts += [_md_block(b, root) for b in section.blocks]
    return "\n\n".join(parts) + "\n"
