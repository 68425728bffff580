"""Mixup / CutMix soft targets and pixels for the drawn parameters; random erasing boxes."""
from __future__ import annotations

import pytest
import torch

from reslab.data.erasing import RandomErasing
from reslab.data.mixup import Mixup, box_mask, smooth_one_hot


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def batch(n=16, c=3, h=12, w=10):
    return torch.randn(n, c, h, w, generator=gen(7))


def labels(n=16, classes=5):
    return torch.arange(n) % classes


def test_mixup_pixels_and_soft_targets_follow_the_drawn_lambdas_and_partners():
    x, y = batch(), labels()
    mix = Mixup(5, alpha=0.4, label_smoothing=0.1)
    d = mix.draw(len(x), 12, 10, gen(1))
    out, soft = mix.apply(x, y, d)
    lam = d.lam.float().view(-1, 1, 1, 1)
    assert torch.allclose(out, lam * x + (1 - lam) * x[d.partner], atol=1e-6)
    assert soft.shape == (16, 5) and soft.dtype == torch.float32
    assert torch.allclose(soft.sum(1), torch.ones(16))
    target = smooth_one_hot(y, 5, 0.1)
    assert torch.allclose(soft, d.lam.float()[:, None] * target
                          + (1 - d.lam.float()[:, None]) * target[d.partner])
    assert d.lam.unique().numel() == 16          # one lambda per image
    assert target.max() == pytest.approx(0.92) and target.min() == pytest.approx(0.02)


def test_cutmix_pastes_a_box_and_lambda_is_the_area_kept():
    x, y = batch(), labels()
    mix = Mixup(5, cutmix_alpha=1.0)
    d = mix.draw(len(x), 12, 10, gen(2))
    out, soft = mix.apply(x, y, d)
    inside = box_mask(d.box, 12, 10)
    assert d.cutmix.all() and inside.any()
    assert torch.equal(out, torch.where(inside, x[d.partner], x))
    area = inside.flatten(1).sum(1).double() / (12 * 10)
    assert torch.allclose(d.lam, 1 - area)
    # Labels mix by the area kept.
    one_hot = torch.nn.functional.one_hot(y, 5).float()
    lam = d.lam.float()[:, None]
    assert torch.allclose(soft, lam * one_hot + (1 - lam) * one_hot[d.partner])
    assert torch.allclose(soft.sum(1), torch.ones(16))


def test_switch_prob_and_prob_choose_per_image():
    mix = Mixup(5, alpha=1.0, cutmix_alpha=1.0, prob=0.5, switch_prob=0.5)
    d = mix.draw(256, 12, 10, gen(3))
    mixed = d.lam < 1
    assert 80 < mixed.sum() < 176                       # about half the images are mixed
    assert d.cutmix.any() and (mixed & ~d.cutmix).any()  # by both methods
    assert not (d.cutmix & (d.lam == 1) & (box_mask(d.box, 12, 10).flatten(1).any(1))).any()
    x, y = batch(256), labels(256)
    out, soft = mix.apply(x, y, d)
    unmixed = d.lam == 1
    assert torch.equal(out[unmixed], x[unmixed])
    assert torch.equal(soft[unmixed].argmax(1), y[unmixed])


def test_mixup_repeats_with_the_seed():
    x, y = batch(), labels()
    mix = Mixup(5, alpha=0.2, cutmix_alpha=1.0)
    a, b, c = mix(x, y, gen(4)), mix(x, y, gen(4)), mix(x, y, gen(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_erasing_fills_one_box_per_image_with_its_value_and_leaves_the_rest():
    x = batch(64, h=32, w=32)
    erase = RandomErasing(p=1.0)
    d = erase.draw(64, 3, 32, 32, gen(1))
    out = erase.apply(x, d)
    inside = box_mask(d.box, 32, 32).expand_as(x)
    assert torch.equal(out[~inside], x[~inside])
    fill = d.value[:, :, None, None].expand_as(x)
    assert torch.equal(out[inside], fill[inside])
    area = box_mask(d.box, 32, 32).flatten(1).sum(1) / (32 * 32)
    assert (area > 0.01).all() and (area < 0.4).all()   # scale (0.02, 1/3), rounded sides
    assert d.box.unique(dim=0).shape[0] > 50             # boxes differ per image


def test_erasing_probability_and_seed():
    x = batch(200, h=16, w=16)
    assert torch.equal(RandomErasing(p=0.0)(x, gen()), x)
    out = RandomErasing(p=0.25)(x, gen(2))
    erased = (out != x).flatten(1).any(1).sum()
    assert 25 < erased < 80
    assert torch.equal(out, RandomErasing(p=0.25)(x, gen(2)))
