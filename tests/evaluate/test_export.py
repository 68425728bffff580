"""`reslab export`: ONNX / TorchScript with the normalisation folded in, safetensors with its
metadata, each matching the PyTorch model on the run's stored uint8 test images."""
import json
import shutil
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open

import reslab
from reslab.data import load_data
from reslab.data.loader import Normalizer
from reslab.evaluate import export as export_mod
from reslab.evaluate.export import load_safetensors_export
from reslab.evaluate.loaded import load_run
from reslab.runs.checkpoint import load_checkpoint

CONFIG = {
    "data": {"source": "digits", "val_fraction": 0.15, "test_fraction": 0.15,
             "augment": "crop", "pad": 1},
    "model": {"arch": "resnet20", "width": 8},
    "train": {"epochs": 1, "batch_size": 64, "lr": 0.05, "tensorboard": False,
              "report": False, "device": "cpu", "progress": False},
}

TINY_MODULE = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, num_classes, in_chans, width=6):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))
'''


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    reslab.train(CONFIG, out=out, quiet=True)
    return out


def stored_test_images(run, n=48):
    """Test images exactly as the run's cache stores them: uint8 NCHW."""
    images = load_data(load_run(run, device="cpu").cfg.data, progress=False).test.images[:n]
    assert images.dtype == torch.uint8
    return images


@torch.inference_mode()
def pytorch_logits(run, images, checkpoint=None):
    """The reference: the run's model in fp32 behind the training Normalizer."""
    lr = load_run(run, checkpoint, device="cpu")
    norm = Normalizer(lr.norm["mean"], lr.norm["std"], lr.norm["scale"], torch.device("cpu"))
    return lr.model(norm(images))


def one_error_line(err: str, *parts: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("reslab export: error:"), err
    for part in parts:
        assert part in lines[0], lines[0]


def test_onnx_takes_stored_uint8_images_and_matches_pytorch(digits_run, cli):
    ort = pytest.importorskip("onnxruntime")
    code, out, err = cli("export", digits_run, "--format", "onnx")
    assert code == 0, err
    path = digits_run / "export" / "best.onnx"
    assert f"to {path}" in out and "opset 18" in out and "Checked" in out
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].type == "tensor(uint8)"
    images = stored_test_images(digits_run)
    expected = pytorch_logits(digits_run, images)
    for batch in (images, images[:1], images[:7]):  # the batch axis is dynamic
        (got,) = session.run(["logits"], {"images": batch.numpy()})
        assert np.abs(got - expected[:len(batch)].numpy()).max() < 1e-4
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["reslab.classes"]) == [str(i) for i in range(10)]
    assert json.loads(meta["reslab.norm"])["scale"] == 255.0


def test_torchscript_matches_pytorch_and_names_its_input(digits_run, cli):
    code, _, err = cli("export", digits_run, "--format", "torchscript", "--checkpoint", "last")
    assert code == 0, err
    path = digits_run / "export" / "last.torchscript.pt"
    extra = {"reslab.json": ""}
    model = torch.jit.load(str(path), _extra_files=extra)
    images = stored_test_images(digits_run)
    with torch.inference_mode():
        got = model(images)
    assert (got - pytorch_logits(digits_run, images, "last")).abs().max() < 1e-4
    meta = json.loads(extra["reslab.json"])
    assert json.loads(meta["reslab.input"])["dtype"] == "uint8"
    assert meta["reslab.weights"] == "last.pt"


def test_safetensors_round_trips_with_metadata(digits_run, cli, tmp_path):
    dest = tmp_path / "digits.safetensors"
    code, _, err = cli("export", digits_run, "--format", "safetensors", "--out", dest)
    assert code == 0, err
    lr = load_run(digits_run, device="cpu")
    with safe_open(str(dest), framework="pt") as f:
        raw = f.metadata()
        names = f.keys()
        saved = {k: f.get_tensor(k) for k in names}
    checkpoint = load_checkpoint(digits_run / "best.pt")["model"]
    assert saved.keys() == checkpoint.keys()
    assert all(torch.equal(saved[k], checkpoint[k]) for k in saved)
    assert raw["reslab.arch"] == "resnet20"
    assert json.loads(raw["reslab.config"]) == lr.cfg.to_dict()
    assert json.loads(raw["reslab.norm"]) == lr.norm
    model, meta = load_safetensors_export(dest)
    assert meta["classes"] == lr.classes and meta["norm"]["fmt"] == "srgb"
    images = stored_test_images(digits_run)
    with torch.inference_mode():
        assert (model(images) - pytorch_logits(digits_run, images)).abs().max() < 1e-4


def test_a_user_model_exports_to_every_format(fast_config, tmp_path, cli):
    pytest.importorskip("onnxruntime")
    module = tmp_path / "tiny.py"
    module.write_text(TINY_MODULE)
    run = tmp_path / "run"
    reslab.train(fast_config(model={"arch": f"{module}:Tiny"}, train={"epochs": 1}), out=run,
                 quiet=True)
    for fmt in ("onnx", "torchscript", "safetensors"):
        code, out, err = cli("export", run, "--format", fmt, "--json")
        assert code == 0, err
        result = json.loads(out)
        assert result["max_abs_diff"] < 1e-4 and "test images" in result["checked_on"]
    model, meta = load_safetensors_export(run / "export" / "best.safetensors")
    assert type(model.model).__name__ == "Tiny" and meta["arch"].endswith("tiny.py:Tiny")


def test_without_the_data_a_seeded_random_batch_checks_it(fast_config, make_tree, tmp_path,
                                                          cli):
    root = make_tree(per_class=8, size=12)
    run = tmp_path / "run"
    reslab.train(fast_config(data={"source": "folder", "root": str(root), "val_fraction": 0.25,
                                   "test_fraction": 0.0},
                             train={"epochs": 1, "batch_size": 8}), out=run, quiet=True)
    shutil.rmtree(root)
    code, out, err = cli("export", run, "--format", "torchscript", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert "seeded random (32, 3, 12, 12) torch.uint8 batch" in result["checked_on"]
    assert "data is unavailable" in err
    assert result["input"]["shape"] == ["N", 3, 12, 12]


def test_a_failed_check_is_one_line_and_keeps_no_file(digits_run, cli, monkeypatch, tmp_path):
    monkeypatch.setattr(export_mod, "TOLERANCE", -1.0)  # any difference, even 0, now fails
    dest = tmp_path / "m.pt"
    code, _, err = cli("export", digits_run, "--format", "torchscript", "--out", dest)
    assert code == 2
    one_error_line(err, "torchscript export check failed", "max |logit difference|")
    assert list(tmp_path.iterdir()) == []


def test_missing_onnxruntime_is_one_line_with_the_install_command(digits_run, cli,
                                                                  monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    code, _, err = cli("export", digits_run, "--format", "onnx", "--out", tmp_path / "m.onnx")
    assert code == 2
    one_error_line(err, "onnxruntime", "pip install", "--no-check")
    assert list(tmp_path.iterdir()) == []


def test_bad_inputs_are_one_line_exit_2(digits_run, cli, tmp_path):
    code, _, err = cli("export", digits_run, "--format", "keras")
    assert code == 2
    one_error_line(err, "--format 'keras'", "onnx, torchscript, safetensors")

    code, _, err = cli("export", digits_run, "--format", "onnx", "--checkpoint", "first")
    assert code == 2
    one_error_line(err, "--checkpoint 'first'", "best or last")

    empty = tmp_path / "no-weights"
    shutil.copytree(digits_run, empty, ignore=shutil.ignore_patterns("*.pt", "export"))
    code, _, err = cli("export", empty, "--format", "safetensors")
    assert code == 2
    one_error_line(err, "no checkpoint")

    existing = tmp_path / "model.pt"
    existing.write_text("mine")
    code, _, err = cli("export", digits_run, "--format", "torchscript", "--out", existing)
    assert code == 2
    one_error_line(err, "already exists", "--force")
    assert existing.read_text() == "mine"
    code, _, err = cli("export", digits_run, "--format", "torchscript", "--out", existing,
                       "--force")
    assert code == 0, err
    assert torch.jit.load(str(existing)) is not None


def test_hdr_runs_take_float32_images_in_the_data_units(fast_config, make_tree, tmp_path, cli):
    root = make_tree(per_class=8, size=12)
    assert cli("convert", root, tmp_path / "linear", "--to", "linear-tiff")[0] == 0
    run = tmp_path / "run"
    reslab.train(fast_config(data={"source": "folder", "root": str(tmp_path / "linear"),
                                   "val_fraction": 0.25, "test_fraction": 0.0},
                             train={"epochs": 1, "batch_size": 8}), out=run, quiet=True)
    code, out, err = cli("export", run, "--format", "torchscript", "--json")
    assert code == 0, err
    assert json.loads(out)["input"]["dtype"] == "float32"
    lr = load_run(run, device="cpu")
    assert lr.norm["scale"] == 1.0 and lr.norm["fmt"] == "linear"
    images = load_data(lr.cfg.data, progress=False).val.images
    assert images.dtype == torch.float16  # the cache; the export takes it upcast
    model = torch.jit.load(str(run / "export" / "best.torchscript.pt"))
    with torch.inference_mode():
        got = model(images.float())
    assert (got - pytorch_logits(run, images)).abs().max() < 1e-4


def test_the_export_process_ends_within_5_s_of_writing_its_file(digits_run, tmp_path):
    """`reslab export` as a program: once the checked file is in place, nothing (a thread, a
    native pool) keeps the process alive."""
    import subprocess
    import time

    out = tmp_path / "model.onnx"
    proc = subprocess.Popen([sys.executable, "-m", "reslab", "export", str(digits_run),
                             "--format", "onnx", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not out.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    written = time.monotonic()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("reslab export was still running 5 s after writing its "
                             "file") from None
    stdout, stderr = proc.communicate()
    assert proc.returncode == 0 and out.is_file(), stderr
    assert time.monotonic() - written < 6
    assert stdout.startswith(f"Exported best.pt to {out} (onnx")
