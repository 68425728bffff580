"""A run's files verified on load (issue 22): a same-size corrupted checkpoint, non-finite
weights, an empty or unparsable config.yaml / classes.json, garbled metrics.jsonl or
env.json, a checkpoint of another run's classes, `--set data.*` on a finished run. Each is
one line, exit 2, and every file already in the run is byte-identical afterwards."""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

from reslab.runs.checkpoint import DIGEST_KEY, load_checkpoint
from reslab.training import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from tests.conftest import _fast_config

    out = tmp_path_factory.mktemp("trained") / "run"
    train(_fast_config(train={"epochs": 1}), out=out, quiet=True)
    return out


@pytest.fixture
def run(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def refused(cli, folder: Path, *args) -> tuple[str, str]:
    """Run `reslab ARGS...`: it must exit 2 and leave every file in `folder` byte-identical.
    -> (stdout, stderr)."""
    before = snapshot(folder)
    code, out, err = cli(*args)
    assert code == 2, err
    assert snapshot(folder) == before
    return out, err


def flip_bytes_inside_a_tensor(path: Path, count: int = 2000) -> None:
    """Invert `count` bytes in the middle of the largest tensor's data: the file keeps its size
    and its zip structure, as a bad disk sector or a bit-rotted copy would leave it."""
    with zipfile.ZipFile(path) as zf:
        entry = max(zf.infolist(), key=lambda i: i.compress_size)
        with open(path, "rb") as f:  # data starts after the local header + name + extra
            f.seek(entry.header_offset + 26)
            name_len, extra_len = (int.from_bytes(f.read(2), "little") for _ in range(2))
    start = entry.header_offset + 30 + name_len + extra_len
    middle = start + entry.compress_size // 2 - count // 2
    data = bytearray(path.read_bytes())
    size = len(data)
    data[middle:middle + count] = bytes(b ^ 0xFF for b in data[middle:middle + count])
    assert len(data) == size and entry.compress_size > count
    path.write_bytes(bytes(data))


def test_a_same_size_corrupted_checkpoint_is_refused_and_nothing_overwritten(run, cli):
    flip_bytes_inside_a_tensor(run / "best.pt")
    out, err = refused(cli, run, "eval", run)
    assert out == ""
    assert err == (f"reslab eval: error: checkpoint {run / 'best.pt'} is corrupt: its content "
                   "does not match the sha256 written when it was saved; nothing was changed\n")


def test_predict_and_resume_check_the_digest_too(run, cli, tmp_path):
    flip_bytes_inside_a_tensor(run / "last.pt")
    _, err = refused(cli, run, "train", "--resume", run, "--set", "train.epochs=2")
    assert err.count("\n") == 1 and f"checkpoint {run / 'last.pt'} is corrupt" in err


def test_a_checkpoint_with_non_finite_weights_is_refused(run, cli):
    ckpt = torch.load(run / "best.pt", weights_only=True)
    name = next(k for k, t in ckpt["model"].items() if t.is_floating_point())
    ckpt["model"][name].view(-1)[0] = float("nan")
    from reslab.runs.checkpoint import content_digest

    ckpt[DIGEST_KEY] = content_digest(ckpt)  # a faithful digest of NaN weights
    torch.save(ckpt, run / "best.pt")
    _, err = refused(cli, run, "eval", run)
    assert err == (f"reslab eval: error: checkpoint {run / 'best.pt'} holds non-finite "
                   f"weights (NaN or inf in {name}); nothing was changed\n")


def test_a_checkpoint_from_before_the_digest_still_loads(run, cli):
    ckpt = torch.load(run / "best.pt", weights_only=True)
    del ckpt[DIGEST_KEY]
    torch.save(ckpt, run / "best.pt")
    assert DIGEST_KEY not in load_checkpoint(run / "best.pt")
    code, out, _ = cli("eval", run)
    assert code == 0 and "accuracy" in out


def test_every_checkpoint_written_carries_its_digest(run):
    for name in ("best.pt", "last.pt"):
        assert len(load_checkpoint(run / name)[DIGEST_KEY]) == 64


@pytest.mark.parametrize("content, expected", [
    ("", "{path}: empty; expected a mapping with sections data, model, train"),
    ("train: [unclosed\n", "{path}: line 2 invalid YAML (expected ',' or ']', but got "
                           "'<stream end>')"),
    ("- 1\n", "{path}: expected a mapping with sections data, model, train, got a list"),
])
def test_an_empty_or_unparsable_run_config_is_never_read_as_defaults(run, cli, content,
                                                                     expected):
    (run / "config.yaml").write_text(content)
    out, err = refused(cli, run, "eval", run)
    assert out == ""
    assert err == "reslab eval: error: " + expected.format(path=run / "config.yaml") + "\n"


@pytest.mark.parametrize("content", ["", "[not json", '{"a": 1}', "[]"])
def test_an_empty_or_unparsable_classes_json_is_one_line(run, cli, content):
    (run / "classes.json").write_text(content)
    _, err = refused(cli, run, "eval", run)
    assert err.count("\n") == 1 and str(run / "classes.json") in err


def test_a_checkpoint_of_other_classes_is_refused(run, cli):
    (run / "classes.json").write_text('["cat", "dog"]')
    _, err = refused(cli, run, "eval", run)
    assert err == (
        f"reslab eval: error: checkpoint {run / 'best.pt'} was trained on 10 classes ('0', "
        f"'1', '2', '3', ... (6 more)), but {run / 'classes.json'} lists 2 ('cat', 'dog'); "
        "it belongs to another run\n")


@pytest.mark.parametrize("name, content", [
    ("metrics.jsonl", "{garbled\n"),
    ("env.json", "{garbled"),
    ("env.json", ""),
])
def test_resume_with_a_garbled_metrics_or_env_file_is_one_line(run, cli, name, content):
    path = run / name
    rows = path.read_text().splitlines(keepends=True)
    path.write_text(content + "".join(rows[1:]) if name == "metrics.jsonl" else content)
    if name == "metrics.jsonl":  # a second row, so the garbled one is not a torn last row
        path.write_text(path.read_text() + rows[0])
    _, err = refused(cli, run, "train", "--resume", run, "--set", "train.epochs=2")
    assert err.count("\n") == 1 and str(path) in err, err


def test_set_data_on_a_finished_run_is_refused(run, cli):
    _, err = refused(cli, run, "train", "--resume", run, "--set", "data.split_seed=7")
    assert err == (f"reslab train: error: --set data.split_seed: {run} has finished; its data "
                   "cannot change (train a new run with --out instead); nothing was changed\n")


def test_split_keys_on_a_started_run_are_refused(run, cli):
    (run / "result.json").unlink()  # an interrupted run: started, not finished
    _, err = refused(cli, run, "train", "--resume", run, "--set", "data.val_fraction=0.3")
    assert err.count("\n") == 1
    assert f"--set data.val_fraction: {run} has started" in err


def test_os_errors_name_the_file_never_the_temp_file(tmp_path, monkeypatch):
    import tempfile

    from reslab.cli import os_error_line
    from reslab.utils import atomic_write_text

    def read_only_folder(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".x.json.abc123.tmp"))

    monkeypatch.setattr(tempfile, "mkstemp", read_only_folder)
    with pytest.raises(PermissionError) as err:
        atomic_write_text(tmp_path / "x.json", "{}")
    assert os_error_line(err.value) == f"permission denied: {tmp_path / 'x.json'}"


def test_a_refused_resume_override_writes_nothing(run, cli):
    (run / "result.json").unlink()  # an interrupted run
    # refused() also checks that config.yaml and env.json were not rewritten
    _, err = refused(cli, run, "train", "--resume", run, "--set", "model.width=32")
    assert err.count("\n") == 1 and "does not fit the configured model" in err


def test_a_run_config_that_is_not_utf8_is_one_line(run, cli):
    (run / "config.yaml").write_bytes(b"data: {source: digits}\n# caf\xe9\n")
    out, err = refused(cli, run, "eval", run)
    assert out == ""
    assert err == (f"reslab eval: error: {run / 'config.yaml'}: not UTF-8 text (byte 28: "
                   "b'\\xe9'); save it as UTF-8\n")


def test_a_repeats_plan_that_is_not_utf8_is_one_line(tmp_path, cli):
    from tests.conftest import _fast_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(_fast_config(data={"max_per_class": 10},
                                               train={"epochs": 1})))
    out = tmp_path / "rep"
    assert cli("train", cfg, "--repeats", "2", "--out", out, "--quiet")[0] == 0
    plan = out / "repeats.yaml"
    plan.write_bytes(plan.read_bytes() + b"# caf\xe9\n")
    for command in (["report", out], ["train", "--resume", out]):
        _, err = refused(cli, out, *command)
        assert err.count("\n") == 1, err
        assert err.startswith(f"reslab {command[0]}: error: {plan}: not UTF-8 text (byte "), err
