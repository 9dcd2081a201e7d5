"""The coordinate UNet: a plain UNet's weights load unchanged; the coordinate weights make position visible."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from diffusers import UNet2DConditionModel

from training.coord_unet import CoordConv2d, CoordUNet2DConditionModel, coordinate_grid

log = logging.getLogger(__name__)

TINY = {
    "sample_size": 16,
    "in_channels": 3,
    "out_channels": 3,
    "layers_per_block": 1,
    "block_out_channels": (8, 16),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 384,
    "attention_head_dim": 2,
    "norm_num_groups": 4,
}


def call(unet: UNet2DConditionModel, sample: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    states = torch.randn(sample.shape[0], 5, 384)  # (B, tokens, BERT dim)
    with torch.no_grad():
        return unet(sample, torch.tensor([500] * sample.shape[0]), encoder_hidden_states=states).sample


def test_grid_spans_minus_one_to_one_along_each_axis() -> None:
    grid = coordinate_grid(4, 8, torch.device("cpu"), torch.float32)  # (1, 4, H=4, W=8)
    assert grid.shape == (1, 4, 4, 8)
    assert torch.allclose(grid[0, 0, 0], torch.linspace(-0.875, 0.875, 8))  # x along a row
    assert torch.allclose(grid[0, 1, :, 0], torch.linspace(-0.75, 0.75, 4))  # y down a column
    assert torch.equal(grid[0, 0, 0], grid[0, 0, 3]) and torch.equal(grid[0, 1, :, 0], grid[0, 1, :, 7])
    assert torch.equal(grid[0, 2:], grid[0, :2] ** 2)  # squares: high at the edges, low in the middle


def test_plain_weights_load_and_compute_the_same_until_the_coordinates_learn() -> None:
    torch.manual_seed(1)
    plain = UNet2DConditionModel(**TINY).eval()
    coord = CoordUNet2DConditionModel(**TINY).eval()
    coord.load_plain_weights(plain.state_dict())
    assert isinstance(coord.conv_in, CoordConv2d) and coord.config.in_channels == 3
    # conv_in and the proj_in of each attention block (1 down, 1 mid, 2 up)
    assert len(coord.coord_parameters()) == 5
    sample = torch.randn(2, 3, 16, 24)  # any height and width, not only the trained square
    assert torch.equal(call(plain, sample), call(coord, sample))
    for weight in coord.coord_parameters():
        with torch.no_grad():
            weight.normal_()
        assert (call(coord, sample) - call(plain, sample)).abs().mean() > 1e-3
        with torch.no_grad():
            weight.zero_()


def test_first_convolution_adds_a_convolution_of_the_grid() -> None:
    conv = CoordConv2d(3, 2, 3)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.copy_(torch.tensor([0.5, -1.0]))
        conv.coord_weight[0, 0, 1, 1] = 1.0  # output 0: x at the centre tap
        conv.coord_weight[1, 1, 1, 1] = 2.0  # output 1: twice y
    out = conv(torch.randn(3, 3, 6, 10))  # the sample's own weights are zero: only the grid shows
    grid = coordinate_grid(6, 10, torch.device("cpu"), torch.float32)[0]
    assert out.shape == (3, 2, 6, 10)
    assert torch.allclose(out[:, 0], 0.5 + grid[0]) and torch.allclose(out[:, 1], -1.0 + 2 * grid[1])


def test_saved_folder_reloads_as_the_coordinate_class(tmp_path: Path) -> None:
    coord = CoordUNet2DConditionModel(**TINY).eval()
    with torch.no_grad():
        for weight in coord.coord_parameters():
            weight.normal_()
    coord.save_pretrained(str(tmp_path))
    again = CoordUNet2DConditionModel.from_pretrained(str(tmp_path)).eval()
    assert isinstance(again.conv_in, CoordConv2d)
    assert list(again.config.block_out_channels) == [8, 16]
    sample = torch.randn(1, 3, 16, 16)
    assert torch.allclose(call(coord, sample), call(again, sample), atol=1e-5)


def test_loading_something_else_names_the_keys() -> None:
    coord = CoordUNet2DConditionModel(**TINY)
    state = UNet2DConditionModel(**TINY).state_dict()
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"unexpected \['extra.weight'\]"):
        coord.load_plain_weights(state)
