"""`reslab compare` over damaged runs: each damaged file of a run under DIR/runs/<name>/ is one
line naming it (exit 2), and nothing in the comparison directory changes."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reslab.errors import ReslabError
from reslab.runs.rundir import RunDir
from reslab.studies.compare import run_compare

from .test_compare import digits, write_study

CKPT = "could not be read (corrupt or truncated?)"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-run comparison: (its file, its directory)."""
    root = tmp_path_factory.mktemp("compare-faults")
    runs = [digits("w4", 4), digits("w8", 8)]
    for run in runs:
        run["train"]["epochs"] = 1
    study = write_study(root / "c.yaml", overrides=["train.seed=0"], runs=runs)
    run_compare(study, root / "out", quiet=True, log=lambda _: None)
    return study, root / "out"


def cut(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# (what is done to runs/w4/, the file it damages, the error after "<that file>: ")
DAMAGES = {
    "empty result.json": (lambda run: run.result.write_text(""), "result.json",
                          "empty or not valid JSON (expected the run's final results); the "
                          "file is damaged"),
    "cut result.json": (lambda run: cut(run.result), "result.json",
                        "empty or not valid JSON (expected the run's final results); the file "
                        "is damaged"),
    "result.json not an object": (lambda run: run.result.write_text("[1, 2]\n"), "result.json",
                                  "expected a JSON object (the run's final results), got [1, 2]; "
                                  "the file is damaged"),
    "result.json value not a number": (
        lambda run: run.result.write_text('{"best_val_acc": 0.5, "test_acc": "high"}'),
        "result.json", "test_acc = 'high': expected a number; the file is damaged"),
    "empty config.yaml": (lambda run: run.config.write_text(""), "config.yaml",
                          "empty; expected a mapping with sections data, model, train"),
    "damaged metrics.jsonl": (
        lambda run: run.metrics.write_text("{torn\n" + run.metrics.read_text()),
        "metrics.jsonl", "line 1 is not valid JSON (damaged; the rows cannot be trusted)"),
    "cut predictions.npz": (lambda run: cut(run.predictions), "predictions.npz",
                            "cannot read the final evaluation's predictions (BadZipFile: File "
                            "is not a zip file); the file is damaged"),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_damaged_run_file_is_one_line_naming_it_and_nothing_changes(finished, tmp_path, cli,
                                                                     damage):
    study, out = finished
    copy = tmp_path / "out"
    shutil.copytree(out, copy, symlinks=True)
    spoil, name, message = DAMAGES[damage]
    spoil(RunDir(copy / "runs" / "w4"))
    before = snapshot(copy)
    code, _, err = cli("compare", study, "--out", copy, "--quiet")
    assert code == 2
    assert err.splitlines()[-1] == f"reslab compare: error: {copy}/runs/w4/{name}: {message}"
    assert "Traceback" not in err
    assert snapshot(copy) == before


@pytest.mark.parametrize("cut_files, finished_run", [
    (("last", "best"), True), (("last", "best"), False), (("best",), False)])
def test_a_cut_checkpoint_is_one_line_or_costs_nothing(finished, tmp_path, cli, cut_files,
                                                      finished_run):
    """A finished run's table values come from result.json: its cut checkpoints cost the
    table only the format column's detail (the config's `auto`). An unfinished run would
    resume from last.pt and end on best.pt: one line naming the first damaged one, before
    anything is written (never a retrain from scratch over it)."""
    study, out = finished
    copy = tmp_path / "out"
    shutil.copytree(out, copy, symlinks=True)
    run = RunDir(copy / "runs" / "w4")
    for name in cut_files:
        cut(getattr(run, name))
    if not finished_run:
        run.result.unlink()
    before = snapshot(copy)
    code, _, err = cli("compare", study, "--out", copy, "--quiet")
    if finished_run:
        assert code == 0, err
        table = [line.split(",") for line in (copy / "compare.csv").read_text().splitlines()]
        was = [line.split(",") for line in (out / "compare.csv").read_text().splitlines()]
        assert [r[:2] + r[3:6] for r in table] == [r[:2] + r[3:6] for r in was]
        return
    assert code == 2 and "Traceback" not in err
    damaged = getattr(run, cut_files[0])
    assert err.splitlines()[-1].startswith(f"reslab compare: error: checkpoint {damaged} {CKPT}")
    assert snapshot(copy) == before


@pytest.mark.parametrize("text, message", [
    ("a,b\n1,2\n", "no perturbation column (expected perturbation, severity, accuracy, drop, "
                   "mode); the file is damaged"),
    ("perturbation,severity,accuracy,drop,mode\nclean,0,x,0.0,display\n",
     "could not convert string to float: 'x'; the file is damaged"),
])
def test_damaged_robustness_rows_are_one_line(tmp_path, text, message):
    run = RunDir(tmp_path)
    run.robustness_csv.write_text(text)
    with pytest.raises(ReslabError) as err:
        run.read_robustness("display")
    assert str(err.value) == f"{run.robustness_csv}: {message}"
