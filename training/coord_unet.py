"""The shipped model's denoiser: a diffusers ``UNet2DConditionModel`` that also sees where each pixel is.

Convolutions and cross-attention are translation-equivariant, so a plain UNet can learn *what* a caption names but
hardly *where*: after 4 M training scenes the shipped model put a one-object prompt in the named third of the image
14% of the time (chance: 11%) and got "to the left of" right no better than a coin.

Here every attention block's input projection (``proj_in``, 1x1) and the first convolution (``conv_in``) also take
coordinate features of the pixel: x and y from -1 to 1 across the image, and their squares, so that a linear map can
single out an edge, a corner or the middle (CoordConv, Liu et al. 2018). At the attention blocks they shift each
pixel's query by a learned function of its position, the ingredient that cross-attention lacks for binding "on the
left" to the left of the image.

Two things that do not help, measured on the shipped weights: coordinates only at ``conv_in`` (their weights stayed
near zero for 600 CPU steps: they must pass every block before they meet the words), and position maps steered by a
pooled prompt vector (the BERT's pooled vectors of "a red circle on the left" and "... on the right" have cosine
0.984-0.998 for mean, masked mean, max and [CLS] pooling, so the position words hardly reach them). The binding of
colour to place has to happen at token level, in cross-attention, and needs GPU-scale training (docs/model-card.md).

The coordinate weights are separate zero-initialised parameters (``*.coord_weight``): a UNet trained without them
loads unchanged (``load_plain_weights``) and computes exactly what it computed before. ``in_channels`` stays 3, so
pipelines and the engine size their latents and call ``unet(sample, t, ...)`` as for any other model; the features
are made inside, for whatever height and width each level has.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import Transformer2DModel, UNet2DConditionModel
from torch import nn

from worker.shapes_pipeline import register_unet_class

log = logging.getLogger(__name__)

COORD_FEATURES = 4
"""Coordinate features per pixel: x (left -1 to right 1), y (top -1 to bottom 1), x squared, y squared."""


def coordinate_grid(height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(1, 4, H, W): x, y at pixel centres, each spanning [-1, 1] across its own axis, then x**2 and y**2."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width * 2 - 1
    x, y = xs[None, :].expand(height, width), ys[:, None].expand(height, width)
    return torch.stack([x, y, x * x, y * y])[None].to(dtype)


class CoordConv2d(nn.Conv2d):
    """``nn.Conv2d`` (stride 1, "same" padding) on the input plus a convolution of the coordinate features (x, y,
    x**2, y**2) with ``coord_weight`` ((out, 4, k, k), zero at first)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=(kernel_size - 1) // 2)
        self.coord_weight = nn.Parameter(torch.zeros(out_channels, COORD_FEATURES, kernel_size, kernel_size))

    @classmethod
    def replacing(cls, conv: nn.Conv2d) -> CoordConv2d:
        """An empty CoordConv2d of ``conv``'s shape (weights are loaded afterwards)."""
        if conv.stride != (1, 1) or conv.kernel_size[0] != conv.kernel_size[1]:
            raise ValueError(f"conv must be square with stride 1, got {conv}")
        return cls(conv.in_channels, conv.out_channels, int(conv.kernel_size[0]))

    def forward(self, sample: torch.Tensor) -> torch.Tensor:
        grid = coordinate_grid(sample.shape[-2], sample.shape[-1], sample.device, sample.dtype)  # (1, 4, H, W)
        coords = F.conv2d(grid, self.coord_weight.to(sample.dtype), padding=self.padding)  # (1, out, H, W)
        return super().forward(sample) + coords  # broadcast over the batch


class CoordUNet2DConditionModel(UNet2DConditionModel):
    """``UNet2DConditionModel`` whose ``conv_in`` and attention ``proj_in`` are ``CoordConv2d``; same config, same
    call."""

    conv_in: nn.Conv2d

    # wraps: diffusers reads the accepted config keys from the signature of __init__ (ConfigMixin._get_init_keys)
    @functools.wraps(UNet2DConditionModel.__init__)  # type: ignore[misc]  # mypy cannot type a wrapped __init__
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conv_in = CoordConv2d.replacing(self.conv_in)
        for name, module in list(self.named_modules()):
            if isinstance(module, Transformer2DModel):
                if not isinstance(module.proj_in, nn.Conv2d):  # use_linear_projection works on (B, HW, C): no grid
                    raise ValueError(f"{name}.proj_in must be a Conv2d (use_linear_projection=False)")
                module.proj_in = CoordConv2d.replacing(module.proj_in)

    def coord_parameters(self) -> list[nn.Parameter]:
        """The coordinate weights (what a plain UNet lacks), for their own learning rate."""
        return [p for n, p in self.named_parameters() if n.endswith("coord_weight")]

    def load_plain_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Load a plain ``UNet2DConditionModel``'s state dict; the coordinate weights are set to zero."""
        missing, unexpected = self.load_state_dict(state, strict=False)
        if unexpected or not missing or any(not key.endswith("coord_weight") for key in missing):
            raise ValueError(
                f"state is not a plain UNet2DConditionModel of this config: missing {missing}, unexpected {unexpected}"
            )
        with torch.no_grad():
            for weight in self.coord_parameters():
                weight.zero_()


# Model folders that training writes with this denoiser load through ShapesPipeline in training and evaluation; the
# worker never imports this module, so a served model cannot name it.
register_unet_class(CoordUNet2DConditionModel)
