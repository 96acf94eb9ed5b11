"""Weighted attention fusion (ASSD, Zhu et al. 2024, Eqs. 11-13) as a diffusers attention processor.

One UNet forward carries both branches of a score-distillation step, batch-major
``[reference-uncond, reference-cond, edit-uncond, edit-cond] x F frames`` (spatial attention folds the
frames into the batch). In a fused layer the edit rows attend with their own queries both to their own
keys/values (Eq. 11) and to the keys/values of the reference row of the same frame and the same CFG half
(Eq. 12), mixed as ``λ·SelfAttn + (1 - λ)·RefAttn`` (Eq. 13). The reference rows are left as they are.
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import Tensor

from .processors import AttentionLayer, ControlProcessor, call_order_key

BRANCHES = ("reference_uncond", "reference_cond", "edit_uncond", "edit_cond")
"""Batch layout a fused forward must use (each entry ``F`` rows, one per frame)."""

_SPATIAL_SELF = re.compile(r"^(down_blocks\.\d+|mid_block|up_blocks\.\d+)\.attentions\.\d+\.transformer_blocks\.\d+\.attn1$")


def spatial_self_attention_layers(unet: torch.nn.Module, blocks: list[str] | None = None) -> list[AttentionLayer]:
    """The spatial self-attention layers (``…attentions.j.transformer_blocks.k.attn1``) of a
    ``UNetMotionModel`` or ``UNet3DConditionModel`` in call order, optionally only those inside ``blocks``
    (``up_blocks.3``...). Temporal layers (``motion_modules``, ``temp_attentions``, ``transformer_in``) and
    cross-attention (``attn2``) never match."""
    names = sorted((k[: -len(".processor")] for k in unet.attn_processors), key=call_order_key)
    chosen = []
    for n in names:
        if not _SPATIAL_SELF.match(n):
            continue
        block = n.split(".attentions.")[0]
        if blocks is None or block in blocks:
            chosen.append(AttentionLayer(n, "self", block, len(chosen)))
    return chosen


def fused_attention(query: Tensor, key: Tensor, value: Tensor, weight: float) -> Tensor:
    """Eqs. 11-13 on ``(4·F, heads, N, d)`` tensors laid out as :data:`BRANCHES`: every row's own
    attention, with the edit rows' replaced by ``λ·softmax(q k^T/√d) v + (1 - λ)·softmax(q k̂^T/√d) v̂``,
    ``k̂, v̂`` the reference row of the same frame and CFG half."""
    rows = query.shape[0]
    if rows % len(BRANCHES):
        raise ValueError(f"attention fusion needs a batch of {len(BRANCHES)} branches x frames, got {rows} rows")
    own = F.scaled_dot_product_attention(query, key, value)
    if weight == 1.0:
        return own
    half = rows // 2  # rows [0, half): reference (uncond, cond); [half, rows): edit (uncond, cond)
    ref = F.scaled_dot_product_attention(query[half:], key[:half], value[:half])
    return torch.cat([own[:half], weight * own[half:] + (1.0 - weight) * ref])


class WeightedFusionProcessor(ControlProcessor):
    """Diffusers' attention with :func:`fused_attention` in place of the plain attention; ``weight`` is λ."""

    def __init__(self, layer: AttentionLayer, weight: float) -> None:
        super().__init__(layer)
        self.weight = float(weight)

    def attend(self, attn, query: Tensor, key: Tensor, value: Tensor) -> Tensor:  # noqa: ANN001
        return fused_attention(query, key, value, self.weight)
