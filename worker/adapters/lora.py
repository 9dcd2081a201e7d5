"""LoRAs on a resident pipeline: an LRU of prepared state dicts in CPU memory, and hot-swap slots so a job's LoRA set
is applied by copying weights into the same modules (no rebuild, no ``torch.compile`` recompile).

How a job's set ``((name, weight), ...)`` is applied (``LoraSlots.apply``):

1. Each LoRA file is read once into the LRU (``LoraFiles``) in a *prepared* form: converted to PEFT keys by diffusers'
   own ``lora_state_dict`` (kohya/A1111 and diffusers formats), its scaling (network alphas, or the file's
   ``lora_adapter_metadata``: ``alpha / r``, rsLoRA ``alpha / sqrt(r)``) folded into ``lora_B``, and zero-padded to
   the slot rank ``R`` (the largest rank among the family's configured LoRAs). ``B A`` is unchanged by both, and every
   prepared LoRA has the same PEFT config (rank ``R``, alpha ``R``, no patterns), so any of them can be hot-swapped
   into any slot (peft's ``check_hotswap_configs_compatible``).
2. On first use, ``enable_lora_hotswap(target_rank=R)`` is called, then ``K`` slots are created
   (``load_lora_weights`` of a zero LoRA over the union of the target modules of the family's configured LoRAs):
   ``K`` is ``LORA_MAX_PER_JOB`` (+1 with a draft LoRA).
3. A LoRA not in a slot is hot-swapped into a free one (``load_lora_weights(..., hotswap=True)``: weights copied in
   place; modules the LoRA does not target are zeroed). Then ``set_adapters`` gives the job's slots their weights.
   Slots the job does not use: on a ``torch.compile``d denoiser they stay active at weight 0, so every job runs the
   same compiled graph; otherwise they are left out of the active set (and a job without LoRAs disables the LoRA
   layers), because every active slot costs its matmuls even at weight 0 (measured on the shipped model: three idle
   slots at weight 0 added about 15% per step, see docs/performance.md). Either way weight 0 is exactly no LoRA.
4. Text-encoder parts (common in SDXL LoRAs) cannot be hot-swapped: they are merged into the encoders' weights for
   the job and the weights restored after it, and the text-encoding cache is keyed by them for that job
   (``LoraSlots.text_encoder_loras``).

The shipped ``ShapesPipeline`` has no LoRA loader mixin: its UNet's own PEFT API is used (``enable_lora_hotswap``,
``load_lora_adapter``, ``set_adapters``), with the same prepared state dicts (keys ``unet.*``).
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor

from shared import defaults
from shared.adapter_config import LoraEntry
from shared.adapters import lora_path

log = logging.getLogger(__name__)

DENOISER_COMPONENTS: tuple[str, ...] = ("unet", "transformer")
"""LoRA key prefixes of the denoiser (hot-swapped into slots); every other prefix is a text encoder's."""

SLOT_PREFIX = "slot"
"""Adapter names of the hot-swap slots: ``slot0``, ``slot1``, ..."""

_METADATA_KEY = "lora_adapter_metadata"
"""The safetensors header entry where diffusers and PEFT write a LoRA's config."""


@dataclass(frozen=True)
class PreparedLora:
    """A LoRA ready to load: per component (``unet``, ``text_encoder``, ...) PEFT keys -> tensors, scaling folded into
    ``lora_B`` (ranks as in the file; ``padded`` pads them to a slot's)."""

    name: str
    parts: dict[str, dict[str, Tensor]]
    rank: int
    """The largest rank in the file."""

    @property
    def denoiser(self) -> dict[str, Tensor]:
        """The denoiser's part (``unet`` or ``transformer``), keys without the component prefix."""
        for component in DENOISER_COMPONENTS:
            if component in self.parts:
                return self.parts[component]
        return {}

    @property
    def text_parts(self) -> dict[str, dict[str, Tensor]]:
        """The text encoders' parts, by component."""
        return {name: part for name, part in self.parts.items() if name not in DENOISER_COMPONENTS}


def read_lora_file(pipe: Any, path: Path) -> tuple[dict[str, Tensor], dict[str, Tensor] | None, dict[str, Any] | None]:
    """(state dict in diffusers' key format with component prefixes, network alphas or None, metadata or None).

    Pipelines with a LoRA loader mixin convert the file with their own ``lora_state_dict`` (kohya/A1111 formats
    included); others (the shipped model) read diffusers-format safetensors as they are.
    """
    if not path.is_file():
        raise FileNotFoundError(f"LoRA file {str(path)!r} does not exist")
    if callable(getattr(pipe, "lora_state_dict", None)):
        kwargs: dict[str, Any] = {"return_lora_metadata": True}
        if hasattr(pipe, "unet") and type(pipe).__name__.startswith("StableDiffusion"):
            kwargs["unet_config"] = pipe.unet.config
        out = pipe.lora_state_dict(str(path), **kwargs)
        state_dict, alphas, metadata = out if len(out) == 3 else (out[0], None, out[-1])
        return dict(state_dict), (dict(alphas) if alphas else None), metadata
    metadata = None
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        if header.get(_METADATA_KEY):
            metadata = json.loads(header[_METADATA_KEY])
    return load_file(str(path)), None, metadata


def _to_peft(component: str, part: dict[str, Tensor]) -> dict[str, Tensor]:
    """Keys of one component in PEFT form (``...lora_A.weight``/``...lora_B.weight``), as diffusers' loaders do."""
    from diffusers.utils import convert_state_dict_to_peft, convert_unet_state_dict_to_peft

    if any(".lora_A." in key or ".lora_B." in key for key in part):
        return part
    if component in DENOISER_COMPONENTS:
        return dict(convert_unet_state_dict_to_peft(part))
    return dict(convert_state_dict_to_peft(part))


def _scaling(component: str, module: str, rank: int, alphas: dict[str, Tensor] | None, meta: dict[str, Any]) -> float:
    """The LoRA scaling of one module: network alpha / rank, or the metadata's (rsLoRA: alpha / sqrt(rank)); 1 when
    the file says nothing (diffusers' convention: ``W + B A``)."""
    if alphas:
        for key in (f"{component}.{module}.alpha", f"{module}.alpha"):
            if key in alphas:
                return float(alphas[key]) / rank
    if meta:
        alpha = float(meta.get("lora_alpha", rank))
        for pattern, value in (meta.get("alpha_pattern") or {}).items():
            if re.search(rf"(^|\.){re.escape(pattern)}$", module) or re.fullmatch(pattern, module):
                alpha = float(value)
        return alpha / math.sqrt(rank) if meta.get("use_rslora") else alpha / rank
    return 1.0


def _pad(tensor: Tensor, dim: int, size: int) -> Tensor:
    """``tensor`` zero-padded along ``dim`` to ``size`` (a LoRA's rank axis: dim 0 of A, dim 1 of B)."""
    missing = size - tensor.shape[dim]
    if missing < 0:
        raise ValueError(f"LoRA rank {tensor.shape[dim]} exceeds the slot rank {size}")
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor, tensor.new_zeros(shape)], dim=dim)


def padded(part: dict[str, Tensor], rank: int) -> dict[str, Tensor]:
    """A component's LoRA weights zero-padded to ``rank`` (``B A`` unchanged): A along dim 0, B along dim 1."""
    out: dict[str, Tensor] = {}
    for key, value in part.items():
        if ".lora_A." in key and key.endswith(".weight"):
            out[key] = _pad(value, 0, rank).contiguous()
        elif ".lora_B." in key and key.endswith(".weight"):
            out[key] = _pad(value, 1, rank).contiguous()
        else:
            out[key] = value
    return out


def prepare(
    name: str, state_dict: dict[str, Tensor], alphas: dict[str, Tensor] | None, metadata: dict[str, Any] | None
) -> PreparedLora:
    """The prepared form of a LoRA (module doc, step 1; the padding to the slot rank is ``padded``'s)."""
    grouped: dict[str, dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        component, _, rest = key.partition(".")
        if not rest or key.endswith(".alpha"):
            continue
        grouped.setdefault(component, {})[rest] = value
    parts: dict[str, dict[str, Tensor]] = {}
    source_rank = 1
    for component, part in grouped.items():
        peft = _to_peft(component, part)
        meta = {
            k.removeprefix(f"{component}."): v for k, v in (metadata or {}).items() if k.startswith(f"{component}.")
        }
        if not meta and metadata and "r" in metadata:
            meta = metadata  # a single-model LoRA's metadata has no component prefix
        for key, value in peft.items():
            if ".lora_A." in key:
                source_rank = max(source_rank, int(value.shape[0]))
        parts[component] = {}
        for key, value in peft.items():
            if ".lora_B." in key and key.endswith(".weight"):
                module = key.split(".lora_B.")[0]
                a_key = f"{module}.lora_A.weight"
                r = int(peft[a_key].shape[0]) if a_key in peft else int(value.shape[1])
                scaled = value.float() * _scaling(component, module, r, alphas, meta)
                parts[component][key] = scaled.to(value.dtype)
            elif ".lora_A." in key or ".lora_B." in key:
                parts[component][key] = value
            else:
                log.warning("LoRA %s: ignoring key %s.%s (not a LoRA A/B weight)", name, component, key)
    return PreparedLora(name, parts, source_rank)


class LoraFiles:
    """The LRU of prepared LoRAs in CPU memory, keyed by name; a file is read at most once while it is cached."""

    def __init__(self, capacity: int = defaults.LORA_CACHE_ENTRIES) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[str, PreparedLora] = OrderedDict()
        self._lock = threading.Lock()
        self.reads = 0
        """Files read so far (a cache hit reads none)."""

    def get(self, key: str, load: Callable[[], PreparedLora]) -> PreparedLora:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                return hit
        prepared = load()
        with self._lock:
            self.reads += 1
            self._entries[key] = prepared
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                evicted, _ = self._entries.popitem(last=False)
                log.info("LoRA %s dropped from the CPU cache (capacity %d)", evicted, self.capacity)
        return prepared


@dataclass
class AppliedLoras:
    """What ``LoraSlots.apply`` did for one job (for its record)."""

    loras: list[tuple[str, float]] = field(default_factory=list)
    slots: dict[str, str] = field(default_factory=dict)
    """Slot adapter name -> LoRA name, for the job's LoRAs."""
    swapped: list[str] = field(default_factory=list)
    """LoRAs hot-swapped in for this job (the others were in their slots already)."""
    text_encoder: list[str] = field(default_factory=list)
    """LoRAs whose text-encoder parts were loaded for this job."""

    def notes(self) -> dict[str, Any]:
        return {
            "loras": [[name, weight] for name, weight in self.loras],
            "slots": self.slots,
            "hot_swapped": self.swapped,
            "text_encoder_loras": self.text_encoder,
        }


class LoraSlots:
    """The hot-swap slots of one resident pipeline (module doc)."""

    def __init__(
        self,
        pipe: Any,
        entries: dict[str, LoraEntry],
        *,
        slots: int,
        files: LoraFiles | None = None,
        path_of: Callable[[LoraEntry], Path] = lora_path,
    ) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.pipe = pipe
        self.entries = dict(entries)
        """The configured LoRAs that fit this pipeline's family."""
        self.count = slots
        self.files = files or LoraFiles()
        self.path_of = path_of
        self.rank = 0
        """The slot rank (0 until the slots exist)."""
        self.held: list[str | None] = [None] * slots
        """The LoRA each slot holds (None: the zero LoRA)."""
        self._last_used: list[int] = [0] * slots
        self._clock = 0
        self.created = False
        self.swaps = 0
        """LoRAs hot-swapped into slots so far."""
        self.pipeline_api = callable(getattr(pipe, "load_lora_weights", None))
        """Whether the pipeline has a LoRA loader mixin (else the denoiser's PEFT API is used)."""

    @property
    def slot_names(self) -> list[str]:
        return [f"{SLOT_PREFIX}{index}" for index in range(self.count)]

    @property
    def denoiser(self) -> Any:
        """The module the slots live in (``unet`` or ``transformer``)."""
        for name in DENOISER_COMPONENTS:
            module = getattr(self.pipe, name, None)
            if module is not None:
                return module
        raise ValueError(f"{type(self.pipe).__name__} has no unet or transformer for LoRAs")

    def prepared(self, name: str) -> PreparedLora:
        """The prepared LoRA ``name`` (from the LRU, read from its file on a miss)."""
        if name not in self.entries:
            raise KeyError(f"LoRA {name!r} is not configured for this model; configured: {sorted(self.entries)}")

        def load() -> PreparedLora:
            state_dict, alphas, metadata = read_lora_file(self.pipe, self.path_of(self.entries[name]))
            return prepare(name, state_dict, alphas, metadata)

        return self.files.get(name, load)

    # -- slots ---------------------------------------------------------------------------------------------------

    def create(self) -> None:
        """Enable hot-swapping and create the slots (module doc, step 2); reads every configured LoRA once."""
        if self.created:
            return
        sources = [self.prepared(name) for name in sorted(self.entries)]
        self.rank = max([lora.rank for lora in sources] or [1])
        union: dict[str, Tensor] = {}
        for lora in sources:
            for key, value in lora.denoiser.items():
                shape = list(value.shape)
                shape[0 if ".lora_A." in key else 1] = self.rank
                union.setdefault(key, torch.zeros(shape, dtype=value.dtype))
        if not union:
            raise ValueError("no configured LoRA has weights for this model's denoiser")
        self._enable_hotswap()
        for slot in self.slot_names:
            # each slot its own tensors: diffusers loads with low_cpu_mem_usage, which adopts the tensors given
            self._load(slot, {key: value.clone() for key, value in union.items()}, hotswap=False)
        self._set_weights([0.0] * self.count)
        self.created = True
        log.info("LoRA slots ready: %d slot(s) of rank %d over %d module weights", self.count, self.rank, len(union))

    def _enable_hotswap(self) -> None:
        if self.pipeline_api:
            self.pipe.enable_lora_hotswap(target_rank=self.rank)
        else:
            self.denoiser.enable_lora_hotswap(target_rank=self.rank)

    def _component(self) -> str:
        return "unet" if getattr(self.pipe, "unet", None) is not None else "transformer"

    def _load(self, adapter: str, weights: dict[str, Tensor], *, hotswap: bool) -> None:
        """Load a denoiser state dict (PEFT keys without prefix) as ``adapter``, in place when ``hotswap``."""
        component = self._component()
        prefixed = {f"{component}.{key}": value for key, value in weights.items()}
        if self.pipeline_api:
            with warnings.catch_warnings():
                # the slots hold denoiser weights only: diffusers warns that the text encoders got none
                warnings.filterwarnings("ignore", message="No LoRA keys associated")
                self.pipe.load_lora_weights(prefixed, adapter_name=adapter, hotswap=hotswap)
        else:
            self.denoiser.load_lora_adapter(prefixed, prefix=component, adapter_name=adapter, hotswap=hotswap)

    @property
    def compiled(self) -> bool:
        """Whether the denoiser is ``torch.compile``d (idle slots then stay active at weight 0: module doc, step 3)."""
        return hasattr(self.denoiser, "_orig_mod")

    def _set_weights(self, weights: Sequence[float]) -> None:
        """Give the slots their weights (module doc, step 3)."""
        target = self.pipe if self.pipeline_api else self.denoiser
        if self.compiled:
            target.set_adapters(self.slot_names, list(weights))
            return
        active = [(name, weight) for name, weight in zip(self.slot_names, weights, strict=True) if weight != 0]
        if not active:
            target.disable_lora()
            return
        target.enable_lora()
        target.set_adapters([name for name, _ in active], [weight for _, weight in active])

    def apply(self, loras: Sequence[tuple[str, float]]) -> AppliedLoras:
        """Put the job's LoRAs into slots and set every slot's weight (module doc, step 3). Before any LoRA was ever
        asked for, a job without LoRAs changes nothing (the pipeline stays as loaded)."""
        applied = AppliedLoras(loras=list(loras))
        if not loras and not self.created:
            return applied
        if len(loras) > self.count:
            raise ValueError(f"a job may use at most {self.count} LoRAs here, got {len(loras)}")
        self.create()
        wanted = {name for name, _ in loras}
        weights = [0.0] * self.count
        for name, weight in loras:
            self._clock += 1
            if name in self.held:
                index = self.held.index(name)
            else:
                free = [i for i, held in enumerate(self.held) if held not in wanted]
                index = min(free, key=lambda i: self._last_used[i])
                self._load(self.slot_names[index], padded(self.prepared(name).denoiser, self.rank), hotswap=True)
                self.held[index] = name
                self.swaps += 1
                applied.swapped.append(name)
            self._last_used[index] = self._clock
            weights[index] = float(weight)
            applied.slots[self.slot_names[index]] = name
        self._set_weights(weights)
        return applied

    @contextmanager
    def text_encoder_loras(self, loras: Sequence[tuple[str, float]], text: Any) -> Iterator[list[str]]:
        """For the job's duration: the text-encoder parts of its LoRAs merged into the encoders' weights
        (``W + weight * B A``, the scaling folded into B) and the text-encoding cache keyed by them
        (``text.model_key``); afterwards every touched weight is copied back from a saved original, bit for bit
        (module doc, step 4). Merging instead of PEFT adapters keeps the encoders free of adapter layers (they run
        once per job) and does not need transformers' PEFT integration. Yields the LoRAs that had such parts."""
        parts = [(name, weight, self.prepared(name).text_parts) for name, weight in loras if weight != 0]
        parts = [(name, weight, part) for name, weight, part in parts if part]
        if not parts:
            yield []
            return
        saved: dict[int, tuple[Tensor, Tensor]] = {}
        base_key = text.model_key if text is not None else ""
        try:
            with torch.no_grad():
                for _, weight, part in parts:
                    for component, keys in part.items():
                        encoder = getattr(self.pipe, component, None)
                        if encoder is None:
                            log.warning("LoRA part for %s ignored: the pipeline has no such component", component)
                            continue
                        for key, lora_a in keys.items():
                            if ".lora_A." not in key:
                                continue
                            module_name = key.split(".lora_A.")[0]
                            lora_b = keys[f"{module_name}.lora_B.weight"]
                            target = encoder.get_submodule(module_name).weight  # (out, in)
                            saved.setdefault(id(target), (target, target.detach().clone()))
                            delta = lora_b.float() @ lora_a.float()  # (out, R) @ (R, in)
                            target.add_((weight * delta).to(target.device, target.dtype))
            if text is not None:
                signature = ",".join(f"{name}:{weight:g}" for name, weight, _ in parts)
                text.model_key = f"{base_key}|text-lora:{signature}"
            yield [name for name, _, _ in parts]
        finally:
            if text is not None:
                text.model_key = base_key
            with torch.no_grad():
                for target, original in saved.values():
                    target.copy_(original)
