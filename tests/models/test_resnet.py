import pytest
import torch

from reslab.config import load_config
from reslab.errors import ReslabError
from reslab.models import build_model, count_params


def params(*overrides, classes=10, chans=3):
    return count_params(build_model(load_config(None, list(overrides)).model, classes, chans))


@pytest.mark.parametrize("overrides, expected", [
    (("model.arch=resnet18", "model.width=42"), 4_815_940),
    (("model.arch=resnet18", "model.width=64"), 11_173_962),
    (("model.arch=resnet20",), 272_474),
    (("model.arch=resnet20", "model.shortcut=zeropad"), 269_722),
    (("model.arch=resnet56",), 855_770),
])
def test_parameter_counts_match_the_published_models(overrides, expected):
    assert params(*overrides) == expected


@pytest.mark.parametrize("overrides", [
    ("model.arch=resnet20",), ("model.arch=resnet18", "model.width=8", "model.pool_size=2"),
    ("model.arch=resnet50", "model.width=8"), ("model.arch=resnet20", "model.kernel_size=5",
                                               "model.stem_kernel=5", "model.dropout=0.2"),
    ("model.arch=resnet20", "model.block=bottleneck", "model.layers=[1,1,1]"),
])
def test_forward_shapes(overrides):
    model = build_model(load_config(None, list(overrides)).model, 7, 3).eval()
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 7)


def test_budget_refusal_names_count_and_budget():
    with pytest.raises(ReslabError) as err:
        params("model.arch=resnet18", "model.width=64", "model.max_params=5000000")
    assert "11,173,962" in str(err.value) and "5,000,000" in str(err.value)
    assert params("model.arch=resnet18", "model.width=42", "model.max_params=5000000") < 5e6


def test_unknown_arch():
    with pytest.raises(ReslabError, match="model.arch = 'resnet7'.*expected one of"):
        params("model.arch=resnet7")


def test_residual_blocks_start_as_identity():
    model = build_model(load_config(None, ["model.arch=resnet20"]).model, 10, 3)
    block = model.stages[0][0]
    assert torch.count_nonzero(block.conv2[1].weight) == 0
