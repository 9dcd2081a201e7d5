"""Compose the 2x2 grid that members see."""

from __future__ import annotations

import logging

from PIL import Image

log = logging.getLogger(__name__)


def compose_grid(images: list[Image.Image], columns: int = 2) -> Image.Image:
    """Images in reading order on a grid with no gaps (any aspect ratio; all images must share one size)."""
    if not images:
        raise ValueError("compose_grid needs at least one image, got 0")
    width, height = images[0].size
    for index, image in enumerate(images):
        if image.size != (width, height):
            raise ValueError(f"image {index + 1} is {image.size[0]}x{image.size[1]}, expected {width}x{height}")
    rows = -(-len(images) // columns)
    grid = Image.new("RGB", (columns * width, rows * height))
    for index, image in enumerate(images):
        grid.paste(image.convert("RGB"), ((index % columns) * width, (index // columns) * height))
    return grid
