"""The null-text iteration on static tensors, replayed as one CUDA graph (``inversion.cuda_graph``).

Every inner iteration of Algorithm I (lines 11-16) has the same shapes: ``ε_u(z_t, φ)``, the guided DDIM
step, the loss against ``z*_{t-1}``, its backward to ``φ`` and Adam's update. :class:`NullTextGraph`
captures that once and replays it for every iteration of every step, so the GPU runs the ~2,000 kernels
of an iteration without waiting for the host to launch them. What changes from step to step lives in
static tensors that each step overwrites: the latent, ``ε_c``, the target, ``G_t``, the timestep, the
alphas, the learning rate, ``φ``'s warm start, and Adam's state, reset to zero as a fresh Adam has it.

The capture (:func:`~videodirector.diffusion.static_graph.capture_together`) shares its memory pool with
the graphed STDG gradient (:class:`~videodirector.guidance.stdg.STDGGraph`). Uncaptured (on the CPU) the
same static-tensor iteration runs eagerly: that is how the tests compare it with
:func:`~videodirector.diffusion.nulltext.null_text_step`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .ddim import cfg_combine, ddim_step
from .nulltext import NullTextStep, expand_null
from .static_graph import StaticGraph, capture_together


class NullTextGraph(StaticGraph):
    """One null-text iteration on static tensors; ``capture`` captures it alone on a GPU (simple callers; the
    method captures it with the STDG graph through :func:`capture_together`), and does nothing on the CPU.

    Args:
        eps_fn: ``eps_fn(z, t, null_per_frame) -> ε_u`` with ``t`` a 0-d tensor on the device.
        like_z, like_phi: tensors shaped like the latent ``(1, C, F, h, w)`` and ``φ`` ``(1 or F, 77, D)``.
    """

    def __init__(self, eps_fn: Callable[[Tensor, Tensor, Tensor], Tensor], like_z: Tensor, like_phi: Tensor,
                 guidance_scale: float, cfg_scale: float, capture: bool = False) -> None:
        dev = like_z.device
        self.eps_fn, self.guidance_scale, self.cfg_scale = eps_fn, guidance_scale, cfg_scale
        self.z, self.eps_cond, self.target, self.guidance = (torch.zeros_like(like_z) for _ in range(4))
        scalar = {"device": dev, "dtype": torch.promote_types(like_z.dtype, torch.float32)}  # float64 stays float64
        self.alpha_t, self.alpha_prev = torch.ones((), **scalar), torch.ones((), **scalar)
        self.t = torch.zeros((), device=dev, dtype=torch.long)
        self.phi = like_phi.detach().clone().requires_grad_(True)
        capturable = dev.type == "cuda"
        self.opt = torch.optim.Adam([self.phi], lr=torch.zeros((), **scalar), capturable=capturable,
                                    foreach=None if capturable else False)
        self.loss = torch.zeros((), **scalar)
        if capture and dev.type == "cuda":
            capture_together([self])

    def _work(self) -> None:
        """Eq. 13's loss at the current ``φ``, its backward and Adam's update; ``self.loss`` is the loss before
        it. ``φ``'s gradient is dropped first, so that a captured backward allocates it inside the graph."""
        self.opt.zero_grad(set_to_none=True)
        loss = F.mse_loss(self._guided_step(self.phi), self.target)
        loss.backward()
        self.opt.step()
        self.loss = loss.detach()

    def _guided_step(self, phi: Tensor) -> Tensor:
        """The DDIM step with ``ε̂ = ε_c + w (ε_c - ε_u(φ))`` and ``G_t`` in the direction term (Eq. 13)."""
        eps_u = self.eps_fn(self.z, self.t, expand_null(phi, self.z.shape[2]))
        return ddim_step(cfg_combine(self.eps_cond, eps_u, self.cfg_scale), self.z, self.alpha_t, self.alpha_prev,
                         self.guidance, self.guidance_scale)

    def _start(self, phi_init: Tensor, z_t: Tensor, eps_cond: Tensor, z_target: Tensor, guidance: Tensor | None,
               t: int, alpha_t: float, alpha_prev: float, lr: float) -> None:
        """Load one step into the static tensors and give Adam the state of a fresh optimiser."""
        with torch.no_grad():
            for static, value in ((self.z, z_t), (self.eps_cond, eps_cond), (self.target, z_target),
                                  (self.phi, phi_init)):
                static.copy_(value)
            if guidance is None:
                self.guidance.zero_()
            else:
                self.guidance.copy_(guidance)
            self.t.fill_(t)
            self.alpha_t.fill_(alpha_t)
            self.alpha_prev.fill_(alpha_prev)
            self.opt.param_groups[0]["lr"].fill_(lr)
            for value in self.opt.state.get(self.phi, {}).values():
                value.zero_()

    def step(self, eps_cond: Tensor, z_t: Tensor, z_target: Tensor, phi_init: Tensor, t: int, alpha_t: float,
             alpha_prev: float, guidance: Tensor | None, lr: float, inner_steps: int, stop_below: float) -> NullTextStep:
        """:func:`~videodirector.diffusion.nulltext.null_text_step` for one timestep, on the graph."""
        self._start(phi_init, z_t, eps_cond, z_target, guidance, t, alpha_t, alpha_prev, lr)
        iters, last = 0, float("nan")
        for _ in range(inner_steps):
            self.run()
            iters += 1
            last = float(self.loss)
            if last < stop_below:
                break
        phi = self.phi.detach().clone()
        with torch.no_grad():
            z_next = self._guided_step(phi)
        return NullTextStep(phi, z_next, iters, last)
