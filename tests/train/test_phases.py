"""Backbone freezing and two-phase fine-tuning on a tiny tv:resnet18 run (32x32 PNGs).

`train.threads: 1`: on a shared 2-core machine two intra-op threads spin against other
processes and make these small steps several times slower.
"""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

import reslab
from reslab.config import load_config
from reslab.models import build_model
from reslab.training import loop
from reslab.utils import read_jsonl

PHASES = [{"epochs": 2, "augment": "imagenet-phase1"},
          {"epochs": 2, "start_from": "best", "lr_scale": 0.5, "augment": "imagenet-phase2"}]


class Interrupt(Exception):
    pass


@pytest.fixture
def config(make_tree, tmp_path):
    root = make_tree(per_class=12, size=32)

    def make(**train) -> dict:
        return {"data": {"source": "folder", "root": str(root), "val_fraction": 0.25,
                         "augment": "flip", "cache_dir": str(tmp_path / "cache")},
                "model": {"arch": "tv:resnet18",
                          "head": {"hidden": [32], "dropout": 0.2, "batchnorm": True}},
                "train": {"epochs": 2, "batch_size": 16, "eval_batch_size": 64, "lr": 0.01,
                          "optimizer": "sgd", "momentum": 0.9, "scheduler": "none",
                          "amp": "off", "device": "cpu", "channels_last": False, "threads": 1,
                          "tensorboard": False, "report": False, "progress": False, **train}}

    return make


def checkpoint(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def split(state: dict) -> tuple[dict, dict]:
    return ({k: v for k, v in state.items() if k.startswith("backbone.")},
            {k: v for k, v in state.items() if k.startswith("head.")})


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_frozen_backbone_is_untouched_then_trains(config, tmp_path):
    cfg = config(epochs=2, freeze_backbone_epochs=1)
    torch.manual_seed(0)  # what train() does right before it builds the model
    init = build_model(load_config(cfg).model, 3, 3).state_dict()
    after: dict = {}
    run = tmp_path / "frozen"

    def snapshot(row):
        after[row["epoch"]] = checkpoint(run / "last.pt")

    reslab.train(cfg, out=run, on_epoch=snapshot, quiet=True)
    backbone0, head0 = split(init)
    backbone1, head1 = split(after[1])
    # Weights and BatchNorm running statistics (and their counters) all unchanged.
    assert any("running_mean" in k for k in backbone1) and same(backbone1, backbone0)
    assert not same(head1, head0)
    assert not same(split(after[2])[0], backbone0)  # unfrozen in epoch 2


def test_phase_two_starts_from_best_with_half_lr_and_resumes_exactly(config, tmp_path,
                                                                    monkeypatch):
    cfg, started = config(phases=PHASES), {}
    real_epoch = loop.train_one_epoch

    def spy(s, *args, **kwargs):
        epoch = inspect.signature(real_epoch).bind(s, *args, **kwargs).arguments["epoch"]
        if epoch == 3:
            started[s.run.path.name] = {k: v.clone() for k, v in s.model.state_dict().items()}
        return real_epoch(s, *args, **kwargs)

    def mark_best(run: Path, stop_after: int | None = None):
        def on_epoch(row):
            # Make best.pt unmistakable: phase 2 must start from exactly these weights.
            if row["epoch"] == 2:
                ckpt = torch.load(run / "best.pt", weights_only=True)
                ckpt["model"]["head.5.weight"].fill_(0.125)
                ckpt.pop("sha256", None)  # edited on purpose: load it as an undigested one
                torch.save(ckpt, run / "best.pt")
                started["best"] = ckpt["model"]
            if row["epoch"] == stop_after:
                raise Interrupt
        return on_epoch

    monkeypatch.setattr(loop, "train_one_epoch", spy)
    full = reslab.train(cfg, out=tmp_path / "full", on_epoch=mark_best(tmp_path / "full"),
                        quiet=True)
    assert same(started["full"], started["best"])
    rows = read_jsonl(tmp_path / "full" / "metrics.jsonl")
    assert [r["lr"] for r in rows] == pytest.approx([0.01, 0.01, 0.005, 0.005])

    # Interrupted after epoch 3 (mid phase 2), then resumed: the same run, bit for bit.
    with pytest.raises(Interrupt):
        reslab.train(cfg, out=tmp_path / "cut", on_epoch=mark_best(tmp_path / "cut", 3),
                     quiet=True)
    resumed = reslab.train(resume=tmp_path / "cut", quiet=True)
    strip = lambda rs: [{k: v for k, v in r.items() if k != "seconds"} for r in rs]  # noqa: E731
    assert strip(read_jsonl(tmp_path / "cut" / "metrics.jsonl")) == strip(rows)
    for key in ("best_val_acc", "final_val_acc", "best_epoch", "epochs_run"):
        assert resumed[key] == full[key]
    assert same(checkpoint(tmp_path / "full" / "last.pt"), checkpoint(tmp_path / "cut" / "last.pt"))
