"""Where results go: the publisher interface and the local file publisher.

A worker hands every job's progress and result to a publisher chosen by the job's ``delivery.kind``. Publishers are
idempotent per job: publishing the same job twice must not post twice.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from shared.jobs.record import JobRecord
from shared.jobs.spec import JobSpec

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    """A finished job's images and record, as the engine produced them."""

    spec: JobSpec
    images: list[Image.Image]
    grid: Image.Image | None
    """The 2x2 grid (grid and variation jobs); None for a single upscaled image."""
    record: JobRecord
    """The reproducibility record: resolved parameters, seeds, model, timings, alignment scores."""
    spoiler: bool = False
    """Post the images behind a spoiler (image moderation flagged them; see worker/image_moderation.py)."""
    pngs: list[bytes] | None = None
    """The images as PNG bytes carrying their provenance (``shared.provenance.stamp``), as stored; None: encode."""
    picture_png: bytes | None = None
    """The posted picture (the grid, or the single image) as PNG bytes with its provenance; None: encode."""


class Publisher(Protocol):
    """Delivers progress and results of jobs to members."""

    def progress(self, spec: JobSpec, fraction: float, preview: Image.Image | None) -> bool | None:
        """Called during generation (the caller throttles); ``preview`` is a cheap low-resolution image or None.
        False asks the caller to try again at its next step (not shown now: a rate budget); None or True: done."""

    def publish(self, result: JobResult) -> dict[str, Any]:
        """Deliver a finished job; returns what the job's RQ result should record (paths, message ids)."""
        ...

    def failed(self, spec: JobSpec, message: str) -> None:
        """Tell the member that the job failed, in member-friendly words."""


class LocalPublisher:
    """Writes ``<output_dir>/<job_id>/grid.png``, ``image_<n>.png`` and ``job.json``."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = Path(output_dir)

    def progress(self, spec: JobSpec, fraction: float, preview: Image.Image | None) -> None:
        log.debug("job %s at %.0f%%", spec.job_id, 100 * fraction)

    def publish(self, result: JobResult) -> dict[str, Any]:
        started = time.perf_counter()
        folder = self.output_dir / result.spec.job_id
        folder.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Any] = {"folder": str(folder), "images": []}
        for index, image in enumerate(result.images):
            path = folder / f"image_{index + 1}.png"
            if result.pngs is not None:
                path.write_bytes(result.pngs[index])
            else:
                image.save(path)
            paths["images"].append(str(path))
        if result.grid is not None:
            grid_path = folder / "grid.png"
            if result.picture_png is not None:
                grid_path.write_bytes(result.picture_png)
            else:
                result.grid.save(grid_path)
            paths["grid"] = str(grid_path)
        record = result.record.to_dict()
        record["files"] = paths
        record["timings"] = {**record["timings"], "publish_s": time.perf_counter() - started}
        # Written last and atomically, so a reader that sees job.json sees every image.
        tmp = folder / "job.json.tmp"
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
        tmp.replace(folder / "job.json")
        return paths

    def failed(self, spec: JobSpec, message: str) -> None:
        log.warning("job %s failed: %s", spec.job_id, message)
