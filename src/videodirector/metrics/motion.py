"""Motion metrics for real videos: flow warp error and motion smoothness.

Both take pluggable models, so any optical-flow network or frame interpolator can be used:

* ``FlowFn(a, b) -> flow``: ``a``, ``b`` are ``(N, 3, H, W)`` in [-1, 1]; ``flow`` is ``(N, 2, H, W)`` in
  pixels, ``(dx, dy)``, such that ``a(p) ≈ b(p + flow(p))``. :func:`raft_flow` wraps torchvision's RAFT.
* ``InterpolateFn(a, b) -> mid``: the frame halfway between ``a`` and ``b``. VBench uses AMT here; ours
  defaults to :func:`flow_interpolator` over a ``FlowFn``, and :func:`blend_interpolator` is the
  model-free baseline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError

FlowFn = Callable[[Tensor, Tensor], Tensor]
InterpolateFn = Callable[[Tensor, Tensor], Tensor]


def backward_warp(image: Tensor, flow: Tensor) -> Tensor:
    """``W(image, flow)(p) = image(p + flow(p))``, bilinear, borders clamped. ``image (N, C, H, W)``, ``flow (N, 2, H, W)``."""
    n, _, h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=image.device, dtype=image.dtype),
                            torch.arange(w, device=image.device, dtype=image.dtype), indexing="ij")
    x = xs + flow[:, 0]
    y = ys + flow[:, 1]
    grid = torch.stack([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def consistent(flow_fw: Tensor, flow_bw: Tensor) -> Tensor:
    """Non-occlusion mask by forward-backward consistency (Sundaram et al. 2010, as in Lai et al. 2018):
    ``|f + b'|² < 0.01 (|f|² + |b'|²) + 0.5`` with ``b' = W(flow_bw, flow_fw)``. Returns ``(N, 1, H, W)`` bool."""
    bw = backward_warp(flow_bw, flow_fw)
    lhs = (flow_fw + bw).pow(2).sum(1, keepdim=True)
    rhs = 0.01 * (flow_fw.pow(2).sum(1, keepdim=True) + bw.pow(2).sum(1, keepdim=True)) + 0.5
    return lhs < rhs


def in_frame(flow: Tensor) -> Tensor:
    """``(N, 1, H, W)`` bool: ``p + flow(p)`` lies inside the frame (pixels that leave it are not comparable)."""
    _, _, h, w = flow.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=flow.device, dtype=flow.dtype),
                            torch.arange(w, device=flow.device, dtype=flow.dtype), indexing="ij")
    x, y = xs + flow[:, 0], ys + flow[:, 1]
    return ((x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1))[:, None]


@torch.no_grad()
def warp_error(video: Tensor, flow_fn: FlowFn, mask: Tensor | None = None) -> float:
    """Flow warp error (Lai et al. 2018), on [0, 1] pixels:

    ``E = 1/(T-1) Σ_t Σ_p M_t(p) ‖V_t(p) − W(V_{t+1}, F_{t→t+1})(p)‖² / Σ_p M_t(p)``,

    with ``M_t`` the non-occluded pixels that stay in the frame (optionally also inside ``mask``, ``(T, 1, H, W)`` bool). Lower is
    smoother. Flows are estimated on the video itself."""
    if video.shape[0] < 2:
        raise InputError("warp error needs at least 2 frames")
    a, b = video[:-1], video[1:]
    fw, bw = flow_fn(a, b), flow_fn(b, a)
    m = (consistent(fw, bw) & in_frame(fw)).float()
    if mask is not None:
        m = m * mask[:-1].float()
    diff = ((a - backward_warp(b, fw)) / 2).pow(2).sum(1, keepdim=True)
    per_frame = (m * diff).sum((1, 2, 3)) / m.sum((1, 2, 3)).clamp_min(1)
    return float(per_frame.mean())


@torch.no_grad()
def motion_smoothness(video: Tensor, interpolate: InterpolateFn) -> float:
    """VBench motion smoothness: drop the odd frames, re-create each from its even neighbours, and score
    ``(255 − MAE) / 255`` with MAE the mean absolute error in 0-255 over the re-created frames. 1 is perfectly
    smooth (motion a frame interpolator can predict); flicker and jumps lower it."""
    if video.shape[0] < 3:
        raise InputError("motion smoothness needs at least 3 frames")
    even = video[0::2]
    k = min(len(even) - 1, len(video[1::2]))
    mid = interpolate(even[:k], even[1:k + 1])
    mae = ((mid.clamp(-1, 1) - video[1::2][:k]).abs() * 127.5).mean()
    return float((255 - mae) / 255)


def blend_interpolator(a: Tensor, b: Tensor) -> Tensor:
    """Model-free baseline: the average of the two frames (exact for static content only)."""
    return (a + b) / 2


def flow_interpolator(flow_fn: FlowFn) -> InterpolateFn:
    """Midpoint frame from optical flow: each neighbour is warped halfway along its flow to the other and the
    two are averaged where both are consistent, else the consistent one is taken (linear motion model)."""

    def interpolate(a: Tensor, b: Tensor) -> Tensor:
        fab, fba = flow_fn(a, b), flow_fn(b, a)
        # at the midpoint p, a is seen at p - fab/2 and b at p + fab/2 (flow taken at p: linear-motion approximation)
        from_a = backward_warp(a, -fab / 2)
        from_b = backward_warp(b, -fba / 2)
        ok_a, ok_b = consistent(fab, fba).float(), consistent(fba, fab).float()
        w_a = ok_a + 0.5 * (1 - ok_a) * (1 - ok_b)
        w_b = ok_b + 0.5 * (1 - ok_a) * (1 - ok_b)
        return (w_a * from_a + w_b * from_b) / (w_a + w_b)

    return interpolate


def raft_flow(model: str = "raft_large", device: str = "cpu", num_flow_updates: int = 12) -> FlowFn:
    """torchvision RAFT as a :data:`FlowFn`. ``model``: ``raft_large`` / ``raft_small`` (torchvision's
    pretrained weights, downloaded by torchvision once), or a path to a saved ``state_dict`` (``.pth``) of
    ``raft_large``, for offline use. Frame sides are padded to multiples of 8."""
    try:
        from torchvision.models import optical_flow as of
    except Exception:  # noqa: BLE001 - torchvision missing or built for another torch
        raise InputError("flow metrics need a working torchvision: pip install 'videodirector[metrics]'") from None
    if model in ("raft_large", "raft_small"):
        weights = getattr(of, "Raft_Large_Weights" if model == "raft_large" else "Raft_Small_Weights").DEFAULT
        try:
            net = getattr(of, model)(weights=weights)
        except Exception as exc:  # noqa: BLE001 - offline
            raise InputError(f"cannot download {model} weights ({type(exc).__name__}); pass a local .pth "
                             "state_dict path with --flow instead") from None
    else:
        path = Path(model)
        if not path.is_file():
            raise InputError(f"flow model {model!r} not found; use raft_large, raft_small or a .pth state_dict path")
        net = of.raft_large(weights=None)
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    net = net.eval().to(device)

    @torch.no_grad()
    def flow(a: Tensor, b: Tensor) -> Tensor:
        h, w = a.shape[-2:]
        ph, pw = (-h) % 8, (-w) % 8
        pa = F.pad(a, (0, pw, 0, ph), mode="replicate").to(device)
        pb = F.pad(b, (0, pw, 0, ph), mode="replicate").to(device)
        # torchvision's flow maps image1 pixels to image2: a(p) ≈ b(p + flow(p))
        return net(pa, pb, num_flow_updates=num_flow_updates)[-1][..., :h, :w].cpu()

    return flow
