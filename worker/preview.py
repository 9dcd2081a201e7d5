"""Cheap progress previews: current latents -> a small RGB image without running the VAE decoder."""

from __future__ import annotations

import logging

import torch
from PIL import Image

log = logging.getLogger(__name__)

SD_LATENT_RGB = torch.tensor(
    [
        [0.298, 0.207, 0.208],
        [0.187, 0.286, 0.173],
        [-0.158, 0.189, 0.264],
        [-0.184, -0.271, -0.473],
    ]
)
"""(4, 3) linear map from Stable Diffusion 1.x/2.x VAE latents to approximate RGB in [-1, 1] (a widely used fit)."""


def latents_to_preview(latents: torch.Tensor, max_side: int = 128) -> Image.Image:
    """A grid-shaped preview of ``latents`` (batch, C, h, w): pixels as they are for 3-channel (pixel-space) models,
    a fixed linear projection for 4-channel VAE latents, the first three channels otherwise."""
    with torch.no_grad():
        x = latents.detach().float().cpu()
        if x.shape[1] == 3:
            rgb = x
        elif x.shape[1] == 4:
            rgb = torch.einsum("bchw,cr->brhw", x, SD_LATENT_RGB)
        else:
            rgb = x[:, :3]
        rgb = ((rgb.clamp(-1, 1) + 1) * 127.5).to(torch.uint8)  # (batch, 3, h, w)
        batch, _, height, width = rgb.shape
        columns = 2 if batch > 1 else 1
        rows = -(-batch // columns)
        canvas = torch.zeros(3, rows * height, columns * width, dtype=torch.uint8)
        for index in range(batch):
            row, col = divmod(index, columns)
            canvas[:, row * height : (row + 1) * height, col * width : (col + 1) * width] = rgb[index]
    image = Image.fromarray(canvas.permute(1, 2, 0).numpy(), "RGB")
    scale = max_side / max(image.size)
    if scale < 1:
        image = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))))
    return image
