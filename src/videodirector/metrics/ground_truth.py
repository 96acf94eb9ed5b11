"""Metrics against exact ground truth (ShapeWorld) and pixel metrics usable on any pair of videos.

All videos are ``(F, 3, H, W)`` float in [-1, 1]; masks ``(F, 1, H, W)`` bool. PSNR uses the
[0, 1] range (MAX = 1).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _unit(x: Tensor) -> Tensor:
    return (x.float().clamp(-1, 1) + 1) / 2


def psnr(a: Tensor, b: Tensor, mask: Tensor | None = None) -> float:
    """``10 log10(1 / MSE)`` on [0, 1] images; with ``mask`` the MSE is averaged only where mask is True
    (masked PSNR of paper Table 1 uses the background: pass ``~object_mask``)."""
    d = (_unit(a) - _unit(b)) ** 2
    if mask is not None:
        m = mask.expand_as(d).float()
        if m.sum() == 0:
            return float("nan")
        mse = (d * m).sum() / m.sum()
    else:
        mse = d.mean()
    return float(10 * math.log10(1.0 / max(float(mse), 1e-10)))


RING_EDGES_PX = (2, 4, 8, 16)
"""Distances (pixels) that split the background into rings around an object for :func:`background_error_by_distance`."""


def background_error_by_distance(edited: Tensor, source: Tensor, object_mask: Tensor,
                                 edges: tuple[int, ...] = RING_EDGES_PX) -> list[dict[str, float]]:
    """Where a background error lies: the background (outside ``object_mask``) split into rings by the
    (Chebyshev) distance to the mask, ``(0, e1], (e1, e2], ..., beyond the last edge``. Per ring: its label,
    its share of the background's pixels (``fraction``), its PSNR, and its share of the background's squared error
    (``error_share``; the shares sum to 1, and ``psnr`` of the whole background is ``psnr(edited, source, ~mask)``).
    ``object_mask``: ``(F, 1, H, W)`` bool, e.g. the union of the source's and the target's object."""
    d = ((_unit(edited) - _unit(source)) ** 2).mean(1, keepdim=True)  # (F, 1, H, W), averaged over channels
    m = object_mask.float()
    grown = [m] + [F.max_pool2d(m, 2 * e + 1, stride=1, padding=e) for e in edges] + [torch.ones_like(m)]
    total_px = float((1 - m).sum())
    total_err = float((d * (1 - m)).sum())
    rows = []
    bounds = (0, *edges, None)
    for inner, outer, lo, hi in zip(grown[:-1], grown[1:], bounds[:-1], bounds[1:]):
        ring = outer - inner
        n, err = float(ring.sum()), float((d * ring).sum())
        rows.append({"ring_px": f"{lo}-{hi}" if hi is not None else f">{lo}",
                     "fraction": n / total_px if total_px else float("nan"),
                     "psnr": 10 * math.log10(n / max(err, 1e-10 * n)) if n else float("nan"),
                     "error_share": err / total_err if total_err else float("nan")})
    return rows


def ssim(a: Tensor, b: Tensor, window: int = 7, sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004) with a Gaussian window on [0, 1] images, per channel."""
    x, y = _unit(a), _unit(b)
    g = torch.exp(-((torch.arange(window) - window // 2) ** 2) / (2 * sigma**2))
    g = (g / g.sum()).to(x)
    k = (g[:, None] * g[None, :]).expand(3, 1, window, window)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(t, k, groups=3)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return float(s.mean())


def temporal_flicker(edited: Tensor, source: Tensor, mask: Tensor) -> float:
    """Background flicker: mean ``|Δ_t edited - Δ_t source|`` over pixels where ``mask`` is True in both
    frames, in 0-255 units (0 = the background changes over time exactly as in the source)."""
    de = _unit(edited)[1:] - _unit(edited)[:-1]
    ds = _unit(source)[1:] - _unit(source)[:-1]
    m = (mask[1:] & mask[:-1]).expand_as(de).float()
    if m.sum() == 0:
        return float("nan")
    return float(((de - ds).abs() * m).sum() / m.sum() * 255)


def centroids(mask: Tensor) -> Tensor:
    """Per-frame centroid ``(F, 2)`` (x, y) in pixels of a ``(F, 1, H, W)`` mask (NaN when empty)."""
    f, _, h, w = mask.shape
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    m = mask[:, 0].float()
    n = m.sum((1, 2))
    cx = (m * xs).sum((1, 2)) / n
    cy = (m * ys).sum((1, 2)) / n
    return torch.stack([cx, cy], 1)


def object_pixels(video: Tensor, colour: tuple[int, int, int], background: Tensor) -> Tensor:
    """Pixels closer to the object colour than to the known background: ``(F, 1, H, W)`` bool."""
    c = torch.tensor(colour, dtype=torch.float32).view(1, 3, 1, 1) / 255
    v = _unit(video)
    d_obj = ((v - c) ** 2).sum(1, keepdim=True)
    d_bg = ((v - _unit(background)) ** 2).sum(1, keepdim=True)
    return d_obj < d_bg


def trajectory_error(edited: Tensor, colour: tuple[int, int, int], background: Tensor, gt_mask: Tensor) -> float:
    """Mean distance (pixels) between the object centroid found in ``edited`` and the ground-truth centroid.

    The object is found as the pixels nearer the target object colour than the ground-truth background,
    within a window of twice the object's extent around the ground truth (so distant noise is ignored).
    """
    found = object_pixels(edited, colour, background)
    gt = centroids(gt_mask)
    f, _, h, w = gt_mask.shape
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    area = gt_mask[:, 0].float().sum((1, 2))
    radius = (area / math.pi).sqrt() * 2 + 2
    window = ((xs[None] - gt[:, 0, None, None]) ** 2 + (ys[None] - gt[:, 1, None, None]) ** 2) <= radius[:, None, None] ** 2
    found = found & window[:, None]
    c = centroids(found)
    d = (c - gt).norm(dim=1)
    d = torch.where(torch.isnan(d), radius, d)  # nothing found: count the search radius
    return float(d.mean())


def closest_candidate(edited: Tensor, candidates: dict[str, Tensor], region: Tensor | None = None) -> list[str]:
    """Per frame, the name of the candidate rendering nearest to ``edited`` (MSE inside ``region``)."""
    names = list(candidates)
    errs = []
    for n in names:
        d = ((_unit(edited) - _unit(candidates[n])) ** 2).mean(1, keepdim=True)
        if region is not None:
            m = region.float()
            errs.append((d * m).sum((1, 2, 3)) / m.sum((1, 2, 3)).clamp_min(1))
        else:
            errs.append(d.mean((1, 2, 3)))
    best = torch.stack(errs).argmin(0)
    return [names[i] for i in best.tolist()]
