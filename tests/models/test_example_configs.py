"""Every example run config validates, and names a model that reslab knows."""
from __future__ import annotations

from pathlib import Path

import pytest

from reslab.config import load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
# Sweep, comparison and study files have their own schemas (and their own tests).
OTHER_SCHEMAS = ("sweeps", "compare", "studies")
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
        # relative to the config, the trees the README makes in the project's data/
        assert cfg["data"]["root"] == str(EXAMPLES.parent / "data" / "format-study" / name)
        for key in ("root", "format"):
            cfg["data"].pop(key)
        cfg.pop("name")
    assert arms["jpeg"] == arms["linear"] == arms["log"]


@pytest.mark.parametrize("arch", ["resnet34", "resnet50", "resnet101"])
def test_pretrained_head_recipe(arch):
    from reslab.data.augment import imagenet_step

    cfg = load_config(EXAMPLES / "pretrained-head" / f"{arch}.yaml")
    assert cfg.model.arch == f"tv:{arch}"
    assert cfg.model.head.hidden == [1024] and cfg.model.head.batchnorm
    first, second = cfg.train.phases
    assert (first.augment, second.augment) == ("imagenet-phase1", "imagenet-phase2")
    assert second.start_from == "best" and second.lr_scale == 0.5
    assert 0 < cfg.train.freeze_backbone_epochs < first.epochs
    # S4 selected its best model by validation loss, and jittered hue by 0.1 (both phases).
    assert cfg.train.monitor == "val_loss" and cfg.train.final_weights == "best"
    assert [imagenet_step(p.augment, cfg.data).hue for p in (first, second)] == [0.1, 0.1]


def test_cifar10_resnet18_is_the_s1_recipe():
    """S1: grayscale with probability 0.5 and no early stopping (that rule was S0's)."""
    cfg = load_config(EXAMPLES / "cifar10-resnet18-5m.yaml")
    assert cfg.data.augment == "crop-flip-gray" and cfg.data.gray_p == 0.5
    assert not cfg.train.early_stopping.enabled
    assert (cfg.model.arch, cfg.model.width, cfg.train.epochs) == ("resnet18", 42, 60)


def test_example_paths_are_the_trees_the_readmes_make():
    """Paths in a config are relative to the config: every example's data.root lands where
    the READMEs (run from the project root) put the data, data/ or ../shared, whatever the
    current folder."""
    from reslab.studies.compare import load_compare
    from reslab.sweep.spec import load_sweep

    roots = {p: load_config(p).data.root for p in CONFIGS}
    roots |= {p: load_sweep(p).base.data.root for p in sorted((EXAMPLES / "sweeps").glob("*.yaml"))}
    roots |= {p: e.cfg.data.root for p in sorted((EXAMPLES / "compare").glob("*.yaml"))
              for e in load_compare(p).entries}
    places = (EXAMPLES.parent / "data", EXAMPLES.parent.parent / "shared")
    named = {p: r for p, r in roots.items() if r is not None}
    assert len(named) >= 10
    for path, root in named.items():
        assert any(Path(root).is_relative_to(place) for place in places), (path, root)
