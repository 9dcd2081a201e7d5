"""The generation engine: one resident pipeline per worker process, run in named stages for every job.

``Engine`` (``worker.engine.engine``) holds the pipelines and runs a job's stages; the stages' pieces live beside it:
``family`` (what differs between model families: latents, denoiser, batch recipe), ``batch`` (several jobs in one
denoising pass), ``outpaint`` (Zoom Out, pans, Make Square), ``hooks`` (``--tile``, ``--stop``), ``device`` (device
readiness) and ``generation`` (what a job produces).
"""

from worker.engine.engine import Engine
from worker.engine.generation import Generation, JobCanceled, ProgressCallback, png_bytes

__all__ = ["Engine", "Generation", "JobCanceled", "ProgressCallback", "png_bytes"]
