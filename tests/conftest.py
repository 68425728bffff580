"""Shared fixtures: fast configs, generated image trees, the CLI runner."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import yaml
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


class Interrupt(Exception):
    """Raised from an on_epoch callback: a run killed between epochs."""


def strip_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.fixture
def cut_and_resume(tmp_path):
    """cut_and_resume(cfg) -> (straight result, resumed result, straight rows, resumed rows):
    `cfg` trained straight into full/, and into cut/ stopped after epoch 2 and resumed
    (metrics rows without their timings)."""
    import reslab
    from reslab.utils import read_jsonl

    def run(cfg: dict):
        full = reslab.train(cfg, out=tmp_path / "full", quiet=True)

        def stop_after_2(row):
            if row["epoch"] == 2:
                raise Interrupt

        with pytest.raises(Interrupt):
            reslab.train(cfg, out=tmp_path / "cut", on_epoch=stop_after_2, quiet=True)
        resumed = reslab.train(resume=tmp_path / "cut", quiet=True)
        return full, resumed, *(strip_times(read_jsonl(tmp_path / n / "metrics.jsonl"))
                                for n in ("full", "cut"))
    return run


@pytest.fixture
def single_and_two_ranks(tmp_path):
    """single_and_two_ranks(cfg) -> (metrics rows of one process, of 2 gloo ranks under
    torchrun, torchrun's stdout), run from scratch into tmp_path/single and tmp_path/ddp."""
    import reslab
    from reslab.utils import read_jsonl

    def run(cfg: dict):
        path = tmp_path / "ddp.yaml"
        path.write_text(yaml.safe_dump(cfg))
        reslab.train(cfg, out=tmp_path / "single", quiet=True)
        torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "2", "-m",
                               "reslab", "train", str(path), "--out", str(tmp_path / "ddp")],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return (read_jsonl(tmp_path / "single" / "metrics.jsonl"),
                read_jsonl(tmp_path / "ddp" / "metrics.jsonl"), proc.stdout)
    return run


def pytest_terminal_summary(terminalreporter):
    """List the README blocks tests/test_readme.py ran or skipped (sent from xdist workers as
    the test's user properties)."""
    lines = [line for report in terminalreporter.stats.get("passed", [])
             for name, value in getattr(report, "user_properties", ()) if name == "readme_blocks"
             for line in value]
    if lines:
        terminalreporter.write_sep("-", "README command blocks")
        for line in lines:
            terminalreporter.write_line(line)
