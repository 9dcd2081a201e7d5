"""Cost of progress previews: a job with a preview every step vs none, side by side, and time to the first preview.

The preview is ``worker.preview.latents_to_preview`` (a linear latent->RGB projection for VAE latents, the pixels
themselves for pixel-space models), PNG-encoded as a publisher would upload it. Both modes run the same engine path
with a ``ProgressReporter``; only its throttle differs (0 s: every step; infinite: never). Rounds alternate, so both
modes see the same machine load::

    python bench/preview.py --model models/imagine-shapes --steps 20 --rounds 3
    python bench/preview.py --model tiny --steps 4 --rounds 1
"""

from __future__ import annotations

import argparse
import io
import logging
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from shared import defaults
from shared.jobs.spec import JobSpec
from worker.engine import Engine
from worker.preview import latents_to_preview
from worker.publisher import JobResult
from worker.tasks import ProgressReporter

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger(__name__)


@dataclass
class PreviewSink:
    """A publisher that PNG-encodes every preview (the upload a Discord edit carries) and notes when it came."""

    started: float = 0.0
    arrivals: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    in_callbacks_s: float = 0.0
    """Seconds the job spent in the progress path (preview projection, PNG, publisher)."""

    def progress(self, spec: JobSpec, fraction: float, preview: Image.Image | None) -> None:
        if preview is not None:
            buffer = io.BytesIO()
            preview.save(buffer, format="PNG")
            self.sizes.append(len(buffer.getvalue()))
        self.arrivals.append(time.perf_counter() - self.started)

    def publish(self, result: JobResult) -> dict[str, Any]:
        return {}

    def failed(self, spec: JobSpec, message: str) -> None:
        log.warning("job %s failed: %s", spec.job_id, message)


@dataclass
class Figures:
    """Medians over rounds."""

    with_previews_s: float
    without_s: float
    first_preview_s: float
    previews_per_job: int
    preview_ms: float
    full_decode_ms: float
    in_job_fraction: float
    """Time inside the progress path / job time, with a preview every step (insensitive to machine load)."""

    @property
    def slowdown(self) -> float:
        return self.with_previews_s / self.without_s - 1

    @property
    def first_fraction(self) -> float:
        return self.first_preview_s / self.with_previews_s


def load_engine(model: str, device: str) -> Engine:
    if model == "tiny":
        from tests.tiny_models import build_tiny_sd

        model = str(build_tiny_sd(Path(tempfile.mkdtemp(prefix="bench-preview-")) / "tiny-sd"))
    return Engine.load(model, device, "auto")


def make_spec(engine: Engine, index: int, steps: int, size: int) -> JobSpec:
    prompt = f"a red circle, take {index}"
    return JobSpec.for_prompt(
        prompt,
        seed=7 + index,
        width=size,
        height=size,
        steps=steps,
        guidance=7.5,
        job_id=f"preview{index}",
        owner="bench",
    )


def run_job(engine: Engine, spec: JobSpec, every_s: float) -> tuple[float, PreviewSink]:
    sink = PreviewSink()
    reporter = ProgressReporter(None, sink, spec, every_s)

    def timed(done: int, total: int, latents: torch.Tensor | None) -> None:
        started = time.perf_counter()
        reporter(done, total, latents)
        sink.in_callbacks_s += time.perf_counter() - started

    sink.started = time.perf_counter()
    engine.generate(spec, on_progress=timed)
    return time.perf_counter() - sink.started, sink


def preview_costs(engine: Engine, size: int, repeats: int = 20) -> tuple[float, float]:
    """Milliseconds for one grid preview (projection + PNG) and for a full decode of the same latents."""
    pipe = engine.pipes.text2img
    channels, height, width = engine.latent_shape(size, size)
    latents = torch.randn(defaults.IMAGES_PER_GRID, channels, height, width, generator=torch.Generator().manual_seed(0))
    latents = latents.to(engine.pipes.device, engine.pipes.dtype)
    started = time.perf_counter()
    for _ in range(repeats):
        latents_to_preview(latents).save(io.BytesIO(), format="PNG")
    preview_ms = 1000 * (time.perf_counter() - started) / repeats
    started = time.perf_counter()
    with torch.inference_mode():
        for _ in range(max(1, repeats // 4)):
            vae = getattr(pipe, "vae", None)
            if vae is not None:
                vae.decode(latents / vae.config.scaling_factor, return_dict=False)
            else:
                pipe.decode(latents, "pil")
    decode_ms = 1000 * (time.perf_counter() - started) / max(1, repeats // 4)
    return preview_ms, decode_ms


def main(argv: list[str] | None = None) -> Figures:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / defaults.DEFAULT_MODEL), help="model folder or 'tiny'")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=0, help="square side (default: the model's native)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    engine = load_engine(args.model, args.device)
    pipe = engine.pipes.text2img
    size = args.size or int(pipe.unet.config.sample_size) * int(getattr(pipe, "vae_scale_factor", 1) or 1)
    run_job(engine, make_spec(engine, 0, 2, size), 0.0)  # warm-up
    with_previews, without, first, counts, inside = [], [], [], [], []
    for index in range(args.rounds):
        spec = make_spec(engine, 1 + index, args.steps, size)
        engine.generate(spec)  # the prompt's encoding is cached for both modes
        for every_s in (0.0, float("inf")) if index % 2 == 0 else (float("inf"), 0.0):
            seconds, sink = run_job(engine, spec, every_s)
            if every_s == 0.0:
                with_previews.append(seconds)
                first.append(sink.arrivals[0])
                counts.append(len(sink.sizes))
                inside.append(sink.in_callbacks_s / seconds)
            else:
                without.append(seconds)
    preview_ms, decode_ms = preview_costs(engine, size)
    figures = Figures(
        with_previews_s=statistics.median(with_previews),
        without_s=statistics.median(without),
        first_preview_s=statistics.median(first),
        previews_per_job=counts[0],
        preview_ms=preview_ms,
        full_decode_ms=decode_ms,
        in_job_fraction=statistics.median(inside),
    )
    print(
        f"model={args.model} steps={args.steps} size={size} rounds={args.rounds}\n"
        f"job with a preview every step: {figures.with_previews_s:.3f} s ({figures.previews_per_job} previews)\n"
        f"job without previews:          {figures.without_s:.3f} s\n"
        f"slowdown: {100 * figures.slowdown:+.2f}%  (goal <= 5%); time inside the preview path: "
        f"{100 * figures.in_job_fraction:.2f}% of the job\n"
        f"first preview after {figures.first_preview_s:.3f} s = {100 * figures.first_fraction:.1f}% of the job "
        f"(goal <= 25%)\n"
        f"one grid preview (projection + PNG): {figures.preview_ms:.2f} ms; full decode of the same latents: "
        f"{figures.full_decode_ms:.2f} ms",
        flush=True,
    )
    return figures


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
