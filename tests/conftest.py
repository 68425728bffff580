"""Shared fixtures: fast configs, generated image trees, the CLI runner."""
from __future__ import annotations

import os
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
CIFAR_TRAIN = SHARED / "data" / "cifar10" / "train"


if os.environ.get("PYTEST_XDIST_WORKER"):
    # Parallel test workers share the cores: one thread each, or they oversubscribe them.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Decoded-image caches go to a temp dir, never to the user's cache."""
    os.environ["RESLAB_CACHE"] = str(tmp_path_factory.mktemp("reslab-cache"))
    os.environ.setdefault("MPLBACKEND", "Agg")
    yield


def _fast_config(**sections) -> dict:
    """A digits config that trains an epoch in well under a second."""
    cfg = {
        "data": {"source": "digits", "val_fraction": 0.15, "test_fraction": 0.15,
                 "augment": "crop", "pad": 1},
        "model": {"arch": "resnet20", "width": 8},
        "train": {"epochs": 2, "batch_size": 64, "lr": 0.05, "scheduler": "cosine",
                  "tensorboard": False, "report": False, "device": "cpu", "progress": False},
    }
    for name, values in sections.items():
        cfg[name].update(values)
    return cfg


@pytest.fixture
def make_tree(tmp_path):
    """Write a class-folder tree of small PNGs whose colour depends on the class."""

    def make(classes=("a", "b", "c"), per_class=12, size=16, root=None, ext=".png",
             seed=0) -> Path:
        root = Path(root or tmp_path / "tree")
        rng = np.random.default_rng(seed)
        for ci, name in enumerate(classes):
            d = root / name
            d.mkdir(parents=True, exist_ok=True)
            base = np.array([(ci * 97) % 256, (ci * 57 + 80) % 256, (ci * 31 + 160) % 256])
            for i in range(per_class):
                noise = rng.integers(-20, 21, (size, size, 3))
                img = np.clip(base + noise, 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}{ext}")
        return root

    return make


@pytest.fixture
def cli(capsys):
    """Run `reslab ARGS...` in-process; returns (exit code, stdout, stderr)."""
    from reslab.cli import main

    def run(*args):
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def fast_config():
    """fast_config(data={...}, model={...}, train={...}) -> a quick digits config mapping."""
    return _fast_config


@pytest.fixture
def cifar_train() -> Path:
    if not CIFAR_TRAIN.is_dir():
        pytest.skip("../shared/data/cifar10/train not present")
    return CIFAR_TRAIN


class ReportSections(HTMLParser):
    """{h2 heading: the texts of its h3 headings, cards, cells, captions, paragraphs}."""

    TEXT_TAGS = ("h2", "h3", "td", "th", "figcaption", "p", "div")

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, list[str]] = {}
        self._tag = None

    def handle_starttag(self, tag, attrs):
        self._tag = tag

    def handle_data(self, data):
        text = data.strip()
        if not text or self._tag not in self.TEXT_TAGS:
            return
        if self._tag == "h2":
            self.sections[text] = []
        elif self.sections:
            self.sections[list(self.sections)[-1]].append(text)


@pytest.fixture
def report_sections():
    """report_sections(html) -> {h2 heading: [texts under it]} of a report.html."""
    def parse(html: str) -> dict[str, list[str]]:
        doc = ReportSections()
        doc.feed(html)
        return doc.sections
    return parse
