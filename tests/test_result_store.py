"""One suite over the three result stores (Redis, a folder, S3 on a real SeaweedFS), as callers use them: through
``open_result_store`` (pointers in a real Redis), plus what is particular to each backend."""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from PIL import Image
from pydantic import SecretStr, ValidationError

from shared.errors import ResultExpired
from shared.keys import keys_for
from shared.settings import Settings
from shared.stores.pointers import PointerResultStore, open_result_store
from shared.stores.redis_server import EmbeddedRedis
from shared.stores.results import Location, ResultStore
from shared.stores.results_filesystem import FilesystemResultStore
from shared.stores.results_redis import RedisResultStore
from shared.stores.results_s3 import S3ResultStore
from tests.seaweedfs import SeaweedFS

BACKENDS = ("redis", "filesystem", "s3")
"""Every backend; the suite runs once per backend."""

BUCKET = "imagine-results"
"""The S3 bucket most tests share (each test has a prefix of its own)."""

SWITCH_TO = {"redis": "filesystem", "filesystem": "s3", "s3": "redis"}
"""For the backend-switch test: which backend an admin switches to from each."""


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One real SeaweedFS S3 gateway for the session (started in about 3.5 s)."""
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs")).start()
    print(f"\nSeaweedFS start time: {server.start_s:.2f} s")
    yield server
    server.stop()


def make_settings(
    backend: str, redis_server: EmbeddedRedis, folder: Path, server: SeaweedFS | None, **overrides: Any
) -> Settings:
    """Settings for ``backend`` on the test Redis, with S3 pointing at ``server`` when there is one."""
    values: dict[str, Any] = {
        "redis_url": redis_server.url,
        "data_dir": folder / "data",
        "result_store": backend,
    }
    if server is not None:
        values.update(
            s3_endpoint_url=server.endpoint_url,
            s3_bucket=BUCKET,
            s3_prefix=f"t-{uuid.uuid4().hex[:8]}/",
            s3_access_key_id=server.access_key,
            s3_secret_access_key=server.secret_key,
            s3_addressing_style="path",
        )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def s3_server(backend: str, request: pytest.FixtureRequest) -> SeaweedFS | None:
    """The SeaweedFS for tests that touch S3 (the s3 backend, or a switch to it); started only when needed."""
    if backend == "s3" or SWITCH_TO[backend] == "s3":
        server: SeaweedFS = request.getfixturevalue("seaweedfs")
        return server
    return None


@pytest.fixture
def settings_for(backend: str, redis_server: EmbeddedRedis, tmp_path: Path, s3_server: SeaweedFS | None) -> Settings:
    return make_settings(backend, redis_server, tmp_path, s3_server)


@pytest.fixture
def store(settings_for: Settings, redis_conn: redis.Redis) -> ResultStore:
    return open_result_store(redis_conn, settings_for)


def small_png(seed: int, size: int = 32) -> bytes:
    """A small distinct PNG."""
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


_BIG: dict[int, bytes] = {}


def realistic_png(seed: int) -> bytes:
    """A 1024x1024 RGB PNG of a real generated image's size (about 2.3 MB: a gradient with 5 bits of noise)."""
    if seed not in _BIG:
        rng = np.random.default_rng(seed)
        y, x = np.mgrid[0:1024, 0:1024]
        base = np.stack([x / 4, y / 4, (x + y) / 8], axis=-1)
        pixels = (base + rng.integers(0, 32, (1024, 1024, 3))).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        _BIG[seed] = buffer.getvalue()
    return _BIG[seed]


def new_id() -> str:
    return uuid.uuid4().hex[:16]


RECORD = {
    "spec": {"prompt": "a red circle --seed 7"},
    "seeds": [7, 8, 9, 10],
    "model": "tiny",
    "timings": {"job_s": 1.5},
}


# --- the same behaviour from every backend --------------------------------------------------------------------------


def test_images_and_record_round_trip(store: ResultStore, backend: str) -> None:
    job = new_id()
    pngs = [small_png(i) for i in range(4)]
    store.put_images(job, pngs)
    store.put_record(job, RECORD)
    assert [store.get_image(job, i) for i in range(4)] == pngs
    assert store.get_record(job) == RECORD
    assert store.backend == backend
    assert isinstance(store, PointerResultStore) and store.pointer(job) == store.target.location


def test_missing_image_or_record_is_result_expired_naming_job_and_image(store: ResultStore) -> None:
    job = new_id()
    with pytest.raises(
        ResultExpired, match=rf"^image 2 of job {job} is no longer stored \(results are kept 30 days\)$"
    ):
        store.get_image(job, 1)
    with pytest.raises(ResultExpired, match=rf"^job {job} is no longer stored \(results are kept 30 days\)$"):
        store.get_record(job)
    with pytest.raises(ResultExpired, match=f"image 1 of job {job}"):
        store.image_url(job, 0, 60)
    store.put_images(job, [small_png(1)])
    with pytest.raises(ResultExpired, match=f"image 2 of job {job}"):  # past the stored images
        store.get_image(job, 1)
    with pytest.raises(ResultExpired, match=f"job {job} is no longer stored"):  # images without a record
        store.get_record(job)
    assert issubclass(ResultExpired, LookupError)


def test_bad_job_ids_and_indexes_are_refused_before_any_io(store: ResultStore) -> None:
    for bad in ("../etc", "a/b", "", ".hidden", "x" * 101):
        with pytest.raises(ValueError, match="job_id must be"):
            store.put_images(bad, [b"png"])
    with pytest.raises(ValueError, match="image index must be an integer >= 0, got -1"):
        store.get_image(new_id(), -1)


def test_put_images_replaces_the_image_set_and_put_record_replaces_the_record(store: ResultStore) -> None:
    job = new_id()
    store.put_images(job, [small_png(i) for i in range(4)])
    store.put_record(job, RECORD)
    newer = [small_png(10), small_png(11)]
    store.put_images(job, newer)
    assert [store.get_image(job, i) for i in range(2)] == newer
    for index in (2, 3):  # the earlier put's extra images are gone
        with pytest.raises(ResultExpired):
            store.get_image(job, index)
    assert store.get_record(job) == RECORD  # a new image set leaves the record
    changed = {**RECORD, "files": {"folder": "/out"}}
    store.put_record(job, changed)
    assert store.get_record(job) == changed
    assert [store.get_image(job, i) for i in range(2)] == newer  # a new record leaves the images


def test_delete_removes_images_record_and_pointer(
    store: ResultStore, redis_conn: redis.Redis, settings_for: Settings
) -> None:
    job, other = new_id(), new_id()
    for name in (job, other):
        store.put_images(name, [small_png(1), small_png(2)])
        store.put_record(name, RECORD)
    store.delete(job)
    with pytest.raises(ResultExpired):
        store.get_image(job, 0)
    with pytest.raises(ResultExpired):
        store.get_record(job)
    assert not redis_conn.exists(keys_for(settings_for).result_pointer(job))
    assert store.get_record(other) == RECORD  # only that job
    store.delete(new_id())  # nothing stored: no error


def test_image_url_is_presigned_for_s3_only(store: ResultStore, backend: str) -> None:
    job = new_id()
    png = small_png(5)
    store.put_images(job, [png])
    url = store.image_url(job, 0, expires_s=120)
    if backend != "s3":
        assert url is None
        return
    assert url is not None and "X-Amz-Signature=" in url and "X-Amz-Expires=120" in url
    with urllib.request.urlopen(url, timeout=10) as answer:  # no credentials: the signature is the permission
        assert answer.read() == png
        assert answer.headers["Content-Type"] == "image/png"
    tampered = url[:-4] + ("0000" if not url.endswith("0000") else "1111")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(tampered, timeout=10)
    assert refused.value.code == 403


def test_retention(store: ResultStore, backend: str, redis_conn: redis.Redis, settings_for: Settings) -> None:
    """Redis: key TTLs; filesystem: the sweep removes jobs older than the TTL; S3: the lifecycle rule is installed.
    The pointer lives as long as the result in every case."""
    job = new_id()
    store.put_images(job, [small_png(1), small_png(2)])
    store.put_record(job, RECORD)
    ttl = settings_for.image_ttl_s
    assert 0 < redis_conn.ttl(keys_for(settings_for).result_pointer(job)) <= ttl
    assert isinstance(store, PointerResultStore)
    target = store.target
    if isinstance(target, RedisResultStore):
        for key in (target.image_key(job, 0), target.image_key(job, 1), target.record_key(job)):
            assert ttl - 60 < redis_conn.ttl(key) <= ttl, key
        assert store.sweep(time.time()) == 0
    elif isinstance(target, FilesystemResultStore):
        fresh = new_id()
        store.put_images(fresh, [small_png(3)])
        old_folder = target.job_folder(job)
        written = old_folder.stat().st_mtime
        os.utime(old_folder, (written - ttl - 1, written - ttl - 1))
        assert store.sweep(time.time()) == 1
        assert not old_folder.exists()
        with pytest.raises(ResultExpired):
            store.get_record(job)
        assert store.get_image(fresh, 0) == small_png(3)
        assert store.sweep(time.time()) == 0
    else:
        assert isinstance(target, S3ResultStore)
        rules = target.client.get_bucket_lifecycle_configuration(Bucket=target.bucket)["Rules"]
        mine = [rule for rule in rules if rule["ID"] == target.rule_id]
        assert mine == [
            {"ID": target.rule_id, "Filter": {"Prefix": target.prefix}, "Status": "Enabled", "Expiration": {"Days": 30}}
        ]
        assert store.sweep(time.time()) == 0  # the bucket expires objects itself


def test_results_written_before_a_backend_switch_are_read_through_their_pointer(
    backend: str, redis_server: EmbeddedRedis, redis_conn: redis.Redis, tmp_path: Path, s3_server: SeaweedFS | None
) -> None:
    before = make_settings(backend, redis_server, tmp_path, s3_server)
    old_store = open_result_store(redis_conn, before)
    old_job = new_id()
    old_store.put_images(old_job, [small_png(1), small_png(2)])
    old_store.put_record(old_job, RECORD)

    # The admin switches RESULT_STORE; the other backends' settings stay as they were.
    after = before.model_copy(update={"result_store": SWITCH_TO[backend]})
    new_store = open_result_store(redis_conn, after)
    new_job = new_id()
    new_store.put_images(new_job, [small_png(3)])
    new_store.put_record(new_job, {"n": 1})

    assert isinstance(new_store, PointerResultStore)
    assert Location.from_json(redis_conn.get(keys_for(after).result_pointer(old_job))).backend == backend  # type: ignore[arg-type]
    assert Location.from_json(redis_conn.get(keys_for(after).result_pointer(new_job))).backend == SWITCH_TO[backend]  # type: ignore[arg-type]
    assert new_store.get_image(old_job, 1) == small_png(2)
    assert new_store.get_record(old_job) == RECORD
    assert new_store.get_image(new_job, 0) == small_png(3)
    # Only the new backend holds the new job.
    with pytest.raises(ResultExpired):
        old_store.target.get_image(new_job, 0)  # type: ignore[attr-defined]
    # A record re-written after the switch (an outbox re-delivery, say) joins its images in the old backend.
    new_store.put_record(old_job, {**RECORD, "files": {"redelivered": True}})
    assert old_store.target.get_record(old_job)["files"] == {"redelivered": True}  # type: ignore[attr-defined]


def test_a_pointer_to_a_backend_no_longer_configured_reads_as_expired(
    backend: str, redis_server: EmbeddedRedis, redis_conn: redis.Redis, tmp_path: Path, s3_server: SeaweedFS | None
) -> None:
    if backend == "redis":
        pytest.skip("Redis is always configured: the queue lives there")
    settings = make_settings(backend, redis_server, tmp_path, s3_server)
    job = new_id()
    open_result_store(redis_conn, settings).put_images(job, [small_png(1)])
    if backend == "filesystem":
        import shutil

        shutil.rmtree(settings.result_dir)  # the folder is gone (disk replaced, RESULT_DIR moved without its files)
        gone = settings.model_copy(update={"result_store": "redis"})
    else:
        gone = settings.model_copy(update={"result_store": "redis", "s3_bucket": ""})
    with pytest.raises(ResultExpired, match=f"job {job} is no longer stored"):
        open_result_store(redis_conn, gone).get_image(job, 0)


def test_results_stored_before_pointers_existed_are_read_from_redis(
    store: ResultStore, redis_conn: redis.Redis, settings_for: Settings
) -> None:
    job = new_id()
    # As the image store wrote them then: plain keys, no pointer.
    keys = keys_for(settings_for)
    redis_conn.set(keys.image(job, 0), small_png(7))
    redis_conn.set(keys.record(job), json.dumps(RECORD, sort_keys=True))
    assert store.get_image(job, 0) == small_png(7)
    assert store.get_record(job) == RECORD


def test_redis_memory_per_job_with_realistic_pngs(
    store: ResultStore, backend: str, redis_conn: redis.Redis, record_property: Any
) -> None:
    """Redis bytes per finished job (MEMORY USAGE of every key naming the job), four 1024x1024 PNGs of about 2.3 MB:
    the filesystem and S3 backends keep only the pointer in Redis (goal: at most 2 KB per job)."""
    pngs = [realistic_png(seed) for seed in range(4)]
    assert all(1_500_000 < len(png) < 3_000_000 for png in pngs)
    jobs = [new_id() for _ in range(3)]
    for job in jobs:
        store.put_images(job, pngs)
        store.put_record(job, {**RECORD, "job_id": job, "files": {"grid": f"/outputs/{job}/grid.png"}})
    per_job = []
    for job in jobs:
        keys = list(redis_conn.scan_iter(match=f"*{job}*"))
        per_job.append(sum(int(redis_conn.memory_usage(key) or 0) for key in keys))
    png_bytes = sum(len(png) for png in pngs)
    record_property("redis_bytes_per_job", per_job)
    print(f"\n{backend}: Redis bytes per job {per_job} (PNG bytes per job {png_bytes})")
    if backend == "redis":
        assert min(per_job) >= png_bytes  # the images themselves
    else:
        assert max(per_job) <= 2048
    assert store.get_image(jobs[-1], 3) == pngs[3]


# --- what is particular to one backend ------------------------------------------------------------------------------


def test_redis_store_evicts_the_oldest_jobs_at_its_cap(
    redis_server: EmbeddedRedis, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    pngs = [small_png(i, size=64) for i in range(4)]
    size = sum(len(png) for png in pngs)
    settings = make_settings("redis", redis_server, tmp_path, None, redis_result_max_bytes=int(size * 2.5))
    store = open_result_store(redis_conn, settings)
    jobs = [new_id() for _ in range(3)]
    for job in jobs:
        store.put_images(job, pngs)
        store.put_record(job, RECORD)
    target = RedisResultStore(redis_conn, settings)
    assert target.stored_bytes() == 2 * size <= settings.redis_result_max_bytes
    with pytest.raises(ResultExpired, match=f"image 1 of job {jobs[0]} is no longer stored"):
        store.get_image(jobs[0], 0)
    with pytest.raises(ResultExpired):
        store.get_record(jobs[0])  # an evicted job goes whole
    assert store.get_image(jobs[2], 3) == pngs[3] and store.get_image(jobs[1], 0) == pngs[0]
    # Re-putting a job does not count its earlier images twice.
    store.put_images(jobs[2], pngs)
    assert target.stored_bytes() == 2 * size
    store.delete(jobs[1])
    assert target.stored_bytes() == size
    with pytest.raises(ValueError, match=rf"more than REDIS_RESULT_MAX_BYTES={settings.redis_result_max_bytes}"):
        store.put_images(new_id(), pngs * 3)


def test_redis_store_forgets_the_bytes_of_jobs_expired_by_ttl(
    redis_server: EmbeddedRedis, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    settings = make_settings("redis", redis_server, tmp_path, None, image_ttl_s=1)
    store = RedisResultStore(redis_conn, settings)
    first = [small_png(1)]
    store.put_images(new_id(), first)
    assert store.stored_bytes() == len(first[0])
    time.sleep(1.2)  # past the 1 s TTL: Redis expired the keys; the next put drops their bookkeeping
    second = [small_png(2), small_png(3)]
    store.put_images(new_id(), second)
    assert store.stored_bytes() == sum(len(png) for png in second)


def test_filesystem_layout_is_atomic_and_sharded(
    redis_server: EmbeddedRedis, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    settings = make_settings("filesystem", redis_server, tmp_path, None)
    assert settings.result_dir == tmp_path / "data" / "results"  # RESULT_DIR's default
    store = open_result_store(redis_conn, settings)
    job = "ab" + new_id()[2:]
    store.put_images(job, [small_png(1), small_png(2)])
    store.put_record(job, RECORD)
    folder = settings.result_dir / "ab" / job
    assert sorted(path.name for path in folder.iterdir()) == ["image_0.png", "image_1.png", "record.json"]  # no temp
    assert json.loads((folder / "record.json").read_text()) == RECORD
    assert (folder / "image_1.png").read_bytes() == small_png(2)
    assert (folder / "image_0.png").stat().st_mode & 0o777 == 0o644
    assert json.loads(redis_conn.get(keys_for(settings).result_pointer(job))) == {
        "b": "filesystem",
        "f": str(settings.result_dir),
    }  # type: ignore[arg-type]


def test_s3_layout_and_bucket_creation_keep_other_lifecycle_rules(
    seaweedfs: SeaweedFS, redis_server: EmbeddedRedis, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    bucket = f"fresh-{uuid.uuid4().hex[:8]}"
    settings = make_settings("s3", redis_server, tmp_path, seaweedfs, s3_bucket=bucket, s3_prefix="/imagine/results")
    store = open_result_store(redis_conn, settings)
    job = new_id()
    store.put_images(job, [small_png(1)])  # creates the bucket and installs the rule
    store.put_record(job, RECORD)
    client = seaweedfs.client()
    keys = sorted(item["Key"] for item in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == [f"imagine/results/{job[:2]}/{job}/image_0.png", f"imagine/results/{job[:2]}/{job}/record.json"]
    other = {"ID": "someone-else", "Filter": {"Prefix": "logs/"}, "Status": "Enabled", "Expiration": {"Days": 3}}
    rules = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [*rules, other]})
    S3ResultStore(settings.model_copy(update={"image_ttl_s": 36 * 3600})).ensure_bucket()
    rules = {rule["ID"]: rule for rule in client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["someone-else"] == other
    assert rules["imagine-result-expiry:imagine/results/"]["Expiration"] == {"Days": 2}  # 36 h rounds up to 2 days
    assert json.loads(redis_conn.get(keys_for(settings).result_pointer(job))) == {  # type: ignore[arg-type]
        "b": "s3",
        "e": seaweedfs.endpoint_url,
        "k": bucket,
        "p": "imagine/results/",
    }


def test_s3_requests_are_authenticated(seaweedfs: SeaweedFS) -> None:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as refused:
        seaweedfs.client(secret_key="not-the-secret").list_buckets()
    assert refused.value.response["Error"]["Code"] in {"SignatureDoesNotMatch", "AccessDenied", "InvalidAccessKeyId"}


def test_settings_validation_names_the_setting_and_value() -> None:
    with pytest.raises(ValidationError, match="RESULT_STORE must be one of redis, filesystem, s3, got 'disk'"):
        Settings(result_store="disk")
    with pytest.raises(ValidationError, match="RESULT_STORE=s3 needs S3_BUCKET"):
        Settings(result_store="s3")
    with pytest.raises(ValidationError, match="S3_ADDRESSING_STYLE must be one of auto, path, virtual, got 'host'"):
        Settings(s3_addressing_style="host")
    with pytest.raises(ValidationError, match="redis_result_max_bytes"):
        Settings(redis_result_max_bytes=-1)
    folder = Path(tempfile.gettempdir()) / "imagine-data"
    assert Settings(data_dir=folder).result_dir == folder / "results"
    secret = "s3-secret-never-shown"
    settings = Settings(result_store="s3", s3_bucket="b", s3_secret_access_key=SecretStr(secret))
    assert secret not in repr(settings) and secret not in settings.model_dump_json()
