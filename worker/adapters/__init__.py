"""What a resident engine's model is adapted with per job: LoRAs (``lora``: hot-swap slots) and references
(``ip_adapter``: diffusers' IP-Adapter loaders; ``captions``: the shipped model's caption retrieval; ``references``:
the vectors a reference stands for).

``adapters_of(engine, settings)`` gives one ``EngineAdapters`` per resident engine (made on its first job; a
configured IP-Adapter is loaded then, so every job of that engine runs through the same attention processors).
``worker.tasks`` wraps each job in ``EngineAdapters.prepare``: the job's LoRA set is applied, its text-encoder LoRA
parts merged for the job, its references turned into pipeline keyword arguments (IP-Adapter embeddings) or extra
``::`` parts (captions), and the notes for its record collected.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import torch

from shared import messages
from shared.adapters import IP_ADAPTER_FAMILIES, adapter_family, ip_adapter_for
from shared.errors import Unsupported
from shared.jobs.spec import JobKind, JobSpec
from shared.settings import Settings
from worker.adapters.captions import CaptionReferences
from worker.adapters.ip_adapter import SLOT_OF_KIND, IpAdapter, SlotInput
from worker.adapters.lora import LoraSlots
from worker.adapters.references import reference_vectors

log = logging.getLogger(__name__)

_GENERATING_KINDS = frozenset({JobKind.GRID, JobKind.VARIATION, JobKind.OUTPAINT, JobKind.UPSCALE})
"""Job kinds whose pipeline call takes the adapters (an upscale's creative pass is a variation run)."""


@dataclass
class PreparedJob:
    """A job as the engine runs it: the spec (with caption parts added on the shipped model), extra pipeline keyword
    arguments (IP-Adapter embeddings) and the notes for its record."""

    spec: JobSpec
    call_kwargs: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)


class EngineAdapters:
    """The LoRA slots and the reference method of one resident engine (module doc)."""

    def __init__(self, engine: Any, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.family = adapter_family(engine.model_ref)
        pipe = engine.pipes.text2img
        entries = {name: entry for name, entry in settings.loras.items() if self.family in entry.families}
        slots = settings.lora_max_per_job + (1 if settings.draft_lora in entries else 0)
        self.loras: LoraSlots | None = LoraSlots(pipe, entries, slots=slots) if entries else None
        self.ip_adapter: IpAdapter | None = None
        entry = ip_adapter_for(settings, engine.model_ref)
        if entry is not None and self.family in IP_ADAPTER_FAMILIES:
            self.ip_adapter = IpAdapter(pipe, entry)
            if getattr(engine, "layout_strength", 0):
                # the IP-Adapter's attention processors replace the layout bias's on every cross-attention
                log.info("layouts off for %s: its IP-Adapter takes the cross-attention processors", engine.model_ref)
                engine.layout_strength = 0.0
        self._captions: CaptionReferences | None = None

    # -- references ----------------------------------------------------------------------------------------------

    def captions(self) -> CaptionReferences:
        """The shipped model's caption retrieval (loaded on first use); ``Unsupported`` for other models."""
        if self._captions is None:
            if self.family != "shapes":
                raise Unsupported(messages.reference_unavailable("image", Path(self.engine.model_ref).name))
            self._captions = CaptionReferences(self.engine.model_ref, getattr(self.engine, "scorer", None))
        return self._captions

    def _references(self, spec: JobSpec, connection: redis.Redis | None, prepared: PreparedJob) -> None:
        """Turn the job's references into IP-Adapter embeddings or caption parts, in ``prepared``."""
        embedder: Any = self.ip_adapter if self.ip_adapter is not None else self.captions()
        vectors: list[tuple[Any, Any]] = []
        notes = []
        for reference in spec.references:
            found, note = reference_vectors(reference, embedder, self.settings, connection)
            vectors.append((reference, found))
            notes.append(note)
        prepared.notes["references"] = notes
        if self.ip_adapter is None:
            parts, chosen = self.captions().parts(spec.parts, [(found, ref.scale) for ref, found in vectors])
            prepared.spec = spec.replace(parts=parts)
            prepared.notes["reference_captions"] = chosen
            return
        inputs: dict[str, SlotInput] = {}
        for reference, found in vectors:
            slot = SLOT_OF_KIND[reference.kind]
            given = inputs.get(slot)
            if given is None:
                inputs[slot] = SlotInput(found, reference.scale, reference.blocks)
            else:
                blocks = given.blocks if given.blocks == reference.blocks else "all"
                inputs[slot] = SlotInput(torch.cat([given.vectors, found]), max(given.scale, reference.scale), blocks)
        prepared.notes["ip_adapter_scales"] = {slot: given.scale for slot, given in inputs.items()}
        prepared.call_kwargs.update(self._ip_kwargs(spec, inputs))

    def _ip_kwargs(self, spec: JobSpec, inputs: dict[str, SlotInput]) -> dict[str, Any]:
        assert self.ip_adapter is not None
        images = 1 if spec.kind is JobKind.UPSCALE else len(spec.seeds)
        unet = getattr(self.engine.pipes.text2img, "unet", None)
        guidance = spec.guidance > 1 and getattr(getattr(unet, "config", None), "time_cond_proj_dim", None) is None
        return self.ip_adapter.pipeline_kwargs(inputs, images, guidance)

    # -- jobs ----------------------------------------------------------------------------------------------------

    def _check_loras(self, loras: Sequence[tuple[str, float]]) -> None:
        known = self.loras.entries if self.loras is not None else {}
        for name, _ in loras:
            if name not in known:
                raise Unsupported(messages.unknown_lora(name, sorted(known)))

    @contextmanager
    def prepare(self, spec: JobSpec, connection: redis.Redis | None = None) -> Iterator[PreparedJob]:
        """The job's LoRA set applied and its references prepared, for the duration of its run (module doc)."""
        prepared = PreparedJob(spec)
        if spec.kind not in _GENERATING_KINDS:
            yield prepared
            return
        self._check_loras(spec.loras)
        if self.loras is not None:
            prepared.notes.update(self.loras.apply(spec.loras).notes())
        subtle = spec.kind is JobKind.UPSCALE and spec.upscale_mode != "creative"  # no denoising: no references
        if spec.references and not subtle:
            self._references(spec, connection, prepared)
        elif self.ip_adapter is not None:  # the IP-Adapter's UNet needs embeddings: zeros at scale 0
            prepared.call_kwargs.update(self._ip_kwargs(spec, {}))
        text = getattr(self.engine, "text", None)
        if self.loras is None:
            yield prepared
            return
        with self.loras.text_encoder_loras(spec.loras, text) as merged:
            if merged:
                prepared.notes["text_encoder_loras"] = merged
            yield prepared

    def batchable(self, specs: Sequence[JobSpec]) -> bool:
        """Whether these jobs may share one denoising pass: not with references or an IP-Adapter (the batched loop
        passes no image embeddings), and only with one LoRA set (``worker.batching.batch_key`` already groups so)."""
        if self.ip_adapter is not None or any(spec.references for spec in specs):
            return False
        return len({spec.loras for spec in specs}) == 1

    @contextmanager
    def batch(self, specs: Sequence[JobSpec]) -> Iterator[dict[str, Any]]:
        """The shared LoRA set of a batch applied for its pass; yields the notes for every job's record."""
        loras = specs[0].loras
        self._check_loras(loras)
        if self.loras is None:
            yield {}
            return
        notes = self.loras.apply(loras).notes()
        with self.loras.text_encoder_loras(loras, getattr(self.engine, "text", None)):
            yield notes


_ADAPTERS: weakref.WeakKeyDictionary[Any, EngineAdapters] = weakref.WeakKeyDictionary()
"""One ``EngineAdapters`` per resident engine (dropped with the engine when it is evicted)."""


def adapters_of(engine: Any, settings: Settings) -> EngineAdapters:
    """The adapters of ``engine``, made on first use."""
    adapters = _ADAPTERS.get(engine)
    if adapters is None:
        adapters = EngineAdapters(engine, settings)
        _ADAPTERS[engine] = adapters
    return adapters
