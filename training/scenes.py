"""Procedural captioned scenes of coloured shapes: vocabulary, hold-out rule, scene sampling, captions, rendering.

Everything is generated on the fly (no download). Scenes are sampled and rendered in torch on any device (vectorised
signed-distance rasterisation over a coordinate grid, 1-pixel anti-aliased edges); captions are Python strings drawn
from many templates and synonyms so that the pretrained text encoder's semantics matter ("crimson" near "red").

Hold-out (documented in docs/model-card.md): a fixed, seeded 20% of the one-object (colour, shape, region) triples
and 20% of the two-object (colour, shape, axis, colour, shape) tuples are never rendered in training; every colour,
shape, region and relation is seen, only these combinations are not. The evaluation prompts are drawn from them.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

COLOURS: tuple[str, ...] = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink")
COLOUR_RGB: tuple[tuple[float, float, float], ...] = (
    (0.86, 0.12, 0.12),
    (0.96, 0.55, 0.08),
    (0.95, 0.90, 0.10),
    (0.15, 0.65, 0.22),
    (0.10, 0.78, 0.82),
    (0.14, 0.30, 0.88),
    (0.55, 0.20, 0.80),
    (0.95, 0.42, 0.72),
)
COLOUR_WORDS: tuple[tuple[str, ...], ...] = (
    ("red", "crimson", "scarlet", "ruby"),
    ("orange", "tangerine", "amber"),
    ("yellow", "golden", "lemon"),
    ("green", "emerald", "jade"),
    ("cyan", "turquoise", "aqua"),
    ("blue", "azure", "cobalt", "sapphire"),
    ("purple", "violet", "plum"),
    ("pink", "rose", "fuchsia"),
)
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")
SHAPE_WORDS: tuple[tuple[str, ...], ...] = (
    ("circle", "disc", "dot", "round shape"),
    ("square", "box", "block", "tile"),
    ("triangle", "triangular shape", "wedge"),
    ("star", "five-pointed star", "star shape"),
)
SIZES: tuple[str, ...] = ("small", "medium", "large")
SIZE_RADIUS: tuple[float, ...] = (0.08, 0.12, 0.17)
"""Object radius per size class, as a fraction of the image side."""
SIZE_WORDS: tuple[tuple[str, ...], ...] = (
    ("small", "tiny", "little"),
    ("medium", "medium-sized"),
    ("large", "big", "huge"),
)
SHAPE_EXTENT: tuple[float, ...] = (1.0, 0.88, 1.25, 1.3)
"""Half-extent of each shape relative to its radius (square half-side, triangle and star circumradius)."""
BACKGROUNDS: tuple[str, ...] = ("white", "light grey", "dark grey", "black")
BACKGROUND_RGB: tuple[float, ...] = (0.94, 0.74, 0.30, 0.06)
BACKGROUND_WORDS: tuple[tuple[str, ...], ...] = (
    ("white",),
    ("light grey", "light gray", "pale grey"),
    ("dark grey", "dark gray", "charcoal"),
    ("black", "dark"),
)
REGIONS: tuple[str, ...] = (
    "top left",
    "top",
    "top right",
    "left",
    "center",
    "right",
    "bottom left",
    "bottom",
    "bottom right",
)
"""The 3x3 regions of one-object scenes, row-major (index = 3 * row + column)."""
REGION_PHRASES: tuple[tuple[str, ...], ...] = (
    ("in the top left", "at the upper left", "in the top-left corner"),
    ("at the top", "in the top middle", "near the top"),
    ("in the top right", "at the upper right", "in the top-right corner"),
    ("on the left", "at the left side", "in the middle left"),
    ("in the center", "in the middle", "in the centre"),
    ("on the right", "at the right side", "in the middle right"),
    ("in the bottom left", "at the lower left", "in the bottom-left corner"),
    ("at the bottom", "in the bottom middle", "near the bottom"),
    ("in the bottom right", "at the lower right", "in the bottom-right corner"),
)
AXES: tuple[str, ...] = ("left of", "above")
"""Two-object scenes put object 0 left of (axis 0) or above (axis 1) object 1; captions phrase either direction."""
RELATION_TEMPLATES: tuple[tuple[str, ...], ...] = (
    (
        "{a} to the left of {b}",
        "{a} left of {b}",
        "{a} on the left and {b} on the right",
        "{b} to the right of {a}",
        "{b} right of {a}",
        "{b} on the right and {a} on the left",
    ),
    (
        "{a} above {b}",
        "{a} over {b}",
        "{a} on top and {b} at the bottom",
        "{b} below {a}",
        "{b} under {a}",
        "{b} beneath {a}",
    ),
)
ONE_TEMPLATES: tuple[str, ...] = (
    "{o}",
    "{o}{pos}",
    "a picture of {o}{pos}",
    "an image of {o}{pos}",
    "one {bare}{pos}",
    "a single {bare}{pos}",
    "{art} {size}{shape} that is {colour}{pos}",
    "{art} {size}{shape} coloured {colour}{pos}",
)
HOLDOUT_FRACTION: float = 0.2
HOLDOUT_SEED: int = 20261128
ONE_OBJECT_SHARE: float = 0.4
"""Share of one-object scenes in training batches (the rest have two objects)."""


def _holdout_masks() -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean masks of held-out combinations: one (colour, shape, region) and two (c0, s0, axis, c1, s1)."""
    rng = np.random.default_rng(HOLDOUT_SEED)
    n_c, n_s, n_r = len(COLOURS), len(SHAPES), len(REGIONS)
    one = np.zeros(n_c * n_s * n_r, dtype=bool)
    one[rng.permutation(one.size)[: round(HOLDOUT_FRACTION * one.size)]] = True
    two = np.zeros((n_c, n_s, 2, n_c, n_s), dtype=bool)
    valid = [idx for idx in np.ndindex(two.shape) if idx[0] != idx[3]]
    chosen = rng.permutation(len(valid))[: round(HOLDOUT_FRACTION * len(valid))]
    for k in chosen:
        two[valid[k]] = True
    return torch.from_numpy(one.reshape(n_c, n_s, n_r)), torch.from_numpy(two)


HELD_OUT_ONE, HELD_OUT_TWO = _holdout_masks()


@dataclass
class Scenes:
    """A batch of scene descriptions (all tensors on one device; index 1 of the object axis unused when n_objects=1)."""

    n_objects: torch.Tensor  # (B,) int64 in {1, 2}
    colour: torch.Tensor  # (B, 2) int64
    shape: torch.Tensor  # (B, 2) int64
    size: torch.Tensor  # (B, 2) int64
    center: torch.Tensor  # (B, 2, 2) float (x, y) in [0, 1], y down
    region: torch.Tensor  # (B,) int64, one-object scenes
    axis: torch.Tensor  # (B,) int64, two-object scenes: object 0 left of (0) / above (1) object 1
    background: torch.Tensor  # (B,) int64
    object_rgb: torch.Tensor  # (B, 2, 3) float, jittered palette colours
    background_rgb: torch.Tensor  # (B, 3) float

    def __len__(self) -> int:
        return int(self.n_objects.shape[0])


def _randint(high: int, shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randint(0, high, shape, generator=gen, device=device)


def _uniform(lo: float, hi: float, shape: tuple[int, ...], gen: torch.Generator, device: torch.device) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=gen, device=device)


def sample_scenes(
    batch: int,
    gen: torch.Generator,
    device: torch.device | str = "cpu",
    one_object_share: float = ONE_OBJECT_SHARE,
    held_out: bool = False,
) -> Scenes:
    """Random scenes; ``held_out=False`` never yields a held-out combination, ``True`` yields only held-out ones."""
    dev = torch.device(device)
    n_c, n_s = len(COLOURS), len(SHAPES)
    n_obj = 1 + (torch.rand((batch,), generator=gen, device=dev) >= one_object_share).long()
    colour = _randint(n_c, (batch, 2), gen, dev)
    # second colour differs from the first (two-object scenes are judged by colour)
    colour[:, 1] = (colour[:, 0] + 1 + _randint(n_c - 1, (batch,), gen, dev)) % n_c
    shape = _randint(n_s, (batch, 2), gen, dev)
    region = _randint(len(REGIONS), (batch,), gen, dev)
    axis = _randint(2, (batch,), gen, dev)
    one_mask, two_mask = HELD_OUT_ONE.to(dev), HELD_OUT_TWO.to(dev)
    for _ in range(1000):
        bad_one = one_mask[colour[:, 0], shape[:, 0], region]
        bad_two = two_mask[colour[:, 0], shape[:, 0], axis, colour[:, 1], shape[:, 1]]
        bad = torch.where(n_obj == 1, bad_one, bad_two)
        if held_out:
            bad = ~bad
        if not bool(bad.any()):
            break
        n_bad = int(bad.sum())
        colour[bad, 0] = _randint(n_c, (n_bad,), gen, dev)
        colour[bad, 1] = (colour[bad, 0] + 1 + _randint(n_c - 1, (n_bad,), gen, dev)) % n_c
        shape[bad] = _randint(n_s, (n_bad, 2), gen, dev)
        region[bad] = _randint(len(REGIONS), (n_bad,), gen, dev)
        axis[bad] = _randint(2, (n_bad,), gen, dev)
    else:
        raise RuntimeError("sample_scenes could not avoid the hold-out in 1000 rounds")
    # one object: any size; two objects: small or medium so that they do not overlap
    size = torch.where(n_obj[:, None] == 1, _randint(3, (batch, 2), gen, dev), _randint(2, (batch, 2), gen, dev))
    radius = torch.tensor(SIZE_RADIUS, device=dev)[size]
    extent = radius * torch.tensor(SHAPE_EXTENT, device=dev)[shape]  # (B, 2)
    # one-object centre: the region's cell centre plus jitter, kept inside the image
    col, row = (region % 3).float(), (region // 3).float()
    one_xy = torch.stack([(col + 0.5) / 3, (row + 0.5) / 3], dim=-1) + _uniform(-0.06, 0.06, (batch, 2), gen, dev)
    one_xy = torch.minimum(torch.maximum(one_xy, extent[:, :1] + 0.02), 1 - extent[:, :1] - 0.02)
    # two objects: along the axis in the first / last third, across it near a common line
    along = torch.stack([_uniform(0.15, 0.35, (batch,), gen, dev), _uniform(0.65, 0.85, (batch,), gen, dev)], dim=1)
    across = _uniform(0.25, 0.75, (batch, 1), gen, dev) + _uniform(-0.08, 0.08, (batch, 2), gen, dev)
    horizontal = (axis == 0)[:, None, None]
    two_xy = torch.where(horizontal, torch.stack([along, across], -1), torch.stack([across, along], -1))
    center = torch.where((n_obj == 1)[:, None, None], torch.stack([one_xy, one_xy], 1), two_xy)
    background = _randint(len(BACKGROUNDS), (batch,), gen, dev)
    bg_level = torch.tensor(BACKGROUND_RGB, device=dev)[background]
    background_rgb = (bg_level[:, None] + _uniform(-0.03, 0.03, (batch, 3), gen, dev) * 0.5).clamp(0, 1)
    object_rgb = torch.tensor(COLOUR_RGB, device=dev)[colour] + _uniform(-0.03, 0.03, (batch, 2, 3), gen, dev)
    return Scenes(n_obj, colour, shape, size, center, region, axis, background, object_rgb.clamp(0, 1), background_rgb)


def _sdf(shape: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Signed distance (image-side units, negative inside) of each shape centred at 0; all (B, 2, H, W)."""
    circle = torch.sqrt(dx * dx + dy * dy) - radius
    half = radius * SHAPE_EXTENT[1]
    square = torch.maximum(dx.abs(), dy.abs()) - half
    # equilateral triangle pointing up (y down): edges with outward normals (0, 1), (+-0.866, -0.5), inradius R / 2
    tri_r = radius * SHAPE_EXTENT[2]
    triangle = torch.maximum(dy, 0.8660254 * dx.abs() - 0.5 * dy) - tri_r / 2
    # five-pointed star pointing up (Inigo Quilez's sdStar5 in y-up coordinates), inner/outer radius ratio 0.45
    star_r = radius * SHAPE_EXTENT[3]
    k1x, k1y = 0.809016994375, -0.587785252292
    px, py = dx.abs(), -dy
    d1 = torch.clamp(k1x * px + k1y * py, min=0.0)
    px, py = px - 2 * d1 * k1x, py - 2 * d1 * k1y
    d2 = torch.clamp(-k1x * px + k1y * py, min=0.0)
    px, py = px + 2 * d2 * k1x, py - 2 * d2 * k1y
    px = px.abs()
    py = py - star_r
    rf = 0.45
    bax, bay = rf * -k1y, rf * k1x - 1.0
    h = torch.minimum(torch.clamp((px * bax + py * bay) / (bax * bax + bay * bay), min=0.0), star_r)
    star = torch.sqrt((px - bax * h) ** 2 + (py - bay * h) ** 2) * torch.sign(py * bax - px * bay)
    return torch.where(shape == 0, circle, torch.where(shape == 1, square, torch.where(shape == 2, triangle, star)))


def render(scenes: Scenes, height: int = 64, width: int | None = None) -> torch.Tensor:
    """Pixels in [-1, 1], (B, 3, H, W), on the scenes' device; edges anti-aliased over one pixel."""
    width = height if width is None else width
    dev = scenes.center.device
    side = float(min(height, width))
    ys = (torch.arange(height, device=dev, dtype=torch.float32) + 0.5 - height / 2) / side + 0.5
    xs = (torch.arange(width, device=dev, dtype=torch.float32) + 0.5 - width / 2) / side + 0.5
    dx = xs[None, None, None, :] - scenes.center[:, :, 0, None, None]  # (B, 2, 1, W)
    dy = ys[None, None, :, None] - scenes.center[:, :, 1, None, None]  # (B, 2, H, 1)
    dx, dy = torch.broadcast_tensors(dx, dy)
    radius = torch.tensor(SIZE_RADIUS, device=dev)[scenes.size][:, :, None, None]
    dist = _sdf(scenes.shape[:, :, None, None], dx, dy, radius)
    cover = (0.5 - dist * side).clamp(0, 1)  # (B, 2, H, W)
    cover[:, 1] = cover[:, 1] * (scenes.n_objects == 2).float()[:, None, None]
    img = scenes.background_rgb[:, :, None, None].expand(-1, -1, height, width)
    for k in range(2):
        alpha = cover[:, k : k + 1]
        img = img * (1 - alpha) + scenes.object_rgb[:, k, :, None, None] * alpha
    return img * 2 - 1


def _article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _object_phrase(scenes: Scenes, b: int, k: int, rng: random.Random, size_p: float) -> tuple[str, str, str, str]:
    colour = rng.choice(COLOUR_WORDS[int(scenes.colour[b, k])])
    shape = rng.choice(SHAPE_WORDS[int(scenes.shape[b, k])])
    size = rng.choice(SIZE_WORDS[int(scenes.size[b, k])]) + " " if rng.random() < size_p else ""
    return f"{size}{colour} {shape}", size, colour, shape


def caption(scenes: Scenes, b: int, rng: random.Random) -> str:
    """One caption of scene ``b``, drawn from the templates and synonyms with ``rng``."""
    bg = ""
    if rng.random() < 0.35:
        word = rng.choice(BACKGROUND_WORDS[int(scenes.background[b])])
        bg = rng.choice((f" on a {word} background", f" against a {word} backdrop", f" on {word}"))
    if int(scenes.n_objects[b]) == 1:
        bare, size, colour, shape = _object_phrase(scenes, b, 0, rng, 0.5)
        pos = " " + rng.choice(REGION_PHRASES[int(scenes.region[b])]) if rng.random() < 0.6 else ""
        template = rng.choice(ONE_TEMPLATES)
        text = template.format(
            o=_article(bare),
            bare=bare,
            pos=pos,
            art=_article(size or shape).split()[0],
            size=size,
            shape=shape,
            colour=colour,
        )
        return text + bg
    a = _article(_object_phrase(scenes, b, 0, rng, 0.3)[0])
    c = _article(_object_phrase(scenes, b, 1, rng, 0.3)[0])
    if rng.random() < 0.08:
        text = rng.choice(("{a} and {b}", "{b} and {a}", "two shapes: {a} and {b}")).format(a=a, b=c)
    else:
        text = rng.choice(RELATION_TEMPLATES[int(scenes.axis[b])]).format(a=a, b=c)
    return text + bg


def object_caption(scenes: Scenes, b: int, k: int, rng: random.Random) -> str:
    """A caption of object ``k`` of scene ``b`` alone ("a small crimson disc"), as one part of a multi-prompt."""
    return _article(_object_phrase(scenes, b, k, rng, 0.3)[0])


def captions(scenes: Scenes, rng: random.Random) -> list[str]:
    """One caption per scene (tensors are read on the CPU once)."""
    cpu = Scenes(*(getattr(scenes, f).cpu() for f in Scenes.__dataclass_fields__))
    return [caption(cpu, b, rng) for b in range(len(cpu))]


def one_object_prompt(colour: int, shape: int, region: int) -> str:
    """The plain evaluation phrasing of a one-object scene."""
    return f"{_article(COLOURS[colour])} {SHAPES[shape]} {REGION_PHRASES[region][0]}"


def two_object_prompt(c0: int, s0: int, axis: int, c1: int, s1: int) -> str:
    """The plain evaluation phrasing of a two-object scene (object 0 left of / above object 1)."""
    return (
        f"{_article(COLOURS[c0])} {SHAPES[s0]} {('to the left of', 'above')[axis]} {_article(COLOURS[c1])} {SHAPES[s1]}"
    )
