"""GPU benchmark of the engine: images/s at several batch sizes, stage breakdown, peak memory, denoiser utilisation.

One prepared script for a bare GPU machine (needs only torch, diffusers, transformers and this repository; no Redis,
RQ or Discord)::

    python -m bench.gpu --model models/imagine-shapes           # a model folder
    python -m bench.gpu --model tiny --device cpu --steps 2     # builds the tiny test pipeline (CI)
    python -m bench.gpu --model sd15-random --steps 20          # SD 1.5's architecture, random weights, 512 px
    python -m bench.gpu --family flux-dev --batches 1,2,4       # FLUX.1 dev at its real size, random weights, 1024 px
    python -m bench.gpu --family sdxl --compile                 # the same with torch.compile of the denoiser
    python -m bench.gpu --family flux-dev --tiny --device cpu   # the family's tiny test pipeline (CI)
    python -m bench.gpu --family all --dry-run                  # parameters and bf16 GiB of every family, no compute

``--family`` builds the family's released architecture from configs written in ``bench/family_configs.py`` with random
weights (no download) in bf16 (``--dtype``), and times ``Engine.generate`` of one job of ``batch`` images per row
(the same path a worker runs; text encoder -> denoiser -> decoder). Its denoiser FLOPs per step are counted with
``FlopCounterMode`` around every denoiser call of a one-step run at the measured size (classifier-free passes
included), so the fraction of the device's bf16 peak is the denoiser's own.

For every batch size it runs the engine's batched path (``Engine.generate_batch``: text encoder -> denoiser ->
decoder) after a warm-up pass, and prints one table row: images/s, seconds per stage, peak memory, and the denoiser's
achieved FLOP/s as a fraction of the device's peak bf16/fp16 dense FLOP/s. FLOPs per denoiser step are counted by
running the denoiser built from its config on the ``meta`` device (no memory, no compute) under
``torch.utils.flop_counter.FlopCounterMode``, with the classifier-free-guidance batch (2 x images).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from shared.jobs.spec import JobSpec
from worker.engine import Engine, Generation
from worker.model_loader import LoadedPipelines, choose_device, choose_dtype
from worker.text import TextEncoding

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger(__name__)

PEAK_DENSE_TFLOPS: dict[str, float] = {
    "H200": 989.0,
    "H100": 989.0,
    "GH200": 989.0,
    "B200": 2250.0,
    "A100": 312.0,
    "L40S": 362.0,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
    "RTX 3090": 71.0,
}
"""Peak dense bf16/fp16 tensor-core TFLOP/s by device-name fragment (NVIDIA data sheets, without sparsity)."""


@dataclass
class Row:
    """One batch size's figures."""

    batch: int
    images_per_s: float
    encode_s: float
    denoise_s: float
    decode_s: float
    total_s: float
    denoiser_fraction: float
    peak_mem_gib: float
    step_gflops: float
    achieved_tflops: float
    peak_fraction: float | None


def build_named_model(name: str, device: torch.device, dtype: torch.dtype) -> Engine:
    """``tiny``: the test suite's tiny SD pipeline; ``sd15-random``: SD 1.5's UNet/VAE/CLIP shapes, random weights."""
    from tests.tiny_models import build_tiny_sd, clip_tokenizer

    if name == "tiny":
        folder = build_tiny_sd(Path(tempfile.mkdtemp(prefix="bench-gpu-")) / "tiny-sd")
        return Engine.load(str(folder), str(device), _dtype_name(dtype))
    if name != "sd15-random":
        raise ValueError(f"--model must be a model folder, 'tiny' or 'sd15-random', got {name!r}")
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=64)
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=4,
            layers_per_block=2,
            sample_size=512,
        )
        text = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=514,
                hidden_size=768,
                intermediate_size=3072,
                num_attention_heads=12,
                num_hidden_layers=12,
                max_position_embeddings=77,
                bos_token_id=512,
                eos_token_id=513,
                pad_token_id=513,
            )
        ).eval()
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=clip_tokenizer(),
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    pipes = LoadedPipelines(pipe, pipe, "sd15-random", device, dtype)
    return Engine(pipes, TextEncoding.from_pipeline(pipe, model_key="sd15-random"))


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def load_engine(model: str, device: torch.device, dtype: torch.dtype) -> Engine:
    if model in ("tiny", "sd15-random"):
        return build_named_model(model, device, dtype)
    return Engine.load(model, str(device), _dtype_name(dtype))


def native_size(engine: Engine) -> int:
    """The model's native square side in pixels (denoiser sample size x VAE scale)."""
    pipe = engine.pipes.text2img
    scale = int(getattr(pipe, "vae_scale_factor", 1) or 1)
    return int(pipe.unet.config.sample_size) * scale


def step_flops(engine: Engine, images: int, size: int) -> float:
    """FLOPs of one denoiser call on the CFG batch (2 x images), from the denoiser's config on the meta device."""
    pipe = engine.pipes.text2img
    unet = pipe.unet
    config = dict(unet.config)
    channels, height, width = engine.latent_shape(size, size)
    spec = _spec(0, images, size, 1)
    cond = engine.encode_prompt(spec)
    tokens, dim = cond.prompt_embeds.shape[1:]
    counter = FlopCounterMode(display=False)
    try:
        with torch.device("meta"):
            model = type(getattr(unet, "_orig_mod", unet)).from_config(config)
            sample = torch.empty(2 * images, channels, height, width)
            hidden = torch.empty(2 * images, tokens, dim)
            timestep = torch.tensor(500)
            with counter:
                model(sample, timestep, encoder_hidden_states=hidden, return_dict=False)
    except Exception as exc:  # an op without a meta kernel: count on the real model instead
        log.info("meta-device FLOP count failed (%s); counting on %s", exc, engine.pipes.device)
        device, dtype = engine.pipes.device, engine.pipes.dtype
        counter = FlopCounterMode(display=False)
        with torch.inference_mode(), counter:
            unet(
                torch.zeros(2 * images, channels, height, width, device=device, dtype=dtype),
                torch.tensor(500, device=device),
                encoder_hidden_states=torch.zeros(2 * images, tokens, dim, device=device, dtype=dtype),
                return_dict=False,
            )
    return float(counter.get_total_flops())


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, value in PEAK_DENSE_TFLOPS.items():
        if fragment in name:
            return value
    return None


def _spec(run: int, images: int, size: int, steps: int) -> JobSpec:
    prompt = f"a red circle and a blue square, run {run}"  # a new text per run: the encoder runs every time
    return JobSpec.for_prompt(
        prompt,
        seed=1000 + run,
        images=images,
        width=size,
        height=size,
        steps=steps,
        guidance=7.5,
        job_id=f"bench{run}",
        owner="bench",
    )


def measure(
    engine: Engine, batches: list[int], *, size: int, steps: int, repeats: int, peak: float | None
) -> list[Row]:
    """Warm up once per batch size, then keep the fastest of ``repeats`` runs."""
    rows = []
    run = 0
    for batch in batches:
        flops = step_flops(engine, batch, size)
        engine.generate_batch([_spec(run := run + 1, batch, size, steps)])  # warm-up (and compile)
        if engine.pipes.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(engine.pipes.device)
        best: Generation | None = None
        for _ in range(repeats):
            outcome = engine.generate_batch([_spec(run := run + 1, batch, size, steps)])[0]
            assert isinstance(outcome, Generation)
            if best is None or outcome.timings["generate_s"] < best.timings["generate_s"]:
                best = outcome
        assert best is not None
        rows.append(_row(engine, batch, best, flops=flops, steps=steps, peak=peak))
    return rows


def family_engine(name: str, device: torch.device, dtype: torch.dtype, tiny: bool) -> Engine:
    """The family's engine: its tiny test pipeline loaded from a saved folder (``tiny``), or its released architecture
    with random weights (``bench.family_configs``) on ``device`` in ``dtype``."""
    from bench.family_configs import pipeline
    from worker.engine.families import family_for

    if tiny:
        from bench.overhead import build_family

        folder = build_family(name, Path(tempfile.mkdtemp(prefix="bench-gpu-")))
        return Engine.load(str(folder), str(device), _dtype_name(dtype))
    pipe = pipeline(name, device, dtype)
    pipe.set_progress_bar_config(disable=True)
    family = family_for(pipe)
    pipes = LoadedPipelines(pipe, family.load_image_sibling(pipe), f"{name}-random", device, dtype)
    return Engine(pipes, TextEncoding.from_pipeline(pipe, model_key=f"{name}-random"), family)


def family_step_flops(engine: Engine, images: int, size: int) -> float:
    """FLOPs of the denoiser in one denoising step of a job of ``images`` images (every call: CFG passes too),
    counted by ``FlopCounterMode`` around each denoiser call of a one-step run."""
    denoiser = engine.family.denoiser_of(engine.pipes.text2img)
    counter = FlopCounterMode(display=False)
    total = [0.0]

    def enter(module: Any, args: Any) -> None:
        counter.__enter__()

    def leave(module: Any, args: Any, output: Any) -> None:
        counter.__exit__(None, None, None)
        total[0] += float(counter.get_total_flops())

    hooks = [denoiser.register_forward_pre_hook(enter), denoiser.register_forward_hook(leave)]
    try:
        engine.generate(_spec(0, images, size, 1))
    finally:
        for hook in hooks:
            hook.remove()
    return total[0]


def measure_family(
    engine: Engine, batches: list[int], *, size: int, steps: int, repeats: int, peak: float | None
) -> list[Row]:
    """``measure`` for a family: one ``Engine.generate`` job of ``batch`` images per pass, warmed up once."""
    rows = []
    run = 0
    for batch in batches:
        flops = family_step_flops(engine, batch, size)
        engine.generate(_spec(run := run + 1, batch, size, steps))  # warm-up (and compile)
        if engine.pipes.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(engine.pipes.device)
        best: Generation | None = None
        for _ in range(repeats):
            outcome = engine.generate(_spec(run := run + 1, batch, size, steps))
            if best is None or outcome.timings["generate_s"] < best.timings["generate_s"]:
                best = outcome
        assert best is not None
        rows.append(_row(engine, batch, best, flops=flops, steps=steps, peak=peak))
    return rows


def _row(engine: Engine, batch: int, best: Generation, *, flops: float, steps: int, peak: float | None) -> Row:
    t = best.timings
    if engine.pipes.device.type == "cuda":
        memory = torch.cuda.max_memory_allocated(engine.pipes.device) / 2**30
    else:
        memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process peak RSS (KiB on Linux)
    achieved = flops * steps / max(t["denoise_s"], 1e-9) / 1e12
    return Row(
        batch=batch,
        images_per_s=batch / t["generate_s"],
        encode_s=t["encode_s"],
        denoise_s=t["denoise_s"],
        decode_s=t["decode_s"],
        total_s=t["generate_s"],
        denoiser_fraction=t["denoise_s"] / t["generate_s"],
        peak_mem_gib=memory,
        step_gflops=flops / 1e9,
        achieved_tflops=achieved,
        peak_fraction=(achieved / peak) if peak else None,
    )


def dry_run(names: list[str]) -> str:
    """Parameters of every component of each family at its released size (``meta`` device) and their bf16 bytes."""
    from bench.family_configs import PUBLISHED_DENOISER_PARAMS, parameter_counts

    lines = [f"{'family':<14} {'component':<16} {'params_B':>9} {'bf16_GiB':>9}"]
    for name in names:
        counts = parameter_counts(name)
        for component, count in counts.items():
            lines.append(f"{name:<14} {component:<16} {count / 1e9:>9.3f} {2 * count / 2**30:>9.2f}")
        total = sum(counts.values())
        denoiser = counts.get("transformer") or counts.get("unet") or 0
        published = PUBLISHED_DENOISER_PARAMS[name]
        lines.append(
            f"{name:<14} {'total':<16} {total / 1e9:>9.3f} {2 * total / 2**30:>9.2f}"
            f"  (denoiser {denoiser / published:.3f} x published {published / 1e9:.2f}B)"
        )
    return "\n".join(lines)


def format_table(rows: list[Row], header: dict[str, Any]) -> str:
    lines = [" ".join(f"{k}={v}" for k, v in header.items())]
    lines.append(
        f"{'batch':>5} {'img/s':>8} {'encode_s':>9} {'denoise_s':>9} {'decode_s':>9} {'total_s':>8} "
        f"{'denoise%':>8} {'peak_GiB':>8} {'GFLOP/step':>10} {'TFLOP/s':>8} {'of_peak':>8}"
    )
    for r in rows:
        of_peak = f"{100 * r.peak_fraction:7.1f}%" if r.peak_fraction is not None else f"{'n/a':>8}"
        lines.append(
            f"{r.batch:>5} {r.images_per_s:>8.2f} {r.encode_s:>9.4f} {r.denoise_s:>9.4f} {r.decode_s:>9.4f} "
            f"{r.total_s:>8.3f} {100 * r.denoiser_fraction:>7.1f}% {r.peak_mem_gib:>8.2f} {r.step_gflops:>10.2f} "
            f"{r.achieved_tflops:>8.3f} {of_peak}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[Row]:
    from bench.family_configs import PUBLISHED_DENOISER_PARAMS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--model", help="model folder, 'tiny' or 'sd15-random'")
    target.add_argument("--family", help=f"{', '.join(PUBLISHED_DENOISER_PARAMS)} (or 'all' with --dry-run)")
    parser.add_argument("--tiny", action="store_true", help="--family: the tiny test pipeline instead of real size")
    parser.add_argument("--dry-run", action="store_true", help="--family: print parameter counts only (no compute)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument(
        "--batches", default="", help="images per pass, comma-separated (default 1,2,4,8; families 1,2,4)"
    )
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=0, help="square side in pixels (default: the model's native)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="torch.compile the denoiser (static shapes)")
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="the device's peak dense TFLOP/s")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    default_batches = "1,2,4" if args.family else "1,2,4,8"
    batches = [int(b) for b in (args.batches or default_batches).split(",") if b.strip()]
    if not batches or min(batches) < 1:
        parser.error(f"--batches must be positive integers, got {args.batches!r}")
    if args.family:
        names = list(PUBLISHED_DENOISER_PARAMS) if args.family == "all" else [args.family]
        unknown = [name for name in names if name not in PUBLISHED_DENOISER_PARAMS]
        if unknown or (args.family == "all" and not args.dry_run):
            parser.error(f"--family must be one of {', '.join(PUBLISHED_DENOISER_PARAMS)} (all: with --dry-run)")
        if args.dry_run:
            print(dry_run(names), flush=True)
            return []
    device = choose_device(args.device)
    dtype = choose_dtype(args.dtype, device)
    started = time.perf_counter()
    if args.family:
        engine = family_engine(args.family, device, dtype, args.tiny)
    else:
        engine = load_engine(args.model, device, dtype)
    applied = engine.prepare_for_device(compile_denoiser=args.compile)
    load_s = time.perf_counter() - started
    size = args.size or (32 if args.family and args.tiny else 1024 if args.family else native_size(engine))
    peak = peak_tflops(device, args.peak_tflops or None)
    if args.family:
        rows = measure_family(engine, batches, size=size, steps=args.steps, repeats=args.repeats, peak=peak)
    else:
        rows = measure(engine, batches, size=size, steps=args.steps, repeats=args.repeats, peak=peak)
    header = {
        "model": args.model or f"{args.family}{'-tiny' if args.tiny else '-random'}",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
        "dtype": _dtype_name(dtype),
        "size": size,
        "steps": args.steps,
        "load_s": round(load_s, 2),
        "peak_TFLOPs": peak if peak else "n/a",
        "applied": ",".join(f"{k}={v}" for k, v in applied.items()),
    }
    print(format_table(rows, header), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps({"header": header, "rows": [asdict(r) for r in rows]}, indent=2))
    return rows


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
