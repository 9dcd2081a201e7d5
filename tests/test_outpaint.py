"""Outpaints (Zoom Out, pans, Make Square): the follow-up geometry, and the engine keeping the source while it paints
around it, on the shipped model and on the tiny SD pipeline (real diffusers code paths)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shared import defaults
from shared.errors import CannotFollowUp
from shared.jobs.followups import make_square_spec, pan_spec, reroll_spec, upscale_spec, variation_spec, zoom_out_spec
from shared.jobs.record import JobRecord
from shared.jobs.spec import JobKind, JobSpec, SourceImage
from worker.engine import Engine

SHIPPED = str(defaults.PROJECT_ROOT / "models" / "imagine-shapes")


def grid_record(width: int = 64, height: int = 64, job_id: str = "grid1") -> JobRecord:
    spec = JobSpec.for_prompt("a red circle", seed=3, width=width, height=height, steps=8, job_id=job_id)
    return JobRecord(job_id=job_id, spec=spec)


def box_pixels(spec: JobSpec) -> tuple[int, int, int, int]:
    assert spec.source_box is not None
    x0, y0, x1, y1 = spec.source_box
    return round(x0 * spec.width), round(y0 * spec.height), round(x1 * spec.width), round(y1 * spec.height)


def test_outpaint_follow_ups_place_the_source_and_size_the_canvas() -> None:
    upscale = upscale_spec(grid_record(), 2, "42")
    record = JobRecord(job_id=upscale.job_id, spec=upscale)
    rng = random.Random(1)

    zoom = zoom_out_spec(record, 0, "7", 2.0, rng=rng)
    assert zoom.kind is JobKind.OUTPAINT and zoom.owner == "7"
    assert zoom.source == SourceImage("grid1", 2)  # the grid image the upscale was made from
    assert (zoom.width, zoom.height, zoom.source_box) == (64, 64, (0.25, 0.25, 0.75, 0.75))
    assert zoom_out_spec(record, 0, "7", 1.5).source_box == pytest.approx((1 / 6, 1 / 6, 5 / 6, 5 / 6), abs=1e-6)
    assert zoom.seeds != upscale.seeds and zoom.strength == defaults.OUTPAINT_STRENGTH

    left = pan_spec(record, 0, "7", "left", native=64, multiple=8)
    assert left.width > left.height and left.width * left.height <= 64 * 64 * 1.1
    x0, y0, x1, y1 = box_pixels(left)
    assert (x1, y0, y1) == (left.width, 0, left.height) and x0 > 0
    assert (x1 - x0) / (y1 - y0) == pytest.approx(1.0, abs=0.05)  # the source keeps its shape
    down = pan_spec(record, 0, "7", "down", native=64, multiple=8)
    assert down.height > down.width and down.source_box is not None and down.source_box[:3] == (0.0, 0.0, 1.0)

    square = make_square_spec(JobRecord(job_id=left.job_id, spec=left), 1, "7", native=64, multiple=8)
    assert square.width == square.height and square.source == SourceImage(left.job_id, 1)
    sx0, sy0, sx1, sy1 = box_pixels(square)
    assert (
        (sx0, sx1) == (0, square.width)
        and sy0 > 0
        and (sx1 - sx0) / (sy1 - sy0) == pytest.approx(left.width / left.height, abs=0.1)
    )

    # an outpaint's own follow-ups: re-roll paints again, V and U work on its images without the box
    again = reroll_spec(JobRecord(job_id=zoom.job_id, spec=zoom), "7")
    assert again.kind is JobKind.OUTPAINT and again.source_box == zoom.source_box and again.seeds != zoom.seeds
    assert variation_spec(JobRecord(job_id=zoom.job_id, spec=zoom), 1, "7").source_box is None
    assert upscale_spec(JobRecord(job_id=zoom.job_id, spec=zoom), 1, "7").source_box is None

    with pytest.raises(CannotFollowUp, match=r"image 1 of job .* is already square \(64x64\)"):
        make_square_spec(record, 0, "7", native=64, multiple=8)
    with pytest.raises(ValueError, match="pan direction must be one of left, right, up, down, got 'sideways'"):
        pan_spec(record, 0, "7", "sideways", native=64, multiple=8)
    with pytest.raises(ValueError, match=r"zoom out factor must be above 1 and at most 4, got 1\.0"):
        zoom_out_spec(record, 0, "7", 1.0)
    wide = record
    with pytest.raises(CannotFollowUp, match=r"panning left would make the image .*:1; the longest allowed is 4:1"):
        for _ in range(6):
            panned = pan_spec(wide, 0, "7", "left", native=64, multiple=8)
            wide = JobRecord(job_id=panned.job_id, spec=panned)
    with pytest.raises(ValueError, match="source_box must be x0 < x1 and y0 < y1 within"):
        JobSpec.from_dict({**zoom.to_dict(), "source_box": [0.5, 0.0, 0.4, 1.0]})


@pytest.fixture(scope="module")
def shipped() -> Engine:
    return Engine.load(SHIPPED, device="cpu", dtype="float32")


def test_zoom_out_keeps_the_source_and_paints_a_new_border_on_the_shipped_model(shipped: Engine) -> None:
    record = grid_record()
    spec = record.spec
    source = shipped.generate(spec.replace(steps=20)).images[0]
    zoom = zoom_out_spec(record, 0, "7", 2.0, rng=random.Random(5))
    result = shipped.generate(zoom, source=source)
    again = shipped.generate(zoom, source=source)
    assert [image.size for image in result.images] == [(64, 64)] * 4
    left, top, right, bottom = box_pixels(zoom)
    expected = np.asarray(source.resize((right - left, bottom - top), Image.Resampling.LANCZOS), dtype=np.int16)
    border = []
    for image, repeat in zip(result.images, again.images, strict=True):
        pixels = np.asarray(image, dtype=np.int16)
        assert np.array_equal(pixels, np.asarray(repeat, dtype=np.int16))  # seeded
        # inside the box (less the one-pixel seam that is painted) the source is kept exactly: pixel space
        assert np.abs(pixels[top + 1 : bottom - 1, left + 1 : right - 1] - expected[1:-1, 1:-1]).max() <= 1
        outside = pixels.copy()
        outside[top:bottom, left:right] = 0
        border.append(outside)
    # the border is painted, differently in each image
    assert all(np.abs(border[0] - other).mean() > 1.0 for other in border[1:])


def test_pan_on_the_tiny_sd_pipeline_keeps_the_source_in_latent_space(tiny_model: Path) -> None:
    engine = Engine.load(str(tiny_model), device="cpu", dtype="float32")
    record = grid_record(job_id="tinygrid")
    spec = record.spec
    source = engine.generate(spec).images[1]
    pan = pan_spec(record, 1, "7", "right", native=64, multiple=8, rng=random.Random(2))
    steps: list[torch.Tensor] = []
    result = engine.generate(pan, source=source, on_progress=lambda done, total, latents: steps.append(latents.clone()))
    assert [image.size for image in result.images] == [(pan.width, pan.height)] * 4
    # Pixels cannot be compared here: the random tiny VAE's attention mixes the whole image into every pixel. In
    # latent space the kept region ends as the source's latents exactly, and the rest is painted, per image.
    _, known, keep = engine.prepare_outpaint(pan, source)
    assert 0.3 < float(keep.mean()) < 0.7
    final = steps[-1]  # (4, C, h, w) after the last step
    kept = keep.bool().expand_as(final)
    assert torch.equal(final[kept], known.expand_as(final)[kept])
    assert float((final - known).abs()[~kept].mean()) > 0.1
    assert not torch.equal(final[0][~kept[0]], final[1][~kept[1]])
    # at every earlier step the kept region is the source noised to that step's level: never the clean source yet
    assert all(not torch.equal(step[kept], known.expand_as(step)[kept]) for step in steps[:-1])
