"""``imagine --local`` with ``MODEL=<folder>`` of a transformer family, through real processes (CLI, embedded Redis,
worker): a saved tiny FLUX.1 pipeline makes a grid at its pipeline's own text length; a folder whose pipeline class no
family handles stops the worker at start with one line naming the class and the supported families."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import ROOT, child_env

pytestmark = pytest.mark.slow


def run_cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        check=False,
        cwd=ROOT,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def tiny_flux(tiny_family_folder: Callable[[str], Path]) -> Path:
    return tiny_family_folder("flux-dev")


def test_imagine_local_on_a_tiny_flux_prints_a_grid_path(settings_env: dict[str, str], tiny_flux: Path) -> None:
    env = {**settings_env, "MODEL": str(tiny_flux), "STEPS": "2"}
    result = run_cli(["--local", "--timeout", "240", "a red cat --ar 16:9 --no blur"], env)
    assert result.returncode == 0, result.stderr[-2000:]
    grid = Path(result.stdout.strip().splitlines()[-1])
    assert grid.name == "grid.png" and grid.is_file()
    record = json.loads((grid.parent / "job.json").read_text())
    assert record["engine"]["family"] == "flux-dev" and record["engine"]["pipeline"] == "FluxPipeline"
    # 16:9 at the tiny model's native 256 px (128 latent pixels x VAE scale 2), in multiples of 4
    width, height = record["size"]
    assert abs(width / height - 16 / 9) < 0.05 and width % 4 == 0 and height % 4 == 0
    assert Image.open(grid).size == (2 * width, 2 * height)
    # --no ran as FLUX.1's true CFG (a second pass); --stylize 100 is FLUX.1 dev's distilled guidance 3.5
    assert record["notes"]["negative"] == "true_cfg" and "ignored" not in record["notes"]
    assert record["spec"]["guidance"] == 3.5
    assert record["notes"]["tokens"][0]["window"] == 512  # the pipeline's own T5 length


def test_imagine_local_with_an_unsupported_pipeline_fails_at_worker_start_in_one_line(
    settings_env: dict[str, str], tiny_model: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "hidream"
    shutil.copytree(tiny_model, folder)
    index = json.loads((folder / "model_index.json").read_text())
    index["_class_name"] = "HiDreamImagePipeline"
    (folder / "model_index.json").write_text(json.dumps(index))
    env = {**settings_env, "MODEL": str(folder)}

    worker = subprocess.run(
        [sys.executable, "-m", "worker", "--burst"],
        check=False,
        cwd=ROOT,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 3
    lines = [line for line in (worker.stdout + worker.stderr).splitlines() if line.strip()]
    assert len(lines) == 1, lines  # one line, no traceback
    assert lines[0].startswith(f"imagine-worker: model {folder} cannot be served: pipeline HiDreamImagePipeline")
    assert "FluxPipeline (flux-dev/flux-schnell)" in lines[0] and "StableDiffusionXLPipeline (sdxl)" in lines[0]

    result = run_cli(["--local", "--timeout", "120", "a red cat"], env)
    assert result.returncode != 0
    assert "pipeline HiDreamImagePipeline is not supported" in result.stderr, result.stderr[-2000:]
