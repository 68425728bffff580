"""`model.pretrained: PATH` for CIFAR ResNets and user models: exact loads, strictness, errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from reslab.config import ModelConfig, load_config
from reslab.errors import ReslabError
from reslab.models import build_model

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
S2 = f"{EXAMPLES / 'models' / 's2_resnet.py'}:S2ResNet"
TINY_S2 = {"widths": [8, 16, 32], "stem_width": 4, "layers": [1, 2, 1]}


pytestmark = pytest.mark.usefixtures("one_thread")


def build(classes: int = 10, in_chans: int = 3, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    kw = {"arch": "resnet20", "width": 8, **kw}
    return build_model(ModelConfig(**kw), classes, in_chans)


def trained_like(model: nn.Module) -> nn.Module:
    """Distinct weights and BatchNorm statistics, as a trained model has."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=gen) + 0.5)
    return model


def save_checkpoint(model: nn.Module, path: Path) -> Path:
    """reslab's best.pt/last.pt layout: plain tensors and builtins, `model` among other keys."""
    torch.save({"model": model.state_dict(), "optimizer": {"state": {}, "param_groups": []},
                "epoch": 3, "best": 0.5, "norm": {"mean": torch.zeros(3), "std": torch.ones(3)},
                "classes": [str(i) for i in range(10)], "config": {"model": {"arch": "x"}}},
               path)
    return path


def outputs(model: nn.Module, in_chans: int = 3) -> torch.Tensor:
    x = torch.linspace(-1, 1, 2 * in_chans * 16 * 16).view(2, in_chans, 16, 16)
    with torch.no_grad():
        return model.eval()(x)


def one_line_naming(err: pytest.ExceptionInfo, path: Path) -> None:
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and msg.startswith("model.pretrained")


def test_reslab_checkpoint_loads_exactly_into_a_cifar_resnet(tmp_path, capsys):
    source = trained_like(build(seed=1))
    path = save_checkpoint(source, tmp_path / "best.pt")
    loaded = build(seed=2, pretrained=str(path))
    assert torch.equal(outputs(loaded), outputs(source))
    own = loaded.state_dict()
    assert all(torch.equal(own[k], v) for k, v in source.state_dict().items())
    err = capsys.readouterr().err
    assert f"loaded {len(own)} of {len(own)} tensors from {path}" in err and "warning" not in err


def test_pretrained_is_loaded_for_user_models(tmp_path):
    source = trained_like(build(arch=S2, kwargs=TINY_S2))
    torch.save(source.state_dict(), tmp_path / "s2.pt")
    loaded = build(seed=3, arch=S2, kwargs=TINY_S2, pretrained=str(tmp_path / "s2.pt"))
    assert torch.equal(outputs(loaded), outputs(source))


def test_missing_file_is_a_one_line_error(tmp_path):
    with pytest.raises(ReslabError, match="file not found") as err:
        build(pretrained=str(tmp_path / "absent.pt"))
    one_line_naming(err, tmp_path / "absent.pt")


@pytest.mark.parametrize("other", [{"width": 16}, {"arch": S2, "kwargs": TINY_S2}])
def test_another_architecture_is_refused_even_when_not_strict(tmp_path, other):
    torch.save(build(**other).state_dict(), tmp_path / "other.pt")
    for strict in (True, False):
        with pytest.raises(ReslabError, match="none of its .* fits this model") as err:
            build(pretrained=str(tmp_path / "other.pt"), pretrained_strict=strict)
        one_line_naming(err, tmp_path / "other.pt")


def test_head_of_another_size_is_an_error_when_strict(tmp_path):
    path = save_checkpoint(build(classes=10), tmp_path / "ten.pt")
    with pytest.raises(ReslabError, match=r"fc\.weight: file \[10, 32\], model \[3, 32\]") as err:
        build(classes=3, pretrained=str(path))
    one_line_naming(err, path)
    assert "pretrained_strict: false" in str(err.value)


def test_not_strict_loads_the_rest_and_reinitialises_the_head(tmp_path, capsys):
    source = trained_like(build(classes=10, seed=1))
    path = save_checkpoint(source, tmp_path / "ten.pt")
    fresh = build(classes=3, seed=5)
    loaded = build(classes=3, seed=5, pretrained=str(path), pretrained_strict=False)
    assert torch.equal(loaded.stem[0][0].weight, source.stem[0][0].weight)
    assert torch.equal(loaded.stages[2][2].conv2[1].running_var,
                       source.stages[2][2].conv2[1].running_var)
    assert torch.equal(loaded.fc.weight, fresh.fc.weight)  # its own fresh initialisation
    err = capsys.readouterr().err
    assert "re-initialised" in err and "fc.weight" in err and "warning" not in err


def test_not_strict_loads_what_fits_and_lists_the_rest(tmp_path, capsys):
    source = trained_like(build(seed=1))  # resnet20: 3 blocks per stage
    torch.save(source.state_dict(), tmp_path / "r20.pt")
    with pytest.raises(ReslabError, match="does not fit this model exactly") as err:
        build(arch="resnet32", pretrained=str(tmp_path / "r20.pt"))
    one_line_naming(err, tmp_path / "r20.pt")
    loaded = build(arch="resnet32", pretrained=str(tmp_path / "r20.pt"), pretrained_strict=False)
    assert torch.equal(loaded.stages[1][2].conv1[0].weight, source.stages[1][2].conv1[0].weight)
    assert torch.equal(loaded.fc.weight, source.fc.weight)
    err = capsys.readouterr().err
    assert "warning" in err and "stages.0.3.conv1.0.weight" in err
    assert f"from {tmp_path / 'r20.pt'}" in err


def test_rgb_file_adapts_the_stem_to_one_channel(tmp_path, capsys):
    source = trained_like(build(seed=1))
    torch.save(source.state_dict(), tmp_path / "rgb.pt")
    gray = build(in_chans=1, pretrained=str(tmp_path / "rgb.pt"))
    assert torch.allclose(gray.stem[0][0].weight, source.stem[0][0].weight.sum(1, keepdim=True))
    assert "adapted from 3 to 1 input channels" in capsys.readouterr().err


def test_pretrained_true_is_refused_outside_library_archs():
    for arch in ("resnet20", f"{S2}"):
        with pytest.raises(ReslabError, match="model.pretrained = True: true loads a library"):
            load_config({"model": {"arch": arch, "pretrained": True}})
