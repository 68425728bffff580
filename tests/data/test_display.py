"""Stored values <-> display sRGB, and channel matching for eval/predict."""
import pytest
import torch

from reslab.data import display as D
from reslab.errors import ReslabError


def test_linear_and_log_round_trip_through_display():
    lin = torch.cat([torch.linspace(0, 1, 1001), torch.tensor([0.0031308, 2.0, 8.0])])
    disp = D.to_display(lin, "linear")
    assert D.from_display(disp, "linear") == pytest.approx(lin, abs=1e-6, rel=1e-5)
    assert disp[500].item() == pytest.approx(0.735357, abs=1e-5)  # sRGB encoding of 0.5
    stored_log = torch.log(lin + 1e-4)
    back = D.from_display(D.to_display(stored_log, "log"), "log")
    assert back == pytest.approx(stored_log, abs=1e-4)
    assert D.to_display(lin, "log").isfinite().all()


def test_srgb_is_identity_and_unknown_format_raises():
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(D.to_display(x, "srgb"), x) and torch.equal(D.from_display(x, "srgb"), x)
    with pytest.raises(ReslabError, match="exr"):
        D.to_display(x, "exr")


def test_match_channels_grey_rgb_both_ways():
    grey = torch.tensor([[[[0, 128], [255, 7]]]], dtype=torch.uint8)
    rgb = D.match_channels(grey, 3, "x")
    assert rgb.shape == (1, 3, 2, 2) and torch.equal(rgb[:, 1:2], grey)
    assert torch.equal(D.match_channels(rgb, 1, "x"), grey)  # luma of equal channels
    red = torch.zeros(1, 3, 1, 1, dtype=torch.uint8)
    red[0, 0] = 200
    assert D.match_channels(red, 1, "x").item() == round(200 * 0.299)
    with pytest.raises(ReslabError, match="4 channels"):
        D.match_channels(torch.zeros(1, 4, 2, 2), 3, "src")
