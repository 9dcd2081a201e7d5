"""Train the shipped model: the BERT-conditioned pixel-space UNet and the contrastive alignment scorer, in one loop.

    python -m training.train --out runs/imagine-shapes --steps 5000 --batch 256 --device cuda --seed 0

Each step takes a batch of fresh scenes with captions and token ids (``training.batches``, made in ``--workers``
DataLoader processes), renders them on the training device, encodes the captions with the frozen BERT, replaces 10% of
the token states by the encoding of ``""`` (classifier-free guidance dropout), and takes one v-prediction step
(min-SNR-5 weighting) on the UNet plus one InfoNCE step on the alignment model. An exponential moving average of the
UNet weights is what gets saved. Seeded: the same command (same ``--workers``) on the same device and library
versions gives the same data stream. ``--compile`` runs the UNet and the alignment model through ``torch.compile``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, UNet2DConditionModel
from safetensors.torch import save_file

from training.batches import scene_batches, scenes_of
from training.candidates import write_caption_bank
from training.coord_unet import CoordUNet2DConditionModel
from training.scenes import render
from worker.alignment import ShapesAlignmentModel, mean_pool
from worker.shapes_pipeline import TOKENS_PER_CHUNK, UNET_CLASSES, text_encoder_folder, write_model_index

log = logging.getLogger(__name__)

PRESETS: dict[str, dict[str, Any]] = {
    "default": {
        "resolution": 64,
        "block_out_channels": [16, 32, 64, 128],
        "down_block_types": ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
        "attention_heads": 4,
        "norm_num_groups": 8,
        "align_channels": [32, 64, 128, 256],
        "align_embed_dim": 256,
    },
    "tiny": {
        "resolution": 16,
        "block_out_channels": [8, 16],
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "attention_heads": 2,
        "norm_num_groups": 4,
        "align_channels": [8, 16],
        "align_embed_dim": 32,
    },
}
"""Model sizes: ``default`` is the shipped one (64x64, 4.5 M parameters); ``tiny`` is for smoke tests."""


@dataclass
class TrainConfig:
    """Everything that determines a training run (saved as training_info.json)."""

    out: str = "runs/imagine-shapes"
    preset: str = "default"
    steps: int = 5000
    batch: int = 256
    lr: float = 5e-4
    align_lr: float = 1e-3
    warmup: int = 200
    cfg_dropout: float = 0.1
    blend_share: float = 0.0
    """Share of each batch conditioned on a weighted blend of its two objects' phrases, the ``::`` contract
    (``training.batches``), instead of its caption; 0 replays the recipes that had no blends exactly."""
    phrase_share: float = 0.0
    """Share of each batch (one-object scenes) captioned by the bare object phrase, so that a lone phrase keeps
    meaning one object while blends of two phrases mean two (``training.batches``)."""
    coords: bool = False
    """Train a ``CoordUNet2DConditionModel`` (coordinate features at ``conv_in`` and every attention block,
    ``training.coord_unet``); from a plain ``--init-from`` model its coordinate weights start at zero."""
    coord_lr_scale: float = 10.0
    """Learning-rate multiple of the coordinate weights: zero-initialised weights moved by ``lr`` per Adam step would
    take thousands of steps to reach the size of the colour weights beside them."""
    ema_decay: float = 0.999
    """Per-step decay of the saved weights' moving average. A short continuation wants less (0.995: a horizon of 200
    steps), or the average keeps 0.999**steps of the starting weights (22% after 1,500 steps)."""
    min_snr_gamma: float = 5.0
    seed: int = 0
    device: str = "cpu"
    max_seconds: float = 0.0
    checkpoint_every_s: float = 90.0
    log_every: int = 50
    workers: int = 0
    compile: bool = False
    stop_after: int = 0
    """End after this many steps (0: at ``steps``); the learning-rate schedule still spans ``steps``, so a run that was
    stopped at a checkpoint can be replayed exactly."""
    bert_folder: str = ""
    init_from: str = ""
    model: dict[str, Any] = field(default_factory=dict)


def unet_config(model: dict[str, Any]) -> dict[str, Any]:
    """UNet2DConditionModel kwargs of a preset: RGB in/out, cross-attention over 384-d BERT states."""
    return {
        "sample_size": model["resolution"],
        "in_channels": 3,
        "out_channels": 3,
        "layers_per_block": 1,
        "block_out_channels": tuple(model["block_out_channels"]),
        "down_block_types": tuple(model["down_block_types"]),
        "up_block_types": tuple(model["up_block_types"]),
        "cross_attention_dim": 384,
        "attention_head_dim": model["attention_heads"],
        "norm_num_groups": model["norm_num_groups"],
    }


def make_unet(cfg: TrainConfig) -> UNet2DConditionModel:
    """The denoiser of ``cfg``: plain, or with coordinate channels (``--coords``)."""
    cls = CoordUNet2DConditionModel if cfg.coords else UNet2DConditionModel
    return cls(**unet_config(cfg.model))


def load_unet_weights(unet: UNet2DConditionModel, folder: str) -> None:
    """Load ``folder``'s UNet into ``unet`` (a plain one into a coordinate one: coordinate weights stay zero)."""
    saved = json.loads(Path(folder, "config.json").read_text())["_class_name"]
    if saved not in UNET_CLASSES:
        raise ValueError(f"--init-from {folder} has a {saved!r}; allowed: {sorted(UNET_CLASSES)}")
    if saved == CoordUNet2DConditionModel.__name__ and not isinstance(unet, CoordUNet2DConditionModel):
        raise ValueError(f"--init-from {folder} has coordinate channels; train it with --coords")
    state = UNET_CLASSES[saved].from_pretrained(folder).float().state_dict()
    if isinstance(unet, CoordUNet2DConditionModel) and saved == UNet2DConditionModel.__name__:
        unet.load_plain_weights(state)
    else:
        unet.load_state_dict(state)


def make_scheduler() -> DDIMScheduler:
    """The training and sampling schedule: cosine betas, v-prediction, DDIM with trailing spacing (starts at t=999)."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        prediction_type="v_prediction",
        timestep_spacing="trailing",
        clip_sample=True,
        clip_sample_range=1.0,
        set_alpha_to_one=True,
    )


def load_bert(bert_folder: str, device: torch.device) -> tuple[Any, Any]:
    """The frozen BERT (float32, eval) and its tokenizer, from the package or a copy of it (e.g. fp16 weights)."""
    from transformers import AutoTokenizer, BertModel

    folder = bert_folder or str(text_encoder_folder())
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    encoder = BertModel.from_pretrained(
        folder, local_files_only=True, add_pooling_layer=False, torch_dtype=torch.float32
    )
    return encoder.float().eval().requires_grad_(False).to(device), tokenizer


@torch.no_grad()
def encode_texts(
    encoder: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen BERT token states (B, 32, 384) and their mask-weighted means (B, 384), float32."""
    states = encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.float()
    return states, mean_pool(states, attention_mask)


def blend_states(
    encoder: Any, states: torch.Tensor, batch: dict[str, Any], device: torch.device, empty: torch.Tensor
) -> torch.Tensor:
    """``states`` (B, 32, 384) with the batch's blend rows replaced by what ``worker.text`` builds for
    ``a::w b::1-w``: the real tokens of E(a) times 2w, then those of E(b) times 2(1 - w), then the empty text's states
    ``empty`` (1, 32, 384) at the remaining positions. The pooled vectors (the alignment model's targets) stay those of
    the full captions.
    """
    index = batch["blend_index"].to(device, non_blocking=True)  # (K,)
    ids = batch["blend_ids"].to(device, non_blocking=True)  # (K, 2, 32)
    mask = batch["blend_mask"].to(device, non_blocking=True).bool()
    parts, _ = encode_texts(encoder, ids.flatten(0, 1), mask.flatten(0, 1))  # (2K, 32, 384)
    parts = parts.view(*ids.shape, parts.shape[-1])  # (K, 2, 32, 384)
    w = batch["blend_weight"].to(device, non_blocking=True).tolist()
    rows = empty.expand(len(w), -1, -1).clone()  # (K, 32, 384)
    for k, weight in enumerate(w):
        joined = torch.cat([parts[k, 0][mask[k, 0]] * (2 * weight), parts[k, 1][mask[k, 1]] * (2 * (1 - weight))])
        rows[k, : min(len(joined), rows.shape[1])] = joined[: rows.shape[1]]
    return states.index_copy(0, index, rows)


def save_model(
    folder: Path,
    cfg: TrainConfig,
    ema: list[torch.Tensor],
    align: ShapesAlignmentModel,
    info: dict[str, Any],
) -> None:
    """Write the model folder: model_index.json, unet/ (EMA weights, fp16), scheduler/, alignment/, training_info."""
    folder.mkdir(parents=True, exist_ok=True)
    shipped = make_unet(cfg)
    with torch.no_grad():
        for p, e in zip(shipped.parameters(), ema, strict=True):
            p.copy_(e.detach().cpu())
    shipped.half().save_pretrained(str(folder / "unet"))
    make_scheduler().save_pretrained(str(folder / "scheduler"))
    write_model_index(folder, "DDIMScheduler", type(shipped).__name__)
    sub = folder / "alignment"
    sub.mkdir(exist_ok=True)
    (sub / "config.json").write_text(json.dumps(align.config, indent=2) + "\n")
    save_file(
        {k: v.detach().half().cpu().contiguous() for k, v in align.state_dict().items()}, str(sub / "model.safetensors")
    )
    (folder / "training_info.json").write_text(json.dumps(info, indent=2) + "\n")


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Run the training; returns the summary also written to ``<out>/training_info.json``."""
    if cfg.preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {cfg.preset!r}")
    cfg.model = {**PRESETS[cfg.preset], **cfg.model}
    device = torch.device(cfg.device)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    started = time.perf_counter()
    encoder, tokenizer = load_bert(cfg.bert_folder, device)
    empty = tokenizer([""], padding="max_length", max_length=TOKENS_PER_CHUNK, truncation=True, return_tensors="pt")
    empty_states, _ = encode_texts(encoder, empty["input_ids"].to(device), empty["attention_mask"].to(device))

    unet = make_unet(cfg)
    align = ShapesAlignmentModel(
        image_size=cfg.model["resolution"], channels=cfg.model["align_channels"], embed_dim=cfg.model["align_embed_dim"]
    )
    if cfg.init_from:  # continue from a saved model folder (its EMA UNet and its alignment model)
        load_unet_weights(unet, cfg.init_from + "/unet")
        align.load_state_dict(ShapesAlignmentModel.from_folder(cfg.init_from + "/alignment").state_dict())
        print(f"initialised from {cfg.init_from}", flush=True)
    unet = unet.to(device).train()
    align = align.to(device).train()
    n_unet = sum(p.numel() for p in unet.parameters())
    n_align = sum(p.numel() for p in align.parameters())
    fused = device.type == "cuda"  # one kernel per optimiser step instead of one per parameter tensor
    coord = unet.coord_parameters() if isinstance(unet, CoordUNet2DConditionModel) else []
    rest = [p for p in unet.parameters() if all(p is not c for c in coord)]
    groups = [{"params": rest, "lr_scale": 1.0}, {"params": coord, "lr_scale": cfg.coord_lr_scale}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.01, fused=fused)
    align_opt = torch.optim.AdamW(align.parameters(), lr=cfg.align_lr, weight_decay=0.01, fused=fused)
    # compiled views share the parameters of `unet` and `align`; optimisers, EMA and saving use the originals
    unet_fn: Any = torch.compile(unet) if cfg.compile else unet
    align_loss_fn: Any = torch.compile(align.loss) if cfg.compile else align.loss
    ema = [p.detach().clone().float() for p in unet.parameters()]
    sched = make_scheduler()
    alphas = sched.alphas_cumprod.to(device)  # (1000,)
    snr = alphas / (1 - alphas)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    batches = scene_batches(
        cfg.batch,
        cfg.seed,
        cfg.bert_folder or str(text_encoder_folder()),
        TOKENS_PER_CHUNK,
        workers=cfg.workers,
        pin_memory=device.type == "cuda",
        blend_rows=round(cfg.blend_share * cfg.batch),
        phrase_rows=round(cfg.phrase_share * cfg.batch),
    )
    res = int(cfg.model["resolution"])
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    total = cfg.steps
    print(
        f"training {cfg.preset}: UNet {n_unet / 1e6:.2f} M params, alignment {n_alignment_str(n_align)}, {res}x{res}, "
        f"batch {cfg.batch}, up to {total} steps on {device} (setup {time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    out = Path(cfg.out)
    t0 = time.perf_counter()
    last_ckpt = t0
    losses: list[torch.Tensor] = []
    align_losses: list[torch.Tensor] = []
    mark = (0, t0)
    step = 0
    data_wait = 0.0
    info: dict[str, Any] = {}
    while step < total and not (cfg.stop_after and step >= cfg.stop_after):
        waited = time.perf_counter()
        batch = next(batches)
        data_wait += time.perf_counter() - waited
        pixels = render(scenes_of(batch, device), res)  # (B, 3, res, res) in [-1, 1]
        states, pooled = encode_texts(
            encoder,
            batch["input_ids"].to(device, non_blocking=True),
            batch["attention_mask"].to(device, non_blocking=True),
        )  # (B, 32, 384), (B, 384)
        if "blend_index" in batch:
            states = blend_states(encoder, states, batch, device, empty_states)
        drop = torch.rand(cfg.batch, generator=gen, device=device) < cfg.cfg_dropout
        cond = torch.where(drop[:, None, None], empty_states.expand_as(states), states)

        t = torch.randint(0, 1000, (cfg.batch,), generator=gen, device=device)
        noise = torch.randn(pixels.shape, generator=gen, device=device)
        a = alphas[t].sqrt()[:, None, None, None]
        s = (1 - alphas[t]).sqrt()[:, None, None, None]
        noisy = a * pixels + s * noise
        target = a * noise - s * pixels  # v
        weight = torch.clamp(snr[t], max=cfg.min_snr_gamma) / (snr[t] + 1)
        lr_scale = min(1.0, (step + 1) / cfg.warmup) * (
            0.55 + 0.45 * math.cos(math.pi * min(step / max(total, 1), 1.0))
        )
        for group in opt.param_groups:
            group["lr"] = cfg.lr * lr_scale * group["lr_scale"]
        with autocast:
            pred = unet_fn(noisy, t, encoder_hidden_states=cond, return_dict=False)[0]
        loss = (weight * F.mse_loss(pred.float(), target, reduction="none").mean((1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        decay = cfg.ema_decay if cfg.init_from else min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach().float() for p in unet.parameters()], 1 - decay)

        # contrastive step on the same clean scenes, lightly noised so it also scores imperfect generations
        sigma = 0.1 * torch.rand((cfg.batch, 1, 1, 1), generator=gen, device=device)
        with autocast:
            align_loss = align_loss_fn(pixels + sigma * torch.randn(pixels.shape, generator=gen, device=device), pooled)
        align_opt.zero_grad(set_to_none=True)
        align_loss.backward()
        align_opt.step()

        losses.append(loss.detach())
        align_losses.append(align_loss.detach())
        step += 1
        if step in (20, 60) and cfg.max_seconds > 0:  # steps 20-60 time the steady state (no sync otherwise)
            torch.cuda.synchronize() if device.type == "cuda" else None
            now = time.perf_counter()
            if step == 20:
                mark = (step, now)
            else:
                per_step = (now - mark[1]) / (step - mark[0])
                fit = int((cfg.max_seconds - (now - started)) / per_step) + step
                total = max(min(fit, cfg.steps), step)
                print(
                    f"{per_step * 1000:.0f} ms/step: {total} steps fit in --max-seconds {cfg.max_seconds:g}", flush=True
                )
        now = time.perf_counter()
        if step % cfg.log_every == 0 or step == total:
            recent = torch.stack(losses[-cfg.log_every :]).mean().item()
            recent_align = torch.stack(align_losses[-cfg.log_every :]).mean().item()
            print(
                f"step {step:6d}/{total}  loss {recent:.4f}  align {recent_align:.3f}  "
                f"T {1 / align.logit_scale.detach().exp().item():.3f}  "
                f"{step / (now - t0):.1f} it/s  data wait {100 * data_wait / (now - t0):.0f}%  {now - started:.0f} s"
                + (f"  coord |w| {torch.cat([p.detach().flatten() for p in coord]).abs().mean():.4f}" if coord else ""),
                flush=True,
            )
        if now - last_ckpt > cfg.checkpoint_every_s or step in (total, cfg.stop_after):
            tail = max(1, min(200, len(losses)))
            losses = losses[-tail:]
            align_losses = align_losses[-tail:]
            info = {
                "config": asdict(cfg),
                "steps": step,
                "planned_steps": total,
                "samples_seen": step * cfg.batch,
                "unet_parameters": n_unet,
                "alignment_parameters": n_align,
                "final_loss": torch.stack(losses).mean().item(),
                "final_align_loss": torch.stack(align_losses).mean().item(),
                "temperature": 1 / align.logit_scale.detach().exp().item(),
                "train_seconds": now - t0,
                "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "torch": torch.__version__,
                "data_wait_seconds": data_wait,
            }
            save_model(out, cfg, ema, align, info)
            last_ckpt = now
            print(f"checkpoint: {out} at step {step}", flush=True)
    # the /describe candidates' vectors belong to these alignment weights (worker.caption_bank)
    print(f"caption bank: {write_caption_bank(out, encoder, tokenizer)} candidates encoded", flush=True)
    print_summary(info)
    return info


def n_alignment_str(n: int) -> str:
    return f"{n / 1e6:.2f} M params"


def print_summary(info: dict[str, Any]) -> None:
    rows = [
        ("steps", info["steps"]),
        ("samples seen", info["samples_seen"]),
        ("UNet parameters", info["unet_parameters"]),
        ("final v-loss (min-SNR weighted, last 200)", f"{info['final_loss']:.4f}"),
        ("final InfoNCE loss (last 200)", f"{info['final_align_loss']:.3f}"),
        ("temperature", f"{info['temperature']:.4f}"),
        ("train seconds", f"{info['train_seconds']:.0f}"),
        ("device", info["device"]),
    ]
    width = max(len(r[0]) for r in rows)
    print("\n".join(f"| {k:<{width}} | {v} |" for k, v in rows), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    defaults = TrainConfig()
    for name in ("out", "preset", "device", "bert_folder", "init_from"):
        parser.add_argument(f"--{name.replace('_', '-')}", default=getattr(defaults, name))
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet and the alignment model")
    parser.add_argument("--coords", action="store_true", help="give the UNet pixel coordinates (training.coord_unet)")
    for name in ("steps", "batch", "seed", "log_every", "warmup", "workers", "stop_after"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in (
        "lr",
        "align_lr",
        "max_seconds",
        "checkpoint_every_s",
        "cfg_dropout",
        "ema_decay",
        "blend_share",
        "phrase_share",
        "coord_lr_scale",
    ):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    args = vars(parser.parse_args(argv))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    train(TrainConfig(**args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
