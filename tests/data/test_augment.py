import pytest
import torch

from reslab.data import ImageSet
from reslab.data.augment import (
    build_augment,
    random_crop,
    random_flip,
    random_grayscale,
    to_grayscale,
)
from reslab.data.loader import BatchLoader, Normalizer


def batch(n=8, c=3, size=8, dtype=torch.uint8):
    return torch.randint(0, 256, (n, c, size, size), generator=torch.Generator().manual_seed(0)
                         ).to(dtype)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_flip_with_p1_equals_the_flipped_input_and_p0_is_identity():
    x = batch()
    assert torch.equal(random_flip(x, gen(), p=1.0), x.flip(3))
    assert torch.equal(random_flip(x, gen(), p=0.0), x)


def test_flip_is_per_sample():
    x = batch(n=64)
    out = random_flip(x, gen(), p=0.5)
    flipped = [torch.equal(o, i.flip(2)) for o, i in zip(out, x)]
    assert 10 < sum(flipped) < 54


def test_crop_is_a_per_sample_translation_with_zero_fill():
    x = batch(n=32, size=8)
    out = random_crop(x, gen(), pad=2)
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    shifts = []
    for o, p in zip(out, padded):
        hits = [(dy, dx) for dy in range(5) for dx in range(5)
                if torch.equal(o, p[:, dy:dy + 8, dx:dx + 8])]
        assert hits, "every output is a window of the padded input"
        shifts.append(hits[0])
    assert len(set(shifts)) > 5  # different images get different translations


def test_grayscale_makes_equal_channels_with_luma_weights():
    x = batch(n=4)
    g = random_grayscale(x, gen(), p=1.0)
    assert torch.equal(g[:, 0], g[:, 1]) and torch.equal(g[:, 1], g[:, 2])
    expected = (0.299 * x[:, 0].float() + 0.587 * x[:, 1].float() + 0.114 * x[:, 2].float())
    assert torch.allclose(g[:, 0].float(), expected.round(), atol=1)
    assert torch.equal(random_grayscale(x, gen(), p=0.0), x)
    assert torch.equal(to_grayscale(x[:, :1]), x[:, :1])


def test_presets_compose_and_are_deterministic():
    x = batch(n=16)
    aug = build_augment("crop-flip-gray", pad=4, gray_p=0.5)
    a, b = aug(x, gen(3)), aug(x, gen(3))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert build_augment("none") is None


def test_loader_normalises_shuffles_by_epoch_and_covers_every_sample():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 1, 2, 2).clone()
    data = ImageSet(images, torch.arange(10))
    norm = Normalizer([0.5], [0.25], 255.0, torch.device("cpu"))
    loader = BatchLoader(data, 4, torch.device("cpu"), norm, shuffle=True, seed=1)
    labels = torch.cat([y for _, y, _ in loader.epoch(1)])
    assert sorted(labels.tolist()) == list(range(10))
    again = torch.cat([y for _, y, _ in loader.epoch(1)])
    other = torch.cat([y for _, y, _ in loader.epoch(2)])
    assert torch.equal(labels, again) and not torch.equal(labels, other)
    x, y, _ = next(BatchLoader(data, 4, torch.device("cpu"), norm).epoch(0))
    assert torch.allclose(x[:, 0, 0, 0], (y.float() / 255 - 0.5) / 0.25)


def test_distributed_shards_partition_the_global_batch():
    data = ImageSet(torch.zeros(21, 1, 2, 2, dtype=torch.uint8), torch.arange(21))
    norm = Normalizer([0.0], [1.0], 255.0, torch.device("cpu"))

    def steps(**kw):
        return list(BatchLoader(data, 8, torch.device("cpu"), norm, shuffle=True, seed=0,
                                **kw).epoch(0))

    single, ranks = steps(), [steps(rank=r, world_size=2) for r in range(2)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 3  # 8 + 8 + 5
    for (_, y, w), (_, y0, w0), (_, y1, w1) in zip(single, *ranks):
        assert sorted(torch.cat([y0, y1]).tolist()) == sorted(y.tolist())
        # Per-rank loss sums weighted this way average (over ranks) to the global mean.
        assert w == pytest.approx(1 / len(y)) and w0 == w1 == pytest.approx(2 / len(y))


def test_color_jitter_is_per_image_and_grey_batches_skip_the_colour_steps():
    from reslab.data.transforms import ColorJitter

    x = batch(n=16)
    jitter = ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.2)
    out = jitter(x, gen(1))
    assert out.dtype == torch.uint8 and not torch.equal(out, x)
    assert torch.equal(out, jitter(x, gen(1)))
    hue_only = ColorJitter(hue=0.2)(x, gen(1)).float() - x.float()
    assert hue_only.abs().flatten(1).mean(1).unique().numel() > 8  # different turns
    grey = x[:, :1]
    assert torch.equal(ColorJitter(saturation=0.5, hue=0.5)(grey, gen(1)), grey)
    assert not torch.equal(ColorJitter(brightness=0.5)(grey, gen(1)), grey)


def test_one_luma_for_every_augmentation():
    from reslab.data import augment_policies, color, transforms

    assert transforms.to_grayscale is color.to_grayscale is to_grayscale
    x = batch(n=2).float()
    assert torch.allclose(color.luma(x)[:, 0], 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])
    assert augment_policies.adjust_saturation is color.adjust_saturation
