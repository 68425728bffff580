"""Every example run config validates, and names a model that reslab knows."""
from __future__ import annotations

from pathlib import Path

import pytest

from reslab.config import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Sweep and comparison files have their own schemas (and their own tests).
OTHER_SCHEMAS = ("sweeps", "compare")
CONFIGS = sorted(p for p in EXAMPLES.rglob("*.yaml")
                 if p.relative_to(EXAMPLES).parts[0] not in OTHER_SCHEMAS)


def test_the_studies_have_examples():
    names = {p.relative_to(EXAMPLES).as_posix() for p in CONFIGS}
    assert {"format-study/jpeg.yaml", "format-study/linear.yaml", "format-study/log.yaml",
            "pretrained-head/resnet34.yaml", "pretrained-head/resnet50.yaml",
            "pretrained-head/resnet101.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(EXAMPLES).as_posix())
def test_example_validates(path):
    cfg = load_config(path)
    if cfg.model.arch.startswith("tv:"):
        import torchvision

        assert cfg.model.arch[3:] in torchvision.models.list_models(module=torchvision.models)


def test_format_study_arms_differ_only_in_encoding():
    arms = {n: load_config(EXAMPLES / "format-study" / f"{n}.yaml").to_dict()
            for n in ("jpeg", "linear", "log")}
    for name, cfg in arms.items():
        assert cfg["data"]["format"] == {"jpeg": "srgb"}.get(name, name)
        assert cfg["data"]["root"] == f"data/format-study/{name}"
        for key in ("root", "format"):
            cfg["data"].pop(key)
        cfg.pop("name")
    assert arms["jpeg"] == arms["linear"] == arms["log"]


def test_pretrained_head_recipe():
    cfg = load_config(EXAMPLES / "pretrained-head" / "resnet101.yaml")
    assert cfg.model.head.hidden == [1024] and cfg.model.head.batchnorm
    first, second = cfg.train.phases
    assert (first.augment, second.augment) == ("imagenet-phase1", "imagenet-phase2")
    assert second.start_from == "best" and second.lr_scale == 0.5
    assert 0 < cfg.train.freeze_backbone_epochs < first.epochs
