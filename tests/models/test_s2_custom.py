"""S2's custom ResNet as a user module: its published layer table, its config, training it."""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

from reslab.config import load_config
from reslab.models import build_model, count_params
from reslab.training import train

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "s2-custom-resnet.yaml"
MODULE = ROOT / "examples" / "models" / "s2_resnet.py"
NOTE = ROOT.parent / "shared" / "notes" / "seed-s2-model.md"
TINY_S2 = {"widths": [8, 16, 32], "stem_width": 4, "layers": [1, 2, 1]}

# The rows of ../shared/notes/seed-s2-model.md as published (33-56 and 66-77 left out there).
PUBLISHED = """
Conv2d-1 16,32,32 432 | BatchNorm2d-2 16,32,32 32 | Conv2d-3 64,32,32 9,216
BatchNorm2d-4 64,32,32 128 | Dropout-5 64,32,32 0 | Conv2d-6 64,32,32 36,864
BatchNorm2d-7 64,32,32 128 | Dropout-8 64,32,32 0 | Conv2d-9 64,32,32 4,096
BatchNorm2d-10 64,32,32 128 | Block-11 64,32,32 0 | Conv2d-12 64,32,32 36,864
BatchNorm2d-13 64,32,32 128 | Dropout-14 64,32,32 0 | Conv2d-15 64,32,32 36,864
BatchNorm2d-16 64,32,32 128 | Block-17 64,32,32 0 | Conv2d-18 64,32,32 36,864
BatchNorm2d-19 64,32,32 128 | Dropout-20 64,32,32 0 | Conv2d-21 64,32,32 36,864
BatchNorm2d-22 64,32,32 128 | Block-23 64,32,32 0 | Conv2d-24 128,16,16 73,728
BatchNorm2d-25 128,16,16 256 | Dropout-26 128,16,16 0 | Conv2d-27 128,16,16 147,456
BatchNorm2d-28 128,16,16 256 | Dropout-29 128,16,16 0 | Conv2d-30 128,16,16 16,384
BatchNorm2d-31 128,16,16 256 | Block-32 128,16,16 0 | Conv2d-57 256,8,8 294,912
BatchNorm2d-58 256,8,8 512 | Dropout-59 256,8,8 0 | Conv2d-60 256,8,8 589,824
BatchNorm2d-61 256,8,8 512 | Dropout-62 256,8,8 0 | Conv2d-63 256,8,8 65,536
BatchNorm2d-64 256,8,8 512 | Block-65 256,8,8 0 | AdaptiveAvgPool2d-78 256,1,1 0
Linear-79 10 2,570
"""
Row = tuple[int, str, tuple[int, ...], int]


def published_rows() -> list[Row]:
    rows = []
    for cell in re.split(r"[|\n]", PUBLISHED):
        if cell.strip():
            name, shape, params = cell.split()
            kind, index = name.rsplit("-", 1)
            rows.append((int(index), kind, tuple(int(s) for s in shape.split(",")),
                         int(params.replace(",", ""))))
    return rows


def plain_block(first: int, c: int, hw: int, conv: int) -> list[Row]:
    """A non-first block's 6 rows, the pattern of rows 12-17 (the note's reading)."""
    kinds = [("Conv2d", conv), ("BatchNorm2d", 2 * c), ("Dropout", 0), ("Conv2d", conv),
             ("BatchNorm2d", 2 * c), ("Block", 0)]
    return [(first + i, k, (c, hw, hw), p) for i, (k, p) in enumerate(kinds)]


def full_table() -> list[Row]:
    rows = published_rows()
    rows += [r for b in range(4) for r in plain_block(33 + 6 * b, 128, 16, 147_456)]
    rows += [r for b in range(2) for r in plain_block(66 + 6 * b, 256, 8, 589_824)]
    return sorted(rows)


def test_filled_in_table_is_the_published_one():
    rows = full_table()
    assert [r[0] for r in rows] == list(range(1, 80))
    assert sum(r[3] for r in rows) == 4_934_746  # the published total
    if NOTE.is_file():  # the copy above is the note's text, row for row
        text = NOTE.read_text()
        for index, kind, shape, params in published_rows():
            shown = ", ".join(str(s) for s in shape)
            assert re.search(rf"{kind}-{index}\s+\[-1, {shown}\]\s+{params:,}\b", text)


def summary_rows(out: str) -> list[tuple[str, tuple[int, ...], int]]:
    """(type, output shape without the batch, params) of each torchinfo row."""
    rows = []
    for kind, shape, params in re.findall(r"─(\w+) \(\w+\)\s+\[1, ([\d, ]+)\]\s+([\d,]+|--)",
                                          out):
        rows.append((kind, tuple(int(s) for s in shape.split(", ")),
                     0 if params == "--" else int(params.replace(",", ""))))
    return rows


def test_summary_of_the_example_matches_the_published_table(cli, tmp_path):
    # No data anywhere: classes and size come from the config.
    code, out, err = cli("summary", EXAMPLE, "--set", f"data.root={tmp_path / 'absent'}",
                         "--depth", "3")
    assert code == 0, err
    assert "total params: 4,934,746" in out and "trainable params: 4,934,746" in out
    assert "input 3x32x32, 10 classes" in out
    ours = summary_rows(out)
    expected = [(kind, shape, params) for _, kind, shape, params in full_table()]
    # torchinfo lists a block before its layers (torchsummary after): compare layers in order,
    # and blocks by count per stage.
    layers = [r for r in ours if r[0] not in ("Block", "Sequential")]
    assert layers == [r for r in expected if r[0] != "Block"]
    blocks = [shape for kind, shape, _ in ours if kind == "Block"]
    assert [blocks.count((c, s, s)) for c, s in ((64, 32), (128, 16), (256, 8))] == [3, 5, 3]
    assert len(blocks) == sum(1 for r in expected if r[0] == "Block")


def test_first_block_adds_a_cout_by_cout_projection_of_its_own_output():
    import importlib.util

    spec = importlib.util.spec_from_file_location("s2_resnet_test", MODULE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    block = module.Block(16, 64, 1, True, 0.0).eval()
    assert block.conv3.weight.shape == (64, 64, 1, 1)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        y = block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x)))))
        assert torch.allclose(block(x), torch.relu(y + block.bn3(block.conv3(y))), atol=1e-6)


def test_closest_builtin_config_count():
    cfg = load_config(None, ["model.arch=resnet20", "model.layers=[3,5,3]", "model.width=64",
                             "model.stem_width=16", "model.block_dropout=0.1"]).model
    # S2's first blocks: C_out x C_out 1x1 convs; reslab's: C_in x C_out projections.
    s2_extra = (64 * 64 - 16 * 64) + (128 * 128 - 64 * 128) + (256 * 256 - 128 * 256)
    assert count_params(build_model(cfg, 10, 3)) == 4_934_746 - s2_extra == 4_890_714


def test_example_config_follows_the_note():
    cfg = load_config(EXAMPLE)
    t = cfg.train
    assert (t.optimizer, t.lr, t.weight_decay, t.batch_size) == ("adadelta", 1e-4, 1e-3, 128)
    assert (t.scheduler, t.plateau.monitor, t.plateau.factor, t.plateau.patience) == (
        "plateau", "val_acc", 0.5, 10)
    assert cfg.data.val_fraction == 0.2  # the root: ../shared/data/cifar10/train from the project
    assert cfg.data.root == str(EXAMPLE.parents[2] / "shared" / "data" / "cifar10" / "train")
    assert cfg.model.arch == f"{MODULE}:S2ResNet"


def test_user_module_config_builds_from_another_working_directory(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    shutil.copytree(MODULE.parent, folder / "models")
    shutil.copy(EXAMPLE, folder / "s2.yaml")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = load_config(os.path.join("..", "configs", "s2.yaml"))
    assert cfg.model.arch == f"{folder / 'models' / 's2_resnet.py'}:S2ResNet"
    with torch.device("meta"):  # the real network, without allocating its weights
        assert count_params(build_model(cfg.model, 10, 3)) == 4_934_746


def test_user_module_config_trains_and_its_checkpoint_loads(fast_config, tmp_path, capsys, cli):
    cfg = fast_config(model={"arch": f"{MODULE}:S2ResNet", "kwargs": TINY_S2, "width": None},
                      train={"epochs": 1, "threads": 1})
    result = train(cfg, out=tmp_path / "run", quiet=True)
    assert result["epochs_run"] == 1 and result["params"] > 0
    best = tmp_path / "run" / "best.pt"
    model = build_model(load_config(cfg).model.model_copy(update={"pretrained": str(best)}),
                        10, 1)
    saved = torch.load(best, map_location="cpu", weights_only=True)["model"]
    own = model.state_dict()
    assert own.keys() == saved.keys() and all(torch.equal(own[k], saved[k]) for k in own)
    assert f"loaded {len(own)} of {len(own)} tensors" in capsys.readouterr().err
    code, out, _ = cli("summary", tmp_path / "run" / "config.yaml")
    assert code == 0 and f"total params: {result['params']:,}" in out
