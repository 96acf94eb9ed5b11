"""Null-text optimisation, shared or multi-frame (paper §3.2, supplementary Eq. 13).

For one timestep ``t``: a fresh Adam on ``φ`` (warm-started from the previous step), inner
iterations minimising ``‖z*_{t-1} - DDIM(ε_c + w(ε_c - ε_u(φ)), G)‖²`` with early stop, then
one step along the optimised trajectory. The UNet's parameters must be frozen by the caller
(no weight gradients are computed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.profiler import record_function

from .ddim import cfg_combine, ddim_step


@dataclass
class NullTextStep:
    phi: Tensor  # optimised embedding, (1 or F, 77, D)
    z_next: Tensor  # the reconstruction latent after the step
    iterations: int
    loss: float


class LossReader:
    """Reads a scalar loss on the host without draining the GPU's queue.

    ``loss.item()`` right after the update waits for the whole iteration, so the GPU idles while the host
    launches the next one. :meth:`send` queues the copy to pinned host memory as soon as the loss is
    computed; :meth:`read`, called after the backward and the update are queued, waits for the copy only,
    so the backward is still running when the next iteration's launches start. The value, and so the early
    stop, are the same. On the CPU the copy is immediate."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.host = torch.empty((), dtype=torch.float32, pin_memory=self.cuda)
        self.done = torch.cuda.Event() if self.cuda else None

    def send(self, loss: Tensor) -> None:
        self.host.copy_(loss.detach().float(), non_blocking=self.cuda)
        if self.done is not None:
            self.done.record()

    def read(self) -> float:
        if self.done is not None:
            self.done.synchronize()
        return float(self.host)


def expand_null(phi: Tensor, num_frames: int) -> Tensor:
    """``(1, 77, D)`` shared or ``(F, 77, D)`` multi-frame null-text -> per-frame ``(F, 77, D)`` in (b f) order."""
    return phi.expand(num_frames, -1, -1) if phi.shape[0] == 1 else phi


def null_text_step(
    eps_fn: Callable[[Tensor, Tensor], Tensor],
    eps_cond: Tensor,
    z_t: Tensor,
    z_target: Tensor,
    phi_init: Tensor,
    alpha_t: float,
    alpha_prev: float,
    guidance: Tensor | None,
    guidance_scale: float,
    cfg_scale: float,
    lr: float,
    inner_steps: int,
    stop_below: float,
    after_iteration: Callable[[], None] | None = None,
) -> NullTextStep:
    """Optimise ``φ_t`` for one timestep (Algorithm I lines 11-16).

    Args:
        eps_fn: ``eps_fn(z, null_per_frame) -> ε_u``; gradients flow to the embedding only.
        eps_cond: ``ε_θ(z_t, C, t)``, constant here.
        z_target: ``z*_{t-1}`` from DDIM inversion.
        stop_below: early-stop threshold on the loss (official ``ε + 2e-5 · i``), checked after each update.
    """
    num_frames = z_t.shape[2]
    phi = phi_init.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([phi], lr=lr)
    iters, last = 0, float("nan")
    reader = LossReader(z_t.device)
    for _ in range(inner_steps):
        with record_function("null_text.iteration"):  # labels for benchmarks/pivotal_profile.py
            eps_u = eps_fn(z_t, expand_null(phi, num_frames))
            z_prev = ddim_step(cfg_combine(eps_cond, eps_u, cfg_scale), z_t, alpha_t, alpha_prev, guidance, guidance_scale)
            loss = F.mse_loss(z_prev, z_target)
            reader.send(loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            iters += 1
            last = reader.read()  # the loss before this update, read after the update is queued
            if after_iteration is not None:
                after_iteration()
        if last < stop_below:
            break
    phi = phi.detach()
    with torch.no_grad(), record_function("null_text.final_forward"):
        eps_u = eps_fn(z_t, expand_null(phi, num_frames))
        z_next = ddim_step(cfg_combine(eps_cond, eps_u, cfg_scale), z_t, alpha_t, alpha_prev, guidance, guidance_scale)
    return NullTextStep(phi, z_next, iters, last)
