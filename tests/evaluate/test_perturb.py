import math

import pytest
import torch
import torch.nn.functional as F

from reslab.errors import ReslabError
from reslab.evaluate import perturb as P

RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise"}


def natural_batch(n: int = 16, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth colour ramps + multi-scale (~1/f) texture + a few flat-coloured rectangles (edges)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    ramp = torch.rand(n, 3, 1, 1, generator=g) * xx + torch.rand(n, 3, 1, 1, generator=g) * yy
    tex = sum(
        F.interpolate(torch.rand(n, 3, r, r, generator=g) - 0.5, size=(size, size), mode="bilinear")
        * (4 / r) ** 0.5
        for r in (4, 8, 16, 32)
    )
    x = 0.3 + 0.15 * ramp + 0.2 * tex
    for _ in range(2):
        corners = (torch.rand(n, 4, generator=g) * size).long()
        for i in range(n):
            r0, r1 = sorted(corners[i, :2].tolist())
            c0, c1 = sorted(corners[i, 2:].tolist())
            x[i, :, r0 : r1 + 1, c0 : c1 + 1] += torch.rand(3, 1, 1, generator=g) * 0.4 - 0.2
    return x.clamp(0.02, 0.98)


def to_u8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().to(torch.int64)


# ----------------------------------------------------------------------------- seed suite


def test_intensity_plus_50_in_uint8_units():
    u8 = torch.tensor([220, 100, 0, 205, 255], dtype=torch.float32)
    x = (u8 / 255).view(1, 1, 1, 5).expand(2, 3, 4, 5).contiguous()
    out = to_u8(P.shift_intensity(x))
    assert out[0, 0, 0].tolist() == [255, 150, 50, 255, 255]
    assert (out == out[0, 0, 0]).all()


def test_color_balance_adds_r30_g20_b10():
    x = torch.full((2, 3, 4, 4), 100 / 255)
    out = to_u8(P.shift_color_balance(x))
    assert out[:, 0].unique().tolist() == [130]
    assert out[:, 1].unique().tolist() == [120]
    assert out[:, 2].unique().tolist() == [110]


def principal_angle_deg(img: torch.Tensor) -> float:
    """Orientation of the principal axis from second-order moments, y pointing UP (screen CCW +)."""
    w = img.mean(dim=0).double()
    h, wd = w.shape
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(wd), indexing="ij")
    xs, ys = cols.double(), -rows.double()
    m = w.sum()
    cx, cy = (w * xs).sum() / m, (w * ys).sum() / m
    mu20 = (w * (xs - cx) ** 2).sum()
    mu02 = (w * (ys - cy) ** 2).sum()
    mu11 = (w * (xs - cx) * (ys - cy)).sum()
    return math.degrees(0.5 * math.atan2(2 * mu11, mu20 - mu02))


def test_rotate_30_is_counter_clockwise():
    x = torch.zeros(2, 3, 64, 64)
    x[:, :, 31:34, 12:52] = 1.0  # horizontal bar, 3 px x 40 px, through the centre
    assert abs(principal_angle_deg(x[0])) < 0.5
    out = P.rotate(x, 30)
    assert out.shape == x.shape
    assert principal_angle_deg(out[0]) == pytest.approx(30, abs=2)
    assert principal_angle_deg(P.rotate(x, -30)[1]) == pytest.approx(-30, abs=2)
    # rotation about the centre: the bar's centroid stays put
    assert (out[0, 0, 28:37, 28:37] > 0.5).any()


def test_combined_is_the_three_in_order_and_seed_suite_names():
    x = natural_batch(n=2)
    expected = P.rotate(P.shift_color_balance(P.shift_intensity(x)))
    assert torch.equal(P.combined(x), expected)
    assert list(P.SEED_SUITE) == [
        "intensity_plus50",
        "color_balance_b10_g20_r30",
        "rotate30",
        "combined",
    ]


# ----------------------------------------------------------------------------- corruptions


@pytest.mark.parametrize("name", list(P.CORRUPTIONS))
def test_corruption_severity_is_monotonic_and_output_valid(name):
    x = natural_batch()
    distortions = []
    for severity in P.SEVERITIES:
        out = P.corrupt(x, name, severity, torch.Generator().manual_seed(7))
        assert out.shape == x.shape and out.dtype == x.dtype
        assert out.min() >= 0 and out.max() <= 1
        distortions.append((out - x).abs().mean().item())
    assert distortions[0] > 1e-4, distortions
    assert all(a < b for a, b in zip(distortions, distortions[1:])), distortions


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_random_corruptions_are_deterministic_given_a_generator(name):
    x = natural_batch(n=2)
    a = P.corrupt(x, name, 3, torch.Generator().manual_seed(1))
    b = P.corrupt(x, name, 3, torch.Generator().manual_seed(1))
    c = P.corrupt(x, name, 3, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("name", sorted(set(P.CORRUPTIONS) - RANDOM))
def test_deterministic_corruptions_ignore_the_generator(name):
    x = natural_batch(n=2)
    a = P.corrupt(x, name, 3, torch.Generator().manual_seed(1))
    assert torch.equal(a, P.corrupt(x, name, 3, torch.Generator().manual_seed(2)))


def test_corruptions_keep_float64_dtype():
    x = natural_batch(n=2).double()
    for name in P.CORRUPTIONS:
        assert P.corrupt(x, name, 2, torch.Generator().manual_seed(0)).dtype == torch.float64


def test_saturate_and_brightness_preserve_hue_and_keep_grey_grey():
    x = torch.tensor([0.6, 0.4, 0.2, 0.5, 0.5, 0.5]).view(1, 2, 3).permute(0, 2, 1)[..., None]
    sat = P.saturate(x, 2)[0, :, :, 0]  # S: 2/3 -> 1 (clipped), V stays 0.6
    assert sat[:, 0].tolist() == pytest.approx([0.6, 0.3, 0.0])
    assert sat[:, 1].tolist() == pytest.approx([0.5, 0.5, 0.5])
    bright = P.brightness(x, 5)[0, :, :, 0]  # V: 0.6 -> 0.9, same hue and saturation
    assert bright[:, 0].tolist() == pytest.approx([0.9, 0.6, 0.3])
    assert bright[:, 1].tolist() == pytest.approx([0.8, 0.8, 0.8])


def test_bad_severity_and_unknown_corruption_raise():
    x = natural_batch(n=1)
    with pytest.raises(ReslabError, match="severity 6"):
        P.corrupt(x, "contrast", 6)
    with pytest.raises(ReslabError, match="fog"):
        P.corrupt(x, "fog", 1)


# ----------------------------------------------------------------------------- suites


def test_iter_suite_all_yields_seed_then_corruptions():
    items = list(P.iter_suite("all"))
    assert [(n, s) for n, s, _ in items[:4]] == [(n, 1) for n in P.SEED_SUITE]
    expected = [(n, s) for n in P.CORRUPTIONS for s in (1, 2, 3, 4, 5)]
    assert len(P.CORRUPTIONS) == 10
    assert [(n, s) for n, s, _ in items[4:]] == expected
    x = natural_batch(n=1)
    for _, _, fn in items:
        out = fn(x)
        assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    assert [n for n, _, _ in P.iter_suite("seed")] == list(P.SEED_SUITE)
    assert len(list(P.iter_suite("corruptions"))) == 50


def test_iter_suite_is_reproducible_for_a_seed():
    x = natural_batch(n=2)
    first = {(n, s): fn(x) for n, s, fn in P.iter_suite("corruptions", seed=3)}
    second = {(n, s): fn(x) for n, s, fn in P.iter_suite("corruptions", seed=3)}
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_iter_suite_unknown_name():
    with pytest.raises(ReslabError, match="nope") as err:
        list(P.iter_suite("nope"))
    assert "corruptions" in str(err.value)
