"""The run report's Environment and Metrics sections, from hand-made env.json and
eval_metrics.json (the files' contract: runs/env.py collect_env, engine/metrics.py)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from reslab.engine.metrics import classification_metrics
from reslab.report import write_report

CLASSES = ["cat", "dog", "bird", "fish", "frog", "deer", "ship"]
ENV = {"reslab": "0.1.0", "python": "3.11.7", "torch": "2.14.1", "torchvision": "0.29.1",
       "timm": None, "optuna": "5.0.0", "cuda": "13.0", "cudnn": 91000,
       "device": "NVIDIA H100 80GB HBM3", "cpu": "AMD EPYC 9654",
       "cpu_isa": {"capability": "AVX2", "flags": ["avx2", "fma", "avx512f"],
                   "mkldnn_bf16": False, "env": {"ATEN_CPU_CAPABILITY": "avx2"}},
       "threads": 8, "os": "Linux-6.1", "git": {"commit": "0123456789abcdef" * 2 + "01234567",
                                                "dirty": True},
       "command": "reslab train exp.yaml --set train.lr=0.1", "world_size": 2}


def make_run(root: Path, env: dict | None, metrics: dict | None) -> Path:
    d = root / "run"
    d.mkdir()
    (d / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 1.0,
                                                 "val_acc": 0.5}) + "\n")
    (d / "classes.json").write_text(json.dumps(CLASSES))
    if env is not None:
        (d / "env.json").write_text(json.dumps(env))
    if metrics is not None:
        (d / "eval_metrics.json").write_text(json.dumps(metrics))
        (d / "result.json").write_text(json.dumps({
            "best_val_acc": 0.5, "final_val_acc": 0.5, "test_acc": metrics["accuracy"],
            **{k: metrics[k] for k in ("top5", "macro_f1", "ece", "nll")}}))
    return d


def report_of(d: Path, parse) -> tuple[dict[str, list[str]], str]:
    html, md = write_report(d)
    return parse(html.read_text()), md.read_text()


def known_metrics() -> dict:
    """Metrics of a hand-made case: class 'ship' (6) has no images, 'frog' (4) is never
    predicted; 2 x (dog -> cat) and 1 x (bird -> dog) are the mistakes."""
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 4, 5])
    preds = torch.tensor([0, 0, 0, 0, 1, 2, 1, 3, 0, 5])
    logits = torch.full((10, 7), -2.0)
    logits[torch.arange(10), preds] = torch.linspace(1.0, 3.0, 10)
    return {"split": "data-root", "n": 10, "data_root": "/data/holdout",
            **classification_metrics(logits, labels, CLASSES)}


def test_environment_section_shows_where_and_with_what(tmp_path, report_sections):
    earlier = {**ENV, "device": "AMD EPYC 9654", "cuda": None}
    run = make_run(tmp_path, {**ENV, "earlier": [earlier]}, None)
    sections, md = report_of(run, report_sections)
    env = sections["Environment"]
    for text in ("NVIDIA H100 80GB HBM3", "AMD EPYC 9654", "8 x 2 processes",
                 "torch 2.14.1, torchvision 0.29.1", "13.0 (cuDNN 91000)",
                 "0.1.0 (git 0123456789ab, uncommitted changes)",
                 "reslab train exp.yaml --set train.lr=0.1"):
        assert text in env, text
    kernels = next(t for t in env if t.startswith("AVX2"))
    assert kernels == ("AVX2 (avx2 fma avx512f), oneDNN bf16 not native; set by "
                       "ATEN_CPU_CAPABILITY=avx2")
    resumed = next(t for t in env if t.startswith("Resumed"))
    assert "device differs" in resumed and "cuda differs" in resumed
    assert "| device | NVIDIA H100 80GB HBM3 |" in md
    assert "Metrics" not in sections  # no eval_metrics.json: no section


def test_metrics_section_tables_reliability_and_pairs(tmp_path, report_sections):
    metrics = known_metrics()
    sections, md = report_of(make_run(tmp_path, None, metrics), report_sections)
    assert "Environment" not in sections
    section = sections["Metrics"]
    assert f"{metrics['accuracy']:.4f}" in section and f"{metrics['top5']:.4f}" in section
    assert f"{metrics['macro_f1']:.4f}" in section and f"{metrics['ece']:.4f}" in section
    assert any("data-root split on /data/holdout, 10 images" in t for t in section)
    # per class: dog has precision 1/2, recall 1/3; ship has no support: recall/f1 undefined
    assert "| dog | 0.5000 | 0.3333 | 0.4000 | 3 |" in md
    assert "| ship | 0.0000 | — | — | 0 |" in md
    assert "| frog | 0.0000 | 0.0000 | 0.0000 | 1 |" in md
    assert "| dog | cat | 2 |" in md and "| bird | dog | 1 |" in md
    assert "![Accuracy per confidence bin" in md and (tmp_path / "run" / "plots" /
                                                     "reliability.png").is_file()
    summary = sections["Summary"]
    assert f"{metrics['nll']:.4f}" in summary and "top-5 accuracy" in summary


def test_a_perfect_evaluation_says_so(tmp_path, report_sections):
    labels = torch.arange(7)
    metrics = {"split": "test", "n": 7, **classification_metrics(
        torch.eye(7) * 5, labels, CLASSES)}
    sections, _ = report_of(make_run(tmp_path, None, metrics), report_sections)
    assert "No image was misclassified." in sections["Metrics"]
