"""A GEGLU feed-forward activation that keeps one twelfth of the memory for its backward
(``model.recompute_feedforward``).

diffusers' ``GEGLU`` (``FeedForward.net[0]`` of every spatial and motion-module transformer block)
computes ``h = x Wᵀ + b``, splits ``h`` into ``a, g`` and returns ``a · GELU(g)``. For the backward,
autograd keeps ``h`` (eight times the width of ``x``) and ``GELU(g)`` (four times). In VideoDirector's
stage 1 (the null-text backward and the STDG gradient) these were 8.4 GB of the 23.3 GB peak at
16 × 512² (``benchmarks/results/memory_profile_h200.md``).

:class:`RecomputedGEGLU` runs the same operations inside ``torch.utils.checkpoint`` (non-reentrant), which
keeps ``x`` and recomputes ``h`` in the backward: one more ``x Wᵀ`` per feed-forward. ``torch.compile``
honours the checkpoint (its partitioner recomputes the region); a hand-written ``autograd.Function`` is
re-partitioned by AOTAutograd, which kept ``h`` (measured: the compiled peak did not move). Forwards
without gradients run the stock operations directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def _geglu_class() -> type[nn.Module]:
    from diffusers.models.activations import GEGLU

    return GEGLU


class RecomputedGEGLU(nn.Module):
    """diffusers' ``GEGLU`` with its activations recomputed in the backward; shares ``proj``."""

    def __init__(self, proj: nn.Module) -> None:
        super().__init__()
        self.proj = proj

    def geglu(self, hidden_states: Tensor) -> Tensor:
        """``a · GELU(g)`` with ``[a, g] = proj(x)``: diffusers' ``GEGLU.forward``, operation for operation."""
        a, g = self.proj(hidden_states).chunk(2, dim=-1)
        return a * F.gelu(g)

    def forward(self, hidden_states: Tensor, *args, **kwargs) -> Tensor:  # noqa: ANN002, ANN003
        if not torch.is_grad_enabled():
            return self.geglu(hidden_states)
        return checkpoint(self.geglu, hidden_states, use_reentrant=False, preserve_rng_state=False)


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
