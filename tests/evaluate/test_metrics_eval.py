"""The full metrics of `eval --json`, result.json and eval_metrics.json, checked against
scikit-learn (and a hand-written ECE) on the run's own logits; and the report's sections."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

import reslab
from reslab.evaluate import evaluation_data
from reslab.evaluate.loaded import load_run

CONFIG = {
    "data": {"source": "digits", "val_fraction": 0.15, "test_fraction": 0.15,
             "augment": "crop", "pad": 1},
    "model": {"arch": "resnet20", "width": 8},
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.05, "tensorboard": False,
              "device": "cpu", "progress": False},
}
SCALARS = ("top5", "macro_f1", "ece", "nll")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished run (with its report) and what training wrote, read before any `eval`."""
    out = tmp_path_factory.mktemp("metrics") / "run"
    result = reslab.train(CONFIG, out=out, quiet=True)
    written = json.loads((out / "eval_metrics.json").read_text())
    return out, result, written, (out / "report.html").read_text()


def run_logits(run, split="test"):
    """The logits `eval` sees, computed here the way a user would: load the run, predict."""
    lr = load_run(run)
    data, _ = evaluation_data(lr, None, split)
    logits, labels = lr.predict(lr.loader(data), tta=lr.cfg.train.tta)
    return logits.double(), labels.numpy()


def sklearn_reference(logits: torch.Tensor, labels: np.ndarray, k: int) -> dict:
    probs = logits.softmax(1).numpy()
    preds = probs.argmax(1)
    every = list(range(k))
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, preds, labels=every, zero_division=0)
    return {"accuracy": accuracy_score(labels, preds),
            "top5": top_k_accuracy_score(labels, probs, k=5, labels=every),
            "macro_f1": f1_score(labels, preds, labels=np.unique(labels), average="macro",
                                 zero_division=0),
            "nll": log_loss(labels, probs, labels=every),
            "ece": binned_ece(probs.max(1), preds == labels),
            "precision": precision, "recall": recall, "f1": f1, "support": support,
            "matrix": confusion_matrix(labels, preds, labels=every)}


def binned_ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """Top-label ECE over 15 equal-width bins [lo, hi), written out independently."""
    index = np.minimum((confidence.astype(np.float32) * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = index == b
        if inside.any():
            total += inside.sum() * abs(correct[inside].mean() - confidence[inside].mean())
    return total / len(confidence)


def test_eval_json_metrics_equal_scikit_learn(trained, cli):
    run, *_ = trained
    code, out, err = cli("eval", run, "--json")
    assert code == 0, err
    res = json.loads(out)
    logits, labels = run_logits(run)
    ref = sklearn_reference(logits, labels, 10)
    assert res["n"] == len(labels) and res["split"] == "test"
    for key in ("accuracy", "top5", "macro_f1", "nll"):
        assert res[key] == pytest.approx(ref[key], abs=1e-6), key
    assert res["ece"] == pytest.approx(ref["ece"], abs=1e-4)
    assert res["loss"] == pytest.approx(ref["nll"], abs=1e-4)  # float32 cross-entropy
    assert list(res["per_class"]) == [str(i) for i in range(10)]
    for i, (name, row) in enumerate(res["per_class"].items()):
        assert set(row) == {"precision", "recall", "f1", "support"}
        assert row["support"] == ref["support"][i]
        for key in ("precision", "recall", "f1"):
            assert row[key] == pytest.approx(ref[key][i], abs=1e-9), (name, key)
    assert res["confusion_matrix"] == ref["matrix"].tolist()
    # The most-confused pairs are the largest off-diagonal cells of the same matrix.
    off = ref["matrix"] - np.diag(np.diag(ref["matrix"]))
    assert [p["count"] for p in res["confused_pairs"]] == sorted(
        off[off > 0].tolist(), reverse=True)[:len(res["confused_pairs"])]
    assert sum(b["count"] for b in res["reliability"]) == len(labels)


def test_eval_writes_the_metrics_file_and_prints_them(trained, cli):
    run, *_ = trained
    code, out, err = cli("eval", run)
    assert code == 0, err
    written = json.loads((run / "eval_metrics.json").read_text())
    assert written["split"] == "test" and written["n"] == 269
    assert out.startswith("test: accuracy")
    assert f"macro F1 {written['macro_f1']:.4f}" in out and f"ECE {written['ece']:.4f}" in out
    first = written["per_class"]["0"]
    assert f"{first['precision']:.4f}  {first['recall']:.4f}  {first['f1']:.4f}" in out
    assert "eval_metrics.json" in out and "confusion_matrix.csv" in out


def test_result_json_has_the_headline_metrics_of_the_final_evaluation(trained):
    run, result, written, _ = trained
    on_disk = json.loads((run / "result.json").read_text())
    assert on_disk == result
    for key in SCALARS:
        assert isinstance(result[key], float) and result[key] == written[key], key
    assert 0 <= result["ece"] <= 1 and 0 < result["top5"] <= 1 and result["nll"] > 0
    assert result["nll"] == pytest.approx(result["test_loss"], abs=1e-4)
    assert result["top5"] >= result["test_acc"]
    assert written["split"] == result["eval_split"] == "test"
    assert written["accuracy"] == pytest.approx(result["test_acc"], abs=1e-6)
    per_class = written["per_class"]
    assert sum(r["support"] for r in per_class.values()) == written["n"] == 269
    # recall is the per-class accuracy: the confusion matrix's diagonal over its row sums
    rows = (run / "confusion_matrix.csv").read_text().splitlines()[1:]
    matrix = np.array([[int(v) for v in r.split(",")[1:]] for r in rows])
    for i, row in enumerate(per_class.values()):
        assert row["recall"] == pytest.approx(matrix[i, i] / matrix[i].sum(), abs=1e-12)
    assert len(written["reliability"]) == 15 and written["confused_pairs"]


def test_training_report_shows_environment_and_metrics(trained, report_sections):
    run, result, written, html = trained
    sections = report_sections(html)
    env = json.loads((run / "env.json").read_text())
    environment = sections["Environment"]
    assert "device" in environment and env["device"] in environment
    assert any(env["cpu_isa"]["capability"] in cell for cell in environment)
    assert any(torch.__version__ in cell for cell in environment)
    metrics = sections["Metrics"]
    for heading in ("Per class", "Calibration", "Most confused pairs"):
        assert heading in metrics
    assert f"{written['macro_f1']:.4f}" in metrics and f"{written['ece']:.4f}" in metrics
    assert f"{written['per_class']['3']['f1']:.4f}" in metrics
    summary = sections["Summary"]
    assert f"{result['top5']:.4f}" in summary and f"{result['nll']:.4f}" in summary
    assert (run / "plots" / "reliability.png").is_file()
