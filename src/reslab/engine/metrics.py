"""Full classification metrics from logits: the numbers `eval --json` reports.

Definitions come from scikit-learn (precision/recall/F1, top-k, confusion matrix), torch
(cross-entropy) and torchmetrics' binning (calibration error), so they mean what they mean
elsewhere.
Logits are upcast to float64 first: float32 logits of a bf16 model lose the small
probabilities NLL and calibration depend on when the softmax runs in float32.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    precision_recall_fscore_support,
    top_k_accuracy_score,
)

from ..errors import ReslabError

ECE_BINS = 15
TOP_K = 5
CONFUSED_PAIRS = 5


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor,
                           classes: list[str]) -> dict:
    """Metrics of (N, K) logits against (N,) integer labels; `classes[i]` names label i.

    -> {accuracy, top5, per_class, macro_precision, macro_recall, macro_f1, nll, ece,
        reliability, confused_pairs}:
    * accuracy: top-1, argmax of the logits (ties -> the lower class index, like torch).
    * top5: top-5 accuracy when there are more than 5 classes, else None (it would be 1.0).
    * per_class: {name: {precision, recall, f1, support}}. A class never predicted has
      precision 0 (sklearn zero_division=0); a class with no support in this split has
      recall and f1 None (undefined, nothing to recall).
    * macro_precision/recall/f1: unweighted means over the classes *present* in the labels,
      so a class missing from a small split does not count as a zero.
    * nll: mean negative log-likelihood (cross-entropy of the softmax, natural log).
    * ece: expected calibration error, top-label, 15 equal-width bins, L1 (as torchmetrics).
    * reliability: 15 bins {lo, hi, confidence, accuracy, count} (None when empty).
    * confused_pairs: up to 5 {true, predicted, count}, off-diagonal, most frequent first.
    """
    scores, y = _checked(logits, labels, classes)
    preds = scores.argmax(1)
    yn, pn = y.numpy(), preds.numpy()
    probs = scores.softmax(1)
    every = list(range(len(classes)))
    return {
        "accuracy": float(accuracy_score(yn, pn)),
        "top5": _top5(yn, scores.numpy(), every),
        "per_class": per_class_metrics(yn, pn, classes),
        **_macro(yn, pn),
        "nll": float(F.cross_entropy(scores, y)),
        "ece": expected_calibration_error(probs, y),
        "reliability": reliability_bins(probs.max(1).values, preds == y),
        "confused_pairs": confused_pairs(confusion_matrix(yn, pn, labels=every), classes),
    }


def _checked(logits: torch.Tensor, labels: torch.Tensor,
             classes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    if logits.ndim != 2 or labels.ndim != 1 or len(logits) != len(labels):
        raise ReslabError(f"metrics: expected logits (N, K) and labels (N,), got "
                          f"{tuple(logits.shape)} and {tuple(labels.shape)}")
    if len(labels) == 0:
        raise ReslabError("metrics: no images to evaluate")
    if logits.shape[1] != len(classes):
        raise ReslabError(f"metrics: {logits.shape[1]} logits per image but "
                          f"{len(classes)} classes")
    labels = labels.detach().cpu().long()
    if labels.min() < 0 or labels.max() >= len(classes):
        raise ReslabError(f"metrics: labels must lie in 0..{len(classes) - 1}, got "
                          f"{int(labels.min())}..{int(labels.max())}")
    return logits.detach().cpu().double(), labels


def _top5(labels: np.ndarray, scores: np.ndarray, every: list[int]) -> float | None:
    if len(every) <= TOP_K:
        return None
    return float(top_k_accuracy_score(labels, scores, k=TOP_K, labels=every))


def per_class_metrics(labels: np.ndarray, preds: np.ndarray, classes: list[str]) -> dict:
    """{class: {precision, recall, f1, support}} over every class of the model."""
    precision, recall, f1, support = precision_recall_fscore_support(
        labels, preds, labels=list(range(len(classes))), zero_division=0)
    return {name: {"precision": float(precision[i]),
                   "recall": float(recall[i]) if support[i] else None,
                   "f1": float(f1[i]) if support[i] else None,
                   "support": int(support[i])}
            for i, name in enumerate(classes)}


def _macro(labels: np.ndarray, preds: np.ndarray) -> dict:
    present = np.unique(labels).tolist()
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, preds, labels=present, average="macro", zero_division=0)
    return {"macro_precision": float(precision), "macro_recall": float(recall),
            "macro_f1": float(f1)}


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor,
                               n_bins: int = ECE_BINS) -> float:
    """Top-label ECE (L1): sum over equal-width confidence bins of |accuracy - confidence|
    weighted by the bin's share of images, from probabilities. Binned as torchmetrics'
    MulticlassCalibrationError bins (float32 confidences, bins [lo, hi), a confidence of
    exactly 1.0 a bin of its own), so the two agree (tests/engine/test_metrics.py) without its
    ~2 s of imports on every run. Per bin, |hits - sum of confidences| / N is
    count / N * |accuracy - confidence|."""
    confidence, predicted = probs.max(1)
    conf32 = confidence.detach().cpu().float()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float32)
    index = (torch.bucketize(conf32, edges, right=True) - 1).clamp(min=0).numpy()
    hits = (predicted == labels).cpu().numpy().astype(np.float64)
    gap = np.bincount(index, weights=hits, minlength=n_bins + 1) - \
        np.bincount(index, weights=conf32.double().numpy(), minlength=n_bins + 1)
    return float(np.abs(gap).sum() / max(1, len(index)))


def reliability_bins(confidence: torch.Tensor, correct: torch.Tensor,
                     n_bins: int = ECE_BINS) -> list[dict]:
    """Per-bin mean confidence, accuracy and count for a reliability diagram.

    Binned exactly as torchmetrics bins for `ece` (float32 confidences, bins [lo, hi)), except
    that confidences of exactly 1.0, which torchmetrics scores as a bin of their own, join
    the last bin here: so sum(count * |accuracy - confidence|) / N equals `ece` unless some
    confidence rounds to 1.0 in float32 (then it differs slightly).
    """
    conf32 = confidence.detach().cpu().float()
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float32)
    index = (torch.bucketize(conf32, edges, right=True) - 1).clamp(0, n_bins - 1).numpy()
    count = np.bincount(index, minlength=n_bins)
    conf_sum = np.bincount(index, weights=conf32.double().numpy(), minlength=n_bins)
    hits = np.bincount(index, weights=correct.cpu().numpy().astype(np.float64), minlength=n_bins)
    return [{"lo": b / n_bins, "hi": (b + 1) / n_bins,
             "confidence": float(conf_sum[b] / count[b]) if count[b] else None,
             "accuracy": float(hits[b] / count[b]) if count[b] else None,
             "count": int(count[b])}
            for b in range(n_bins)]


def confused_pairs(matrix: np.ndarray, classes: list[str], top: int = CONFUSED_PAIRS
                   ) -> list[dict]:
    """The `top` most frequent off-diagonal (true, predicted) cells with a non-zero count;
    equal counts in (true, predicted) label order so the list is deterministic."""
    matrix = np.asarray(matrix)
    cells = [(-int(matrix[t, p]), t, p) for t in range(len(classes)) for p in range(len(classes))
             if t != p and matrix[t, p] > 0]
    return [{"true": classes[t], "predicted": classes[p], "count": -negative}
            for negative, t, p in sorted(cells)[:top]]
