"""Faults around the run directory: a user's files are never overwritten, OS errors are one
line, a crash never leaves a run that neither --out nor --resume accepts, torn rows and stale
temp files are cleaned up, names cannot escape, channels follow the model."""
from __future__ import annotations

import errno
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import reslab
from reslab.training import train
from reslab.utils import read_jsonl


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_out_naming_a_users_project_folder_is_refused_untouched(tmp_path, cli, fast_config):
    project = tmp_path / "proj"
    project.mkdir()
    config = project / "config.yaml"
    config.write_text("# my carefully commented config\n" + yaml.safe_dump(fast_config()))
    (project / "result.json").write_text('{"mine": true}')
    before = snapshot(project)
    code, _, err = cli("train", config, "--out", project)
    assert code == 2 and err.count("\n") == 1
    assert "not empty and was not made by reslab" in err and str(project) in err
    assert snapshot(project) == before


def test_out_naming_a_file_is_one_line(tmp_path, cli, fast_config):
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    code, _, err = cli("train", write_config(tmp_path / "c.yaml", fast_config()), "--out", target)
    assert code == 2 and "is a file" in err and err.count("\n") == 1
    assert target.read_text() == "keep me"


def test_predict_out_naming_a_folder_is_one_line(tmp_path, cli, fast_config):
    train(fast_config(train={"epochs": 1}), out=tmp_path / "run", quiet=True)
    images = tmp_path / "imgs"
    images.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(images / "a.png")
    code, _, err = cli("predict", tmp_path / "run", images, "--out", tmp_path)
    assert code == 2 and err.count("\n") == 1 and str(tmp_path) in err
    assert ".tmp" not in err  # names the path the user gave, not reslab's temp file


def full_disk_after(monkeypatch, writes_allowed: int, room: int = 4096):
    """Checkpoint files hit a full disk after `writes_allowed` successful ones, as the kernel
    does it: `room` bytes are written (a short write), then every write fails with ENOSPC."""
    import builtins

    real_open, calls = builtins.open, {"n": 0}

    class FullDisk(io.FileIO):
        left = room

        def write(self, data):
            if self.left <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            n = super().write(bytes(data)[:self.left])
            self.left -= n
            return n

    def fake_open(file, mode="r", *args, **kwargs):
        name = os.path.basename(str(file))
        if "w" in mode and name.startswith((".last.pt", ".best.pt", "last.pt", "best.pt")):
            calls["n"] += 1
            if calls["n"] > writes_allowed:
                return io.BufferedWriter(FullDisk(file, "wb"))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)


def test_disk_full_mid_run_keeps_the_last_checkpoint_resumable(tmp_path, cli, fast_config,
                                                               monkeypatch):
    path = write_config(tmp_path / "c.yaml", fast_config(train={"epochs": 3}))
    full_disk_after(monkeypatch, writes_allowed=2)  # epoch 1: best.pt + last.pt
    code, _, err = cli("train", path, "--out", tmp_path / "run")
    assert code == 2 and "no space left on device" in err and err.count("\n") == 1
    assert f"{tmp_path / 'run'}/last.pt" in err or f"{tmp_path / 'run'}/best.pt" in err, err
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 1
    assert not list((tmp_path / "run").glob(".*.tmp"))  # the failed write left no temp file
    monkeypatch.undo()
    assert cli("train", "--resume", tmp_path / "run")[0] == 0
    assert [r["epoch"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [1, 2, 3]


def test_disk_full_before_the_first_epoch_leaves_a_run_both_commands_accept(tmp_path, cli,
                                                                           fast_config,
                                                                           monkeypatch):
    path = write_config(tmp_path / "c.yaml", fast_config(train={"epochs": 1}))
    full_disk_after(monkeypatch, writes_allowed=0)
    assert cli("train", path, "--out", tmp_path / "run")[0] == 2
    monkeypatch.undo()
    code, _, err = cli("train", "--resume", tmp_path / "run")
    assert code == 0, err  # restarts it cleanly
    full_disk_after(monkeypatch, writes_allowed=0)
    assert cli("train", path, "--out", tmp_path / "again")[0] == 2
    monkeypatch.undo()
    assert cli("train", path, "--out", tmp_path / "again")[0] == 0  # --out accepts it too


def test_resume_before_any_checkpoint_restarts_the_run(tmp_path, fast_config, capsys):
    class Stop(Exception):
        pass

    def stop(row):
        raise Stop

    import reslab.runs.rundir as rundir

    run = tmp_path / "run"
    with pytest.raises(Stop):  # killed before its first checkpoint: nothing saved yet
        with pytest.MonkeyPatch.context() as m:
            m.setattr(rundir.RunDir, "append_metrics", lambda self, row: stop(row))
            train(fast_config(train={"epochs": 2}), out=run, quiet=True)
    assert not (run / "last.pt").exists()
    result = train(resume=run)
    assert "no checkpoint yet: starting the run over" in capsys.readouterr().out
    assert result["epochs_run"] == 2 and len(read_jsonl(run / "metrics.jsonl")) == 2


def test_torn_last_metrics_row_is_dropped_on_resume(tmp_path, fast_config, capsys):
    run = tmp_path / "run"
    train(fast_config(train={"epochs": 2}), out=run, quiet=True)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 3, "train_lo')  # a crash in the middle of an append
    (run / ".last.pt.abc123.tmp").write_bytes(b"half a checkpoint")
    result = train(resume=run, overrides=["train.epochs=3"], quiet=True)
    assert "dropped a torn last line" in capsys.readouterr().err
    assert [r["epoch"] for r in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3]
    assert result["epochs_run"] == 3
    assert not (run / ".last.pt.abc123.tmp").exists()


def test_extending_a_finished_schedule_warns(tmp_path, fast_config, capsys):
    run = tmp_path / "run"
    train(fast_config(train={"epochs": 2, "scheduler": "cosine"}), out=run, quiet=True)
    train(resume=run, overrides=["train.epochs=3"], quiet=True)
    assert "LR schedule of this run had ended" in capsys.readouterr().err


def test_a_run_name_cannot_escape_the_output_root(tmp_path, fast_config, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    train({**fast_config(train={"epochs": 1}), "name": "../../escaped"}, quiet=True)
    made = [p for p in (tmp_path / "work" / "runs").iterdir()]
    assert len(made) == 1 and made[0].name.startswith("escaped-")
    assert not any(p.name.startswith("escaped") for p in tmp_path.iterdir())


def test_weights_only_refusal_never_advises_running_the_file(tmp_path, cli, fast_config):
    train(fast_config(train={"epochs": 1}), out=tmp_path / "run", quiet=True)
    torch.save({"model": Path("pickled code")}, tmp_path / "run" / "best.pt")
    code, _, err = cli("eval", tmp_path / "run")
    assert code == 2 and "refused" in err and "weights_only=False" not in err


def test_eval_without_best_pt_says_it_uses_last_pt(tmp_path, cli, fast_config):
    train(fast_config(train={"epochs": 1}), out=tmp_path / "run", quiet=True)
    (tmp_path / "run" / "best.pt").unlink()
    code, out, err = cli("eval", tmp_path / "run", "--json")
    assert code == 0 and "using last.pt" in err
    assert json.loads(out)["weights"] == "last.pt"


def test_wandb_missing_fails_before_the_first_epoch(tmp_path, fast_config, monkeypatch):
    import sys

    from reslab.errors import ReslabError

    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(ReslabError, match="pip install 'reslab\\[wandb\\]'"):
        train(fast_config(train={"tracking": "wandb"}), out=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_grey_model_predicts_rgb_images(tmp_path, cli, fast_config):
    train(fast_config(train={"epochs": 1}), out=tmp_path / "run", quiet=True)  # digits: 1 channel
    images = tmp_path / "rgb"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(images / f"{i}.png")
    code, _, err = cli("predict", tmp_path / "run", images, "--out", tmp_path / "p.csv")
    assert code == 0, err
    assert len((tmp_path / "p.csv").read_text().splitlines()) == 4


def test_class_names_with_commas_quotes_and_newlines_survive_csv(tmp_path, fast_config):
    root = tmp_path / "tree"
    names = ['cat, domestic', 'dog "good"', "bird\nsong"]
    rng = np.random.default_rng(0)
    for i, name in enumerate(names):
        folder = root / name
        folder.mkdir(parents=True)
        for j in range(6):
            pixels = np.clip(60 * i + rng.integers(0, 30, (8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{j}.png")
    cfg = fast_config(data={"source": "folder", "root": str(root), "val_fraction": 0.34},
                      train={"epochs": 1, "report": True})
    reslab.train(cfg, out=tmp_path / "run", quiet=True)
    from reslab.runs.rundir import RunDir

    classes, matrix = RunDir(tmp_path / "run").read_confusion()
    assert classes == sorted(names) and matrix.shape == (3, 3)  # natural order of the folders
    assert (tmp_path / "run" / "report.html").is_file()


def test_resume_refuses_a_users_folder_with_a_config_of_its_own(tmp_path, cli, fast_config):
    folder = tmp_path / "proj"
    folder.mkdir()
    mine = "# my carefully commented config\n" + yaml.safe_dump(fast_config())
    (folder / "config.yaml").write_text(mine)
    (folder / "result.json").write_text('{"mine": true}')
    code, _, err = cli("train", "--resume", folder)
    assert code == 2 and "not a run directory reslab made" in err and err.count("\n") == 1
    assert (folder / "config.yaml").read_text() == mine
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "result.json"]


# ----------------------------------------------------------------- BatchNorm and one image
# The CIFAR ResNet-18 halves 8x8 digits three times: its last stage sees 1x1 feature maps, so
# a batch of one image gives its BatchNorm layers one value per channel.
ONE_BY_ONE = {"model": {"arch": "resnet18", "width": 4},
              "data": {"max_per_class": 5, "augment": "none"}}


def test_batch_size_1_with_batchnorm_is_refused_before_anything_is_written(tmp_path, cli,
                                                                           fast_config):
    cfg = fast_config(**ONE_BY_ONE)
    cfg["train"].update(batch_size=1, epochs=1)
    config = write_config(tmp_path / "c.yaml", cfg)
    before = config.read_bytes()
    expected = ("train.batch_size = 1: resnet18 has BatchNorm layers, which need at least 2 "
                "images per training batch (one image gives them a single value per channel); "
                "set train.batch_size to 2 or more\n")
    code, out, err = cli("train", config, "--out", tmp_path / "run")
    assert (code, err) == (2, "reslab train: error: " + expected)
    assert not (tmp_path / "run").exists() and config.read_bytes() == before
    code, _, err = cli("lr-find", config, "--out", tmp_path / "lr")  # the same builder
    assert (code, err) == (2, "reslab lr-find: error: " + expected)


def test_a_last_batch_of_one_image_is_dropped_not_a_crash(tmp_path, fast_config):
    from reslab.config import load_config
    from reslab.data import load_data

    cfg = fast_config(**ONE_BY_ONE)
    n = len(load_data(load_config(cfg).data).train)
    cfg["train"].update(batch_size=n - 1, epochs=1)  # batches of n - 1 images and 1 image
    result = train(cfg, out=tmp_path / "run", quiet=True)
    assert result["epochs_run"] == 1 and result["stop_reason"] == "completed"


def test_one_image_per_process_is_refused_unless_sync_bn_pools_them(fast_config):
    from reslab.config import load_config
    from reslab.errors import ReslabError
    from reslab.models import build_model
    from reslab.training.loop import refuse_one_image_batches

    cfg = load_config(fast_config(train={"batch_size": 3}))
    model = build_model(cfg.model, 10, 1)
    with pytest.raises(ReslabError) as err:
        refuse_one_image_batches(cfg, model, world_size=2)
    assert str(err.value) == (
        "train.batch_size = 3 over 2 processes (1 each): resnet20 has BatchNorm layers, which "
        "need at least 2 images per training batch (one image gives them a single value per "
        "channel); set train.batch_size to 4 or more")
    refuse_one_image_batches(cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"sync_bn": True})}), model, world_size=2)
    refuse_one_image_batches(cfg, model, world_size=1)
    plain = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten())
    refuse_one_image_batches(cfg.model_copy(update={"train": cfg.train.model_copy(
        update={"batch_size": 1})}), plain, world_size=1)  # no BatchNorm: one image is fine


def test_the_last_batch_leaves_every_process_at_least_2_images():
    from reslab.data import ImageSet
    from reslab.data.loader import BatchLoader, Normalizer

    data = ImageSet(torch.zeros(19, 1, 4, 4, dtype=torch.uint8), torch.arange(19) % 2)
    norm = Normalizer([0.0], [1.0], 255.0, torch.device("cpu"))
    sizes = {}
    for world_size in (1, 2):
        for rank in range(world_size):
            loader = BatchLoader(data, 8, torch.device("cpu"), norm, shuffle=True, rank=rank,
                                 world_size=world_size)
            sizes[world_size, rank] = [len(y) for _, y, _ in loader.epoch(1)]
    # 19 = 8 + 8 + 3: one process keeps the 3; two would get 2 and 1, so it is dropped.
    assert sizes == {(1, 0): [8, 8, 3], (2, 0): [4, 4], (2, 1): [4, 4]}
