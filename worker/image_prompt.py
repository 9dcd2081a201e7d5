"""Image prompts: the URLs at the start of a prompt (and Discord attachments, which arrive as CDN URLs) become the
image-to-image init of a grid job.

Every URL goes through ``shared.safe_fetch`` (https, allow-listed host, public address, size/time/pixel caps, content
type). Several images are blended (equal weights) into one init. ``--iw`` sets how much of the image survives:
``JobSpec.strength = 1 - iw x IMAGE_WEIGHT_STRENGTH_STEP`` (resolved in ``shared.resolve``); at strength 1.0
(``--iw 0``) the images are not fetched at all.
"""

from __future__ import annotations

import logging

from PIL import Image

from shared import defaults
from shared.jobs.spec import JobKind, JobSpec
from shared.safety.safe_fetch import FetchPolicy, Resolver, fetch_image, system_resolver
from shared.settings import Settings

log = logging.getLogger(__name__)


def wants_init_image(spec: JobSpec) -> bool:
    """Whether ``spec`` is a grid job whose image prompts shape the result (``--iw`` above 0)."""
    return spec.kind is JobKind.GRID and bool(spec.image_urls) and spec.source is None and spec.strength < 1.0


def init_image(spec: JobSpec, settings: Settings, resolver: Resolver = system_resolver) -> Image.Image | None:
    """The init image of ``spec`` at its size (RGB), or None for jobs without image prompts.

    Raises ``shared.safe_fetch.FetchRefused`` (a ValueError whose text is for the member) when a URL is refused.
    """
    if not wants_init_image(spec):
        return None
    policy = FetchPolicy.from_settings(settings)
    size = (spec.width, spec.height)
    images = [fetch_image(url, policy, resolver).resize(size, Image.Resampling.LANCZOS) for url in spec.image_urls]
    blended = images[0]
    for count, image in enumerate(images[1:], start=2):
        # Running mean: after k images each has weight 1/k.
        blended = Image.blend(blended, image, 1.0 / count)
    log.info("job %s: image prompt from %d image(s), strength %.2f", spec.job_id, len(images), spec.strength)
    return blended


def image_to_describe(spec: JobSpec, settings: Settings, resolver: Resolver = system_resolver) -> Image.Image | None:
    """The image of a /describe job (``image_urls[0]``, fetched safely, RGB, long side at most
    ``DESCRIBE_IMAGE_MAX_SIDE``), or None for other jobs."""
    if spec.kind is not JobKind.DESCRIBE:
        return None
    if not spec.image_urls:
        raise ValueError(f"describe job {spec.job_id} has no image URL")
    image = fetch_image(spec.image_urls[0], FetchPolicy.from_settings(settings), resolver).convert("RGB")
    image.thumbnail((defaults.DESCRIBE_IMAGE_MAX_SIDE, defaults.DESCRIBE_IMAGE_MAX_SIDE), Image.Resampling.LANCZOS)
    return image
