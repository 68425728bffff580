"""The training toolbox: EMA of the weights, gradient clipping, gradient accumulation, fused
optimizer steps, Lookahead and the whitening init (tiny digits runs, a few seconds each)."""
from __future__ import annotations

import json
import textwrap
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

import reslab
from reslab.config import EmaConfig, LookaheadConfig, load_config
from reslab.data import ImageSet, load_data
from reslab.data.loader import Normalizer
from reslab.errors import ReslabError
from reslab.models import build_model
from reslab.training.ema import WeightEma
from reslab.training.init import whiten_first_conv
from reslab.training.lookahead import Lookahead
from reslab.training.loop import selected_weights
from reslab.training.optim import build_optimizer, step_kernels
from reslab.utils import read_jsonl

# A model without BatchNorm: a step's gradient then does not depend on how its images are
# split into micro-batches (BatchNorm normalises each micro-batch by its own statistics).
NO_BN_MODEL = """
    from torch import nn

    class NoBN(nn.Module):
        def __init__(self, num_classes=10, in_chans=1):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(in_chans, 8, 3, padding=1), nn.ReLU(),
                nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.fc = nn.Linear(16, num_classes)

        def forward(self, x):
            return self.fc(self.features(x))


    class ScaledInput(NoBN):
        def forward(self, x):  # the first conv sees 2x, not the image
            return super().forward(2 * x)
"""


class Interrupt(Exception):
    pass


def strip_times(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def load(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def user_models(tmp_path):
    path = tmp_path / "nobn.py"
    path.write_text(textwrap.dedent(NO_BN_MODEL))
    return lambda name: f"{path}:{name}"


# ------------------------------------------------------------------------------------- EMA
def test_toolbox_keys_default_off_and_switch_on_from_the_command_line():
    train = load_config(None).train
    assert (train.ema, train.lookahead, train.grad_clip, train.accumulate, train.init) == (
        None, None, None, 1, "default")
    on = load_config(None, ["train.ema=true", "train.lookahead.k=3"]).train
    assert on.ema == EmaConfig() and on.lookahead == LookaheadConfig(k=3, alpha=0.5)
    assert load_config(None, ["train.ema=false"]).train.ema is None
    for bad, words in (("train.ema.decay=1.0", "train.ema.decay = 1.0"),
                       ("train.accumulate=0", "train.accumulate = 0"),
                       ("train.init=pca", "train.init = 'pca'"),
                       ("train.ema.select=last", "train.ema.select = 'last'")):
        with pytest.raises(ReslabError, match=words.replace(".", r"\.")) as err:
            load_config(None, [bad])
        assert "\n" not in str(err.value)


def test_ema_update_follows_decay_warmup_and_every():
    model = nn.Linear(1, 1, bias=False)
    ema = WeightEma(model, EmaConfig(decay=0.9, warmup_steps=2, every=2))
    weight = model.weight
    expected = None
    for step in range(1, 9):
        with torch.no_grad():
            weight.fill_(float(step))
        ema.update(model, step)
        if step % 2 == 0:  # updates on even steps only; copies until step 2
            expected = float(step) if step <= 2 else 0.81 * expected + 0.19 * step
        got = ema.model.weight.item()
        assert (got == pytest.approx(expected, rel=1e-6)) if expected is not None else \
            got != float(step)
    ema.restart()  # a phase starting from best.pt: the next update copies
    with torch.no_grad():
        weight.fill_(100.0)
    ema.update(model, 10)
    assert ema.model.weight.item() == 100.0


def test_ema_averages_batchnorm_buffers_too():
    model = nn.BatchNorm1d(2)
    ema = WeightEma(model, EmaConfig(decay=0.5))
    ema.update(model, 1)  # copy
    with torch.no_grad():
        model.running_mean.fill_(4.0)
    ema.update(model, 2)
    assert torch.allclose(ema.model.running_mean, torch.full((2,), 2.0))


def test_select_rule_raw_ema_best():
    def pick(select: str | None, row: dict, monitor: str = "val_acc"):
        overrides = [f"train.monitor={monitor}"]
        if select:
            overrides.append(f"train.ema.select={select}")
        return selected_weights(SimpleNamespace(cfg=load_config(None, overrides)), row)

    row = {"val_acc": 0.5, "val_acc_ema": 0.6, "val_loss": 1.0, "val_loss_ema": 1.2}
    assert pick(None, row) == (0.5, "raw")
    assert pick("raw", row) == (0.5, "raw")
    assert pick("ema", row) == (0.6, "ema")
    assert pick("best", row) == (0.6, "ema")
    assert pick("best", row, "val_loss") == (1.0, "raw")  # lower loss wins
    assert pick("ema", row, "val_loss") == (1.2, "ema")
    assert pick("best", {**row, "val_acc_ema": 0.5}) == (0.5, "raw")  # ties keep raw


def test_ema_is_evaluated_saved_and_selected(tmp_path, fast_config):
    cfg = fast_config(train={"epochs": 3, "ema": {"decay": 0.9, "select": "ema"}})
    run, checked = tmp_path / "ema", []

    def check(row):
        last, best = load(run / "last.pt"), load(run / "best.pt")
        ema = {k.removeprefix("module."): v for k, v in last["ema"].items() if k != "n_averaged"}
        assert ema.keys() == last["model"].keys()
        assert not same_tensors(ema, last["model"])  # the average is not the raw weights
        assert best["weights"] == "ema"
        if best["epoch"] == row["epoch"]:  # best.pt was written this epoch: the EMA's weights
            assert same_tensors(best["model"], ema)
            checked.append(row["epoch"])

    result = reslab.train(cfg, out=run, on_epoch=check, quiet=True)
    assert 1 in checked
    rows = read_jsonl(run / "metrics.jsonl")
    for key in ("val_acc_ema", "val_loss_ema", "test_acc_ema", "test_loss_ema"):
        assert all(isinstance(r[key], float) for r in rows), key
    assert any(r["val_loss_ema"] != r["val_loss"] for r in rows)
    assert result["eval_weights"] == "ema"
    assert result["best_val_acc_ema"] == max(r["val_acc_ema"] for r in rows)
    assert result["best_val_acc"] == max(r["val_acc"] for r in rows)  # still the raw weights'
    assert json.loads((run / "result.json").read_text()) == result


def test_without_ema_the_run_directory_is_as_before(tmp_path, fast_config):
    result = reslab.train(fast_config(train={"epochs": 1}), out=tmp_path / "r", quiet=True)
    row = read_jsonl(tmp_path / "r" / "metrics.jsonl")[0]
    assert not any(k.endswith("_ema") for k in row) and "grad_norm" not in row
    assert result["eval_weights"] == "raw" and "best_val_acc_ema" not in result
    assert "ema" not in load(tmp_path / "r" / "last.pt")


# ---------------------------------------------------------------------------- exact resume
def test_interrupted_and_resumed_run_with_the_toolbox_equals_uninterrupted(tmp_path,
                                                                          fast_config,
                                                                          cut_and_resume):
    cfg = fast_config(model={"dropout": 0.1}, data={"augment": "crop-flip"},
                      train={"epochs": 4, "scheduler": "onecycle", "init": "whiten",
                             "ema": {"decay": 0.8, "warmup_steps": 3, "every": 2,
                                     "select": "best"},
                             "lookahead": {"k": 3, "alpha": 0.5}, "grad_clip": 0.5,
                             "accumulate": 2})
    full, resumed, a, b = cut_and_resume(cfg)
    assert a == b and "grad_norm" in a[0] and "val_acc_ema" in a[0]
    for key in ("test_acc", "eval_weights", "best_epoch", "best_val_acc_ema"):
        assert resumed[key] == full[key], key
    last_full, last_cut = load(tmp_path / "full" / "last.pt"), load(tmp_path / "cut" / "last.pt")
    assert same_tensors(last_full["model"], last_cut["model"])
    assert same_tensors(last_full["ema"], last_cut["ema"])
    assert last_full["lookahead"]["steps"] == last_cut["lookahead"]["steps"] > 0
    assert all(torch.equal(x, y) for x, y in zip(last_full["lookahead"]["slow"],
                                                 last_cut["lookahead"]["slow"], strict=True))


def test_resume_at_a_phase_boundary_starts_the_next_phase_afresh(tmp_path, fast_config):
    # last.pt of the previous phase's last epoch: the next phase must not take its optimizer,
    # schedule or step count, and must start from best.pt like the uninterrupted run.
    phases = [{"epochs": 2}, {"epochs": 2, "start_from": "best", "lr_scale": 0.5}]
    cfg = fast_config(train={"phases": phases, "scheduler": "none", "ema": {"decay": 0.9}})
    reslab.train(cfg, out=tmp_path / "full", quiet=True)

    def stop_after_2(row):
        if row["epoch"] == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        reslab.train(cfg, out=tmp_path / "cut", on_epoch=stop_after_2, quiet=True)
    reslab.train(resume=tmp_path / "cut", quiet=True)
    a = strip_times(read_jsonl(tmp_path / "full" / "metrics.jsonl"))
    b = strip_times(read_jsonl(tmp_path / "cut" / "metrics.jsonl"))
    assert [r["lr"] for r in a] == pytest.approx([0.05, 0.05, 0.025, 0.025])
    assert a == b


# ---------------------------------------------------------------------------- grad clipping
@pytest.mark.parametrize("amp", ["off", "fp16"])
def test_clipping_bounds_the_norm_the_optimizer_applies(tmp_path, fast_config, amp):
    # Plain SGD (no momentum, no weight decay) moves each weight by -lr * its gradient: the
    # norm of the applied gradient is recomputed from the weights before and after each step,
    # whatever the optimizer kernel does with a GradScaler's scale (fp16).
    before: list[torch.Tensor] = []
    applied: list[float] = []

    def ours(opt) -> bool:  # the run's optimizer, not the timing probe's
        return any("head" in g for g in opt.param_groups)

    def snapshot(opt, args, kwargs):
        if ours(opt):
            before[:] = [p.detach().clone() for g in opt.param_groups for p in g["params"]]

    def measure(opt, args, kwargs):
        if ours(opt):
            after = iter(before)
            steps = [(next(after) - p.detach()) / g["lr"] for g in opt.param_groups
                     for p in g["params"]]
            applied.append(torch.linalg.vector_norm(torch.cat([s.flatten() for s in steps]))
                           .item())

    hooks = [register_optimizer_step_pre_hook(snapshot),
             register_optimizer_step_post_hook(measure)]
    cfg = fast_config(train={"epochs": 1, "grad_clip": 0.05, "amp": amp, "momentum": 0.0,
                             "weight_decay": 0.0})
    try:
        reslab.train(cfg, out=tmp_path / "clip", quiet=True)
    finally:
        for h in hooks:
            h.remove()
    row = read_jsonl(tmp_path / "clip" / "metrics.jsonl")[0]
    assert 0.1 < row["grad_norm"] < 100  # the gradients were larger than the bound...
    assert len(applied) >= 10
    assert max(applied) <= 0.05 * (1 + 1e-3)  # ...and the optimizer applied them clipped
    assert min(applied) > 0.05 * 0.9


# ------------------------------------------------------------------------------ accumulation
def test_accumulating_4_batches_of_16_equals_batches_of_64(tmp_path, fast_config, user_models):
    # Same images per optimizer step (the loader's order splits into 64s and into 4 x 16s
    # alike; 1,259 images: both end on a step of 43), no augmentation, no dropout, no
    # BatchNorm, fp32 (bf16 autocast would round each micro-batch differently): the two runs
    # take the same steps up to the summation order of the gradients. The cosine schedule
    # counts optimizer steps: one counting micro-batches would give other LRs and weights.
    base = {"data": {"augment": "none"}, "model": {"arch": user_models("NoBN")}}
    train = {"epochs": 2, "weight_decay": 0.0, "amp": "off"}
    big = fast_config(**base, train={**train, "batch_size": 64})
    micro = fast_config(**base, train={**train, "batch_size": 16, "accumulate": 4})
    reslab.train(big, out=tmp_path / "big", quiet=True)
    reslab.train(micro, out=tmp_path / "micro", quiet=True)
    a = read_jsonl(tmp_path / "big" / "metrics.jsonl")
    b = read_jsonl(tmp_path / "micro" / "metrics.jsonl")
    for ra, rb in zip(a, b, strict=True):
        assert rb["lr"] == pytest.approx(ra["lr"], rel=1e-9)
        for key in ("train_loss", "val_loss", "test_loss"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-5), key
    big_ckpt, micro_ckpt = load(tmp_path / "big" / "last.pt"), load(tmp_path / "micro" / "last.pt")
    assert big_ckpt["step"] == micro_ckpt["step"] == 40  # 20 optimizer steps per epoch
    moved = max((big_ckpt["model"][k] - micro_ckpt["model"][k]).abs().max().item()
                for k in big_ckpt["model"])
    assert moved < 1e-5  # fp32 summation order: ~5e-8 here
    # ... and a plain batch of 16 is another run: the comparison can fail.
    reslab.train(fast_config(**base, train={**train, "batch_size": 16}), out=tmp_path / "small",
                 quiet=True)
    small = read_jsonl(tmp_path / "small" / "metrics.jsonl")
    assert small[-1]["train_loss"] != pytest.approx(a[-1]["train_loss"], rel=1e-3)


# ---------------------------------------------------------------------------- fused steps
@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "adadelta"])
def test_optimizer_uses_fused_kernels_where_torch_has_them(name):
    model = nn.Linear(3, 2)
    groups = [{"params": list(model.parameters())}]
    opt = build_optimizer(groups, name, 0.1, 0.9, nesterov=True)
    if name == "adadelta":  # no fused Adadelta in torch
        assert opt.defaults["foreach"] is True and not opt.defaults.get("fused")
    else:
        assert opt.defaults["fused"] is True and not opt.defaults.get("foreach")
    model(torch.randn(4, 3)).sum().backward()
    opt.step()  # the CPU kernel exists and runs
    assert step_kernels(name, torch.device("cuda")) == ({"foreach": True} if name == "adadelta"
                                                        else {"fused": True})
    assert step_kernels(name, torch.device("mps")) == {"foreach": True}


# -------------------------------------------------------------------------------- lookahead
def test_lookahead_follows_the_rule_on_one_parameter_and_resumes_exactly():
    w = nn.Parameter(torch.zeros(()))
    opt = torch.optim.SGD([w], lr=1.0)
    look = Lookahead([w], LookaheadConfig(k=2, alpha=0.5))

    def step(optimizer, lookahead):
        w.grad = torch.tensor(-1.0)  # each SGD step adds 1 to the fast weight
        optimizer.step()
        lookahead.step()
        return w.item(), lookahead.slow[0].item()

    # k=2, alpha=0.5: after step 2 slow = 0 + 0.5 * (2 - 0) = 1 = fast; after step 4
    # slow = 1 + 0.5 * (3 - 1) = 2 = fast.
    assert [step(opt, look) for _ in range(4)] == [(1.0, 0.0), (1.0, 1.0), (2.0, 1.0),
                                                   (2.0, 2.0)]
    step(opt, look)  # fast 3, mid-cycle: the state must carry the step count and slow weights
    saved, w_saved = look.state_dict(), w.item()
    expected = [step(opt, look) for _ in range(3)]
    assert expected == [(3.0, 3.0), (4.0, 3.0), (4.0, 4.0)]  # slow = 2 + 0.5 * (4 - 2)
    with torch.no_grad():
        w.fill_(w_saved)
    again = Lookahead([w], LookaheadConfig(k=2, alpha=0.5))  # slow starts at w: must be loaded
    again.load_state_dict(saved)
    assert [step(opt, again) for _ in range(3)] == expected


# -------------------------------------------------------------------------------- whitening
def patch_correlation(images: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Correlation matrix of the conv's outputs over every valid patch of the images."""
    patches = F.unfold(images.double(), weight.shape[-2:]).transpose(1, 2).reshape(
        -1, weight[0].numel())
    out = patches @ weight.reshape(len(weight), -1).double().T
    moment = out.T @ out / len(out)
    d = moment.diagonal().sqrt()
    return moment / d[:, None] / d[None, :]


def smooth_rgb(n: int = 64, size: int = 12) -> ImageSet:
    g = torch.Generator().manual_seed(0)
    noise = torch.rand(n, 3, size, size, generator=g)
    smooth = F.avg_pool2d(F.pad(noise, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    mixed = 0.6 * smooth + 0.4 * smooth.mean(1, keepdim=True)  # correlated channels too
    return ImageSet((mixed * 255).round().to(torch.uint8), torch.zeros(n, dtype=torch.long))


@pytest.mark.parametrize("source, width, pairs", [("digits", 8, 4), ("rgb", 64, 27)])
def test_whitening_decorrelates_the_first_conv_outputs(source, width, pairs):
    if source == "digits":
        data = load_data(load_config(None, ["data.source=digits"]).data, progress=False)
        train, mean, std = data.train, data.mean, data.std
    else:
        train, mean, std = smooth_rgb(), [0.5] * 3, [0.25] * 3
    cfg = load_config(None, ["model.arch=resnet20", f"model.width={width}"])
    torch.manual_seed(0)
    model = build_model(cfg.model, 10, train.images.shape[1])
    conv = model.stem[0][0]
    before = conv.weight.detach().clone()
    norm = Normalizer(mean, std, 255.0, torch.device("cpu"))
    x = norm(train.images)
    off = ~torch.eye(pairs, dtype=torch.bool)
    assert patch_correlation(x, before[:pairs])[off].abs().max() > 0.3
    whiten_first_conv(model, train, norm, channels_last=True)
    after = conv.weight.detach()
    corr = patch_correlation(x, after[:pairs])
    assert corr[off].abs().max() < 1e-3  # decorrelated
    assert torch.equal(after[pairs:2 * pairs], -after[:pairs])  # +/- pairs
    assert torch.equal(after[2 * pairs:], before[2 * pairs:])   # the rest keeps its init
    torch.manual_seed(0)
    again = build_model(cfg.model, 10, train.images.shape[1])
    whiten_first_conv(again, train, norm, channels_last=False)
    assert torch.equal(again.stem[0][0].weight, after)  # deterministic, either layout


def test_whitening_refuses_a_model_whose_first_conv_does_not_see_the_image(
        tmp_path, fast_config, user_models):
    cfg = fast_config(model={"arch": user_models("ScaledInput")}, train={"init": "whiten"})
    with pytest.raises(ReslabError, match="does not take the normalised image"):
        reslab.train(cfg, out=tmp_path / "refused", quiet=True)
    assert not (tmp_path / "refused").exists()  # refused before the run directory
    plain = fast_config(model={"arch": user_models("NoBN")}, train={"init": "whiten",
                                                                    "epochs": 1})
    assert reslab.train(plain, out=tmp_path / "ok", quiet=True)["stop_reason"] == "completed"
    with pytest.raises(ReslabError, match="train.init = 'whiten' would overwrite"):
        whiten_first_conv(nn.Conv2d(1, 2, 3), ImageSet(torch.zeros(1, 1, 4, 4,
                          dtype=torch.uint8), torch.zeros(1, dtype=torch.long)),
                          Normalizer([0.0], [1.0], 255.0, torch.device("cpu")), True,
                          pretrained=True)


# -------------------------------------------------------------------------------------- DDP
def test_two_gloo_ranks_accumulate_clip_and_average_like_one_process(tmp_path, fast_config,
                                                                      single_and_two_ranks):
    cfg = fast_config(data={"augment": "none"},
                      train={"epochs": 2, "batch_size": 32, "accumulate": 2, "grad_clip": 0.5,
                             "ema": {"decay": 0.8, "select": "best"}, "sync_bn": True,
                             "threads": 1, "amp": "off"})
    single, ddp, stdout = single_and_two_ranks(cfg)
    for a, b in zip(single, ddp, strict=True):
        for key in ("train_loss", "val_loss", "val_loss_ema", "grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=2e-3), key
        for key in ("train_acc", "val_acc", "val_acc_ema"):
            assert b[key] == pytest.approx(a[key], abs=0.01), key
    assert load(tmp_path / "ddp" / "last.pt")["step"] == load(tmp_path / "single" /
                                                               "last.pt")["step"]
