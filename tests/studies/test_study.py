"""`reslab study`: a digits study end to end (killed midway and resumed), its tables, the
report, one-line errors for bad study files, and every example study validating."""
from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from reslab.cli import main
from reslab.errors import ReslabError
from reslab.report import write_report
from reslab.runs.rundir import StudyDir, directory_kind
from reslab.studies.study import STEPS, run_study
from reslab.studies.study_spec import SCALES, load_study_plan

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "studies"
# One thread per run: the test machine's cores are shared.
BASE = {"data": {"source": "digits", "val_fraction": 0.2, "test_fraction": 0.25,
                 "max_per_class": 16, "augment": "none"},
        "model": {"arch": "resnet20", "width": 4},
        "train": {"epochs": 1, "batch_size": 64, "lr": 0.05, "tensorboard": False,
                  "report": False, "device": "cpu", "progress": False, "threads": 1}}
STUDY = {"name": "digits-widths", "base": BASE,
         "axes": {"width": {"w4": {"model.width": 4}, "w8": {"model.width": 8}}},
         "sweep": {"sampler": "grid", "space": {"train.lr": {"values": [0.05, 0.1]}},
                   "heartbeat": {"interval": 1, "grace": 3}},
         "confirm": {"repeats": 2},
         "robustness": {"suite": "seed", "raw": False},
         "scale": {"tiny": {"train.epochs": 1}, "full": {"train.epochs": 2}}}


def write_study(path: Path, study: dict) -> Path:
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def result_mtimes(variant_dir: Path) -> dict[str, int]:
    return {str(p.relative_to(variant_dir)): p.stat().st_mtime_ns
            for p in sorted(variant_dir.rglob("result.json"))}


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"study ended (rc {proc.returncode}) or timed out before the "
                                 "point to kill it")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def studied(tmp_path_factory):
    """The study run as `reslab study` in its own session, killed -9 while the second
    variant's sweep runs, then run again to the end; with the first variant's result mtimes
    from before the re-run."""
    root = tmp_path_factory.mktemp("study")
    path = write_study(root / "widths.yaml", STUDY)
    out = root / "out"
    proc = subprocess.Popen([sys.executable, "-m", "reslab", "study", str(path), "--out",
                             str(out), "--scale", "tiny", "--quiet"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: (out / "variants" / "w8" / "sweep" / "trials").is_dir(), proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = result_mtimes(out / "variants" / "w4")
    steps_before = StudyDir(out).finished_steps("w4")
    run_study(path, out, scale="tiny", quiet=True, log=lambda _: None)
    return path, StudyDir(out), before, steps_before


def test_kill_then_rerun_finishes_without_redoing_steps(studied):
    _, out, before, steps_before = studied
    # Every variant's sweep (and best) first, then the confirmation runs of all variants
    # together (the run executor): w4 had finished both when w8's sweep was killed.
    assert list(steps_before) == ["sweep", "best"]
    after = result_mtimes(out.variant("w4"))
    assert before and {k: v for k, v in after.items() if k in before} == before
    assert list(out.finished_steps("w4")) == list(STEPS)
    assert list(out.finished_steps("w8")) == list(STEPS)
    assert len(result_mtimes(out.variant("w8"))) == 4   # 2 sweep trials + 2 seeds


def test_tables_hold_each_variant(studied):
    _, out, _, _ = studied
    best = read_csv(out.table_csv("table1-hyperparameters"))
    assert [r["variant"] for r in best] == ["w4", "w8"]
    assert {r["train.lr"] for r in best} <= {"0.05", "0.1"} and best[0]["width"] == "w4"
    accuracy = read_csv(out.table_csv("table2-accuracy"))
    assert [r["variant"] for r in accuracy] == ["w4", "w8"]
    for row in accuracy:
        assert row["seeds"] == "2" and int(row["params"]) > 0 and row["epochs"] == "1"
        assert float(row["test_acc_ci95_low"]) <= float(row["test_acc"]) <= \
            float(row["test_acc_ci95_high"])
        assert float(row["seconds_per_epoch"]) > 0 and row["device"] and row["isa"]
    robustness = read_csv(out.table_csv("table3-robustness"))
    assert {r["variant"] for r in robustness} == {"w4", "w8"}
    for row in robustness:
        assert row["mode"] == "display" and row["seeds"] == "2"
        assert float(row["drop"]) == pytest.approx(float(row["clean_acc"]) -
                                                   float(row["perturbed_acc"]))
    factors = read_csv(out.table_csv("factors"))
    assert {(r["variant"], r["setting"]) for r in factors} == \
        {(v, lr) for v in ("w4", "w8") for lr in ("0.05", "0.1")}


def test_figures_significance_summary_and_report(studied):
    _, out, _, _ = studied
    assert out.plot("factor-train.lr").is_file() and out.plot("mean_curves").is_file()
    pairs = read_csv(out.significance_csv)
    assert len(pairs) == 1 and set(pairs[0]["pair"].split(" vs ")) == {"w4", "w8"}
    assert pairs[0]["test"] == "paired t"
    summary = out.read_summary()
    assert "w4" in summary and ("within noise" in summary or "beats" in summary)
    assert directory_kind(out.path) == "study"
    html, md = write_report(out.path)              # what `reslab report DIR` runs
    text = md.read_text()
    for title in ("Table I", "Table II", "Table III", "Significance", "Learning curves"):
        assert title in text
    assert "data:image/png;base64" in html.read_text()


def booktabs_checked(tex: str) -> None:
    """The structure pdflatex would need: one of each rule in order, matching tabular
    begin/end, and every row with the column count the alignment declares."""
    assert tex.count(r"\toprule") == tex.count(r"\midrule") == tex.count(r"\bottomrule") == 1
    assert tex.index(r"\toprule") < tex.index(r"\midrule") < tex.index(r"\bottomrule")
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    columns = len(re.search(r"\\begin\{tabular\}\{([lrc]+)\}", tex).group(1))
    body = tex[tex.index(r"\toprule"):tex.index(r"\bottomrule")]
    rows = [line for line in body.splitlines() if line.endswith(r"\\")]
    assert len(rows) >= 2
    for row in rows:
        assert len(re.split(r"(?<!\\)&", row)) == columns, row
    assert not re.search(r"(?<!\\)[_%#]", body.replace(r"\_", "")), "unescaped special char"


def test_tex_tables_compile_or_are_well_formed(studied, tmp_path):
    _, out, _, _ = studied
    tables = sorted(out.tables.glob("*.tex"))
    assert {t.stem for t in tables} >= {"table1-hyperparameters", "table2-accuracy",
                                        "table3-robustness"}
    have_latex = shutil.which("pdflatex") and shutil.which("kpsewhich") and \
        subprocess.run(["kpsewhich", "booktabs.sty"], capture_output=True).stdout.strip()
    for table in tables:
        tex = table.read_text()
        booktabs_checked(tex)
        if have_latex:
            doc = tmp_path / f"{table.stem}.tex"
            doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n"
                           f"\\begin{{document}}\n{tex}\n\\end{{document}}\n")
            done = subprocess.run(["pdflatex", "-interaction=nonstopmode", doc.name],
                                  cwd=tmp_path, capture_output=True, timeout=60)
            assert done.returncode == 0, done.stdout[-2000:]


def test_latex_escapes_special_characters():
    from reslab.report.tables import latex_table

    tex = latex_table(["a_b", "c"], [["x & y", "50 % ± 1"]], "T_1 #", "tab:t")
    assert r"a\_b" in tex and r"x \& y" in tex and r"50 \% $\pm$ 1" in tex
    assert r"T\_1 \#" in tex
    booktabs_checked(tex)


# ----------------------------------------------------------------------------- errors
BAD = {
    "no-axes": ({k: v for k, v in STUDY.items() if k != "axes"}, "axes: required key missing"),
    "unknown-key": ({**STUDY, "epochs": 3}, "unknown key 'epochs'"),
    "axis-value": ({**STUDY, "axes": {"width": {"w4": 4}}}, "axes.width"),
    "scale-name": ({**STUDY, "scale": {"huge": {}}}, "scale.huge"),
    "sweep-base": ({**STUDY, "sweep": {**STUDY["sweep"], "base": "x.yaml"}},
                   "sweep: base: not allowed"),
    "suite": ({**STUDY, "robustness": {"suite": "nope"}}, "robustness.suite"),
    "prepared-tree": ({**STUDY, "axes": {"d": {"a": {"data.root": "prepared:none"}}}},
                      "no tree 'none'"),
    "config-value": ({**STUDY, "axes": {"o": {"x": {"train.optimizer": "nope"}}}},
                     "variant x: train.optimizer"),
    "no-test-split": ({**STUDY, "axes": {"t": {"x": {"data.test_fraction": 0.0}}}},
                      "data.test_fraction = 0"),
    "sweep-space": ({**STUDY, "sweep": {"sampler": "grid", "space": {"train.nope": {
        "values": [1]}}}}, "unknown key"),
    "scale-config": ({**STUDY, "scale": {"tiny": {"train.epochs": 0}}}, "train.epochs = 0"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_study_file_is_one_line_exit_2(case, tmp_path, capsys):
    doc, expected = BAD[case]
    path = write_study(tmp_path / f"{case}.yaml", doc)
    assert main(["study", str(path), "--scale", "tiny", "--check"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert str(path) in err and expected in err, err


def test_unreadable_or_missing_study_file(tmp_path, capsys):
    broken = tmp_path / "broken.yaml"
    broken.write_text("axes: [1, 2\n")
    for path in (broken, tmp_path / "missing.yaml"):
        assert main(["study", str(path), "--check"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and str(path) in err, err


def test_missing_pretrained_weights_named_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    study = {**STUDY, "sweep": None, "axes": {"model": {
        "scratch": {}, "tv18": {"model.arch": "tv:resnet18", "model.pretrained": True}}}}
    path = write_study(tmp_path / "weights.yaml", {k: v for k, v in study.items() if v})
    with pytest.raises(ReslabError, match=r"resnet18-f37072fd\.pth \(variant tv18\)"):
        run_study(path, tmp_path / "out", scale="tiny")
    assert not (tmp_path / "out").exists()          # refused before anything was made


def test_another_study_in_the_same_directory_is_refused(studied, tmp_path):
    path, out, _, _ = studied
    other = write_study(tmp_path / "other.yaml", {**STUDY, "confirm": {"repeats": 3}})
    with pytest.raises(ReslabError, match="holds another study"):
        run_study(other, out.path, scale="tiny")
    with pytest.raises(ReslabError, match="holds another study"):
        run_study(path, out.path, scale="full")


# ----------------------------------------------------------------------------- examples
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_example_studies_validate(example, scale):
    plan = load_study_plan(EXAMPLES / example, scale)
    assert len(plan.variants) >= 2
    assert len({v.name for v in plan.variants}) == len(plan.variants)
    for variant in plan.variants:  # every `prepared:` value, the base's included, is a path
        texts = [variant.cfg.to_yaml()] + ([yaml.safe_dump(variant.sweep.base_raw)]
                                           if variant.sweep is not None else [])
        assert all("prepared:" not in text for text in texts), variant.name
