"""`reslab report` on fake run / sweep / comparison directories that follow ARCHITECTURE.md."""
from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reslab.cli import main
from reslab.errors import ReslabError
from reslab.report import write_report

CLASSES = ["cat", "dog", "bird"]
CONFUSION = [[8, 1, 1], [2, 7, 1], [0, 3, 9]]  # per-class accuracy 0.8, 0.7, 0.75


# --------------------------------------------------------------------------- builders
def _metrics(n: int = 3, offset: float = 0.0) -> list[dict]:
    return [{"epoch": e, "train_loss": 1.5 / e + offset, "train_acc": 0.5 + 0.1 * e,
             "val_loss": 1.6 / e + offset, "val_acc": 0.55 + 0.08 * e - offset,
             "lr": 0.1 / e, "seconds": 12.0 + e, "test_loss": 1.7 / e, "test_acc": 0.5 + 0.09 * e}
            for e in range(1, n + 1)]


def _write_metrics(d: Path, rows: list[dict]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _png(path: Path, color=(200, 60, 60)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), color).save(path)


def make_run_dir(root: Path) -> Path:
    d = root / "resnet20-digits"
    _write_metrics(d, _metrics())
    (d / "config.yaml").write_text("model:\n  name: resnet20\ntrain:\n  lr: 0.1\n  epochs: 3\n")
    (d / "classes.json").write_text(json.dumps(CLASSES))
    (d / "result.json").write_text(json.dumps({
        "best_val_acc": 0.81234, "final_val_acc": 0.79, "test_acc": 0.7765, "params": 272474,
        "epochs_run": 3, "best_epoch": 3, "stop_reason": "max_epochs",
        "seconds_per_epoch": 14.25, "seconds_total": 42.75}))
    lines = ["true\\pred," + ",".join(CLASSES)]
    lines += [f"{c}," + ",".join(map(str, row)) for c, row in zip(CLASSES, CONFUSION)]
    (d / "confusion_matrix.csv").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(0)
    np.savez(d / "misclassified.npz", images=rng.integers(0, 255, (5, 16, 16, 3), dtype=np.uint8),
             true=np.array([0, 1, 2, 0, 1]), pred=np.array([1, 2, 0, 2, 0]),
             confidence=np.array([0.93, 0.61, 0.55, 0.72, 0.88]))
    (d / "robustness.csv").write_text(
        "perturbation,severity,accuracy,drop\nclean,,0.8123,0.0\ngaussian_noise,1,0.70,0.1123\n"
        "gaussian_noise,3,0.50,0.3123\nblur,1,0.7612,0.0511\n")
    return d


def make_sweep_dir(root: Path) -> Path:
    d = root / "sweep-lr"
    (d / "trials").mkdir(parents=True)
    (d / "trials.csv").write_text(
        "number,state,value,reason,seconds,train.lr,model.depth\n"
        "0,COMPLETE,0.8412,,30.5,0.1,20\n1,COMPLETE,0.9137,,31.25,0.01,32\n"
        "2,PRUNED,0.4,pruned at epoch 2,9.0,0.0001,20\n")
    (d / "factors.md").write_text("## Factor effects\n\n| factor | level | mean value |\n"
                                  "|---|---|---:|\n| train.lr | 0.01 | 0.9137 |\n"
                                  "| train.lr | 0.1 | 0.8412 |\n")
    (d / "best.yaml").write_text("train:\n  lr: 0.01\n")
    _png(d / "plots" / "x.png")
    _write_metrics(d / "trials" / "0", _metrics(3))
    _write_metrics(d / "trials" / "1", _metrics(3, offset=0.05))
    return d


def make_compare_dir(root: Path) -> Path:
    d = root / "compare-depth"
    d.mkdir(parents=True)
    (d / "compare.csv").write_text("name,best_val_acc,test_acc,params,seconds_per_epoch\n"
                                   "resnet20,0.81234,0.7765,272474,14.2\n"
                                   "resnet56,0.86543,0.8311,855770,35.9\n")
    _write_metrics(d / "runs" / "resnet20", _metrics(3))
    _write_metrics(d / "runs" / "resnet56", _metrics(4, offset=-0.03))
    _png(d / "plots" / "accuracy_bars.png", (40, 90, 200))
    return d


# --------------------------------------------------------------------------- html helpers
class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.urls: list[str] = []  # every src/href: must be data: or an in-page anchor
        self.headings: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.imgs.append(attrs.get("src", ""))
        self.urls += [v or "" for k, v in attrs.items() if k in ("src", "href", "srcset")]
        self._in = tag if tag in ("h1", "h2", "h3") else None

    def handle_data(self, data):
        if self._in and data.strip():
            self.headings.append(data.strip())
            self._in = None


def parse(html: str) -> _Collector:
    collector = _Collector()
    collector.feed(html)
    return collector


def assert_self_contained(html: str) -> _Collector:
    doc = parse(html)
    assert "http://" not in html and "https://" not in html
    assert "<script" not in html.lower()
    for url in doc.urls:
        assert url.startswith("data:") or url.startswith("#"), url
    for src in doc.imgs:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        Image.open(io.BytesIO(png)).verify()
    return doc


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def run_report(tmp_path_factory) -> tuple[Path, str, str]:
    d = make_run_dir(tmp_path_factory.mktemp("run"))
    html, md = write_report(d)
    return d, html.read_text(), md.read_text()


# --------------------------------------------------------------------------- tests
def test_run_report_files_and_sections(run_report):
    d, html, md = run_report
    for name in ("report.html", "report.md", "plots/learning_curves.png",
                 "plots/confusion_matrix.png", "plots/per_class_accuracy.png",
                 "plots/misclassified.png", "plots/robustness.png"):
        assert (d / name).is_file(), name
    assert not list(d.glob(".*.tmp")) and not list((d / "plots").glob(".*.tmp"))
    doc = assert_self_contained(html)
    assert doc.headings[:1] == ["resnet20-digits"]
    for heading in ("Config", "Summary", "Learning curves", "Confusion matrix",
                    "Per-class accuracy", "Misclassified examples", "Robustness"):
        assert heading in doc.headings and f"## {heading}" in md
    assert len(doc.imgs) == 5


def test_run_report_numbers(run_report):
    _, html, md = run_report
    for text in ("0.8123", "0.7900", "0.7765", "272,474", "max_epochs", "14.25",
                 "name: resnet20",
                 "0.8000", "0.7000", "0.7500",  # per-class accuracy = diagonal / row sum
                 "gaussian_noise", "0.3123"):
        assert text in html and text in md, text
    assert '<td class="num">0.8000</td>' in html  # numbers right-aligned


def test_markdown_links_relative_plots(run_report):
    d, _, md = run_report
    links = [line.split("](", 1)[1].rstrip(")") for line in md.splitlines()
             if line.startswith("![")]
    assert len(links) == 5
    for link in links:
        assert link.startswith("plots/") and (d / link).is_file()


def test_sweep_report(tmp_path):
    d = make_sweep_dir(tmp_path)
    html_path, md_path = write_report(d)
    html = html_path.read_text()
    doc = assert_self_contained(html)
    for heading in ("Best trial", "Trials", "Factors", "Trial learning curves", "Sweep plots"):
        assert heading in doc.headings, heading
    assert "Factor effects" in doc.headings  # markdown heading inside factors.md
    assert "<td>train.lr</td>" in html  # factors.md pipe table rendered as an HTML table
    assert "0.9137" in html and "pruned at epoch 2" in html and "0.0001" in html
    assert len(doc.imgs) == 2 and (d / "plots" / "overlaid_curves.png").is_file()
    assert "](plots/x.png)" in md_path.read_text()
    # A second report must not mistake its own plots for plots written by the sweep.
    write_report(d)
    assert len(parse(html_path.read_text()).imgs) == 2


def test_comparison_report(tmp_path):
    d = make_compare_dir(tmp_path)
    html = write_report(d)[0].read_text()
    doc = assert_self_contained(html)
    assert {"Comparison", "Learning curves", "Comparison plots"} <= set(doc.headings)
    assert "0.8654" in html and "resnet56" in html
    assert len(doc.imgs) == 2


def test_cli_report(tmp_path, capsys):
    d = make_compare_dir(tmp_path)
    assert main(["report", str(d)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {d / 'report.html'}"


def test_cli_rejects_non_report_dir(tmp_path, capsys):
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert str(empty) in err and "metrics.jsonl" in err
    with pytest.raises(ReslabError, match="no such directory"):
        write_report(tmp_path / "missing")


def test_malformed_contract_file_is_one_line_error(tmp_path):
    d = make_compare_dir(tmp_path)
    # A bad row before the last is damage (a torn *last* row is a crash: dropped with a warning).
    (d / "runs" / "resnet20" / "metrics.jsonl").write_text('{not json\n{"epoch": 2}\n')
    with pytest.raises(ReslabError, match="metrics.jsonl"):
        write_report(d)


def test_minimal_run_dir_and_robustness_markdown(tmp_path):
    """Only metrics.jsonl is required; robustness.md is rendered when there is no CSV."""
    d = tmp_path / "minimal"
    _write_metrics(d, _metrics(2))
    (d / "robustness.md").write_text("| perturbation | accuracy |\n|---|---:|\n"
                                     "| clean | 0.8123 |\n| blur | 0.7612 |\n")
    html = write_report(d)[0].read_text()
    doc = assert_self_contained(html)
    assert "Learning curves" in doc.headings and "Robustness" in doc.headings
    assert "Confusion matrix" not in doc.headings and "Summary" not in doc.headings
    assert '<td class="num">0.7612</td>' in html
