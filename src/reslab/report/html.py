"""`write_report`: one self-contained report.html (+ report.md) for a run, sweep or comparison.

The directory is read through the run directory contract (ARCHITECTURE.md). A report is a list
of sections, each a list of blocks (table, image, cards, preformatted text...); the same blocks
render to HTML through the Jinja2 template and to Markdown here, so both stay in step.
"""
from __future__ import annotations

import base64
import csv
import datetime as _dt
import json
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import jinja2
import numpy as np

from ..errors import ReslabError
from ..utils import atomic_write_text, natural_key
from . import plots

TEMPLATES = Path(__file__).with_name("templates")
KINDS = {"metrics.jsonl": "run", "trials.csv": "sweep", "compare.csv": "comparison"}
# Plot files this module writes; everything else under plots/ came from the sweep/compare command.
OWN_PLOTS = {"learning_curves.png", "confusion_matrix.png", "per_class_accuracy.png",
             "misclassified.png", "robustness.png", "overlaid_curves.png"}
# Column names holding rates/losses, as whole words: "val_acc" yes, "train.accum_steps" no.
FOUR_DECIMALS = re.compile(r"(?<![a-z])(acc|accuracy|loss|value|drop|score)(?![a-z])")
SUMMARY_KEYS = ("best_val_acc", "final_val_acc", "test_acc", "params", "epochs_run",
                "best_epoch", "stop_reason", "seconds_per_epoch")


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
def write_report(directory: Path) -> tuple[Path, Path]:
    """Regenerate plots into `directory/plots/` and write report.html and report.md.

    Raises ReslabError when `directory` is missing or is not a run (metrics.jsonl),
    sweep (trials.csv) or comparison (compare.csv) directory.
    """
    directory = Path(directory)
    kind = detect_kind(directory)
    builder = {"run": _run_sections, "sweep": _sweep_sections, "comparison": _compare_sections}
    sections = [s for s in builder[kind](directory) if s.blocks]
    title = directory.resolve().name or str(directory)
    html_path, md_path = directory / "report.html", directory / "report.md"
    atomic_write_text(html_path, _render_html(title, kind, sections))
    atomic_write_text(md_path, _render_markdown(title, kind, sections, directory))
    return html_path, md_path


def detect_kind(directory: Path) -> str:
    """'run', 'sweep' or 'comparison', from the contract file the directory holds."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ReslabError(f"{directory}: no such directory (expected a run, sweep or "
                          "comparison directory)")
    for name, kind in KINDS.items():
        if (directory / name).is_file():
            return kind
    raise ReslabError(f"{directory}: not a run, sweep or comparison directory (expected "
                      "metrics.jsonl, trials.csv or compare.csv)")


# --------------------------------------------------------------------------- readers
def _read(path: Path, parse) -> Any:
    """Parse a contract file; malformed content becomes a one-line ReslabError naming it."""
    try:
        return parse(path)
    except (OSError, ValueError, KeyError, IndexError, TypeError, EOFError,
            zipfile.BadZipFile) as err:
        raise ReslabError(f"{path}: cannot read ({type(err).__name__}: {err})") from None


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _csv_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _confusion(path: Path) -> tuple[list[str], np.ndarray]:
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    classes = rows[0][1:]
    matrix = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    if matrix.shape != (len(classes), len(classes)):
        raise ValueError(f"expected a {len(classes)}x{len(classes)} matrix, got {matrix.shape}")
    return classes, matrix


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in ("images", "true", "pred", "confidence")}


def _metrics_of(dirs: list[Path]) -> dict[str, list[dict]]:
    runs = {}
    for d in sorted(dirs, key=lambda p: natural_key(p.name)):
        rows = _read(d / "metrics.jsonl", _jsonl)
        if rows:
            runs[d.name] = rows
    return runs


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
    """Minimal Markdown: pipe tables, '#' headings, fenced code, other lines as paragraphs."""
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("|"):
            j = i
            while j < len(lines) and lines[j].strip().startswith("|"):
                j += 1
            blocks.append(_pipe_table(lines[i:j]))
            i = j
            continue
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            blocks.append(Pre("\n".join(lines[i + 1:j])))
            i = j + 1
            continue
        if line.startswith("#"):
            blocks.append(Heading(line.lstrip("#").strip()))
        elif line:
            blocks.append(Text(line.replace("**", "").replace("`", "")))
        i += 1
    return blocks


def _pipe_table(lines: list[str]) -> Table:
    rows = [[c.strip() for c in re.split(r"(?<!\\)\|", ln.strip().strip("|"))] for ln in lines]
    rows = [[c.replace("\\|", "|").replace("`", "").replace("**", "") for c in r] for r in rows]
    body = [r for r in rows[1:] if not all(re.fullmatch(r":?-+:?", c) for c in r if c)]
    headers = rows[0]
    body = [(r + [""] * len(headers))[:len(headers)] for r in body]
    numeric = [_is_numeric([r[k] for r in body]) for k in range(len(headers))]
    return Table(headers=headers, rows=body, numeric=numeric)


# --------------------------------------------------------------------------- run
def _run_sections(d: Path) -> list[Section]:
    classes = _read(d / "classes.json", lambda p: json.loads(p.read_text())) \
        if (d / "classes.json").is_file() else None
    sections = [_config_section(d), _summary_section(d), _curves_section(d)]
    sections += _confusion_sections(d)
    sections += [_misclassified_section(d, classes), _robustness_section(d)]
    return sections


def _config_section(d: Path) -> Section:
    section = Section("Config")
    if (d / "config.yaml").is_file():
        section.blocks.append(Pre(_read(d / "config.yaml", Path.read_text).rstrip(), "yaml"))
    return section


def _summary_section(d: Path) -> Section:
    section = Section("Summary")
    if (d / "result.json").is_file():
        result = _read(d / "result.json", lambda p: json.loads(p.read_text()))
        items = [(k.replace("_", " "), fmt(result.get(k), k)) for k in SUMMARY_KEYS if k in result]
        section.blocks.append(Cards(items))
    return section


def _curves_section(d: Path) -> Section:
    section = Section("Learning curves")
    rows = _read(d / "metrics.jsonl", _jsonl)
    if rows:
        out = plots.plot_learning_curves(rows, d / "plots" / "learning_curves.png")
        section.blocks.append(Image(out, "Loss and accuracy per epoch"))
        keys = [k for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                            "test_loss", "test_acc", "lr", "seconds") if any(k in r for r in rows)]
        section.blocks.append(_table(rows, keys))
    return section


def _confusion_sections(d: Path) -> list[Section]:
    path = d / "confusion_matrix.csv"
    if not path.is_file():
        return []
    classes, matrix = _read(path, _confusion)
    support = matrix.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.diag(matrix) / support
    per_class = {c: float(a) for c, a in zip(classes, acc)}
    conf = Section("Confusion matrix", [Image(
        plots.plot_confusion(matrix, classes, d / "plots" / "confusion_matrix.png"),
        "Rows: true class, columns: predicted class; colour is the row-normalised rate")])
    rows = [{"class": c, "support": int(s), "correct": int(matrix[i, i]), "accuracy": a}
            for i, (c, s, a) in enumerate(zip(classes, support, acc))]
    per = Section("Per-class accuracy", [
        Image(plots.plot_per_class(per_class, d / "plots" / "per_class_accuracy.png"),
              "Correct / total per true class"), _table(rows)])
    return [conf, per]


def _misclassified_section(d: Path, classes: list[str] | None) -> Section:
    section = Section("Misclassified examples")
    if not (d / "misclassified.npz").is_file():
        return section
    data = _read(d / "misclassified.npz", _npz)
    if len(data["images"]) == 0:
        section.blocks.append(Text("No misclassified images were saved."))
        return section
    name = (lambda i: classes[i] if classes and 0 <= i < len(classes) else str(i))
    true = [name(int(i)) for i in data["true"]]
    pred = [name(int(i)) for i in data["pred"]]
    out = plots.plot_misclassified(data["images"], true, pred, data["confidence"],
                                   d / "plots" / "misclassified.png")
    section.blocks.append(Image(out, f"{len(true)} misclassified images: true → predicted "
                                     "(confidence)"))
    return section


def _robustness_section(d: Path) -> Section:
    section = Section("Robustness")
    if (d / "robustness.csv").is_file():
        rows = _read(d / "robustness.csv", _csv_rows)
        if rows:
            out = plots.plot_robustness(rows, d / "plots" / "robustness.png")
            section.blocks += [Image(out, "Accuracy per perturbation; dashed line: clean"),
                               _table(rows)]
    elif (d / "robustness.md").is_file():
        section.blocks += _markdown_blocks(_read(d / "robustness.md", Path.read_text))
    return section


# --------------------------------------------------------------------------- sweep
def _sweep_sections(d: Path) -> list[Section]:
    trials = _read(d / "trials.csv", _csv_rows)
    sections = [_best_section(d, trials), Section("Trials", [_table(trials)] if trials else [])]
    if (d / "factors.md").is_file():
        sections.append(Section("Factors",
                                _markdown_blocks(_read(d / "factors.md", Path.read_text))))
    sections.append(_overlaid_section(d, "trials", "Trial learning curves", "trial {}"))
    sections.append(_existing_plots_section(d, "Sweep plots"))
    return sections


def _best_section(d: Path, trials: list[dict]) -> Section:
    section = Section("Best trial")
    done = [t for t in trials if str(t.get("state", "")).upper() == "COMPLETE"
            and isinstance(_number(t.get("value")), (int, float))]
    if done:
        # The sweep objective is an accuracy (maximised); best.yaml, when present, is shown too.
        best = max(done, key=lambda t: float(t["value"]))
        items = [("trial" if k == "number" else k, fmt(v, k)) for k, v in best.items()
                 if k not in ("state", "reason")]
        section.blocks.append(Cards(items))
        section.blocks.append(Text(f"{len(done)} of {len(trials)} trials completed."))
    if (d / "best.yaml").is_file():
        section.blocks += [Heading("best.yaml"),
                           Pre(_read(d / "best.yaml", Path.read_text).rstrip(), "yaml")]
    return section


def _overlaid_section(d: Path, subdir: str, title: str, label: str = "{}") -> Section:
    section = Section(title)
    dirs = [p.parent for p in (d / subdir).glob("*/metrics.jsonl")] if (d / subdir).is_dir() else []
    runs = {label.format(name): rows for name, rows in _metrics_of(dirs).items()}
    if runs:
        out = plots.plot_overlaid_curves(runs, d / "plots" / "overlaid_curves.png")
        section.blocks.append(Image(out, f"{len(runs)} {subdir} overlaid"))
    return section


def _existing_plots_section(d: Path, title: str) -> Section:
    pngs = sorted((p for p in (d / "plots").rglob("*.png") if p.name not in OWN_PLOTS),
                  key=lambda p: natural_key(p.relative_to(d).as_posix())) \
        if (d / "plots").is_dir() else []
    return Section(title, [Image(p, p.stem.replace("_", " ")) for p in pngs])


# --------------------------------------------------------------------------- comparison
def _compare_sections(d: Path) -> list[Section]:
    rows = _read(d / "compare.csv", _csv_rows)
    return [Section("Comparison", [_table(rows)] if rows else []),
            _overlaid_section(d, "runs", "Learning curves"),
            _existing_plots_section(d, "Comparison plots")]


# --------------------------------------------------------------------------- rendering
def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _render_html(title: str, kind: str, sections: list[Section]) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["data_uri"] = _data_uri
    return env.get_template("report.html").render(
        title=title, kind=kind, sections=sections,
        generated=_dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"))


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_block(block: Block, root: Path) -> str:
    if isinstance(block, Table):
        head = "| " + " | ".join(_md_cell(h) for h in block.headers) + " |"
        rule = "|" + "|".join("---:" if n else "---" for n in block.numeric) + "|"
        body = ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
        return "\n".join([head, rule, *body])
    if isinstance(block, Image):
        return f"![{block.caption}]({block.path.relative_to(root).as_posix()})"
    if isinstance(block, Cards):
        return "\n".join(["| | |", "|---|---:|",
                          *(f"| {_md_cell(k)} | {_md_cell(v)} |" for k, v in block.items)])
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
