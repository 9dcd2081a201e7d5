"""The vectors a job's references stand for, in the image encoder's space of the model's reference method: reference
images fetched through the safe fetch (hosts, addresses, sizes, bombs) and embedded; numeric style codes as seeded
random vectors; ``--p`` profiles as the mean embedding of the images a member liked.

Style codes: ``randn(D)`` from a CPU generator seeded with the code, scaled to the encoder's typical embedding norm
(a mid-grey image's), so a code is the same style on every worker and in every job, as Midjourney's codes are.

Profiles (``shared.stores.profiles``): the liked images' vectors under this encoder's fingerprint are read from Redis;
images without one are read from the result store (those expired are skipped), embedded in one batch and stored, so
each image is embedded once per encoder. The profile's vector is the mean of all of them.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import redis
import torch
from PIL import Image
from torch import Tensor

from shared import messages
from shared.errors import ResultExpired, Unsupported
from shared.jobs.spec import Reference
from shared.safety.safe_fetch import FetchPolicy, Resolver, fetch_image, system_resolver
from shared.settings import Settings
from shared.stores import profiles
from shared.stores.images import get_image

log = logging.getLogger(__name__)


class ImageEmbedder(Protocol):
    """A reference method's image encoder (``IpAdapter`` or ``CaptionReferences``)."""

    fingerprint: str
    dimension: int

    def embed(self, images: list[Image.Image]) -> Tensor: ...

    def typical_norm(self) -> float: ...


def style_code_vector(code: str, dimension: int, norm: float) -> Tensor:
    """The seeded random vector (1, D) of a numeric style code (module doc)."""
    generator = torch.Generator(device="cpu").manual_seed(int(code))
    vector = torch.randn(dimension, generator=generator)
    return (vector / vector.norm().clamp_min(1e-6) * norm)[None]


def profile_vector(
    connection: redis.Redis | None, settings: Settings, member: str, embedder: ImageEmbedder
) -> tuple[Tensor, int]:
    """The mean embedding (1, D) of ``member``'s liked images and how many images it is made of (module doc)."""
    if connection is None:
        raise ValueError(f"a --p job needs Redis for the profile of {member}")
    names = profiles.liked(connection, settings, member)
    known = profiles.vectors(connection, settings, member, embedder.fingerprint)
    missing = [name for name in names if name not in known]
    images: list[Image.Image] = []
    found_names: list[str] = []
    for name in missing:
        job_id, index = profiles.parse_image_ref(name)
        try:
            data = get_image(connection, settings, job_id, index)
        except ResultExpired:
            log.info("profile of %s: liked image %s is no longer stored", member, name)
            continue
        images.append(Image.open(io.BytesIO(data)).convert("RGB"))
        found_names.append(name)
    if images:
        embedded = embedder.embed(images)
        fresh = {name: embedded[i].numpy().astype(np.float32) for i, name in enumerate(found_names)}
        profiles.store_vectors(connection, settings, member, embedder.fingerprint, fresh)
        known.update(fresh)
    usable = [known[name] for name in names if name in known]
    if not usable:
        raise Unsupported(messages.profile_images_gone(len(names)))
    stacked = torch.from_numpy(np.stack(usable)).float()  # (images, D)
    return stacked.mean(0, keepdim=True), len(usable)


def reference_vectors(
    reference: Reference,
    embedder: ImageEmbedder,
    settings: Settings,
    connection: redis.Redis | None,
    *,
    resolver: Resolver = system_resolver,
    fetch: Callable[[str, FetchPolicy, Resolver], Image.Image] = fetch_image,
) -> tuple[Tensor, dict[str, Any]]:
    """The vectors (N, D) one reference stands for, and what the record says about it."""
    note: dict[str, Any] = {"kind": reference.kind, "scale": reference.scale, "blocks": reference.blocks}
    if reference.kind == "profile":
        vector, count = profile_vector(connection, settings, reference.code, embedder)
        note["profile_images"] = count
        return vector, note
    pieces: list[Tensor] = []
    if reference.urls:
        policy = FetchPolicy.from_settings(settings)
        images = [fetch(url, policy, resolver) for url in reference.urls]
        pieces.append(embedder.embed(images))
        note["images"] = len(images)
    if reference.code:
        pieces.append(style_code_vector(reference.code, embedder.dimension, embedder.typical_norm()))
        note["code"] = reference.code
    if not pieces:
        raise Unsupported(messages.reference_image_missing(reference.kind))
    return torch.cat(pieces), note
