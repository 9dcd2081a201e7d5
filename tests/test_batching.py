"""Cross-job batching: same pixels batched or alone, and RQ bookkeeping of followers on a real Redis and RQ worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from PIL import Image
from rq.job import Job
from rq.queue import Queue
from rq.registry import StartedJobRegistry
from rq.serializers import JSONSerializer

from shared.jobs.spec import JobKind, JobSpec, SourceImage
from shared.queue.client import enqueue, get_queue
from shared.settings import Settings
from shared.stores.images import get_record
from worker.batching import Follower, batch_key, claim_followers
from worker.engine import Engine, Generation
from worker.runner import ImagineWorker, build_worker
from worker.runtime import WorkerRuntime, install


def make_spec(
    prompt: str = "a red circle",
    *,
    seed: int = 1,
    guidance: float = 5.0,
    steps: int = 3,
    negative: tuple[str, ...] = (),
    lane: str = "fast",
    **extra: Any,
) -> JobSpec:
    return JobSpec.for_prompt(
        prompt,
        seed=seed,
        width=32,
        height=32,
        steps=steps,
        guidance=guidance,
        owner="test",
        negative=negative,
        lane=lane,
        **extra,
    )


@pytest.fixture(scope="module")
def engine(tiny_model: Path) -> Engine:
    return Engine.load(str(tiny_model), "cpu", "float32")


def pixels(generation: Generation) -> np.ndarray:
    return np.stack([np.asarray(image, dtype=np.int16) for image in generation.images])


def test_batch_key_separates_what_cannot_share_a_pass() -> None:
    base = make_spec()
    assert batch_key(base) == batch_key(make_spec("other words", seed=9, guidance=12.0, negative=("blue",)))
    assert batch_key(base) != batch_key(make_spec(steps=4))
    assert batch_key(base) != batch_key(base.replace(width=64))
    for incompatible in (
        base.replace(tile=True),
        base.replace(stop=50),
        base.replace(kind=JobKind.VARIATION, source=SourceImage("x", 0), strength=0.7),
        base.replace(image_urls=("https://example.com/a.png",)),
    ):
        assert batch_key(incompatible) is None


def test_batched_images_are_the_images_each_job_makes_alone(engine: Engine) -> None:
    specs = [
        make_spec("a red circle", seed=7, guidance=5.0),
        make_spec("two blue squares above a green field", seed=1234, guidance=9.0, negative=("yellow",)),
        make_spec("a star", seed=99, guidance=1.0, chaos=0.5, weird=0.3),
    ]
    seen: dict[int, list[tuple[int, int, tuple[int, ...]]]] = {i: [] for i in range(len(specs))}

    def progress(i: int) -> Any:
        return lambda done, total, latents: seen[i].append((done, total, tuple(latents.shape)))

    batched = engine.generate_batch(specs, on_progress=[progress(i) for i in range(len(specs))])
    alone = [engine.generate(spec) for spec in specs]
    for index, (together, single) in enumerate(zip(batched, alone, strict=True)):
        assert isinstance(together, Generation)
        assert together.seeds == single.seeds
        difference = np.abs(pixels(together) - pixels(single))
        assert difference.max() <= 2, f"job {index}: batched pixels differ from alone by up to {difference.max()}"
        assert together.notes["batch"] == {"jobs": 3, "images": 12, "position": index}
        assert together.notes.get("layout") == single.notes.get("layout")
        assert [step for step, _, _ in seen[index]] == [1, 2, 3]
        assert all(shape[0] == 4 for _, _, shape in seen[index])
    assert np.abs(pixels(batched[0]) - pixels(batched[1])).max() > 10  # different jobs, different images
    assert isinstance(batched[1], Generation)
    assert [item["phrase"] for item in batched[1].notes["layout"]] == ["two blue squares", "a green field"]


def test_a_cancelled_job_in_a_batch_ends_cancelled_and_the_others_finish(engine: Engine) -> None:
    specs = [make_spec(seed=1), make_spec(seed=2)]
    outcomes = engine.generate_batch(specs, should_cancel=[lambda: True, None])
    assert not isinstance(outcomes[0], Generation)
    assert isinstance(outcomes[1], Generation) and len(outcomes[1].images) == 4


def test_claiming_followers_takes_each_job_once(redis_conn: redis.Redis) -> None:
    queue = Queue("imagine:fast", connection=redis_conn, serializer=JSONSerializer)
    specs = [make_spec(seed=i) for i in range(3)] + [make_spec(steps=9)]
    for spec in specs:
        queue.enqueue("worker.tasks.run_job", spec.to_dict(), job_id=spec.job_id, meta={"spec": spec.to_dict()})
    leader = make_spec(seed=50)
    first = claim_followers(redis_conn, [queue], leader, max_images=12, wait_s=0.0, serializer=JSONSerializer)
    second = claim_followers(redis_conn, [queue], leader, max_images=12, wait_s=0.0, serializer=JSONSerializer)
    assert [f.spec.job_id for f in first] == [specs[0].job_id, specs[1].job_id]
    assert [f.spec.job_id for f in second] == [specs[2].job_id]
    assert queue.job_ids == [specs[3].job_id]  # the incompatible job stays queued
    refused = claim_followers(
        redis_conn, [queue], make_spec(steps=9), max_images=8, wait_s=0.0, may_claim=lambda job, q: False
    )
    assert refused == [] and queue.job_ids == [specs[3].job_id]


class ObservedWorker(ImagineWorker):
    """Records what Redis says about every job when a pass starts (a job alone, or a batch once its jobs are marked
    started)."""

    watched: list[str]
    snapshots: list[tuple[dict[str, str], set[str]]]

    def snapshot(self, queue: Queue) -> None:
        statuses = {job_id: Job.fetch(job_id, connection=self.connection).get_status() for job_id in self.watched}
        started = set(StartedJobRegistry(queue=queue).get_job_ids())
        self.snapshots.append(({k: str(getattr(v, "value", v)) for k, v in statuses.items()}, started))

    def perform_job(self, job: Job, queue: Queue, execution: Any) -> bool:
        self.snapshot(queue)
        return super().perform_job(job, queue, execution)

    def perform_batch(self, batch: list[Follower]) -> None:
        original = self.prepare_job_execution
        marked: list[str] = []

        def prepare(job: Job, remove_from_intermediate_queue: bool = False) -> None:
            original(job, remove_from_intermediate_queue)
            marked.append(job.id)
            if len(marked) == len(batch):  # every job of the pass is started: what Redis says now
                self.snapshot(batch[0].queue)

        self.prepare_job_execution = prepare  # type: ignore[method-assign]
        try:
            super().perform_batch(batch)
        finally:
            del self.prepare_job_execution


def test_worker_runs_compatible_queued_jobs_as_one_batch_and_finishes_each(
    settings: Settings, redis_conn: redis.Redis
) -> None:
    engine = Engine.load(settings.resolve_model(), "cpu", "float32")
    runtime = install(WorkerRuntime(settings))
    runtime.install_engine(engine)
    specs = [make_spec(f"shape number {i}", seed=10 * i, guidance=4.0 + i) for i in range(3)]
    odd = make_spec(steps=2)
    for spec in [*specs, odd]:
        enqueue(redis_conn, settings, spec)
    base = build_worker(settings, lanes=["fast"], runtime=runtime)
    worker = ObservedWorker(base.queues, connection=redis_conn, serializer=JSONSerializer)
    worker.runtime = runtime
    worker.batch_max_images = 8  # leader + one follower per pass
    worker.watched = [spec.job_id for spec in [*specs, odd]]
    worker.snapshots = []
    worker.work(burst=True)

    statuses, started = worker.snapshots[0]  # while the first batch (jobs 0 and 1) ran
    assert statuses[specs[1].job_id] == "started" and specs[1].job_id in started
    assert statuses[specs[2].job_id] == "queued" and statuses[odd.job_id] == "queued"
    assert len(worker.snapshots) == 3  # batch of two, then the other two jobs alone

    records = {}
    for spec in [*specs, odd]:
        job = Job.fetch(spec.job_id, connection=redis_conn, serializer=JSONSerializer)
        assert job.get_status() == "finished"
        assert len(job.results()) == 1
        record = get_record(redis_conn, settings, spec.job_id).to_dict()  # the whole record is in the result store
        assert job.return_value() == {"job_id": spec.job_id, "files": record["files"]}  # RQ keeps a slim result
        assert record["job_id"] == spec.job_id and record["seeds"] == list(spec.seeds)
        assert job.worker_name == worker.name and job.started_at is not None and job.ended_at is not None
        records[spec.job_id] = record
    assert records[specs[0].job_id]["notes"]["batch"]["jobs"] == 2
    assert records[specs[1].job_id]["notes"]["batch"] == {"jobs": 2, "images": 8, "position": 1}
    assert "batch" not in records[odd.job_id]["notes"]  # the third job had no compatible partner left
    assert get_queue(redis_conn, settings, "fast").count == 0
    assert StartedJobRegistry(queue=worker.queues[0]).get_job_ids() == []

    alone = engine.generate(specs[1])
    stored = Path(records[specs[1].job_id]["files"]["images"][0])
    difference = np.abs(np.asarray(Image.open(stored), dtype=np.int16) - np.asarray(alone.images[0], dtype=np.int16))
    assert difference.max() <= 2


def test_a_default_worker_on_a_cpu_runs_jobs_alone(settings: Settings, redis_conn: redis.Redis) -> None:
    runtime = install(WorkerRuntime(settings))
    runtime.install_engine(Engine.load(settings.resolve_model(), "cpu", "float32"))
    specs = [make_spec(seed=i) for i in range(2)]
    for spec in specs:
        enqueue(redis_conn, settings, spec)
    worker = build_worker(settings, lanes=["fast"], runtime=runtime)
    assert worker.batch_max_images is None and not runtime.on_accelerator()
    worker.work(burst=True)
    for spec in specs:
        record = get_record(redis_conn, settings, spec.job_id).to_dict()
        assert record["job_id"] == spec.job_id and "batch" not in record["notes"]
