"""classification_metrics against scikit-learn, torchmetrics and hand-made cases."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from reslab.engine.metrics import (
    classification_metrics,
    confused_pairs,
    expected_calibration_error,
    reliability_bins,
)
from reslab.errors import ReslabError

KEYS = {"accuracy", "top5", "per_class", "macro_precision", "macro_recall", "macro_f1", "nll",
        "ece", "reliability", "confused_pairs"}


def _random_case(n: int = 400, k: int = 7, seed: int = 0):
    """Logits that are right more often than chance, with values on a 1/64 grid so they are
    exact in bf16 and float32 (no rounding differences between CPUs or dtypes)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k, (n,), generator=g)
    logits = torch.randint(-128, 128, (n, k), generator=g).float() / 64
    logits[torch.arange(n), labels] += 1.5
    return logits, labels, [f"class{i}" for i in range(k)]


def test_metrics_equal_scikit_learn_on_the_same_predictions():
    logits, labels, classes = _random_case()
    m = classification_metrics(logits, labels, classes)
    y, pred, every = labels.numpy(), logits.argmax(1).numpy(), list(range(len(classes)))
    probs = torch.softmax(logits.double(), 1).numpy()
    assert set(m) == KEYS
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["accuracy"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())
    assert m["top5"] == pytest.approx(top_k_accuracy_score(y, probs, k=5, labels=every))
    assert m["nll"] == pytest.approx(log_loss(y, probs, labels=every), rel=1e-9)
    p, r, f, s = precision_recall_fscore_support(y, pred, labels=every, zero_division=0)
    for i, name in enumerate(classes):
        assert m["per_class"][name] == {"precision": pytest.approx(p[i]),
                                        "recall": pytest.approx(r[i]),
                                        "f1": pytest.approx(f[i]), "support": int(s[i])}
    assert (m["macro_precision"], m["macro_recall"], m["macro_f1"]) == (
        pytest.approx(p.mean()), pytest.approx(r.mean()), pytest.approx(f.mean()))
    assert sum(b["count"] for b in m["reliability"]) == len(labels)
    json.dumps(m, allow_nan=False)  # eval --json must be strict JSON


def test_ece_is_torchmetrics_and_agrees_with_the_reliability_bins():
    from torchmetrics.classification import MulticlassCalibrationError

    logits, labels, classes = _random_case(seed=1)
    m = classification_metrics(logits, labels, classes)
    reference = MulticlassCalibrationError(num_classes=len(classes), n_bins=15, norm="l1")
    assert m["ece"] == pytest.approx(float(reference(logits.double().softmax(1), labels)),
                                abs=1e-6)
    from_bins = sum(b["count"] * abs(b["accuracy"] - b["confidence"])
                    for b in m["reliability"] if b["count"]) / len(labels)
    assert from_bins == pytest.approx(m["ece"], abs=1e-6)


def test_ece_equals_torchmetrics_with_confidences_of_exactly_one():
    from torchmetrics.classification import MulticlassCalibrationError

    probs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.2, 0.8], [0.55, 0.45]])
    labels = torch.tensor([0, 1, 1, 0, 0])
    reference = MulticlassCalibrationError(num_classes=2, n_bins=15, norm="l1")
    assert expected_calibration_error(probs, labels) == pytest.approx(
        float(reference(probs, labels)), abs=1e-6)


def test_ece_and_reliability_on_a_hand_made_case():
    # Two images at confidence 0.9 (one right) -> bin [13/15, 14/15): |0.5 - 0.9| * 2/4
    # Two images at confidence 0.7 (both right) -> bin [10/15, 11/15): |1.0 - 0.7| * 2/4
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.3, 0.7], [0.3, 0.7]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 1])
    assert expected_calibration_error(probs, labels) == pytest.approx(0.2 + 0.15, abs=1e-6)
    m = classification_metrics(probs.log(), labels, ["a", "b"])
    assert m["ece"] == pytest.approx(0.35, abs=1e-6)
    filled = {i: b for i, b in enumerate(m["reliability"]) if b["count"]}
    assert list(filled) == [10, 13]
    assert filled[13] == {"lo": 13 / 15, "hi": 14 / 15, "confidence": pytest.approx(0.9),
                          "accuracy": 0.5, "count": 2}
    assert filled[10]["accuracy"] == 1.0 and filled[10]["confidence"] == pytest.approx(0.7)
    assert m["reliability"][0] == {"lo": 0.0, "hi": 1 / 15, "confidence": None,
                                   "accuracy": None, "count": 0}


def test_reliability_puts_certain_predictions_in_the_last_bin():
    bins = reliability_bins(torch.tensor([1.0, 1.0, 0.95]), torch.tensor([True, False, True]))
    assert len(bins) == 15 and bins[-1]["count"] == 3 and bins[-1]["accuracy"] == 2 / 3


def test_top5_on_a_hand_made_case():
    # Six classes. Image 0: its label (0) ranks 5th -> hit. Image 1: its label ranks 6th -> miss.
    logits = torch.tensor([[2.0, 6.0, 5.0, 4.0, 3.0, 1.0],
                           [1.0, 6.0, 5.0, 4.0, 3.0, 2.0]])
    m = classification_metrics(logits, torch.tensor([0, 0]), list("abcdef"))
    assert m["top5"] == 0.5 and m["accuracy"] == 0.0


def test_top5_is_none_with_five_classes_or_fewer():
    logits, labels, _ = _random_case(k=5)
    assert classification_metrics(logits, labels, list("abcde"))["top5"] is None


def test_class_without_support_does_not_crash_and_is_left_out_of_macro():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 3, 1, 1, 2, 0])  # class 3 is predicted once but never true
    logits = torch.nn.functional.one_hot(preds, 4).float() * 3
    m = classification_metrics(logits, labels, list("abcd"))
    assert m["per_class"]["d"] == {"precision": 0.0, "recall": None, "f1": None, "support": 0}
    y, p = labels.numpy(), preds.numpy()
    ref = precision_recall_fscore_support(y, p, labels=[0, 1, 2], average="macro",
                                          zero_division=0)
    assert (m["macro_precision"], m["macro_recall"], m["macro_f1"]) == pytest.approx(ref[:3])
    json.dumps(m, allow_nan=False)


def test_never_predicted_class_has_zero_precision():
    logits = torch.nn.functional.one_hot(torch.tensor([0, 0, 0]), 2).float()
    m = classification_metrics(logits, torch.tensor([0, 1, 1]), ["a", "b"])
    assert m["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}


def test_confused_pairs_most_frequent_first_then_label_order():
    matrix = np.array([[5, 3, 0, 1],
                       [3, 5, 0, 0],
                       [0, 4, 5, 1],
                       [0, 0, 1, 9]])
    pairs = confused_pairs(matrix, list("abcd"))
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [
        ("c", "b", 4), ("a", "b", 3), ("b", "a", 3), ("a", "d", 1), ("c", "d", 1)]


def test_confused_pairs_match_sklearn_confusion_matrix():
    logits, labels, classes = _random_case(seed=2)
    m = classification_metrics(logits, labels, classes)
    cm = confusion_matrix(labels.numpy(), logits.argmax(1).numpy())
    for pair in m["confused_pairs"]:
        assert cm[classes.index(pair["true"]), classes.index(pair["predicted"])] == pair["count"]
    off = cm[~np.eye(len(classes), dtype=bool)]
    assert [p["count"] for p in m["confused_pairs"]] == sorted(off, reverse=True)[:5]


def test_bf16_logits_give_the_same_metrics_as_float32():
    logits, labels, classes = _random_case(seed=3)  # values exact in bf16
    m32 = classification_metrics(logits, labels, classes)
    m16 = classification_metrics(logits.bfloat16(), labels, classes)
    assert m16 == m32
    assert not math.isnan(m16["nll"])


@pytest.mark.parametrize("logits, labels, classes", [
    (torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), ["a", "b"]),
    (torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), ["a", "b"]),
    (torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), ["a", "b"]),
    (torch.zeros(2, 2), torch.tensor([0, 2]), ["a", "b"]),
])
def test_bad_inputs_raise_one_line_errors(logits, labels, classes):
    with pytest.raises(ReslabError):
        classification_metrics(logits, labels, classes)
