"""Inpaint masks (Vary (Region)): what a member painted, read safely, checked, scaled to the job's size and carried in
the job spec as a small base64 PNG (white = repaint), so the mask is stored with the job's record.

The web companion's editor sends a PNG at the size of the image it showed (an upscale, usually larger than the grid
image the job repaints); ``read_painted`` refuses anything else with a member-facing ``MaskRefused`` (not a PNG, too
large, the wrong size, nothing painted), and ``job_mask`` scales it to the job's size keeping every touched pixel
(a job pixel is repainted when any painted pixel falls in it), so the region is never smaller than what was painted.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging

from PIL import Image

from shared import defaults, messages
from shared.errors import MemberFacingError

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
"""The first eight bytes of every PNG file."""

DATA_URL_PREFIX = "data:image/png;base64,"
"""How a canvas's ``toDataURL('image/png')`` starts."""


class MaskRefused(MemberFacingError):
    """A painted mask that cannot be used: the sentence says why (wrong size, empty, not a PNG)."""


def decode_data_url(value: str) -> bytes:
    """PNG bytes of a ``data:image/png;base64,...`` URL (or of bare base64); ``MaskRefused`` if it is not one."""
    text = value.strip()
    text = text.removeprefix(DATA_URL_PREFIX)
    if len(text) > defaults.WEB_MASK_MAX_BYTES * 4 // 3 + 4:
        raise MaskRefused(messages.mask_too_large(defaults.WEB_MASK_MAX_BYTES))
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MaskRefused(messages.MASK_NOT_PNG) from None
    return data


def read_painted(data: bytes, expected: tuple[int, int]) -> Image.Image:
    """The painted mask as a mode ``1`` image (True = repaint) of size ``expected`` (width, height), from PNG
    ``data``; ``MaskRefused`` naming the problem if it is not a PNG, is over the size limits, has another size, or
    has nothing painted. The size is read from the header before any pixel is decoded (no decompression bombs)."""
    if len(data) > defaults.WEB_MASK_MAX_BYTES:
        raise MaskRefused(messages.mask_too_large(defaults.WEB_MASK_MAX_BYTES))
    if not data.startswith(PNG_SIGNATURE):
        raise MaskRefused(messages.MASK_NOT_PNG)
    try:
        image = Image.open(io.BytesIO(data), formats=["PNG"])
        size = image.size
        if size != expected:
            raise MaskRefused(messages.mask_wrong_size(size, expected))
        image.load()
    except MaskRefused:
        raise
    except (OSError, ValueError, Image.DecompressionBombError):
        raise MaskRefused(messages.MASK_NOT_PNG) from None
    painted = _painted(image)
    if painted.getbbox() is None:
        raise MaskRefused(messages.MASK_EMPTY)
    return painted


def _painted(image: Image.Image) -> Image.Image:
    """Mode ``1``: a pixel is painted when it is bright (white strokes) and, where the PNG has alpha, not
    transparent (a canvas exports unpainted pixels as transparent black)."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        light = rgba.convert("L").point(lambda v: 255 if v > 127 else 0)
        alpha = rgba.getchannel("A").point(lambda v: 255 if v > 127 else 0)
        return Image.composite(light, Image.new("L", image.size, 0), alpha).convert("1")
    return image.convert("L").point(lambda v: 255 if v > 127 else 0).convert("1")


def job_mask(painted: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``painted`` (mode ``1``) at the job's ``size`` (width, height): a job pixel is masked when any painted pixel
    falls in it (a box filter's mean above 0), so scaling never shrinks the region."""
    if painted.size == size:
        return painted.convert("1")
    grey = painted.convert("L").resize(size, Image.Resampling.BOX)
    return grey.point(lambda v: 255 if v > 0 else 0).convert("1")


def encode(mask: Image.Image) -> str:
    """A mask as carried in ``JobSpec.mask``: base64 of a 1-bit PNG (a few hundred bytes for a typical region)."""
    buffer = io.BytesIO()
    mask.convert("1").save(buffer, format="PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def decode(value: str, size: tuple[int, int]) -> Image.Image:
    """The mask of a spec (mode ``L``, 255 = repaint) at ``size``; ``ValueError`` naming what is wrong if the spec's
    mask is missing, unreadable or of another size (a bad payload must not half-run)."""
    if not value:
        raise ValueError("an inpaint job needs a mask, got an empty one")
    try:
        image = Image.open(io.BytesIO(base64.b64decode(value, validate=True)), formats=["PNG"])
        image.load()
    except (binascii.Error, OSError, ValueError) as exc:
        raise ValueError(f"the inpaint mask is not a base64 PNG: {exc}") from exc
    if image.size != size:
        raise ValueError(f"the inpaint mask is {image.size[0]}x{image.size[1]}, the job is {size[0]}x{size[1]}")
    return image.convert("L").point(lambda v: 255 if v > 127 else 0)


def coverage(mask: Image.Image) -> float:
    """The fraction of pixels a mask repaints (0-1), for the record and the result line."""
    histogram = mask.convert("L").histogram()
    total = mask.size[0] * mask.size[1]
    return sum(histogram[128:]) / total if total else 0.0
