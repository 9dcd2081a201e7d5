"""Vary (Region): masks as the editor sends them, the inpaint follow-up, and the engine repainting only the masked
region: on the shipped model the unmasked pixels are the source's exactly (pixel space), on the tiny SD pipeline the
kept latents are the source's exactly (latent space) and so are the unmasked pixels after the composite."""

from __future__ import annotations

import base64
import io
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from shared import defaults
from shared.jobs import mask as masks
from shared.jobs.followups import custom_zoom_spec, inpaint_spec, region_size, split_zoom, upscale_spec, variation_spec
from shared.jobs.record import JobRecord
from shared.jobs.spec import JobKind, JobSpec, SourceImage
from shared.prompt.parser import PromptError
from worker.engine import Engine

SHIPPED = str(defaults.PROJECT_ROOT / "models" / "imagine-shapes")


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def painted(size: tuple[int, int], box: tuple[int, int, int, int], *, alpha: bool = True) -> bytes:
    """A mask as the editor's canvas exports it: transparent black, the region white."""
    image = Image.new("RGBA" if alpha else "RGB", size, (0, 0, 0, 0) if alpha else (0, 0, 0))
    ImageDraw.Draw(image).rectangle(box, fill=(255, 255, 255, 255) if alpha else (255, 255, 255))
    return png(image)


def grid_record(width: int = 64, height: int = 64, job_id: str = "grid1") -> JobRecord:
    spec = JobSpec.for_prompt("a red circle", seed=3, width=width, height=height, steps=8, job_id=job_id)
    return JobRecord(job_id=job_id, spec=spec, size=(width, height))


def test_masks_are_read_checked_and_scaled_to_the_job() -> None:
    upscaled = (256, 256)
    mask = masks.read_painted(painted(upscaled, (100, 100, 101, 101)), upscaled)
    assert mask.mode == "1" and mask.getbbox() == (100, 100, 102, 102)
    small = masks.job_mask(mask, (64, 64))  # a 2x2 stroke on a 4x upscale still marks its one job pixel
    assert small.getbbox() == (25, 25, 26, 26)
    assert masks.read_painted(painted(upscaled, (0, 0, 9, 9), alpha=False), upscaled).getbbox() == (0, 0, 10, 10)
    carried = masks.encode(small)
    assert len(carried) < 400 and masks.decode(carried, (64, 64)).getpixel((25, 25)) == 255
    assert masks.coverage(masks.decode(carried, (64, 64))) == pytest.approx(1 / 4096)

    with pytest.raises(masks.MaskRefused, match=r"The mask is 128x128 pixels; it must be the image's 256x256"):
        masks.read_painted(painted((128, 128), (0, 0, 5, 5)), upscaled)
    with pytest.raises(masks.MaskRefused, match="Nothing was painted"):
        masks.read_painted(png(Image.new("RGBA", upscaled, (255, 255, 255, 0))), upscaled)  # white but transparent
    with pytest.raises(masks.MaskRefused, match="must be a PNG"):
        masks.read_painted(b"GIF89a" + b"0" * 20, upscaled)
    with pytest.raises(masks.MaskRefused, match="must be a PNG"):
        masks.decode_data_url("data:image/png;base64,@@@not base64@@@")
    data_url = "data:image/png;base64," + base64.b64encode(painted(upscaled, (1, 1, 2, 2))).decode()
    assert masks.read_painted(masks.decode_data_url(data_url), upscaled).getbbox() == (1, 1, 3, 3)
    with pytest.raises(ValueError, match="the inpaint mask is 64x64, the job is 32x32"):
        masks.decode(carried, (32, 32))


def test_the_inpaint_follow_up_repaints_the_grid_image_an_upscale_was_made_from() -> None:
    upscale = upscale_spec(grid_record(64, 48), 2, "42")
    record = JobRecord(job_id=upscale.job_id, spec=upscale, size=(256, 192))
    assert region_size(record) == (64, 48)
    carried = masks.encode(
        masks.job_mask(masks.read_painted(painted((256, 192), (0, 0, 40, 40)), (256, 192)), (64, 48))
    )
    spec = inpaint_spec(record, 0, "7", carried, rng=random.Random(4))
    assert (spec.kind, spec.source, spec.owner, spec.mask) == (JobKind.INPAINT, SourceImage("grid1", 2), "7", carried)
    assert (spec.width, spec.height, spec.strength, spec.source_box) == (64, 48, defaults.INPAINT_STRENGTH, None)
    assert JobSpec.from_dict(spec.to_dict()) == spec  # the mask travels in the JSON payload and the record
    # follow-ups of the inpaint's grid do not carry its mask; a re-roll of it does
    inpainted = JobRecord(job_id=spec.job_id, spec=spec)
    assert variation_spec(inpainted, 1, "7").mask == "" and upscale_spec(inpainted, 1, "7").mask == ""
    with pytest.raises(ValueError, match="needs a mask"):
        inpaint_spec(record, 0, "7", "")


def test_custom_zoom_reads_its_factor_from_the_text() -> None:
    assert split_zoom("a red circle --zoom 1.5 --ar 3:2") == ("a red circle --ar 3:2", 1.5)
    assert split_zoom("a red circle") == ("a red circle", defaults.CUSTOM_ZOOM_DEFAULT)
    with pytest.raises(PromptError, match=r"--zoom must be a number from 1 to 2, got '2\.5'"):
        split_zoom("a red circle --zoom 2.5")
    with pytest.raises(PromptError, match="more than once"):
        split_zoom("a --zoom 1.2 --zoom 1.3")
    record = JobRecord(job_id="up", spec=upscale_spec(grid_record(), 0, "42"))
    zoom = custom_zoom_spec(record, 0, "42", 1.5)
    assert zoom.kind is JobKind.OUTPAINT and zoom.source_box == pytest.approx((1 / 6, 1 / 6, 5 / 6, 5 / 6), abs=1e-6)
    assert custom_zoom_spec(record, 0, "42", 1.0).kind is JobKind.VARIATION


def rectangle_mask(size: tuple[int, int], box: tuple[int, int, int, int]) -> str:
    mask = Image.new("1", size, 0)
    ImageDraw.Draw(mask).rectangle(box, fill=1)
    return masks.encode(mask)


@pytest.fixture(scope="module")
def shipped() -> Engine:
    return Engine.load(SHIPPED, device="cpu", dtype="float32")


def test_inpaint_keeps_unmasked_pixels_exactly_on_the_shipped_model(shipped: Engine) -> None:
    record = grid_record()
    source = shipped.generate(record.spec.replace(seeds=record.spec.seeds[:1])).images[0]
    box = (16, 20, 43, 47)  # inclusive corners: 28x28 pixels repainted
    spec = inpaint_spec(record, 0, "7", rectangle_mask((64, 64), box), rng=random.Random(5))
    spec = spec.replace(seeds=spec.seeds[:2])  # two images are enough to see each painted on its own, and faster
    result = shipped.generate(spec, source=source)
    inside = np.zeros((64, 64), dtype=bool)
    inside[box[1] : box[3] + 1, box[0] : box[2] + 1] = True
    original = np.asarray(source, dtype=np.int16)
    regions = []
    for image in result.images:
        pixels = np.asarray(image, dtype=np.int16)
        assert np.array_equal(pixels[~inside], original[~inside])  # outside the mask: the source, exactly
        assert np.abs(pixels[inside] - original[inside]).mean() > 8  # inside: repainted
        regions.append(pixels[inside])
    assert any(np.abs(regions[0] - other).mean() > 2 for other in regions[1:])  # each image its own
    assert result.notes["inpaint"]["mask_coverage"] == pytest.approx(28 * 28 / 4096, abs=1e-4)


def test_inpaint_on_the_tiny_sd_pipeline_keeps_the_source_in_latent_space(tiny_model: Path) -> None:
    engine = Engine.load(str(tiny_model), device="cpu", dtype="float32")
    record = grid_record(job_id="tinygrid")
    source = engine.generate(record.spec).images[1]
    spec = inpaint_spec(record, 1, "7", rectangle_mask((64, 64), (8, 8, 31, 39)), rng=random.Random(2))
    steps: list[torch.Tensor] = []
    result = engine.generate(
        spec, source=source, on_progress=lambda done, total, latents: steps.append(latents.clone())
    )
    region = engine.prepare_inpaint(spec, source)
    assert 0.4 < float(region.keep.mean()) < 0.9
    final = steps[-1]  # (4, C, h, w) after the last step
    kept = region.keep.bool().expand_as(final)
    assert torch.equal(final[kept], region.known.expand_as(final)[kept])  # kept latents: the source's, exactly
    assert float((final - region.known).abs()[~kept].mean()) > 0.1  # the masked latents are painted anew
    assert all(not torch.equal(step[kept], region.known.expand_as(step)[kept]) for step in steps[:-1])
    # and in pixels: outside the mask the source exactly (composited), inside changed
    inside = np.asarray(region.mask) > 0
    original = np.asarray(source, dtype=np.int16)
    for image in result.images:
        pixels = np.asarray(image, dtype=np.int16)
        assert np.array_equal(pixels[~inside], original[~inside])
        assert np.abs(pixels[inside] - original[inside]).mean() > 2
