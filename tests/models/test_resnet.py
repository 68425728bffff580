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


# resnet20 (width 16): stem 3->16 3x3 + BN, first block 16->16 with an identity shortcut.
# stem_width 32: stem +432 +32; first conv 32->16 +2,304; a projection 32->16 +512 +32 (BN).
# stem_width 8:  stem -216 -16; first conv 8->16 -1,152; a projection 8->16 +128 +32.
@pytest.mark.parametrize("overrides, expected", [
    (("model.stem_width=16",), 272_474),
    (("model.stem_width=32",), 272_474 + 432 + 32 + 2_304 + 512 + 32),
    (("model.stem_width=8",), 272_474 - 216 - 16 - 1_152 + 128 + 32),
    (("model.stem_width=8", "model.shortcut=zeropad"), 269_722 - 216 - 16 - 1_152),
    (("model.block_dropout=0.3",), 272_474),
])
def test_stem_width_and_block_dropout_param_counts(overrides, expected):
    assert params("model.arch=resnet20", *overrides) == expected


def test_stem_width_is_the_stem_output():
    model = build_model(load_config(None, ["model.stem_width=24"]).model, 10, 3)
    assert model.stem[0][0].out_channels == 24 and model.stages[0][0].conv1[0].in_channels == 24
    with pytest.raises(ReslabError, match="model.stem_width = 32: a zeropad shortcut"):
        params("model.stem_width=32", "model.shortcut=zeropad")


@pytest.mark.parametrize("arch, per_block", [("resnet20", 2), ("resnet50", 3)])
def test_block_dropout_follows_every_conv_bn_in_blocks(arch, per_block):
    cfg = load_config(None, [f"model.arch={arch}", "model.width=4", "model.block_dropout=0.3"])
    model = build_model(cfg.model, 10, 3)
    plain = build_model(cfg.model.model_copy(update={"block_dropout": 0.0}), 10, 3)
    drops = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    blocks = sum(len(stage) for stage in model.stages)
    assert len(drops) == per_block * blocks and all(d.p == 0.3 for d in drops)
    assert model.state_dict().keys() == plain.state_dict().keys()  # checkpoints interchange
    for m in model.modules():  # undo the zero-init of each branch's last BN: branches count
        if isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
    x = torch.randn(4, 3, 16, 16)
    a = model.train()(x)
    assert not torch.equal(a, model(x))  # dropout active while training
    assert torch.equal(model.eval()(x), model(x))


@pytest.mark.parametrize("overrides, words", [
    (("model.arch=resnet20", "model.kwargs={depth: 3}"), "model.kwargs: only for user models"),
    (("model.arch=tv:resnet18", "model.kwargs={x: 1}"), "model.kwargs: only for user models"),
    (("model.arch=tv:resnet18", "model.stem_width=8"), "model.stem_width = 8: only for the CIFAR"),
    (("model.arch=timm:resnet18", "model.block_dropout=0.1"), "model.block_dropout = 0.1: only"),
])
def test_keys_that_do_not_apply_to_the_arch_are_one_line_errors(overrides, words):
    with pytest.raises(ReslabError, match=words) as err:
        load_config(None, list(overrides))
    assert "\n" not in str(err.value)


def test_kwargs_go_to_timm_create_model():
    model = build_model(load_config(None, ["model.arch=timm:resnet18",
                                           "model.kwargs={drop_rate: 0.25}"]).model, 3, 3)
    assert model.backbone.drop_rate == 0.25
    for kwargs, words in (("{num_classes: 3}", "num_classes for timm:resnet18 is set by reslab"),
                          ("{bogus: 1}", "timm:resnet18 does not take them")):
        with pytest.raises(ReslabError, match=f"model.kwargs: {words}") as err:
            build_model(load_config(None, ["model.arch=timm:resnet18",
                                           f"model.kwargs={kwargs}"]).model, 3, 3)
        assert "\n" not in str(err.value)
