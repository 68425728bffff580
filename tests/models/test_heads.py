"""Every model kind owns its head (timm's convention), and freezing asks the model for it."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from reslab.config import HeadConfig, ModelConfig
from reslab.errors import ReslabError
from reslab.models import (
    build_model,
    classifier_of,
    freeze_backbone,
    require_classifier,
    split_parameters,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
S2 = f"{EXAMPLES / 'models' / 's2_resnet.py'}:S2ResNet"
TINY_S2 = {"widths": [8, 16, 32], "stem_width": 4, "layers": [1, 2, 1]}
# One of each kind reslab builds: CIFAR basic/bottleneck, torchvision ResNet/VGG, timm, user.
KINDS = {
    "cifar-basic": {"arch": "resnet20", "width": 8, "dropout": 0.2},
    "cifar-bottleneck": {"arch": "resnet50", "width": 4},
    "tv-resnet": {"arch": "tv:resnet18", "head": HeadConfig(hidden=[16], batchnorm=True)},
    "tv-vgg": {"arch": "tv:vgg11"},
    "timm": {"arch": "timm:resnet18"},
    "user": {"arch": S2, "kwargs": TINY_S2},
}
USER_MODULE = '''
import torch
from torch import nn

class WithFc(nn.Module):
    def __init__(self, num_classes=10, in_chans=3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(in_chans, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4, num_classes)

    def forward(self, x):
        return self.fc(self.body(x))

class Headless(WithFc):
    def __init__(self, num_classes=10, in_chans=3):
        super().__init__(num_classes, in_chans)
        self.out = self.fc
        del self.fc

    def forward(self, x):
        return self.out(self.body(x))
'''


pytestmark = pytest.mark.usefixtures("one_thread")


def build(kind: str, classes: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(**KINDS[kind]), classes, 3)


def user_model(tmp_path: Path, name: str) -> nn.Module:
    (tmp_path / "nets.py").write_text(USER_MODULE)
    return build_model(ModelConfig(arch=f"{tmp_path / 'nets.py'}:{name}"), 3, 3)


def images(n: int = 2) -> torch.Tensor:
    return torch.linspace(-1, 1, n * 3 * 32 * 32).view(n, 3, 32, 32)


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_classifier_is_the_linear_that_produces_the_logits(kind):
    model = build(kind).eval()
    head = model.get_classifier()
    assert classifier_of(model) is head
    last = [m for m in head.modules() if isinstance(m, nn.Linear)][-1]
    assert last.out_features == 5
    seen = []
    last.register_forward_hook(lambda m, i, out: seen.append(out))
    with torch.no_grad():
        logits = model(images())
    assert len(seen) == 1 and torch.equal(seen[0], logits)


@pytest.mark.parametrize("kind", KINDS)
def test_forward_head_of_forward_features_is_forward(kind):
    model = build(kind).eval()
    x = images()
    with torch.no_grad():
        features = model.forward_features(x)
        assert features.ndim == 4  # the feature map, before pooling (timm's convention)
        assert close(model.forward_head(features), model(x))
        pooled = model.forward_head(features, pre_logits=True)
    assert pooled.shape == (2, model.num_features)


@pytest.mark.parametrize("kind", ["tv-resnet", "tv-vgg", "timm"])
def test_split_reproduces_the_library_forward(kind):
    model = build(kind).eval()
    x = images()
    with torch.no_grad():  # the library's own forward, its classifier removed
        assert close(model.forward_head(model.forward_features(x)), model.head(model.backbone(x)))


@pytest.mark.parametrize("kind", KINDS)
def test_reset_classifier_changes_the_output_size(kind):
    model = build(kind).eval()
    model.reset_classifier(7)
    with torch.no_grad():
        assert model(images()).shape == (2, 7)
    assert classifier_of(model) is model.get_classifier()


@pytest.mark.parametrize("kind", ["cifar-basic", "tv-resnet", "user"])
def test_frozen_backbone_leaves_only_the_head_trainable(kind):
    model = build(kind).train()
    freeze_backbone(model, True)
    head = model.get_classifier()
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in head.parameters()} and trainable
    in_head = {id(m) for m in head.modules()}
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert all(not m.training for m in norms if id(m) not in in_head)
    assert all(m.training for m in norms if id(m) in in_head)  # the MLP head's BatchNorm1d
    freeze_backbone(model, False)
    assert all(p.requires_grad for p in model.parameters())


def test_split_parameters_names_the_head():
    head, backbone = split_parameters(build("cifar-basic"))
    assert [n for n, _ in head] == ["fc.weight", "fc.bias"]
    assert backbone and not any(n.startswith("fc.") for n, _ in backbone)


def test_user_model_without_get_classifier_falls_back_to_fc(tmp_path):
    model = user_model(tmp_path, "WithFc")
    assert classifier_of(model) is model.fc
    freeze_backbone(model, True)
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight",
                                                                          "fc.bias"]


def test_user_model_without_a_head_is_a_one_line_error_only_when_needed(tmp_path):
    model = user_model(tmp_path, "Headless")
    assert classifier_of(model) is None
    head, backbone = split_parameters(model)  # plain training needs no head
    assert not head and len(backbone) == len(list(model.parameters()))
    freeze_backbone(model, False)
    for call in (lambda: freeze_backbone(model, True),
                 lambda: split_parameters(model, "train.backbone_lr_scale"),
                 lambda: require_classifier(model, "train.freeze_backbone_epochs")):
        with pytest.raises(ReslabError, match=r"^train\.\w+: .*Headless.*get_classifier") as err:
            call()
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("kind", ["cifar-basic", "user"])
def test_an_mlp_head_on_a_family_that_takes_none_is_one_line(kind):
    """README's config reference: MLP heads for tv:/timm: backbones only; built-in CIFAR
    ResNets and user modules refuse one instead of ignoring it."""
    cfg = ModelConfig(**{**KINDS[kind], "head": HeadConfig(hidden=[16])})
    with pytest.raises(ReslabError, match=r"^model\.head: MLP heads are supported for tv:/timm: "
                                          r"backbones; ") as err:
        build_model(cfg, 10, 3)
    assert "\n" not in str(err.value)
