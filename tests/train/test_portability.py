"""Right on every CPU: no native crash at any width, NCHW really NCHW, identical repeats,
hardware-independent divergence, amp settings.

Work that could crash natively runs in a subprocess, so a crash fails one test, not pytest.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from reslab.config import load_config
from reslab.data import ImageSet
from reslab.data.augment import build_augment
from reslab.data.loader import BatchLoader, Normalizer
from reslab.engine.device import amp_dtype
from reslab.models import build_model
from reslab.models.safe_conv import SubsampledPointwiseConv
from reslab.training import train

AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def run_python(code: str, env_extra: dict | None = None, timeout: float = 900) -> str:
    """Run `code` in a fresh interpreter; a native crash or hang fails with its signal (the
    limit is for hangs: the reproduction takes 250-300 s on a loaded 2-core machine)."""
    import os

    env = {**os.environ, **(env_extra or {})}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"exit code {proc.returncode} (negative: killed by that "
                                  f"signal)\n{proc.stderr[-3000:]}")
    return proc.stdout


def test_strided_pointwise_convs_are_rewritten_with_the_same_function():
    cfg = load_config(None, ["model.width=4", "model.arch=resnet20"])
    model = build_model(cfg.model, 10, 3)
    rewritten = [m for m in model.modules() if isinstance(m, SubsampledPointwiseConv)]
    # Both shortcuts (4 -> 8 and 8 -> 16 channels): fewer than 16 input channels.
    assert [(m.in_channels, m.out_channels) for m in rewritten] == [(4, 8), (8, 16)]
    reference = build_model(cfg.model, 10, 3)
    reference.load_state_dict(model.state_dict())  # same parameters, same keys
    for m in reference.modules():
        if isinstance(m, SubsampledPointwiseConv):
            m.__class__ = nn.Conv2d
    x = torch.randn(4, 3, 16, 16)  # NCHW: the reference path is safe on any CPU
    model.eval(), reference.eval()
    torch.testing.assert_close(model(x), reference(x))
    wide = build_model(load_config(None, ["model.width=16"]).model, 10, 3)
    assert not any(isinstance(m, SubsampledPointwiseConv) for m in wide.modules())


@pytest.mark.parametrize("kernels", ["native", "avx2"])
def test_reproduction_shapes_run_through_reslab_models(kernels):
    # The minimal reproduction crashes torch 2.14.1 on AVX2 kernels (1x1 stride-2 convs
    # with 2-7 input channels, channels-last, backward), and AVX512 kernels crash on 4-15
    # channels with odd batches and 2+ threads. Here those shapes go through reslab's models
    # and augmentation, odd and even batches, 1-4 threads, on both kernel sets (where AVX512 is
    # absent, both runs take this CPU's own kernels).
    out = run_python("""
        import torch, torch.nn.functional as F
        from reslab.config import load_config
        from reslab.models import build_model
        from reslab.data.augment import build_augment
        crop = build_augment("crop-flip", pad=2)
        for threads, batch in ((1, 64), (2, 33), (2, 64), (4, 33)):
            torch.set_num_threads(threads)
            for width in (1, 2, 3, 4, 7, 8, 12, 15):  # both kernel sets' crashing counts
                for extra in ([], ["model.kernel_size=1"], ["model.block=bottleneck",
                                                            "model.layers=[1,1,1]"]):
                    cfg = load_config(None, [f"model.width={width}", *extra])
                    model = build_model(cfg.model, 10, 3).to(memory_format=torch.channels_last)
                    g = torch.Generator().manual_seed(0)
                    for _ in range(3):
                        x = crop(torch.randint(0, 255, (batch, 3, 16, 16), dtype=torch.uint8), g)
                        x = x.float().contiguous(memory_format=torch.channels_last)
                        y = torch.zeros(batch, dtype=torch.long)
                        F.cross_entropy(model(x), y).backward()
        print("ok")
    """, AVX2 if kernels == "avx2" else None)
    assert out.strip() == "ok"


def test_every_width_thread_count_and_layout_finishes_and_repeats_exactly():
    # Acceptance: widths 1, 2, 4, 6 (and 8, 12: AVX512's odd-batch crash) x threads 1, 2 x
    # channels_last on/off, 3 runs each, odd batches; the three runs give identical metrics rows
    # (timings aside). Inherits the suite's CPU settings: CI's AVX2 pass runs AVX2 kernels.
    out = run_python("""
        import itertools, json, tempfile
        from reslab.training import train
        for width, threads, cl in itertools.product([1, 2, 4, 6, 8, 12], [1, 2], [True, False]):
            runs = []
            for _ in range(3):
                out = tempfile.mkdtemp() + "/run"
                cfg = {"data": {"source": "digits", "max_per_class": 30, "val_fraction": 0.2,
                                "augment": "crop-flip", "pad": 1},
                       "model": {"arch": "resnet20", "width": width},
                       "train": {"epochs": 2, "batch_size": 33, "lr": 0.05, "threads": threads,
                                 "channels_last": cl, "tensorboard": False, "report": False,
                                 "progress": False, "device": "cpu"}}
                result = train(cfg, out=out, quiet=True)
                rows = [json.loads(line) for line in open(out + "/metrics.jsonl")]
                runs.append([{k: v for k, v in r.items() if k != "seconds"} for r in rows])
            print(json.dumps({"setting": [width, threads, cl], "stop": result["stop_reason"],
                              "runs": runs}))
    """, timeout=600)
    results = [json.loads(line) for line in out.splitlines()]
    assert len(results) == 24
    for r in results:
        assert r["stop"] == "completed", r["setting"]
        assert len(r["runs"][0]) == 2
        assert r["runs"][0] == r["runs"][1] == r["runs"][2], f"runs differ at {r['setting']}"


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_setting_holds_end_to_end(tmp_path, fast_config, channels_last):
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    data = ImageSet(torch.randint(0, 255, (16, 3, 8, 8), dtype=torch.uint8),
                    torch.zeros(16, dtype=torch.long))
    loader = BatchLoader(data, 8, torch.device("cpu"), Normalizer([0.5] * 3, [0.2] * 3, 255.0,
                         torch.device("cpu")), build_augment("crop-flip-gray", 2),
                         shuffle=True, channels_last=channels_last)
    for x, _, _ in loader.epoch(1):
        assert x.is_contiguous(memory_format=fmt)
    seen = []
    cfg = fast_config(train={"epochs": 1, "channels_last": channels_last})
    hook = nn.modules.module.register_module_forward_pre_hook(
        lambda m, args: seen.append(args[0].is_contiguous(memory_format=fmt))
        if isinstance(m, nn.Conv2d) and args[0].ndim == 4 else None)
    try:
        train(cfg, out=tmp_path / "run", quiet=True)
    finally:
        hook.remove()
    assert seen and all(seen)


@pytest.mark.parametrize("lr", [50.0, 90.0])
def test_huge_learning_rates_diverge_in_the_first_epoch(tmp_path, fast_config, lr):
    result = train(fast_config(train={"lr": lr, "epochs": 3}), out=tmp_path / "run", quiet=True)
    assert result["stop_reason"] == "diverged" and result["epochs_run"] == 1
    assert "over 10x its starting value" in result["stop_detail"] \
        or "nan" in result["stop_detail"] or "inf" in result["stop_detail"]
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["stop_reason"] == "diverged"


def test_a_healthy_run_is_not_called_diverged(tmp_path, fast_config):
    result = train(fast_config(train={"lr": 0.05, "epochs": 3}), out=tmp_path / "run",
                   quiet=True)
    assert result["stop_reason"] == "completed" and "stop_detail" not in result
    assert result["estimated_seconds"] > 0 and result["measured_seconds"] > 0


def test_amp_off_unquoted_in_yaml_and_in_set(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  amp: off\n")
    assert load_config(path).train.amp == "off"
    assert load_config(None, ["train.amp=off"]).train.amp == "off"
    assert load_config(None, ["train.amp=fp16"]).train.amp == "fp16"


def test_amp_auto_picks_native_bf16_else_fp16_on_cuda(monkeypatch):
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation)  # e.g. a T4
    assert amp_dtype("auto", cuda) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert amp_dtype("auto", cuda) == torch.bfloat16
    assert amp_dtype("off", cuda) is None and amp_dtype("fp16", cuda) == torch.float16


def test_explicit_fp16_trains_with_a_grad_scaler_and_resumes(tmp_path, fast_config):
    cfg = fast_config(train={"amp": "fp16", "epochs": 2})
    first = train(cfg, out=tmp_path / "run", quiet=True)
    assert first["stop_reason"] == "completed"
    ckpt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert ckpt["scaler"]["scale"] > 0  # the scaler's state is checkpointed
    resumed = train(resume=tmp_path / "run", overrides=["train.epochs=3"], quiet=True)
    assert resumed["epochs_run"] == 3


def test_deterministic_mode_trains_and_matches_the_default_on_cpu(tmp_path, fast_config):
    rows = []
    for flag in (False, True):
        out = tmp_path / f"run-{flag}"
        train(fast_config(train={"deterministic": flag}), out=out, quiet=True)
        rows.append([{k: v for k, v in json.loads(line).items() if k != "seconds"}
                     for line in (out / "metrics.jsonl").read_text().splitlines()])
    assert rows[0] == rows[1]
    assert not torch.are_deterministic_algorithms_enabled()  # restored for the next run
