"""Progress of a running job: every denoising step into the RQ job's meta (the CLI and /info read it), and throttled
low-resolution previews to the job's publisher (Discord progress edits)."""

from __future__ import annotations

import logging
import time

import torch
from rq.job import Job

from shared.jobs.spec import JobSpec
from shared.queue import meta
from worker.preview import latents_to_preview
from worker.publisher import Publisher

log = logging.getLogger(__name__)


class ProgressReporter:
    """Writes progress into the RQ job's meta every step and hands throttled previews to the publisher."""

    def __init__(self, job: Job | None, publisher: Publisher, spec: JobSpec, every_s: float) -> None:
        self.job = job
        self.publisher = publisher
        self.spec = spec
        self.every_s = every_s
        self._last_publish: float | None = None
        """monotonic() of the last preview; None until the first (shown at once, whatever the clock reads)."""

    def phase(self, name: str) -> None:
        """Record what the worker does now."""
        if self.job is not None:
            meta.set_phase(self.job, name)

    def __call__(self, done: int, total: int, latents: torch.Tensor | None) -> None:
        """After a denoising step: ``done`` of ``total`` steps, the current latents (batch, C, h, w) or None."""
        if self.job is not None:
            meta.set_progress(self.job, done, total)
        now = time.monotonic()
        due = self._last_publish is None or now - self._last_publish >= self.every_s
        if done < total and due:
            preview = latents_to_preview(latents) if latents is not None else None
            # False: the channel's shared edit budget had no room now; ask again at the next step, with fresher
            # progress (coalescing: a step's state is never queued, the newest one is shown when there is room).
            if self.publisher.progress(self.spec, done / max(total, 1), preview) is not False:
                self._last_publish = now
