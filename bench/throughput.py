"""Cross-job batching on a warm worker: N concurrent single-grid jobs, batched vs one job at a time, side by side.

Real parts only: an embedded Redis, the real enqueue (limits, fair share), a real ``ImagineWorker`` (RQ SimpleWorker)
in this process with the model loaded once, burst mode. Each round enqueues N grid jobs from N members (different
prompts, seeds and guidance, same size and steps) and drains them, alternately with batching off (one job per pass)
and on (up to ``--batch-images`` images per pass), in A-B then B-A order, so a machine load that drifts during the
run weighs on both modes alike::

    python bench/throughput.py --model models/imagine-shapes --jobs 8 --steps 20 --rounds 2

Figures per mode: wall time from the first enqueue to the last job's end, images/s, and each member's first-image
latency (RQ ``ended_at - enqueued_at``: a grid's four images are published together when its job ends).
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rq.job import Job
from rq.serializers import JSONSerializer

from shared import defaults
from shared.jobs.spec import JobSpec
from shared.settings import Settings
from shared.stores.redis_server import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger(__name__)

PROMPTS = (
    "a red circle",
    "two blue squares",
    "a green triangle on white",
    "a yellow star",
    "three purple dots",
    "an orange square and a circle",
    "a big black circle",
    "small cyan triangles",
)
"""Member prompts (cycled)."""


@dataclass
class Round:
    """One drain of N jobs in one mode."""

    mode: str
    wall_s: float
    images: int
    latencies: list[float] = field(default_factory=list)
    passes: int = 0

    @property
    def images_per_s(self) -> float:
        return self.images / self.wall_s


def make_specs(count: int, *, size: int, steps: int, lane: str, salt: int) -> list[JobSpec]:
    specs = []
    for index in range(count):
        prompt = PROMPTS[index % len(PROMPTS)]
        specs.append(
            JobSpec.for_prompt(
                prompt,
                seed=1000 * salt + 17 * index,
                width=size,
                height=size,
                steps=steps,
                guidance=5.0 + index % 4,
                owner=f"member{index}",
                lane=lane,
            )
        )
    return specs


def run_round(settings: Settings, specs: list[JobSpec], *, batch_images: int, mode: str) -> Round:
    from shared.queue.client import enqueue
    from shared.stores.connection import connect
    from worker.runner import build_worker

    connection = connect(settings)
    wall_started = time.perf_counter()
    for spec in specs:
        enqueue(connection, settings, spec)
    worker = build_worker(settings, lanes=[specs[0].lane])
    worker.batch_max_images = batch_images
    worker.work(burst=True, logging_level="WARNING")
    wall = time.perf_counter() - wall_started
    result = Round(mode=mode, wall_s=wall, images=sum(len(s.seeds) for s in specs))
    passes = 0.0
    for spec in specs:
        job = Job.fetch(spec.job_id, connection=connection, serializer=JSONSerializer)
        status = job.get_status()
        if str(getattr(status, "value", status)) != "finished":
            raise RuntimeError(f"job {spec.job_id} ended {status}: {job.meta.get('error', '')}")
        assert job.enqueued_at is not None and job.ended_at is not None
        result.latencies.append((job.ended_at - job.enqueued_at).total_seconds())
        record = job.return_value()
        assert isinstance(record, dict)
        batch = record["notes"].get("batch")
        passes += 1 / batch["jobs"] if batch else 1
    result.passes = round(passes)
    return result


def main(argv: list[str] | None = None) -> list[Round]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / defaults.DEFAULT_MODEL), help="model folder")
    parser.add_argument("--jobs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=0, help="square side (default: the model's native)")
    parser.add_argument("--batch-images", type=int, default=4 * defaults.IMAGES_PER_GRID)
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds per mode")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="bench-tp-"))
    server = EmbeddedRedis(folder / "redis")
    server.start()
    os.environ.update(
        {
            "REDIS_URL": server.url,
            "MODEL": args.model,
            "DATA_DIR": str(folder / "data"),
            "OUTPUT_DIR": str(folder / "outputs"),
            "DEVICE": args.device,
            "MAX_QUEUED_PER_MEMBER": str(max(args.jobs, 10)),
            "MAX_RUNNING_PER_MEMBER": str(max(args.jobs, 10)),
        }
    )
    try:
        from shared.model_info import native_resolution
        from shared.settings import get_settings
        from worker import tasks
        from worker.engine import Engine

        get_settings.cache_clear()
        settings = get_settings()
        size = args.size or native_resolution(args.model)
        engine = Engine.load(settings.resolve_model(), settings.device, settings.dtype)
        tasks.install_engine(engine)
        lane = settings.default_lane
        # warm-up: one job each way (text cache, allocator, first-call costs)
        run_round(settings, make_specs(2, size=size, steps=2, lane=lane, salt=99), batch_images=8, mode="warm")
        rounds: list[Round] = []
        modes = [("one at a time", defaults.IMAGES_PER_GRID), ("batched", args.batch_images)]
        for index in range(args.rounds):
            # A-B, then B-A: a load that drifts during the run weighs on both modes alike
            for mode, images in modes if index % 2 == 0 else modes[::-1]:
                specs = make_specs(args.jobs, size=size, steps=args.steps, lane=lane, salt=index)
                rounds.append(run_round(settings, specs, batch_images=images, mode=mode))
        print(format_table(rounds, args, size), flush=True)
        return rounds
    finally:
        server.stop()


def format_table(rounds: list[Round], args: argparse.Namespace, size: int) -> str:
    lines = [f"model={args.model} jobs={args.jobs} steps={args.steps} size={size} batch_images={args.batch_images}"]
    lines.append(f"{'mode':<14} {'wall_s':>8} {'img/s':>7} {'passes':>6} {'lat_mean':>8} {'lat_max':>8}  latencies_s")
    for r in rounds:
        lines.append(
            f"{r.mode:<14} {r.wall_s:>8.2f} {r.images_per_s:>7.3f} {r.passes:>6} {statistics.mean(r.latencies):>8.2f} "
            f"{max(r.latencies):>8.2f}  {' '.join(f'{x:.1f}' for x in r.latencies)}"
        )
    alone = [r for r in rounds if r.mode == "one at a time"]
    batched = [r for r in rounds if r.mode == "batched"]
    if alone and batched:
        speedup = sum(r.wall_s for r in alone) / sum(r.wall_s for r in batched)
        lines.append(f"throughput batched / one at a time: {speedup:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
