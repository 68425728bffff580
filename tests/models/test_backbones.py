"""tv:/timm: backbones: parameter counts, heads, first-conv adaptation, offline weights."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from reslab.cli import main
from reslab.config import HeadConfig, ModelConfig
from reslab.errors import ReslabError
from reslab.models import build_model, classifier_of, count_params

MLP = HeadConfig(hidden=[1024], dropout=0.3, batchnorm=True)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt is recorded and refused; the test fails if one happened."""
    attempts: list = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield attempts
    assert not attempts, f"network access attempted: {attempts}"


@pytest.fixture
def empty_caches(tmp_path, monkeypatch) -> Path:
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path


def build(arch: str = "tv:resnet18", classes: int = 3, in_chans: int = 3, **kw) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(arch=arch, **kw), classes, in_chans)


def eval_out(model: nn.Module, in_chans: int = 3) -> torch.Tensor:
    x = torch.linspace(-1, 1, 2 * in_chans * 32 * 32).view(2, in_chans, 32, 32)
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("arch, params", [("tv:resnet34", 21_289_802),
                                          ("tv:vgg16", 134_301_514)])
def test_param_counts_equal_torchvision_with_new_classifier(arch, params):
    model = build(arch, classes=10)
    assert count_params(model) == params
    assert classifier_of(model) is model.head and isinstance(model.head, nn.Linear)


def test_vgg_head_is_last_linear_and_mlp_stays_backbone():
    model = build("tv:vgg11", classes=4)
    assert model.head.in_features == 4096 and model.num_features == 4096
    assert isinstance(model.backbone.classifier[6], nn.Identity)
    assert isinstance(model.backbone.classifier[3], nn.Linear)  # fc7 kept


def test_timm_model_gets_reslab_head():
    model = build("timm:resnet18.a1_in1k", classes=5)
    assert count_params(model) == 11_179_077  # timm's resnet18 with a 5-class fc
    assert eval_out(model).shape == (2, 5)


def test_mlp_head_has_seed_layer_order():
    head = build(head=MLP, classes=7).head
    kinds = [type(m) for m in head]
    assert kinds == [nn.Dropout, nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Dropout, nn.Linear]
    assert (head[0].p, head[1].in_features, head[1].out_features) == (0.3, 512, 1024)
    assert (head[3].num_features, head[5].in_features, head[5].out_features) == (1024, 1024, 7)
    two = build(head=HeadConfig(hidden=[64, 32]), classes=7).head
    assert [m.out_features for m in two if isinstance(m, nn.Linear)] == [64, 32, 7]


def test_summary_prints_mlp_head_layers(capsys):
    code = main(["summary", "--set", "model.arch=tv:resnet18", "--set",
                 "model.head={hidden: [64], dropout: 0.3, batchnorm: true}", "--set",
                 "model.num_classes=10", "--set", "data.image_size=32", "--depth", "2"])
    out = capsys.readouterr().out
    assert code == 0
    for layer in ("Dropout", "BatchNorm1d", "head", "total params"):
        assert layer in out


def test_unknown_arch_is_one_line_error():
    for arch in ("tv:nosuchnet", "tv:mobilenet_v2", "timm:nosuchnet", "timm:hf-hub:x/y"):
        with pytest.raises(ReslabError) as err:
            build(arch)
        assert "\n" not in str(err.value) and "model.arch" in str(err.value)


def test_pretrained_true_with_empty_torchvision_cache(empty_caches, no_network):
    with pytest.raises(ReslabError) as err:
        build("tv:resnet34", pretrained=True)
    msg = str(err.value)
    expected = empty_caches / "torch" / "hub" / "checkpoints" / "resnet34-b627a593.pth"
    assert "\n" not in msg and str(expected) in msg and "model.pretrained" in msg


def test_pretrained_true_with_empty_hf_cache(empty_caches, no_network):
    with pytest.raises(ReslabError) as err:
        build("timm:resnet50.a1_in1k", pretrained=True)
    msg = str(err.value)
    folder = empty_caches / "hf" / "hub" / "models--timm--resnet50.a1_in1k"
    assert "\n" not in msg and str(folder) in msg and "model.safetensors" in msg


def test_pretrained_true_reads_torchvision_cache(empty_caches, no_network, capsys):
    torch.manual_seed(1)
    import torchvision

    reference = torchvision.models.resnet18().state_dict()  # ImageNet-shaped: 1000-class fc
    ckpt = empty_caches / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(reference, ckpt)
    model = build("tv:resnet18", pretrained=True)
    assert torch.equal(model.backbone.conv1.weight, reference["conv1.weight"])
    assert torch.equal(model.backbone.layer4[1].bn2.running_var,
                       reference["layer4.1.bn2.running_var"])
    err = capsys.readouterr().err
    assert "fc.weight" in err and "warning" not in err


def test_pretrained_true_reads_hf_cache(empty_caches, no_network):
    import timm

    torch.manual_seed(1)
    reference = timm.create_model("resnet18").state_dict()
    repo = empty_caches / "hf" / "hub" / "models--timm--resnet18.a1_in1k"
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    save_file(reference, str(snapshot / "model.safetensors"))
    model = build("timm:resnet18.a1_in1k", pretrained=True, in_chans=1)
    # timm's own loader adapts the RGB stem to one channel by summing, as reslab does.
    assert torch.allclose(model.backbone.conv1.weight,
                          reference["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(model.backbone.layer1[0].conv1.weight, reference["layer1.0.conv1.weight"])


@pytest.mark.parametrize("suffix", [".pt", ".safetensors", ".pth"])
def test_saved_state_dict_reproduces_outputs(tmp_path, suffix, capsys):
    source = build(head=MLP, classes=3)
    state = source.state_dict()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(state, str(path))
    elif suffix == ".pth":
        torch.save({"model": state, "epoch": 3}, path)  # reslab's best.pt layout
    else:
        torch.save(state, path)
    loaded = build(head=MLP, classes=3, pretrained=str(path))
    assert torch.equal(eval_out(loaded), eval_out(source))
    assert "warning" not in capsys.readouterr().err


def test_head_of_other_class_count_is_dropped_and_reported(tmp_path, capsys):
    source = build(classes=5)
    path = tmp_path / "five.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    with pytest.raises(ReslabError, match="classifier does not fit.*pretrained_strict") as err:
        build(classes=3, pretrained=str(path))  # strict (the default) refuses another head
    assert "\n" not in str(err.value) and str(path) in str(err.value)
    model = build(classes=3, pretrained=str(path), pretrained_strict=False)
    assert torch.equal(model.backbone.conv1.weight, source.backbone.conv1.weight)
    assert model.head.weight.shape == (3, 512)
    err = capsys.readouterr().err
    assert "dropped" in err and "head.weight" in err and "warning" not in err


def test_missing_backbone_keys_give_a_warning(tmp_path, capsys):
    state = build().state_dict()
    del state["backbone.layer1.0.conv1.weight"]
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(ReslabError, match="1 tensors of the model missing.*layer1.0.conv1"):
        build(pretrained=str(tmp_path / "partial.pt"))  # strict (the default) refuses
    build(pretrained=str(tmp_path / "partial.pt"), pretrained_strict=False)
    err = capsys.readouterr().err
    assert "warning" in err and "backbone.layer1.0.conv1.weight" in err


def test_one_channel_input_sums_pretrained_rgb_filters(tmp_path):
    rgb = build(classes=3)
    torch.save(rgb.state_dict(), tmp_path / "rgb.pt")
    gray = build(classes=3, in_chans=1, pretrained=str(tmp_path / "rgb.pt"))
    assert gray.backbone.conv1.in_channels == 1
    assert torch.allclose(gray.backbone.conv1.weight,
                          rgb.backbone.conv1.weight.sum(1, keepdim=True))
    assert eval_out(gray, in_chans=1).shape == (2, 3)


def test_pickled_code_and_foreign_files_are_refused(tmp_path):
    torch.save({"model": {"x": torch.zeros(1)}, "hook": Path("x")}, tmp_path / "code.pt")
    torch.save({"something.else": torch.zeros(3)}, tmp_path / "other.pt")
    for name, words in (("code.pt", "read safely"), ("other.pt", "none of its"),
                        ("absent.pt", "not found")):
        with pytest.raises(ReslabError, match=words) as err:
            build(pretrained=str(tmp_path / name))
        assert "\n" not in str(err.value)
