"""EDM (Karras et al. 2022) maths for Stable Video Diffusion, as small pure functions over tensors.

Conventions, as SVD and the official I2VEdit code use them:

* noise levels ``σ`` follow Karras' schedule (EDM Eq. 5, ρ = 7, σ ∈ [0.002, 700]) with a final 0;
* the network predicts ``v`` with EDM preconditioning at σ_data = 1 (EDM Table 1, "v-prediction"
  column of SVD): ``D(x; σ) = c_skip(σ) x + c_out(σ) F(c_in(σ) x; c_noise(σ))``;
* the UNet's timestep input is ``c_noise(σ) = 0.25 ln σ``;
* sampling and inversion are deterministic Euler steps of the probability-flow ODE (EDM Alg. 1 with
  no second-order correction and no churn): ``x' = x + (σ' - σ) (x - D) / σ``, towards lower noise
  for sampling and higher noise for inversion;
* training draws σ from k-diffusion's "interpolated cosine" log-SNR distribution and weights the
  x₀ loss by ``(σ² + 1) / σ²`` (EDM Eq. 8 weighting λ(σ) at σ_data = 1).

Latents can have any shape; σ is a Python float or a tensor broadcastable to them. SARP (I2VEdit
Eq. 5) is here too: it perturbs the pixels an EDM inversion starts from.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

SVD_SIGMA_MIN = 0.002
SVD_SIGMA_MAX = 700.0
KARRAS_RHO = 7.0


def karras_sigmas(num_steps: int, sigma_min: float = SVD_SIGMA_MIN, sigma_max: float = SVD_SIGMA_MAX,
                  rho: float = KARRAS_RHO, append_zero: bool = True) -> Tensor:
    """EDM Eq. 5: ``σ_i = (σ_max^{1/ρ} + i/(n-1) (σ_min^{1/ρ} - σ_max^{1/ρ}))^ρ``, i = 0..n-1, then 0.

    float64, descending. For SVD (25 steps): 700, 545.73, ..., 0.00788, 0.002, 0."""
    if num_steps < 2:
        raise ValueError(f"karras_sigmas needs at least 2 steps, got {num_steps}")
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]) if append_zero else sigmas


def c_noise(sigma: Tensor | float) -> Tensor:
    """UNet timestep input ``0.25 ln σ`` (SVD's ``timestep_type="continuous"``, EDM Table 1)."""
    return 0.25 * torch.log(torch.as_tensor(sigma, dtype=torch.float64))


def precondition(sigma: Tensor | float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """EDM Table 1 preconditioning of SVD's v-prediction at σ_data = 1: ``(c_in, c_skip, c_out, c_noise)``
    with ``c_in = 1/√(σ²+1)``, ``c_skip = 1/(σ²+1)``, ``c_out = -σ/√(σ²+1)``, ``c_noise = 0.25 ln σ``."""
    s = torch.as_tensor(sigma, dtype=torch.float64)
    return 1 / (s**2 + 1).sqrt(), 1 / (s**2 + 1), -s / (s**2 + 1).sqrt(), c_noise(s)


def scale_model_input(x: Tensor, sigma: Tensor | float) -> Tensor:
    """``c_in(σ) x``: what the UNet sees of the noisy latent (``EulerDiscreteScheduler.scale_model_input``)."""
    c_in = precondition(sigma)[0]
    return x * c_in.to(x.dtype) if isinstance(c_in, Tensor) else x * c_in


def denoised(v: Tensor, x: Tensor, sigma: Tensor | float) -> Tensor:
    """EDM Eq. 7 with Table 1's v-prediction: ``D = c_skip x + c_out v = x/(σ²+1) - v σ/√(σ²+1)``."""
    _, c_skip, c_out, _ = precondition(sigma)
    return x * c_skip.to(x.dtype) + v.to(x.dtype) * c_out.to(x.dtype)


def euler_step(x: Tensor, x0: Tensor, sigma: Tensor | float, sigma_next: Tensor | float) -> Tensor:
    """One Euler step of the probability-flow ODE (EDM Alg. 1, lines 4-6 without the correction):
    ``x' = x + (σ' - σ) d`` with ``d = (x - D)/σ``. Towards lower noise (``σ' < σ``) it samples; towards
    higher noise it inverts (I2VEdit's EDM inversion, §4.2)."""
    s = torch.as_tensor(sigma, dtype=torch.float64)
    sn = torch.as_tensor(sigma_next, dtype=torch.float64)
    d = (x - x0) / s.to(x.dtype)
    return x + (sn - s).to(x.dtype) * d


def inversion_schedule(sigmas: Tensor) -> tuple[Tensor, Tensor]:
    """The official EDM inversion's noise levels and UNet timesteps, walked from low to high noise.

    ``sigmas`` is a sampling schedule ``σ_0 > ... > σ_{n-1} > σ_n = 0`` (:func:`karras_sigmas`). Since
    an Euler step divides by σ, the trailing 0 is replaced by the geometric extrapolation
    ``σ_end = σ_{n-1}² / σ_{n-2}`` (≈ 5.07e-4 for SVD's 25 steps), and the timestep list is shifted so
    that each step evaluates the UNet at its own, lower σ. Returns ``(levels, timesteps)``: ``levels``
    ascending ``[σ_end, σ_{n-1}, ..., σ_0]`` (n + 1 values; step i goes from ``levels[i]`` to
    ``levels[i+1]``) and ``timesteps[i] = c_noise(levels[i])`` (n values)."""
    s = sigmas.to(torch.float64)
    if s.ndim != 1 or len(s) < 3 or float(s[-1]) != 0.0:
        raise ValueError("inversion_schedule needs a sampling schedule of at least 2 levels ending in 0")
    ext = s.clone()
    ext[-1] = s[-2] ** 2 / s[-3]
    levels = ext.flip(0)
    return levels, c_noise(levels[:-1])


def edit_step_for_inversion_step(inversion_step: int, num_steps: int) -> int:
    """Which sampling step reads what inversion step ``inversion_step`` recorded: sampling step j
    (0 = σ_max) reads inversion entry ``n-1-j``, the UNet evaluation made at σ_{j+1} (official
    one-step offset). The map is its own inverse."""
    return num_steps - 1 - inversion_step


def frame_guidance_scales(num_frames: int, min_scale: float = 1.0, max_scale: float = 2.0) -> Tensor:
    """SVD's frame-wise classifier-free guidance: ``linspace(min, max, F)`` (first frame 1, last frame
    ``max_guidance_scale``; I2VEdit's configs use 2.0), one scale per frame."""
    return torch.linspace(min_scale, max_scale, num_frames, dtype=torch.float64)


# ------------------------------------------------------------------------------------------ training


def _logsnr_cosine(t: Tensor, logsnr_min: float, logsnr_max: float) -> Tensor:
    """Cosine log-SNR schedule (Nichol & Dhariwal 2021; Hoogeboom et al. 2023 Eq. 6) clipped to
    ``[logsnr_min, logsnr_max]``: ``-2 ln tan(a + t (b - a))``."""
    a = math.atan(math.exp(-0.5 * logsnr_max))
    b = math.atan(math.exp(-0.5 * logsnr_min))
    return -2 * torch.log(torch.tan(a + t * (b - a)))


def _logsnr_cosine_shifted(t: Tensor, image_d: float, noise_d: float, logsnr_min: float,
                           logsnr_max: float) -> Tensor:
    """Resolution-shifted cosine schedule (simple diffusion, Hoogeboom et al. 2023 §3.1): shift
    ``2 ln(noise_d / image_d)``."""
    shift = 2 * math.log(noise_d / image_d)
    return _logsnr_cosine(t, logsnr_min - shift, logsnr_max - shift) + shift


def training_sigmas(u: Tensor, image_d: float = 64.0, noise_d_low: float = 32.0, noise_d_high: float = 64.0,
                    sigma_data: float = 0.5, sigma_min: float = SVD_SIGMA_MIN,
                    sigma_max: float = SVD_SIGMA_MAX) -> Tensor:
    """σ for uniform draws ``u`` ∈ [0, 1] from k-diffusion's interpolated-cosine log-SNR distribution
    (``rand_cosine_interpolated``), as the official motion-LoRA training samples them:
    ``logSNR = lerp(shifted(u; noise_d_low), shifted(u; noise_d_high), u)``,
    ``σ = σ_data exp(-logSNR / 2)``. u = 0 gives σ_max, u = 1 gives σ_min; the median is ≈ 0.71."""
    u = u.to(torch.float64)
    # k-diffusion's argument order: the log-SNR "min" comes from σ_min, so that u = 0 is the noisiest
    at_sigma_min, at_sigma_max = -2 * math.log(sigma_min / sigma_data), -2 * math.log(sigma_max / sigma_data)
    low = _logsnr_cosine_shifted(u, image_d, noise_d_low, at_sigma_min, at_sigma_max)
    high = _logsnr_cosine_shifted(u, image_d, noise_d_high, at_sigma_min, at_sigma_max)
    return torch.exp(-torch.lerp(low, high, u) / 2) * sigma_data


def loss_weight(sigma: Tensor) -> Tensor:
    """EDM's λ(σ) = (σ² + σ_data²)/(σ σ_data)² at σ_data = 1, i.e. ``(σ² + 1)/σ²``: the weight of the
    x₀ loss ``|D - z₀|²`` in the official motion-LoRA training."""
    s = sigma.to(torch.float64)
    return (s**2 + 1) / s**2


def step_for_sigma(sigma: float, sigmas: Tensor) -> int:
    """The sampling step whose bracket holds a training σ: ``n - searchsorted(ascending σ, σ)`` clamped
    to ``[0, n-1]`` (official skip-interval training reads the clip-1 keys/values of that step)."""
    levels = sigmas[:-1].flip(0)  # ascending, n values
    n = len(levels)
    idx = int(torch.searchsorted(levels, torch.tensor([float(sigma)], dtype=levels.dtype)))
    return max(0, min(n - 1, n - idx))


# ------------------------------------------------------------------------------------------ SARP

SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
SARP_GRADIENT_THRESHOLD = 0.001
"""Paper §5.1: "the gradient threshold of smooth area detection" (official ``mean g <= 0.001``)."""


def sobel_magnitude(frames: Tensor) -> Tensor:
    """Per-pixel ``mean_c (|G_x| + |G_y|)`` of RGB frames ``(N, 3, H, W)``: a 3×3 Sobel filter applied to
    each channel (zero padding 1), the L1 gradient magnitude averaged over the channels. ``(N, 1, H, W)``."""
    x = frames.float()
    c = x.shape[1]
    kx = SOBEL_X.to(x).view(1, 1, 3, 3).repeat(c, 1, 1, 1)
    ky = SOBEL_X.t().contiguous().to(x).view(1, 1, 3, 3).repeat(c, 1, 1, 1)
    gx = F.conv2d(x, kx, padding=1, groups=c)
    gy = F.conv2d(x, ky, padding=1, groups=c)
    return (gx.abs() + gy.abs()).mean(1, keepdim=True)


def sarp_mask(frames: Tensor, threshold: float = SARP_GRADIENT_THRESHOLD) -> Tensor:
    """I2VEdit's smooth-area mask ``M_sarp`` (§4.2, Sobel gradient thresholding): True where
    ``sobel_magnitude <= threshold``. On [-1, 1] frames one 8-bit step already gives ≈ 0.0078, so 0.001
    selects the pixels whose 3×3 neighbourhood is exactly constant (at the border, constant and 0). Sobel's
    blind spot stays as in the official code: a pixel never enters its own gradient (nor do mirror-symmetric
    neighbourhoods register), so a lone one-step speck counts as smooth at its own position."""
    return sobel_magnitude(frames) <= threshold


def sarp(frames: Tensor, alpha: float = 0.005, generator: torch.Generator | None = None,
         threshold: float = SARP_GRADIENT_THRESHOLD) -> Tensor:
    """I2VEdit Eq. 5: ``x_sarp = (x + α ε) ⊙ M + x ⊙ (1 - M)``, ε ~ N(0, 1) per pixel and channel, then
    clamped to [-1, 1]. ``frames (N, 3, H, W)`` in [-1, 1]; α = 0.005 in every official config."""
    x = frames.float()
    mask = sarp_mask(x, threshold)
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu" if generator is None
                      else generator.device).to(x.device)
    return torch.where(mask, x + alpha * eps, x).clamp(-1, 1).to(frames.dtype)
