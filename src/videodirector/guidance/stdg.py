"""Spatial-temporal decoupled guidance, STDG (paper Eqs. 2-4).

``G = ∇_{z_t} (η_f L_T^f + η_b L_T^b + ζ_f L_K^f + ζ_b L_K^b)``, computed with **one**
backward and without zero-weight terms (G is linear in the four gradients).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attention.control import FeatureRecorder, key_feature
from ..attention.processors import AttentionLayer
from ..diffusion.static_graph import StaticGraph
from ..models.compile import attention_blocks_eager


def resize_mask(mask: Tensor, size: tuple[int, int]) -> Tensor:
    """``(F, 1, H, W)`` bool -> ``(F, h·w)`` bool by nearest resizing (official ``F.interpolate(..., 'nearest')``)."""
    small = F.interpolate(mask.float(), size=size, mode="nearest")
    return small.flatten(1).bool()


def temporal_loss(p_ref: Tensor, p: Tensor, region: Tensor, top_k: int) -> Tensor:
    """One module's term of Eq. 2: mean over selected entries of ``(T+ - T-)²``.

    Args:
        p_ref: reference (inverted-latent) probabilities ``(h·w, heads, F, F)`` (B = 1).
        p: probabilities of the current latent, same shape, with autograd.
        region: ``(F, h·w)`` bool, indexed by query frame and pixel (``M_T^{f/b}``).
        top_k: key frames kept per (pixel, head, query frame): ``M_T`` from the reference map.
    """
    idx = p_ref.topk(top_k, dim=-1).indices
    keep = torch.zeros_like(p_ref, dtype=torch.bool).scatter_(-1, idx, True)
    keep = keep & region.transpose(0, 1)[:, None, :, None]
    diff = (p_ref.detach() - p) ** 2
    return (diff * keep).sum() / keep.sum().clamp(min=1)  # an empty region gives 0, without a host sync


def masked_mean_keys(k: Tensor, region: Tensor) -> Tensor:
    """Mask-pooled mean key per frame, ``k̄[f] = Σ_p M[f,p] K[f,p] / (Σ_p M[f,p] + 1e-5)`` (official
    ``calculate_semantic_loss_with_mask``), in float32 at least (float64 keys stay float64): ``(F, h·w, C)``
    keys and ``(F, h·w)`` bool region -> ``(F, C)``. The official code sums bf16 keys in bf16 and divides in
    float32; a bf16 sum over thousands of tokens loses the small differences the loss is about, so the whole
    pooling is float32 whatever the model dtype.
    """
    dtype = _at_least_fp32(k)
    m = region.to(dtype)[..., None]
    return (m * k.to(dtype)).sum(1) / (m.sum(1) + 1e-5)


def _at_least_fp32(x: Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def appearance_loss(k_ref: Tensor, k: Tensor, region: Tensor, mode: str = "mean_key") -> Tensor:
    """One module's term of Eq. 3 on attention keys laid out per frame, ``(F, h·w, C)`` (spatial
    self-attention keys, or temporal ones for ``stdg.appearance_layers: temporal``). Float32 (at least)
    throughout.

    ``mean_key`` (official code): MSE between :func:`masked_mean_keys`. ``per_token`` (paper): mean of
    ``M ‖K+ - K-‖²`` over masked tokens and channels.
    """
    if mode == "mean_key":
        return F.mse_loss(masked_mean_keys(k_ref.detach(), region), masked_mean_keys(k, region))
    dtype = _at_least_fp32(k)
    m = region.to(dtype)[..., None]
    n = (m.sum() * k.shape[-1]).clamp(min=1)  # an empty region gives 0, without a host sync
    return (m * (k_ref.detach().to(dtype) - k.to(dtype)) ** 2).sum() / n


def clamp_guidance(g: Tensor, threshold: float | None) -> Tensor:
    """``stdg.threshold``: G clamped to ``[-threshold, threshold]`` (the clamp of the official, unused
    ``calculate_STDG``: ``where(|G| > thr, sign(G) thr, G)``); unchanged when None."""
    return g if threshold is None else g.clamp(-threshold, threshold)


@dataclass
class STDGSetup:
    """Resolved STDG settings for one model: layers, weights, coefficients, mask resolutions."""

    temporal: list[AttentionLayer]
    appearance: list[AttentionLayer]  # spatial self-attention or temporal layers (stdg.appearance_layers)
    temporal_weights: dict[str, float]  # layer name -> weight
    appearance_weights: dict[str, float]
    coefficients: tuple[float, float, float, float]  # eta_f, eta_b, zeta_f, zeta_b
    top_k: int = 1
    appearance_mode: str = "mean_key"


def stdg_loss(ref: dict[str, Tensor], cur: dict[str, Tensor], masks_by_tokens: dict[int, Tensor],
              setup: STDGSetup) -> Tensor:
    """Eq. 4's loss ``η_f L_T^f + η_b L_T^b + ζ_f L_K^f + ζ_b L_K^b``, skipping zero-weight terms.

    ``L_T = (1/M) Σ_m w_m L_m`` over the M temporal modules (likewise ``L_K``), as the official
    code's ``mean(w/100 · L) · 100`` (official code).
    """
    eta_f, eta_b, zeta_f, zeta_b = setup.coefficients
    total = None

    def add(term: Tensor) -> None:
        nonlocal total
        total = term if total is None else total + term

    if eta_f or eta_b:
        lf, lb = [], []
        for layer in setup.temporal:
            p_ref, p = ref[layer.name], cur[layer.name]
            obj = masks_by_tokens[p.shape[0]]
            w = setup.temporal_weights[layer.name]
            if eta_f:
                lf.append(w * temporal_loss(p_ref, p, obj, setup.top_k))
            if eta_b:
                lb.append(w * temporal_loss(p_ref, p, ~obj, setup.top_k))
        if eta_f:
            add(eta_f * torch.stack(lf).mean())
        if eta_b:
            add(eta_b * torch.stack(lb).mean())
    if zeta_f or zeta_b:
        kf, kb = [], []
        for layer in setup.appearance:
            k_ref, k = ref[key_feature(layer.name)], cur[key_feature(layer.name)]
            obj = masks_by_tokens[k.shape[1]]
            w = setup.appearance_weights[layer.name]
            if zeta_f:
                kf.append(w * appearance_loss(k_ref, k, obj, setup.appearance_mode))
            if zeta_b:
                kb.append(w * appearance_loss(k_ref, k, ~obj, setup.appearance_mode))
        if zeta_f:
            add(zeta_f * torch.stack(kf).mean())
        if zeta_b:
            add(zeta_b * torch.stack(kb).mean())
    return total


def stdg_guidance(
    unet_forward,  # noqa: ANN001  (z, t, emb) -> eps
    recorder: FeatureRecorder,
    z_t: Tensor,
    z_ref: Tensor,
    t: int,
    cond: Tensor,
    masks_by_tokens: dict[int, Tensor],
    setup: STDGSetup,
    threshold: float | None = None,
    full_graph: bool = False,
) -> tuple[Tensor, Tensor]:
    """STDG gradient ``G_t`` and the conditional prediction ``ε_c`` from the same forward.

    One reference forward on ``z*_t`` that stops after the last guided layer, one full forward on
    ``z_t`` (its output is ``ε_θ(z_t, C, t)``, needed by the null-text step anyway) with autograd up to
    the last guided layer, and one backward to ``z_t``. ``full_graph`` keeps autograd on for the whole
    forward, as the official code does (the reference-cost mode): same ``G`` and ``ε_c``, more memory.

    Returns:
        ``(G, eps_cond)``, both shaped like ``z_t`` and detached.
    """
    with torch.no_grad(), recorder.capture(stop_early=True) as ref:
        unet_forward(z_ref, t, cond)
    ref = dict(ref)
    z = z_t.detach().requires_grad_(True)
    # the backward too runs the recorded blocks as the forward did: with gradient checkpointing it recomputes them,
    # and a compiled block recomputing what an eager one saved fails checkpoint's metadata check
    with torch.enable_grad(), attention_blocks_eager():
        with recorder.capture(tail_without_grad=not full_graph) as cur:
            eps = unet_forward(z, t, cond)
        loss = stdg_loss(ref, cur, masks_by_tokens, setup)
        if loss is None:
            grad = torch.zeros_like(z)
        else:
            (grad,) = torch.autograd.grad(loss, z)
    return clamp_guidance(grad, threshold).detach(), eps.detach()


class STDGGraph(StaticGraph):
    """:func:`stdg_guidance` on static tensors ``(z_t, z*_t, t)``, for ``inversion.cuda_graph``: every step of
    the pivotal stage after the first asks for the same shapes, so the reference forward, the forward with
    autograd and the backward to ``z_t`` replay as one graph. Captured with the null-text iteration by
    :func:`~videodirector.diffusion.static_graph.capture_together`, into the same pool; uncaptured it runs
    the same work eagerly."""

    def __init__(self, unet_forward, recorder: FeatureRecorder, like_z: Tensor, cond: Tensor,  # noqa: ANN001
                 masks_by_tokens: dict[int, Tensor], setup: STDGSetup, threshold: float | None = None) -> None:
        self.unet_forward, self.recorder, self.cond = unet_forward, recorder, cond
        self.masks_by_tokens, self.setup, self.threshold = masks_by_tokens, setup, threshold
        self.z, self.z_ref = torch.zeros_like(like_z), torch.zeros_like(like_z)
        self.t = torch.zeros((), device=like_z.device, dtype=torch.long)
        self.guidance, self.eps_cond = torch.zeros_like(like_z), torch.zeros_like(like_z)

    def _work(self) -> None:
        self.guidance, self.eps_cond = stdg_guidance(self.unet_forward, self.recorder, self.z, self.z_ref, self.t,
                                                     self.cond, self.masks_by_tokens, self.setup, self.threshold)
        self.recorder.store = {}  # the recorded features are dead now: their memory goes back to the pool

    def __call__(self, z_t: Tensor, z_ref: Tensor, t: int) -> tuple[Tensor, Tensor]:
        """``(G, ε_c)`` as :func:`stdg_guidance` returns them, copied out of the graph's memory."""
        with torch.no_grad():
            self.z.copy_(z_t)
            self.z_ref.copy_(z_ref)
            self.t.fill_(t)
        self.run()
        return self.guidance.clone(), self.eps_cond.clone()
