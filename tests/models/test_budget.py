"""`model.max_params` is checked on the meta device, before any weight is allocated."""
from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import pytest
import torch

from reslab.config import ModelConfig, load_config
from reslab.errors import ReslabError
from reslab.models import build_model, build_on_meta, check_param_budget, count_params

HUGE = ["model.arch=resnet18", "model.width=4096", "model.max_params=5000000"]
HUGE_PARAMS = "45,702,189,066"  # resnet18 at width 4096, 3 channels in, 10 classes
# A constructor that reads a tensor's value: impossible on the meta device.
NOT_ON_META = '''
import torch
from torch import nn

class ReadsValues(nn.Module):
    def __init__(self, num_classes=10, in_chans=3, width=8):
        super().__init__()
        width = int(torch.tensor(float(width)).item())
        self.conv = nn.Conv2d(in_chans, width, 3)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))
'''


def rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_huge_width_is_refused_quickly_without_allocating():
    cfg = load_config(None, HUGE).model
    before, start = rss_bytes(), time.perf_counter()
    with pytest.raises(ReslabError) as err:
        build_model(cfg, 10, 3)
    seconds = time.perf_counter() - start
    # ru_maxrss (KiB on Linux) is the peak: it would hold a transient allocation too.
    peak_growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    msg = str(err.value)
    assert msg == (f"model.max_params: resnet18 (width 4096) has {HUGE_PARAMS} parameters, "
                   "over the budget of 5,000,000")
    assert seconds < 10 and peak_growth < 512 * 2**20


def test_meta_count_equals_the_real_count():
    cfg = load_config(None, ["model.arch=resnet18", "model.width=42",
                             "model.max_params=5000000"]).model
    meta = build_on_meta(cfg, 10, 3)
    assert all(p.is_meta for p in meta.parameters())
    assert check_param_budget(cfg, 10, 3) == count_params(meta) == 4_815_940
    assert count_params(build_model(cfg, 10, 3)) == 4_815_940


def test_budget_check_draws_no_random_numbers():
    plain = load_config(None, ["model.arch=resnet20"]).model
    budget = plain.model_copy(update={"max_params": 10**6})
    torch.manual_seed(0)
    a = build_model(plain, 10, 3).state_dict()
    torch.manual_seed(0)
    b = build_model(budget, 10, 3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_model_that_cannot_be_built_on_meta_falls_back_to_a_real_count(tmp_path):
    (tmp_path / "net.py").write_text(NOT_ON_META)
    arch = f"{tmp_path / 'net.py'}:ReadsValues"
    assert build_on_meta(ModelConfig(arch=arch), 10, 3) is None
    over = r"ReadsValues has 314 parameters, over the budget of 300$"
    with pytest.raises(ReslabError, match=over):
        build_model(ModelConfig(arch=arch, max_params=300), 10, 3)
    torch.manual_seed(0)
    a = build_model(ModelConfig(arch=arch), 10, 3).state_dict()
    torch.manual_seed(0)  # the fallback's real build runs under a forked RNG
    b = build_model(ModelConfig(arch=arch, max_params=1000), 10, 3).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_summary_of_a_huge_width_prints_count_and_verdict(cli):
    start = time.perf_counter()
    code, out, err = cli("summary", *[a for kv in HUGE for a in ("--set", kv)],
                         "--set", "data.image_size=32", "--depth", "1")
    assert code == 2 and "Traceback" not in err
    assert f"total params: {HUGE_PARAMS.replace('189,066', '115,338')}" in out  # 1 channel in
    assert "budget: OVER model.max_params = 5,000,000" in out
    assert time.perf_counter() - start < 30
