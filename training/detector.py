"""A deterministic detector of coloured shapes (no learned model): the judge of prompt adherence.

Pixels that are saturated enough are assigned the nearest palette hue; each colour's 8-connected components above a
minimum area are objects; a component's shape is the nearest prototype in (fill ratio of its bounding box, vertical
offset of its centroid from the box centre), features that separate circle (0.79, 0), square (1.0, 0), triangle
pointing up (0.54, +0.15) and star (0.43, +0.05) at any scale.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from training.scenes import COLOUR_RGB, COLOURS, SHAPES

log = logging.getLogger(__name__)

MIN_SATURATION: float = 0.35
MIN_CHROMA: float = 0.18
MIN_AREA_FRACTION: float = 0.003
"""Smallest component kept, as a fraction of the image area (about 12 pixels at 64x64)."""
SHAPE_PROTOTYPES: np.ndarray = np.array([[0.765, 0.0], [0.985, 0.0], [0.52, 0.15], [0.415, 0.043]])
"""(fill ratio, centroid offset / box height) per shape, measured on the generator's own renderings."""
FEATURE_SCALE: np.ndarray = np.array([1.0, 6.0])
"""Weights of the two features in the L1 distance (the offset separates small stars from triangles)."""


def _hue(rgb: np.ndarray) -> np.ndarray:
    """Hue in degrees [0, 360) of (..., 3) floats."""
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mx, mn = rgb.max(-1), rgb.min(-1)
    d = np.where(mx - mn == 0, 1e-6, mx - mn)
    h = np.where(mx == r, ((g - b) / d) % 6, np.where(mx == g, (b - r) / d + 2, (r - g) / d + 4))
    return (h * 60.0) % 360.0


PALETTE_HUE: np.ndarray = _hue(np.array(COLOUR_RGB))


@dataclass(frozen=True)
class Detection:
    """One detected object: palette colour, shape, pixel area, centroid (x, y) as fractions of width and height."""

    colour: str
    shape: str
    area: int
    x: float
    y: float


def _labels_and_chroma(image: Image.Image | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float32) / 255.0
    mx, mn = rgb.max(-1), rgb.min(-1)
    chroma = mx - mn
    saturated = (chroma / np.maximum(mx, 1e-6) >= MIN_SATURATION) & (chroma >= MIN_CHROMA)
    diff = np.abs(_hue(rgb)[..., None] - PALETTE_HUE)
    nearest = np.minimum(diff, 360 - diff).argmin(-1)
    return np.where(saturated, nearest, -1), chroma


def colour_labels(image: Image.Image | np.ndarray) -> np.ndarray:
    """(H, W) palette index per pixel, -1 for background (unsaturated) pixels."""
    return _labels_and_chroma(image)[0]


def classify_shape(mask: np.ndarray, chroma: np.ndarray) -> str:
    """Shape name of one component: boolean mask (H, W), chroma (H, W) as coverage of anti-aliased edge pixels."""
    ys, xs = np.nonzero(mask)
    cover = chroma[ys, xs]
    cover = np.clip(cover / max(float(np.percentile(cover, 90)), 1e-6), 0, 1)
    core = cover > 0.5
    y0, y1 = ys[core].min(), ys[core].max() + 1
    x0, x1 = xs[core].min(), xs[core].max() + 1
    height = y1 - y0
    fill = float(cover.sum()) / float(height * (x1 - x0))
    offset = ((ys + 0.5) * cover).sum() / cover.sum() - (y0 + y1) / 2
    offset = offset / height
    dist = np.abs((SHAPE_PROTOTYPES - np.array([fill, offset])) * FEATURE_SCALE).sum(-1)
    return SHAPES[int(dist.argmin())]


def detect(image: Image.Image | np.ndarray) -> list[Detection]:
    """Objects in the image, largest first."""
    labels, chroma = _labels_and_chroma(image)
    h, w = labels.shape
    min_area = max(4, round(MIN_AREA_FRACTION * h * w))
    found: list[Detection] = []
    for index, name in enumerate(COLOURS):
        comp, count = ndimage.label(labels == index, structure=np.ones((3, 3), dtype=bool))
        for k in range(1, count + 1):
            mask = comp == k
            area = int(mask.sum())
            if area < min_area:
                continue
            ys, xs = np.nonzero(mask)
            found.append(
                Detection(name, classify_shape(mask, chroma), area, (xs.mean() + 0.5) / w, (ys.mean() + 0.5) / h)
            )
    found.sort(key=lambda d: -d.area)
    return found


def largest_of(detections: list[Detection], colour: str) -> Detection | None:
    """The largest detection of a colour, or None."""
    return next((d for d in detections if d.colour == colour), None)


def red_fraction(image: Image.Image | np.ndarray) -> float:
    """Fraction of pixels labelled red (the `--no red` check)."""
    return float((colour_labels(image) == COLOURS.index("red")).mean())
