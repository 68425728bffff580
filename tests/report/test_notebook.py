"""Notebooks: `reslab.train` returns a `Run` (dict-style result access kept), `reslab.load_run`,
the top-level evaluate/sweep/compare/study, the HTML card, and examples/notebook.ipynb executed
(nbclient) on digits."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import reslab

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "notebook.ipynb"


def test_train_returns_a_run_that_is_still_the_result_dict(tmp_path, fast_config):
    run = reslab.train(fast_config(), out=tmp_path / "run", quiet=True)
    stored = json.loads((tmp_path / "run" / "result.json").read_text())
    assert isinstance(run, dict) and run["best_val_acc"] == stored["best_val_acc"]
    assert json.loads(json.dumps(run)) == stored
    assert run.path == tmp_path / "run" and run.config.train.lr == 0.05
    rows = run.metrics
    epochs = list(rows["epoch"]) if hasattr(rows, "columns") else [r["epoch"] for r in rows]
    assert epochs == [1, 2]
    loaded = reslab.load_run(tmp_path / "run")
    assert loaded == run and loaded.result == stored
    html = loaded._repr_html_()
    assert "best_val_acc" in html and "data:image/png;base64," in html
    assert loaded.evaluate(split="test", write=False)["accuracy"] == pytest.approx(
        stored["test_acc"])
    assert reslab.evaluate(tmp_path / "run", split="test", write=False)["accuracy"] == \
        pytest.approx(stored["test_acc"])


def test_top_level_functions_survive_importing_their_packages():
    import reslab.evaluate.robustness  # noqa: F401  (replaces reslab.evaluate by the package)
    import reslab.sweep.spec  # noqa: F401

    for name in ("evaluate", "sweep", "compare", "study", "load_run", "train"):
        assert callable(getattr(reslab, name)), name


def test_the_example_notebook_executes(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    card = notebook.cells[1].outputs[-1]["data"]
    assert "text/html" in card and "best_val_acc" in card["text/html"]
    assert (tmp_path / "runs" / "notebook-digits" / "result.json").is_file()
