"""Reading ShapeWorld frames back from their pixels: the object's mask, its shape, colour and motion.

The rules behind the quality gate (``world.check``) and the bench's edit accuracy (``world.evaluate``):
object pixels are the largest region nearer an object colour than the background's shades and the gray
box; colour is the majority nearest object colour; shape is the best IoU against the four shape
templates at the object's centroid and area, each tried at five angles; motion is the centroid's
displacement (8 directions) or the area's change.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..metrics.ground_truth import centroids
from .scene import BACKGROUND_COLOURS, DISTRACTOR_COLOUR, MOTIONS, OBJECT_COLOURS, SHAPES, shape_sdfs


def object_mask(video: torch.Tensor, background: str) -> torch.Tensor:
    """``(F, 1, H, W)``: per frame, the largest connected region of pixels nearer an object colour than
    any shade of the background colour or the gray distractor box (which belongs to the background)."""
    from skimage.measure import label

    v = (video.clamp(-1, 1) + 1) / 2
    obj = torch.tensor(list(OBJECT_COLOURS.values()), dtype=torch.float32) / 255  # (K, 3)
    bg = torch.tensor(BACKGROUND_COLOURS[background], dtype=torch.float32) / 255
    shades = torch.stack([bg * s for s in torch.linspace(0.45, 1.15, 15)]
                         + [torch.tensor(DISTRACTOR_COLOUR, dtype=torch.float32) / 255])  # (S, 3)
    px = v.permute(0, 2, 3, 1)[..., None, :]  # (F, H, W, 1, 3)
    d_obj = ((px - obj) ** 2).sum(-1).min(-1).values
    d_bg = ((px - shades) ** 2).sum(-1).min(-1).values
    near = (d_obj < d_bg).numpy()
    out = np.zeros_like(near)
    for i, frame in enumerate(near):
        regions = label(frame, connectivity=2)
        if regions.max() > 0:
            out[i] = regions == np.bincount(regions[regions > 0]).argmax()
    return torch.from_numpy(out)[:, None]


SHAPE_ANGLES = (-0.2, -0.1, 0.0, 0.1, 0.2)
"""Rotations (radians) the shape templates are tried at: clips draw their angle from [-0.15, 0.15]."""


def shape_from_outline(mask: torch.Tensor) -> str | None:
    """The shape whose template best overlaps an object mask ``(H, W)`` bool (None below 10 pixels).

    Each shape of :data:`SHAPES` is placed at the mask's centroid, at every angle of
    :data:`SHAPE_ANGLES`, and sized (bisection on its radius) to the mask's area; the shape with the
    highest IoU at any angle wins."""
    h, w = mask.shape
    area = mask.float().sum()
    if area < 10:
        return None
    c = centroids(mask[None, None])[0]
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    px, py = (xs - c[0])[None], (ys - c[1])[None]
    shape_id = torch.arange(len(SHAPES)).repeat_interleave(len(SHAPE_ANGLES))  # (K,) templates
    angle = torch.tensor(SHAPE_ANGLES, dtype=torch.float32).repeat(len(SHAPES)).view(-1, 1, 1)
    k = torch.arange(len(shape_id))

    def templates(r: torch.Tensor) -> torch.Tensor:
        return shape_sdfs(px, py, r, angle)[shape_id, k] < 0  # (K, H, W)

    lo, hi = torch.full((len(k), 1, 1), 1.0), torch.full((len(k), 1, 1), 30.0)
    for _ in range(20):  # radius giving the same area, per template
        r = (lo + hi) / 2
        small = templates(r).sum((1, 2)).view(-1, 1, 1) < area
        lo, hi = torch.where(small, r, lo), torch.where(small, hi, r)
    t = templates((lo + hi) / 2)
    iou = (t & mask).sum((1, 2)).float() / (t | mask).sum((1, 2)).float()
    best = torch.full((len(SHAPES),), -1.0).scatter_reduce(0, shape_id, iou, "amax")
    return SHAPES[int(best.argmax())]


def classify(video: torch.Tensor, background: str) -> dict[str, str | None]:
    """Colour, shape and motion read from the pixels of a generated clip."""
    m = object_mask(video, background)
    if m.sum() < 20:
        return {"colour": None, "shape": None, "motion": None}
    v = (video.clamp(-1, 1) + 1) / 2
    obj = torch.tensor(list(OBJECT_COLOURS.values()), dtype=torch.float32) / 255
    px = v.permute(0, 2, 3, 1)[m[:, 0]]
    nearest = ((px[:, None] - obj) ** 2).sum(-1).argmin(-1)
    colour = list(OBJECT_COLOURS)[int(torch.bincount(nearest, minlength=len(obj)).argmax())]
    c = centroids(m)
    area = m[:, 0].float().sum((1, 2))
    votes = torch.zeros(len(SHAPES))
    for frame in m[:, 0]:
        if (shape := shape_from_outline(frame)) is not None:
            votes[SHAPES.index(shape)] += 1
    shape = SHAPES[int(votes.argmax())]
    valid = ~torch.isnan(c).any(1)
    idx = valid.nonzero()[:, 0]
    if len(idx) < 4:
        return {"colour": colour, "shape": shape, "motion": None}
    first, last = idx[:3], idx[-3:]
    d = c[last].mean(0) - c[first].mean(0)
    ratio = float(area[last].mean() / area[first].mean().clamp_min(1))
    if d.norm() < 6 and (ratio > 1.5 or ratio < 1 / 1.5):
        motion = "growing" if ratio > 1 else "shrinking"
    else:
        ang = math.atan2(float(d[1]), float(d[0]))
        best_m, best_cos = None, -2.0
        for name, (dx, dy) in MOTIONS.items():
            if dx == dy == 0:
                continue
            cos = (dx * math.cos(ang) + dy * math.sin(ang)) / math.hypot(dx, dy)
            if cos > best_cos:
                best_m, best_cos = name, cos
        motion = best_m
    return {"colour": colour, "shape": shape, "motion": motion}


def frame_hits(video: torch.Tensor, spec, attributes: tuple[str, ...] = ("colour", "shape")) -> dict[str, int]:  # noqa: ANN001
    """How many frames of ``video`` show ``spec``'s object attributes, each frame read on its own by :func:`classify`."""
    hits = dict.fromkeys(attributes, 0)
    for f in range(video.shape[0]):
        got = classify(video[f:f + 1], spec.background)
        for a in attributes:
            hits[a] += int(got[a] == getattr(spec, a))
    return hits
