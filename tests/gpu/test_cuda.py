"""The CUDA path: bf16 and fp16 (GradScaler) steps, the decoded cache on the GPU, a 1-process
NCCL DDP run under torchrun, and torch.compile. Skipped without a CUDA device."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
import yaml

import reslab
from reslab.data import ImageSet
from reslab.data.loader import BatchLoader, Normalizer
from reslab.utils import read_jsonl

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _cuda_config(fast_config, **train):
    return fast_config(train={"device": "cuda", "epochs": 2, **train})


@pytest.mark.skipif(torch.cuda.is_available()
                    and not torch.cuda.is_bf16_supported(including_emulation=False),
                    reason="no native bf16 on this GPU")
def test_bf16_training_step(tmp_path, fast_config):
    result = reslab.train(_cuda_config(fast_config, amp="bf16"), out=tmp_path / "r", quiet=True)
    assert result["stop_reason"] == "completed" and result["best_val_acc"] > 0.2


def test_fp16_training_uses_a_grad_scaler(tmp_path, fast_config):
    result = reslab.train(_cuda_config(fast_config, amp="fp16"), out=tmp_path / "r", quiet=True)
    assert result["stop_reason"] == "completed" and result["best_val_acc"] > 0.2
    ckpt = torch.load(tmp_path / "r" / "last.pt", weights_only=True)
    assert ckpt["scaler"]["scale"] > 0


def test_amp_auto_on_this_gpu_is_bf16_only_when_native():
    from reslab.engine.device import amp_dtype

    native = torch.cuda.is_bf16_supported(including_emulation=False)
    assert amp_dtype("auto", torch.device("cuda")) == (torch.bfloat16 if native
                                                       else torch.float16)


def test_decoded_cache_lives_on_the_gpu():
    dev = torch.device("cuda")
    data = ImageSet(torch.randint(0, 255, (64, 3, 8, 8), dtype=torch.uint8),
                    torch.arange(64) % 10)
    loader = BatchLoader(data, 16, dev, Normalizer([0.5] * 3, [0.2] * 3, 255.0, dev),
                         shuffle=True)
    assert loader.images.device.type == "cuda" and loader.labels.device.type == "cuda"
    x, y, _ = next(iter(loader.epoch(0)))
    assert x.is_cuda and y.is_cuda and x.dtype == torch.float32


def test_one_process_nccl_ddp_run(tmp_path, fast_config):
    cfg = _cuda_config(fast_config, amp="off")
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable))
    proc = subprocess.run([torchrun, "--standalone", "--nproc-per-node", "1", "-m", "reslab",
                           "train", str(path), "--out", str(tmp_path / "ddp")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_jsonl(tmp_path / "ddp" / "metrics.jsonl")
    assert len(rows) == 2 and rows[-1]["val_acc"] > 0.2


def test_compiled_training_on_the_gpu(tmp_path, fast_config):
    result = reslab.train(_cuda_config(fast_config, compile=True), out=tmp_path / "r",
                          quiet=True)
    assert result["stop_reason"] == "completed" and result["best_val_acc"] > 0.2
