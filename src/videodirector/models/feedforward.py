"""A GEGLU feed-forward activation that keeps one eighth of the memory for its backward
(``model.recompute_feedforward``).

diffusers' ``GEGLU`` (``FeedForward.net[0]`` of every spatial and motion-module transformer block)
computes ``h = x Wᵀ + b``, splits ``h`` into ``a, g`` and returns ``a · GELU(g)``. For the backward,
autograd keeps ``h`` (eight times the width of ``x``) and ``GELU(g)`` (four times). In VideoDirector's
stage 1 (the null-text backward and the STDG gradient, UNet weights frozen) these were 8.4 GB of the
23.3 GB peak at 16 × 512² (``benchmarks/results/memory_profile_h200.md``).

:class:`RecomputedGEGLU` keeps only ``x`` and recomputes ``h`` in the backward: one more ``x Wᵀ`` per
feed-forward. The forward is the stock one, operation for operation; the backward runs the same
operations as autograd's (``GELU``'s own backward kernel included), so gradients agree to rounding.
Without gradients, under autocast (the saved ``x`` would be the uncast one) or when ``proj`` is not a
plain ``nn.Linear`` (a LoRA wrapper, say), it is the stock module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _RecomputedGEGLU(torch.autograd.Function):
    """``a · GELU(g)`` with ``[a, g] = x Wᵀ + b``, saving ``x`` only."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(x, weight, bias)
        a, g = F.linear(x, weight, bias).chunk(2, dim=-1)
        return a * F.gelu(g)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:  # noqa: ANN001
        x, weight, bias = ctx.saved_tensors
        a, g = F.linear(x, weight, bias).chunk(2, dim=-1)
        grad_h = torch.cat([grad * F.gelu(g), torch.ops.aten.gelu_backward(grad * a, g)], dim=-1)
        grad_x = grad_h @ weight if ctx.needs_input_grad[0] else None
        rows_h, rows_x = grad_h.reshape(-1, grad_h.shape[-1]), x.reshape(-1, x.shape[-1])
        grad_w = rows_h.t() @ rows_x if ctx.needs_input_grad[1] else None
        grad_b = rows_h.sum(0) if bias is not None and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


def _geglu_class() -> type[nn.Module]:
    from diffusers.models.activations import GEGLU

    return GEGLU


class RecomputedGEGLU(nn.Module):
    """diffusers' ``GEGLU`` with the memory-light backward of :class:`_RecomputedGEGLU`; shares ``proj``."""

    def __init__(self, proj: nn.Linear) -> None:
        super().__init__()
        self.proj = proj

    def forward(self, hidden_states: Tensor, *args, **kwargs) -> Tensor:  # noqa: ANN002, ANN003
        proj = self.proj
        if (torch.is_grad_enabled() and type(proj) is nn.Linear
                and not torch.is_autocast_enabled(hidden_states.device.type)):
            return _RecomputedGEGLU.apply(hidden_states, proj.weight, proj.bias)
        a, g = proj(hidden_states).chunk(2, dim=-1)
        return a * F.gelu(g)


def set_recompute_feedforward(unet: nn.Module, on: bool) -> int:
    """Swap every GEGLU of ``unet``'s feed-forwards for :class:`RecomputedGEGLU` (``on``) or back to
    diffusers' ``GEGLU``; returns how many. ``proj`` is shared, so state-dict keys, values, devices and
    dtypes do not change."""
    geglu = _geglu_class()
    count = 0
    for module in unet.modules():
        net = getattr(module, "net", None)
        if type(module).__name__ != "FeedForward" or not isinstance(net, nn.ModuleList) or not len(net):
            continue
        act = net[0]
        if on and type(act) is geglu:
            net[0] = RecomputedGEGLU(act.proj)
        elif not on and type(act) is RecomputedGEGLU:
            stock = geglu(1, 1).to(device="meta")
            stock.proj = act.proj
            net[0] = stock
        else:
            continue
        count += 1
    return count
