"""A finished job's reproducibility record: what the worker stores with its images, returns as the RQ result and
writes to ``job.json``; buttons, /show, /record, the outbox and the CLI read it back with ``JobRecord.from_dict``.

Records live for ``IMAGE_TTL_S`` (30 days by default), so a record written by an older or newer version must still
read: keys this version does not know are kept in ``other`` and written back unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from shared.jobs.spec import JobSpec

log = logging.getLogger(__name__)


@dataclass
class JobRecord:
    """What a finished job made and how (the spec inside says what was asked)."""

    job_id: str
    spec: JobSpec
    seeds: tuple[int, ...] = ()
    """The seed of each image, in grid order."""
    size: tuple[int, int] = (0, 0)
    """Width and height of each image in pixels."""
    engine: dict[str, Any] = field(default_factory=dict)
    """Model, pipeline, device, dtype and component classes of the worker's engine."""
    worker: dict[str, Any] = field(default_factory=dict)
    """The worker process (pid, engine loads)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per stage (encode_s, denoise_s, decode_s, generate_s, job_s, ...)."""
    notes: dict[str, Any] = field(default_factory=dict)
    """Facts of the run: steps run, token reports, layout, alignment scores, /describe's candidates, ..."""
    files: dict[str, Any] = field(default_factory=dict)
    """Where the result was delivered: local paths, the Discord message, withheld or pending."""
    moderation: dict[str, Any] | None = None
    """The image-moderation verdict when the hook flagged the result."""
    delivery: dict[str, Any] | None = None
    """Set while the result waits in the outbox: how many images and whether behind a spoiler."""
    other: dict[str, Any] = field(default_factory=dict)
    """Keys this version does not know (from another version), kept as they were."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (the spec as ``JobSpec.to_dict``; absent optional parts left out)."""
        data: dict[str, Any] = {
            "job_id": self.job_id,
            "spec": self.spec.to_dict(),
            "seeds": list(self.seeds),
            "size": list(self.size),
            "engine": self.engine,
            "worker": self.worker,
            "timings": self.timings,
            "notes": self.notes,
            "files": self.files,
        }
        if self.moderation is not None:
            data["moderation"] = self.moderation
        if self.delivery is not None:
            data["delivery"] = self.delivery
        return {**self.other, **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobRecord:
        """The inverse of ``to_dict``; a record without a readable spec is a ``ValueError`` naming its keys."""
        raw = data.get("spec")
        if not isinstance(raw, dict):
            raise ValueError(f"job record has no 'spec' object (keys: {sorted(data)})")
        spec = JobSpec.from_dict(raw)
        names = {f.name for f in dataclasses.fields(cls)} - {"other"}
        size = data.get("size") or (0, 0)
        return cls(
            job_id=str(data.get("job_id") or spec.job_id),
            spec=spec,
            seeds=tuple(int(s) for s in data.get("seeds", spec.seeds)),
            size=(int(size[0]), int(size[1])),
            engine=dict(data.get("engine") or {}),
            worker=dict(data.get("worker") or {}),
            timings={str(k): float(v) for k, v in (data.get("timings") or {}).items()},
            notes=dict(data.get("notes") or {}),
            files=dict(data.get("files") or {}),
            moderation=data.get("moderation"),
            delivery=data.get("delivery"),
            other={k: v for k, v in data.items() if k not in names},
        )
