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


def _shape_sdf(shape: str, px: Tensor, py: Tensor, r: Tensor, angle: float) -> Tensor:
    """Signed distance (pixels, negative inside) of a shape of circumradius-like size ``r``."""
    c, s = math.cos(angle), math.sin(angle)
    x, y = c * px + s * py, -s * px + c * py
    if shape == "circle":
        return torch.sqrt(x**2 + y**2) - r
    if shape == "square":
        h = 0.82 * r
        qx, qy = x.abs() - h, y.abs() - h
        outside = torch.sqrt(qx.clamp(min=0) ** 2 + qy.clamp(min=0) ** 2)
        return outside + torch.minimum(torch.maximum(qx, qy), torch.zeros_like(qx))
    if shape == "diamond":
        return (x.abs() + y.abs() - 1.15 * r) / math.sqrt(2)
    if shape == "triangle":
        # equilateral, apex up (image y points down), circumradius 1.2 r: max of three edge half-planes
        inradius = 0.6 * r
        d = [math.cos(t) * x + math.sin(t) * y for t in (math.pi / 2, 7 * math.pi / 6, 11 * math.pi / 6)]
        return torch.maximum(torch.maximum(d[0], d[1]), d[2]) - inradius
    raise ValueError(f"unknown shape {shape!r}")


def _texture(spec: ClipSpec, X: Tensor, Y: Tensor) -> Tensor:
    """Brightness factor of the background, ``(H, W)``."""
    P, ph = spec.texture_period, spec.texture_phase * 2 * math.pi
    if spec.texture == "striped":
        return 0.8 + 0.25 * torch.tanh(3 * torch.sin(2 * math.pi * (X + Y) / P + ph))
    if spec.texture == "checkered":
        return 0.8 + 0.25 * torch.tanh(4 * torch.sin(2 * math.pi * X / P + ph) * torch.sin(2 * math.pi * Y / P + ph))
    return 0.5 + 0.6 * (Y / spec.size) * (0.8 + 0.2 * spec.texture_phase)


def render(specs: list[ClipSpec] | ClipSpec, device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
    """Render clips: frames ``(B, F, 3, H, W)`` in [-1, 1] and object masks ``(B, F, 1, H, W)`` bool."""
    if isinstance(specs, ClipSpec):
        specs = [specs]
    vids, masks = [], []
    for spec in specs:
        n, F_ = spec.size, spec.frames
        ys, xs = torch.meshgrid(torch.arange(n, device=device, dtype=torch.float32) + 0.5,
                                torch.arange(n, device=device, dtype=torch.float32) + 0.5, indexing="ij")
        bg = torch.tensor(BACKGROUND_COLOURS[spec.background], device=device, dtype=torch.float32) / 255
        frame_bg = bg[:, None, None] * _texture(spec, xs, ys)[None]
        if spec.distractor is not None:
            dx, dy = spec.distractor
            d = _shape_sdf("square", xs - dx, ys - dy, torch.tensor(4.0, device=device), 0.0)
            a = (0.5 - d).clamp(0, 1)[None]
            col = torch.tensor(DISTRACTOR_COLOUR, device=device, dtype=torch.float32)[:, None, None] / 255
            frame_bg = frame_bg * (1 - a) + col * a
        centres, radii = spec.centres_and_radii()
        c = torch.tensor(centres, device=device, dtype=torch.float32)
        r = torch.tensor(radii, device=device, dtype=torch.float32)
        px = xs[None] - c[:, 0, None, None]
        py = ys[None] - c[:, 1, None, None]
        sdf = _shape_sdf(spec.shape, px, py, r[:, None, None], spec.angle)  # (F, H, W)
        alpha = (0.5 - sdf).clamp(0, 1)[:, None]
        obj = torch.tensor(OBJECT_COLOURS[spec.colour], device=device, dtype=torch.float32)[None, :, None, None] / 255
        frames = frame_bg[None] * (1 - alpha) + obj * alpha
        vids.append(frames.clamp(0, 1) * 2 - 1)
        masks.append(sdf[:, None] < 0)
        del F_
    return torch.stack(vids), torch.stack(masks)
