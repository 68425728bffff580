"""On the real CIFAR-10 JPEGs in ../shared (skipped when absent)."""

import reslab


def test_resnet20_learns_cifar_subset(tmp_path, cifar_train):
    cfg = {"data": {"source": "folder", "root": str(cifar_train), "max_per_class": 150,
                    "val_fraction": 0.2, "augment": "crop-flip-gray"},
           "model": {"arch": "resnet20"},
           "train": {"epochs": 3, "batch_size": 64, "lr": 0.1, "scheduler": "onecycle",
                     "label_smoothing": 0.1, "tensorboard": False, "report": False,
                     "device": "cpu", "progress": False}}
    result = reslab.train(cfg, out=tmp_path / "run", quiet=True)
    classes = (tmp_path / "run" / "classes.json").read_text()
    assert "airplane" in classes and "truck" in classes
    assert result["best_val_acc"] > 0.2  # chance is 0.1
