"""DDIM sampling and inversion as small pure functions over tensors.

Conventions (official code): ``alphas_cumprod`` is the scheduler's ``ᾱ`` table; a step from
``t`` always lands on ``t - num_train_timesteps // num_steps`` whatever the list spacing,
with ``ᾱ(t < 0) = final_alpha_cumprod`` (1 for SD's ``set_alpha_to_one=True``).

Latents are ``(B, C, F, h, w)``. Nothing here switches gradients on or off: callers decide.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class NoiseSchedule:
    """The parts of a DDIM scheduler that the sampling maths needs."""

    alphas_cumprod: Tensor  # (num_train_timesteps,), float64 on CPU
    final_alpha_cumprod: float = 1.0
    num_train_timesteps: int = 1000

    @classmethod
    def from_scheduler_config(cls, config: dict) -> "NoiseSchedule":
        """Build ᾱ from a diffusers ``DDIMScheduler`` config (linear or scaled_linear betas)."""
        n = int(config.get("num_train_timesteps", 1000))
        b0, b1 = float(config.get("beta_start", 0.00085)), float(config.get("beta_end", 0.012))
        kind = config.get("beta_schedule", "linear")
        if kind == "linear":
            betas = torch.linspace(b0, b1, n, dtype=torch.float64)
        elif kind == "scaled_linear":
            betas = torch.linspace(b0**0.5, b1**0.5, n, dtype=torch.float64) ** 2
        else:
            raise ValueError(f"unsupported beta_schedule {kind!r}; use 'linear' or 'scaled_linear'")
        acp = torch.cumprod(1.0 - betas, dim=0)
        final = 1.0 if config.get("set_alpha_to_one", True) else float(acp[0])
        return cls(alphas_cumprod=acp, final_alpha_cumprod=final, num_train_timesteps=n)

    def alpha(self, t: int) -> float:
        """ᾱ_t, with ᾱ for t < 0 equal to the final alpha."""
        return float(self.alphas_cumprod[t]) if t >= 0 else self.final_alpha_cumprod


def linspace_timesteps(num_steps: int, num_train_timesteps: int = 1000) -> list[int]:
    """Stage-1 timesteps: ``linspace(0, T-1, n).round()[::-1]`` = [999, 979, ..., 20, 0] for n = 50."""
    return np.linspace(0, num_train_timesteps - 1, num_steps).round()[::-1].astype(int).tolist()


def leading_timesteps(num_steps: int, num_train_timesteps: int = 1000, steps_offset: int = 1) -> list[int]:
    """Diffusers' default ``leading`` spacing with ``steps_offset``: [981, 961, ..., 1] for n = 50 (official stage 2)."""
    ratio = num_train_timesteps // num_steps
    return [int(i * ratio + steps_offset) for i in range(num_steps)][::-1]


def step_size(schedule: NoiseSchedule, num_steps: int) -> int:
    return schedule.num_train_timesteps // num_steps


def predicted_x0(eps: Tensor, z: Tensor, alpha_t: float) -> Tensor:
    """x̂0 = (z_t - sqrt(1 - ᾱ_t) ε) / sqrt(ᾱ_t)   (supplementary Eq. 11, "predicted z0")."""
    return (z - (1 - alpha_t) ** 0.5 * eps) / alpha_t**0.5


def ddim_step(
    eps: Tensor,
    z: Tensor,
    alpha_t: float,
    alpha_prev: float,
    guidance: Tensor | None = None,
    guidance_scale: float = 1.0,
) -> Tensor:
    """One deterministic DDIM step with STDG in the direction term (Algorithm I lines 13-14).

    ``z_{t-1} = sqrt(ᾱ_{t-1}) x̂0(ε̂) + sqrt(1 - ᾱ_{t-1}) ε̄`` with ``ε̄ = ε̂ - s sqrt(1 - ᾱ_t) G``
    (Dhariwal & Nichol Eq. 14). x̂0 uses the un-guided ε̂ (official code).
    """
    x0 = predicted_x0(eps, z, alpha_t)
    direction = eps if guidance is None else eps - guidance_scale * (1 - alpha_t) ** 0.5 * guidance
    return alpha_prev**0.5 * x0 + (1 - alpha_prev) ** 0.5 * direction


def ddim_invert_step(eps: Tensor, z: Tensor, alpha_from: float, alpha_to: float) -> Tensor:
    """One DDIM inversion step (supplementary Eq. 12): ``z_{t+1} = sqrt(ᾱ_{t+1}) x̂0 + sqrt(1 - ᾱ_{t+1}) ε``."""
    return alpha_to**0.5 * predicted_x0(eps, z, alpha_from) + (1 - alpha_to) ** 0.5 * eps


def cfg_combine(eps_cond: Tensor, eps_uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance as written in paper Eq. 10: ``ε_c + w (ε_c - ε_u)``."""
    return eps_cond + scale * (eps_cond - eps_uncond)


@dataclass
class StepInfo:
    """What a loop reports to its callback after each step."""

    stage: str
    index: int
    total: int
    timestep: int


EpsFn = Callable[[Tensor, int], Tensor]


def ddim_invert(
    eps_fn: EpsFn,
    z0: Tensor,
    schedule: NoiseSchedule,
    timesteps: list[int],
    callback: Callable[[StepInfo], None] | None = None,
) -> Tensor:
    """DDIM inversion (Algorithm I lines 2-4) in our own loop.

    Walks ``timesteps`` from the cleanest to the noisiest. For each target ``s`` the model is
    evaluated at ``s`` on the latent of the level below, stepping from ``ᾱ[s - Δ]`` to ``ᾱ[s]``
    (official code).

    Args:
        eps_fn: ``eps_fn(z, t) -> ε`` for the source prompt (no CFG).
        z0: clean latents ``(1, C, F, h, w)``.
        timesteps: denoising order (noisiest first), e.g. :func:`linspace_timesteps`.

    Returns:
        ``(T + 1, C, F, h, w)``: index 0 is ``z0``; index k >= 1 is the latent at noise level
        ``timesteps[T - k]`` (so index T is z*_T).
    """
    delta = step_size(schedule, len(timesteps))
    latents = [z0[0]]
    z = z0
    ascending = timesteps[::-1]
    for k, s in enumerate(ascending):
        eps = eps_fn(z, s)
        z = ddim_invert_step(eps, z, schedule.alpha(s - delta), schedule.alpha(s))
        latents.append(z[0])
        if callback is not None:
            callback(StepInfo("invert", k, len(ascending), s))
    return torch.stack(latents)


def ddim_sample(
    eps_fn: EpsFn,
    z_T: Tensor,
    schedule: NoiseSchedule,
    timesteps: list[int],
    guidance: Tensor | None = None,
    guidance_scale: float = 1.0,
) -> Tensor:
    """Plain DDIM sampling from ``z_T`` over ``timesteps`` (noisiest first).

    ``guidance`` is an optional per-step STDG tensor ``(T, C, F, h, w)``.
    """
    delta = step_size(schedule, len(timesteps))
    z = z_T
    for i, t in enumerate(timesteps):
        g = None if guidance is None else guidance[i : i + 1]
        z = ddim_step(eps_fn(z, t), z, schedule.alpha(t), schedule.alpha(t - delta), g, guidance_scale)
    return z


def add_noise(z0: Tensor, noise: Tensor, alpha_t: float) -> Tensor:
    """Forward diffusion ``z_t = sqrt(ᾱ_t) z_0 + sqrt(1 - ᾱ_t) ε`` (DDPM; ASSD Eq. 1)."""
    return alpha_t**0.5 * z0 + (1 - alpha_t) ** 0.5 * noise


def matching_timestep(t: int, source: NoiseSchedule, target: NoiseSchedule) -> int:
    """The timestep of ``target`` whose ᾱ is nearest to ``source``'s ᾱ_t: one noisy latent, read by two
    models trained on different schedules, at the noise level it really has (``t`` when they agree)."""
    return int(torch.argmin((target.alphas_cumprod - float(source.alphas_cumprod[t])).abs()))  # schedules may sit on two devices
