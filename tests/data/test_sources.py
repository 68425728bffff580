import pickle

import numpy as np
import pytest
import torch

from reslab.config import load_config
from reslab.data import load_data
from reslab.errors import ReslabError


def data_cfg(**kw):
    return load_config({"data": kw}).data


def test_digits_split_is_stratified_and_seeded():
    a = load_data(data_cfg(source="digits", val_fraction=0.2, test_fraction=0.1))
    b = load_data(data_cfg(source="digits", val_fraction=0.2, test_fraction=0.1))
    assert a.classes == [str(i) for i in range(10)]
    assert a.train.images.shape[1:] == (1, 8, 8) and a.train.images.dtype == torch.uint8
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert torch.equal(a.val.labels, b.val.labels) and torch.equal(a.val.images, b.val.images)
    counts = torch.bincount(a.val.labels, minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # ~20% of ~180 per class
    c = load_data(data_cfg(source="digits", val_fraction=0.2, split_seed=1))
    assert not torch.equal(a.val.images[:50], c.val.images[:50])


def test_normalisation_stats_come_from_the_train_split():
    data = load_data(data_cfg(source="digits"))
    x = data.train.images.double() / 255
    assert data.mean[0] == pytest.approx(x.mean().item(), abs=1e-9)
    assert data.std[0] == pytest.approx(x.std(unbiased=False).item(), abs=1e-9)
    none = load_data(data_cfg(source="digits", normalize="none"))
    assert none.mean == [0.0] and none.std == [1.0]


def _fake_cifar(root, n_train=20, n_test=10):
    """Write CIFAR-10's python batch format (the files torchvision reads)."""
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_train
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "labels": [i % 10 for i in range(n)]}
        with open(base / name, "wb") as f:
            pickle.dump(batch, f)
    with open(base / "batches.meta", "wb") as f:
        pickle.dump({"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                     "frog", "horse", "ship", "truck"]}, f)


def test_cifar10_reads_torchvision_format_and_uses_the_official_test_split(tmp_path,
                                                                           monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    _fake_cifar(tmp_path)
    # Our fake files cannot match the real archive's checksums.
    monkeypatch.setattr(tv_cifar.CIFAR10, "_check_integrity", lambda self: True)
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *a, **k: True)
    data = load_data(data_cfg(source="cifar10", root=str(tmp_path), val_fraction=0.2))
    assert data.classes[:2] == ["airplane", "automobile"]
    assert len(data.test) == 10 and len(data.train) + len(data.val) == 100
    assert data.train.images.shape[1:] == (3, 32, 32)


def test_cifar10_offline_error_says_where_to_put_files(tmp_path):
    with pytest.raises(ReslabError) as err:
        load_data(data_cfg(source="cifar10", root=str(tmp_path / "nowhere")))
    assert "cifar-10-batches-py" in str(err.value) and "data.download: true" in str(err.value)


def test_folder_single_tree_with_fractions(make_tree):
    root = make_tree(classes=("cat", "dog", "bird"), per_class=10)
    data = load_data(data_cfg(source="folder", root=str(root), val_fraction=0.2,
                              test_fraction=0.2))
    assert data.classes == ["bird", "cat", "dog"]
    assert (len(data.train), len(data.val), len(data.test)) == (18, 6, 6)
    assert torch.bincount(data.test.labels).tolist() == [2, 2, 2]
    assert data.train.paths and all(p.endswith(".png") for p in data.train.paths)
    # Each image's label is its folder's class.
    for path, label in zip(data.train.paths, data.train.labels.tolist()):
        assert f"/{data.classes[label]}/" in path


def test_folder_split_layout_maps_labels_by_name(make_tree, tmp_path):
    root = tmp_path / "ds"
    make_tree(classes=("x", "y", "z"), per_class=6, root=root / "train")
    make_tree(classes=("z", "x"), per_class=3, root=root / "val", seed=1)  # other order/subset
    data = load_data(data_cfg(source="folder", root=str(root)))
    assert data.classes == ["x", "y", "z"] and len(data.train) == 18
    assert sorted(set(data.val.labels.tolist())) == [0, 2]
    for path, label in zip(data.val.paths, data.val.labels.tolist()):
        assert f"/{data.classes[label]}/" in path


def test_classes_are_in_natural_order(make_tree):
    names = [str(i) for i in range(1, 12)]
    root = make_tree(classes=names, per_class=2, size=8)
    data = load_data(data_cfg(source="folder", root=str(root), val_fraction=0.0))
    assert data.classes == names  # '2' before '10', unlike a plain string sort


def test_center_crop_and_resize(make_tree):
    root = make_tree(per_class=4, size=20)
    data = load_data(data_cfg(source="folder", root=str(root), center_crop=12, image_size=6,
                              val_fraction=0.0))
    assert data.train.images.shape[1:] == (3, 6, 6)


def test_jpeg_and_mixed_sizes_resized(make_tree, tmp_path):
    from PIL import Image

    root = make_tree(per_class=4, size=16, ext=".jpg")
    Image.new("RGB", (30, 20), (10, 20, 30)).save(root / "a" / "big.jpg")
    with pytest.raises(ReslabError, match="images differ in size.*data.image_size"):
        load_data(data_cfg(source="folder", root=str(root)))
    data = load_data(data_cfg(source="folder", root=str(root), image_size=16, val_fraction=0))
    assert len(data.train) == 13 and data.train.images.shape[1:] == (3, 16, 16)


def test_cache_is_reused_and_invalidated(make_tree, tmp_path, monkeypatch):
    from reslab.data import cache

    root = make_tree(per_class=4)
    cfg = data_cfg(source="folder", root=str(root), cache_dir=str(tmp_path / "c"))
    first = load_data(cfg)
    calls = []
    monkeypatch.setattr(cache, "_decode_all", lambda *a: calls.append(1) or (_ for _ in ()).throw(
        AssertionError("decoded again")))
    second = load_data(cfg)  # served from the memory-mapped cache
    assert torch.equal(first.train.images, second.train.images) and not calls
    (root / "a" / "0.png").write_bytes((root / "b" / "0.png").read_bytes())
    with pytest.raises(AssertionError, match="decoded again"):
        load_data(cfg)  # a changed file changes the key


@pytest.mark.parametrize("setup, expected", [
    ("missing", "does not exist"),
    ("no_classes", "has no class folders"),
    ("empty_class", "class folder .*empty_cls has no images"),
    ("one_class", "expected at least 2"),
    ("zero_byte", "0.png"),
    ("not_image", "broken.jpg"),
    ("too_small", "smaller than data.center_crop=24"),
])
def test_bad_folders_give_one_line_errors(make_tree, tmp_path, setup, expected):
    root = tmp_path / "bad"
    extra = {}
    if setup == "no_classes":
        root.mkdir()
    elif setup == "empty_class":
        make_tree(root=root)
        (root / "empty_cls").mkdir()
    elif setup == "one_class":
        make_tree(classes=("only",), root=root)
    elif setup == "zero_byte":
        make_tree(root=root)
        (root / "a" / "0.png").write_bytes(b"")
    elif setup == "not_image":
        make_tree(root=root)
        (root / "b" / "broken.jpg").write_text("this is not a jpeg")
    elif setup == "too_small":
        make_tree(root=root, size=16)
        extra = {"center_crop": 24}
    with pytest.raises(ReslabError) as err:
        load_data(data_cfg(source="folder", root=str(root), **extra))
    assert err.match(expected) and "\n" not in str(err.value)


def test_skip_bad_skips_and_lists_unreadable_files(make_tree, capsys):
    root = make_tree(per_class=5)
    (root / "a" / "broken.jpg").write_text("not an image")
    (root / "c" / "empty.png").write_bytes(b"")
    data = load_data(data_cfg(source="folder", root=str(root), skip_bad=True, val_fraction=0.0))
    assert len(data.train) == 15
    err = capsys.readouterr().err
    assert "skipped 2 unreadable" in err
    assert "broken.jpg" in err and "empty.png" in err
