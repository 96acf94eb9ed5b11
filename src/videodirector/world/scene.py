"""ShapeWorld: a procedural video world with exact ground truth.

A clip is one coloured shape moving (or growing/shrinking) over a coloured, textured
background, optionally with a static gray box. Everything is a deterministic function of a
:class:`ClipSpec`, itself sampled deterministically from a seed, so for any edit (object
colour, shape, background colour, texture) the ground-truth edited clip is the same spec with
one field changed, rendered again: same trajectory, same everything else.

Rendering is vectorised torch (CPU or GPU), anti-aliased by a one-pixel signed-distance ramp.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
from torch import Tensor

OBJECT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 35, 35),
    "yellow": (245, 215, 30),
    "green": (30, 185, 60),
    "blue": (35, 75, 235),
    "purple": (150, 45, 205),
    "white": (245, 245, 245),
}
BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "teal": (30, 140, 140),
    "orange": (235, 130, 40),
    "gray": (125, 125, 125),
    "navy": (30, 40, 105),
}
SHAPES = ("circle", "square", "triangle", "diamond")
TEXTURES = ("striped", "checkered", "gradient")
MOTIONS: dict[str, tuple[float, float]] = {
    "right": (1, 0), "left": (-1, 0), "up": (0, -1), "down": (0, 1),
    "up right": (1, -1), "up left": (-1, -1), "down right": (1, 1), "down left": (-1, 1),
    "growing": (0, 0), "shrinking": (0, 0),
}
TRANSLATIONS = tuple(m for m in MOTIONS if m not in ("growing", "shrinking"))
DISTRACTOR_COLOUR = (150, 150, 150)
SPEED = 1.6  # pixels per frame along the motion direction (64-pixel frames)
GROWTH = 1.8  # size ratio between the largest and the smallest frame of growing/shrinking

WORDS = sorted({w for s in [*OBJECT_COLOURS, *BACKGROUND_COLOURS, *SHAPES, *TEXTURES, *MOTIONS]
                for w in s.split()} | set("a moving on background with box".split()))


@dataclass(frozen=True)
class ClipSpec:
    """Everything that defines one clip. Positions and sizes are in pixels of a ``size``-pixel frame."""

    shape: str
    colour: str
    motion: str
    background: str
    texture: str
    x0: float
    y0: float
    radius: float
    angle: float
    texture_period: float
    texture_phase: float
    distractor: tuple[float, float] | None = None
    size: int = 64
    frames: int = 16

    def caption(self) -> str:
        """Template caption, e.g. ``a red circle moving right on a teal striped background``."""
        verb = self.motion if self.motion in ("growing", "shrinking") else f"moving {self.motion}"
        text = f"a {self.colour} {self.shape} {verb} on a {self.background} {self.texture} background"
        return text + (" with a gray box" if self.distractor else "")

    def edited(self, **changes: str) -> "ClipSpec":
        """The same clip with attributes changed (``colour``, ``shape``, ``background``, ``texture``)."""
        allowed = {"colour": OBJECT_COLOURS, "shape": SHAPES, "background": BACKGROUND_COLOURS, "texture": TEXTURES}
        for k, v in changes.items():
            if k not in allowed or v not in allowed[k]:
                raise ValueError(f"cannot edit {k}={v!r}; editable: { {a: list(b) for a, b in allowed.items()} }")
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)

    def centres_and_radii(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-frame object centre ``(F, 2)`` (x, y) and radius ``(F,)``: the exact trajectory."""
        f = np.arange(self.frames, dtype=np.float64)
        dx, dy = MOTIONS[self.motion]
        norm = math.hypot(dx, dy) or 1.0
        cx = self.x0 + SPEED * f * dx / norm
        cy = self.y0 + SPEED * f * dy / norm
        if self.motion == "growing":
            r = self.radius * (1 + (GROWTH - 1) * f / (self.frames - 1))
        elif self.motion == "shrinking":
            r = self.radius * (GROWTH - (GROWTH - 1) * f / (self.frames - 1))
        else:
            r = np.full_like(f, self.radius)
        return np.stack([cx, cy], 1), r


def sample_clip(seed: int, size: int = 64, frames: int = 16, distractor_prob: float = 0.25, **fixed: str) -> ClipSpec:
    """A random clip, fully determined by ``seed``; keyword arguments fix attributes."""
    rng = np.random.default_rng(seed)
    shape = fixed.get("shape") or SHAPES[rng.integers(len(SHAPES))]
    colour = fixed.get("colour") or list(OBJECT_COLOURS)[rng.integers(len(OBJECT_COLOURS))]
    motion = fixed.get("motion") or list(MOTIONS)[rng.integers(len(MOTIONS))]
    background = fixed.get("background") or list(BACKGROUND_COLOURS)[rng.integers(len(BACKGROUND_COLOURS))]
    texture = fixed.get("texture") or TEXTURES[rng.integers(len(TEXTURES))]
    scale = size / 64
    radius = float(rng.uniform(8.0, 11.0)) * scale
    if motion in ("growing", "shrinking"):
        radius = radius / 1.25
    r_max = radius * (GROWTH if motion in ("growing", "shrinking") else 1.0)
    dx, dy = MOTIONS[motion]
    norm = math.hypot(dx, dy) or 1.0
    travel = SPEED * scale * (frames - 1)
    margin = r_max + 2 * scale

    def start(d: float) -> float:
        lo, hi = margin - min(0.0, d * travel), size - margin - max(0.0, d * travel)
        return float(rng.uniform(lo, hi)) if hi > lo else size / 2

    x0, y0 = start(dx / norm), start(dy / norm)
    angle = float(rng.uniform(-0.15, 0.15))
    period = float(rng.uniform(12, 18)) * scale
    phase = float(rng.uniform(0, 1))
    distractor = None
    if rng.uniform() < distractor_prob:
        distractor = (float(rng.choice([8, size - 8])) * 1.0, float(rng.choice([8, size - 8])) * 1.0)
    return ClipSpec(shape, colour, motion, background, texture, x0, y0, radius, angle, period, phase, distractor,
                    size, frames)


def shape_sdfs(px: Tensor, py: Tensor, r: Tensor, angle: Tensor) -> Tensor:
    """Signed distances (pixels, negative inside) of every shape in :data:`SHAPES` order: ``(4, ...)``.

    ``r`` is the size (circle radius); the other shapes are scaled to similar areas.
    """
    c, s = torch.cos(angle), torch.sin(angle)
    x, y = c * px + s * py, -s * px + c * py
    circle = torch.sqrt(x**2 + y**2) - r
    h = 0.82 * r
    qx, qy = x.abs() - h, y.abs() - h
    square = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2) + torch.clamp(torch.maximum(qx, qy), max=0)
    # equilateral, apex up (image y points down): max of three edge half-planes, inradius 0.6 r
    d = [math.cos(t) * x + math.sin(t) * y for t in (math.pi / 2, 7 * math.pi / 6, 11 * math.pi / 6)]
    triangle = torch.maximum(torch.maximum(d[0], d[1]), d[2]) - 0.6 * r
    diamond = (x.abs() + y.abs() - 1.15 * r) / math.sqrt(2)
    return torch.stack([circle, square, triangle, diamond])


def _textures(X: Tensor, Y: Tensor, period: Tensor, phase: Tensor, size: int) -> Tensor:
    """Brightness factor of each texture in :data:`TEXTURES` order: ``(3, B, H, W)``."""
    ph = phase * 2 * math.pi
    striped = 0.8 + 0.25 * torch.tanh(3 * torch.sin(2 * math.pi * (X + Y) / period + ph))
    checkered = 0.8 + 0.25 * torch.tanh(4 * torch.sin(2 * math.pi * X / period + ph) * torch.sin(2 * math.pi * Y / period + ph))
    gradient = 0.5 + 0.6 * (Y / size) * (0.8 + 0.2 * phase)
    return torch.stack(torch.broadcast_tensors(striped, checkered, gradient))


def render(specs: list[ClipSpec] | ClipSpec, device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
    """Render clips in one vectorised pass: frames ``(B, F, 3, H, W)`` in [-1, 1] and object masks
    ``(B, F, 1, H, W)`` bool. All clips must share ``size`` and ``frames``."""
    if isinstance(specs, ClipSpec):
        specs = [specs]
    n, nf = specs[0].size, specs[0].frames
    if any(s.size != n or s.frames != nf for s in specs):
        raise ValueError("render() needs clips of one size and frame count")
    dev = torch.device(device)

    def t(values, dtype=torch.float32) -> Tensor:  # noqa: ANN001
        return torch.tensor(np.asarray(values), device=dev, dtype=dtype)

    traj = [s.centres_and_radii() for s in specs]
    centres = t([c for c, _ in traj])  # (B, F, 2)
    radii = t([r for _, r in traj])  # (B, F)
    shape_id = t([SHAPES.index(s.shape) for s in specs], torch.long)
    tex_id = t([TEXTURES.index(s.texture) for s in specs], torch.long)
    obj_rgb = t([OBJECT_COLOURS[s.colour] for s in specs]) / 255
    bg_rgb = t([BACKGROUND_COLOURS[s.background] for s in specs]) / 255
    angle = t([s.angle for s in specs])[:, None, None, None]
    period = t([s.texture_period for s in specs])[:, None, None]
    phase = t([s.texture_phase for s in specs])[:, None, None]
    has_d = t([s.distractor is not None for s in specs])
    dpos = t([s.distractor or (0.0, 0.0) for s in specs])  # (B, 2)

    coords = torch.arange(n, device=dev, dtype=torch.float32) + 0.5
    Y, X = torch.meshgrid(coords, coords, indexing="ij")
    B = len(specs)
    ar = torch.arange(B, device=dev)
    factor = _textures(X[None], Y[None], period, phase, n)[tex_id, ar]  # (B, H, W)
    background = bg_rgb[:, :, None, None] * factor[:, None]  # (B, 3, H, W)
    dsdf = shape_sdfs(X[None] - dpos[:, 0, None, None], Y[None] - dpos[:, 1, None, None],
                       torch.full((B, 1, 1), 4.0, device=dev), torch.zeros(B, 1, 1, device=dev))[1]
    da = (0.5 - dsdf).clamp(0, 1)[:, None] * has_d[:, None, None, None]
    grey = torch.tensor(DISTRACTOR_COLOUR, device=dev, dtype=torch.float32)[None, :, None, None] / 255
    background = background * (1 - da) + grey * da
    px = X[None, None] - centres[..., 0, None, None]  # (B, F, H, W)
    py = Y[None, None] - centres[..., 1, None, None]
    sdf = shape_sdfs(px, py, radii[..., None, None], angle)[shape_id, ar]  # (B, F, H, W)
    alpha = (0.5 - sdf).clamp(0, 1)[:, :, None]
    frames = background[:, None] * (1 - alpha) + obj_rgb[:, None, :, None, None] * alpha
    return frames.clamp(0, 1) * 2 - 1, (sdf < 0)[:, :, None]
