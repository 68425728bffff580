"""`reslab lr-find`: the LR range test on digits (suggestion, divergence stop, outputs)."""
import json
import math

import numpy as np
import pytest
import yaml
from PIL import Image

from reslab.training.lr_find import lr_find, suggest

BETA, DIVERGE_FACTOR = 0.98, 4.0  # the specified smoothing and stopping rule, not the module's


@pytest.fixture
def config_file(tmp_path, fast_config):
    path = tmp_path / "digits.yaml"
    path.write_text(yaml.safe_dump(fast_config()))
    return path


def one_error_line(err: str, *parts: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reslab lr-find: error:"), err
    for part in parts:
        assert part in lines[0], lines[0]


def test_lr_find_suggests_a_useful_lr_stops_on_divergence_and_writes_outputs(
        cli, config_file, tmp_path):
    # Ramping to 1000 over 100 steps: resnet20 (width 8, BatchNorm, SGD momentum 0.9) trains
    # best around LR 0.05-0.5 on digits, and its loss blows up (>4x) between LR 10 and 100.
    out = tmp_path / "lrf"
    code, stdout, err = cli("lr-find", config_file, "--out", out, "--steps", 100,
                            "--end-lr", 1000)
    assert code == 0, err
    found = json.loads((out / "lr_find.json").read_text())
    assert 0.03 <= found["suggested_lr"] <= 1.0
    assert found["suggested_lr"] == pytest.approx(found["min_loss_lr"] / 10)
    assert 0.03 <= found["steepest_lr"] <= 30
    assert f"suggested lr {found['suggested_lr']:.3g}" in stdout

    # Stopped on divergence, early, by the smoothed-loss rule.
    assert found["stop_reason"] == "diverged"
    taken = found["steps_taken"]
    assert 20 < taken < 100 and len(found["lrs"]) == len(found["losses"]) == taken
    assert 1.0 < found["lrs"][-1] < 1000
    assert found["smoothed"][-1] > DIVERGE_FACTOR * min(found["smoothed"][:-1])
    assert all(s <= DIVERGE_FACTOR * min(found["smoothed"][:i + 1])
               for i, s in enumerate(found["smoothed"][:-1]))

    # The ramp is exponential from start to end over the planned steps.
    lrs = np.array(found["lrs"])
    assert lrs[0] == pytest.approx(1e-7)
    assert np.allclose(lrs[1:] / lrs[:-1], (1000 / 1e-7) ** (1 / 99))
    assert found["smoothed"][0] == pytest.approx(found["losses"][0])  # bias-corrected EMA
    avg = BETA * (1 - BETA) * found["losses"][0] + (1 - BETA) * found["losses"][1]
    assert found["smoothed"][1] == pytest.approx(avg / (1 - BETA ** 2))
    assert found["config"]["model"]["width"] == 8

    image = np.asarray(Image.open(out / "lr_find.png").convert("L"))
    assert image.shape[0] > 200 and image.shape[1] > 300
    assert (image < 128).mean() > 0.005 and len(np.unique(image)) > 20  # drawn, not blank
    assert (out / ".reslab").read_text().strip() == "lr-find"


def test_lr_find_is_seeded_and_keeps_nothing(fast_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = fast_config()
    _, first = lr_find(cfg, steps=12, end_lr=1.0, log=lambda line: None)
    _, again = lr_find(cfg, steps=12, end_lr=1.0, log=lambda line: None)
    assert first.losses == again.losses and first.lrs == again.lrs
    assert first.stop_reason == "completed" and len(first.lrs) == 12
    assert first.lrs[-1] == pytest.approx(1.0)
    assert list(tmp_path.iterdir()) == []  # no run directory, no checkpoint


def test_suggestion_reads_the_smoothed_curve():
    lrs = list(np.logspace(-6, 1, 71))
    # Flat, a descent steepest at 1e-2, a minimum at 1e-1, then a rise.
    x = np.log10(lrs)
    loss = 2.3 - 1.0 / (1 + np.exp(-(x + 2) * 3)) + np.where(x > -1, (x + 1) ** 2 * 3, 0)
    found = suggest(lrs, list(loss))
    assert found["min_loss_lr"] == pytest.approx(0.1, rel=0.13)
    assert found["suggested_lr"] == pytest.approx(0.01, rel=0.13)
    assert found["steepest_lr"] == pytest.approx(0.01, rel=0.13)
    assert suggest(lrs[:2], [2.3, math.inf])["suggested_lr"] is None


@pytest.mark.parametrize("args, parts", [
    (("--steps", "5"), ("--steps 5", "at least")),
    (("--start-lr", "1", "--end-lr", "0.1"), ("--start-lr", "0 < start-lr < end-lr")),
])
def test_bad_ranges_are_one_line(cli, config_file, tmp_path, args, parts):
    code, _, err = cli("lr-find", config_file, "--out", tmp_path / "o", *args)
    assert code == 2
    one_error_line(err, *parts)


def test_a_users_folder_is_refused(cli, config_file, tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    code, _, err = cli("lr-find", config_file, "--out", folder)
    assert code == 2
    one_error_line(err, "not empty and was not made by reslab")
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_lr_find_builds_the_run_train_would_machine_class_and_init(fast_config):
    cfg = fast_config(data={"max_per_class": 10}, train={"init": "whiten", "batch_size": 64})
    cfg["machine"] = {name: {"train.batch_size": 16} for name in ("cpu-fp32", "cpu-bf16")}
    lines: list[str] = []
    resolved, _ = lr_find(cfg, steps=10, log=lines.append)
    assert resolved.train.batch_size == 16  # the machine class's set, as train applies it
    assert any(line.startswith("machine class cpu-") and "train.batch_size=16" in line
               for line in lines), lines
    assert any(line.startswith("Whitening init: first conv") for line in lines), lines
    kept, _ = lr_find(cfg, ["train.batch_size=8"], steps=10, log=lines.append)
    assert kept.train.batch_size == 8  # the user's --set wins over the machine class


def _finding(loss, lrs, stop="completed"):
    from reslab.training.lr_find import LrFinding

    return LrFinding(lrs, list(loss), list(loss), stop, **suggest(lrs, list(loss)),
                     start_lr=lrs[0], end_lr=lrs[-1], steps=len(lrs))


def test_a_minimum_at_the_end_of_the_range_is_warned_in_one_line():
    from reslab.training.lr_find import range_warning

    lrs = list(np.logspace(-6, 1, 71))
    falling = np.linspace(2.3, 0.5, 71)  # still falling at end_lr
    assert range_warning(_finding(falling, lrs)) == (
        "the loss was still falling at the end of the range (lowest at lr 10, end 10): the "
        "suggestion may be too low; rerun with a larger --end-lr")
    rising = np.linspace(0.5, 2.3, 71)
    assert "rerun with a smaller --start-lr" in range_warning(_finding(rising, lrs))
    x = np.log10(lrs)
    valley = 2.3 - 1.0 / (1 + np.exp(-(x + 2) * 3)) + np.where(x > -1, (x + 1) ** 2 * 3, 0)
    assert range_warning(_finding(valley, lrs)) is None
