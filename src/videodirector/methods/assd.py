"""ASSD: Adaptive Sliding Score Distillation (Zhu et al., "Zero-Shot Video Editing through Adaptive Sliding
Score Distillation", 2024), Fig. 2 of the paper, on any text-to-video model the toolkit loads.

No inversion and no sampling loop: the source latent itself is optimised.

  Ẑ = E(X), Z ← Ẑ                                                   (:meth:`ASSD.invert`)
  for each of ``iterations`` SGD steps (lr 0.1, 200 in the paper):   (:meth:`ASSD.edit`)
    t ~ U{t_min..t_max}, ε ~ N(0, I), one of each for both branches
    Z_t, Ẑ_t = √ᾱ_t Z + √(1-ᾱ_t) ε, √ᾱ_t Ẑ + √(1-ᾱ_t) ε               Eq. 1
    ε, ε̂ = T2V predictions with CFG of (Z_t, y*) and (Ẑ_t, y)        Eq. 3, one forward for both branches,
           the edit branch's last spatial self-attentions fused with the reference's   Eqs. 11-13
    g = ε - ε̂                                                       Video DDS, Eq. 7
      or m ⊙ (ε - SS(ε̂)) + (1 - m) ⊙ (ε - ε̂)                         ASSD, Eqs. 8-10
    g += ε_Ω(z_t^i, y*) - ε_Ω(ẑ_t^i, y) per frame with SD 1.5         Eqs. 14-15
    Z ← Z - lr · s · g  (through the surrogate loss s·Σ Z·g)
  return D(Z)

Neither UNet is back-propagated: predictions run under ``torch.inference_mode`` and enter the update
through the surrogate loss of the DDS reference, whose gradient on Z is ``s·g`` with
``s = grad_scale`` (default 2000/(h·w), DDS's scale per frame latent).

Choices where the paper is silent (docs/methods/assd.md): the smoothing weights γ are normalised to sum 1
and, at the first and last frame, renormalised over the neighbours that exist; the mask of Eq. 9 is per
element (channel, y, x) with the maximum over frames; fusion acts on both CFG halves of the edit branch,
each with the matching reference half; CFG follows Eq. 3 (``ε_∅ + w (ε_y - ε_∅)``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from ..attention.fusion import WeightedFusionProcessor, spatial_self_attention_layers
from ..attention.processors import installed
from ..config import EditConfig, register_settings
from ..diffusion.ddim import add_noise, matching_timestep
from ..errors import ConfigError, UserError
from ..notices import warn
from ..models.loading import (
    DEFAULT_MODELSCOPE, ImageGuidance, ModelBundle, check_shared_latent_space, load_image_guidance, load_modelscope,
    load_models,
)
from .base import EditResult, Inversion, Progress, no_progress, register


@dataclass
class ASSDSettings:
    """Settings of ASSD (config section ``assd``). Defaults: the paper where it gives a value, the DDS
    reference where it does not, and the ShapeWorld sweep (``benchmarks/results/assd_sweep``) where that
    one is not flat."""

    iterations: int = 200
    """SGD steps on Z (paper: 200)."""
    lr: float = 0.1
    """SGD learning rate (paper and DDS: 0.1; no momentum, no weight decay)."""
    t_min: int = 50
    t_max: int = 948
    """Timesteps drawn uniformly from ``[t_min, t_max]`` (DDS reference: ``randint(50, 949)``)."""
    t2v_guidance_scale: float | None = None
    """CFG scale w of the text-to-video predictions (Eq. 3). None: the toolkit's CFG scale in Eq. 3's
    convention, ``inversion.guidance_scale + 1`` (8.5 by default, 4 for the bundled ShapeWorld models)."""
    sd_guidance_scale: float | None = None
    """CFG scale ω of the SD 1.5 predictions (Eq. 14); None as ``t2v_guidance_scale``."""
    grad_scale: float | None = None
    """s in ``Z ← Z - lr·s·g``. None: the DDS reference's 2000/(h·w) (0.49 at 64x64 latents, 7.8 at 16x16)."""
    smoothing: bool = True
    """Sliding-window smoothing with the adaptive mask (Eqs. 8-10); off: Video DDS (Eq. 7)."""
    gamma: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.25])
    """γ_{i-1}, γ_i, γ_{i+1} of Eq. 8 (window 3), normalised to sum 1."""
    tau: float = 0.3
    """τ of Eq. 9: smoothed where ``|ε - ε̂| < max_frames |ε - ε̂| - τ``. Must exceed the rounding of the
    predictions: with τ = 0, positions where both branches agree up to rounding get m = 1 in every frame but
    one, and the smoothing alone (``ε̂ - SS(ε̂)``) then moves the unedited video."""
    adaptive_mask: bool = True
    """Eq. 9's mask; off: smooth everywhere (m = 1)."""
    smooth: Literal["prediction", "error"] = "prediction"
    """What Eq. 8 smooths. ``prediction``: the reference prediction ε̂ itself, as written. ``error`` (beyond the
    paper): only its error against the injected noise, ``ε + SS(ε̂ - ε)``. ε̂ estimates ε, which is independent
    from frame to frame, so smoothing ε̂ also adds ``ε - SS(ε)`` (white in time, std 0.61 for γ = [¼, ½, ¼]) to
    the gradient wherever m = 1; the paper's stated aim is to smooth the prediction errors."""
    fusion: bool = True
    """Weighted attention fusion in the edit branch (Eqs. 11-13)."""
    fusion_weight: float = 0.5
    """λ of Eq. 13: 1 is plain self-attention, 0 attends only to the reference."""
    fusion_blocks: list[str] = field(default_factory=lambda: ["up_blocks.3"])
    """UNet blocks whose spatial self-attentions are fused (the last three in SD/ModelScope layout)."""
    sd_guidance: bool = True
    """Joint SD 1.5 image guidance, added 1:1 (Eqs. 14-15)."""
    t2v: Literal["animatediff", "modelscope"] = "animatediff"
    """Text-to-video guidance: the toolkit's AnimateDiff bundle or a ModelScope/Zeroscope UNet3D model."""
    t2v_model: str | None = None
    """ModelScope/Zeroscope hub id or folder (``t2v: modelscope``); None: ali-vilab/text-to-video-ms-1.7b."""

    def validate(self) -> None:
        """One line per bad value, before any work."""
        def number(name: str, value: float | None, low: float, high: float) -> None:
            if value is not None and not (math.isfinite(value) and low <= value <= high):
                raise ConfigError(f"assd.{name}={value!r} is out of range: use a finite number from {low:g} to {high:g}")

        if not 1 <= self.iterations <= 100_000:
            raise ConfigError(f"assd.iterations={self.iterations}: use 1 to 100000 SGD steps (--iterations 200 is the paper's)")
        number("lr", self.lr, 1e-8, 100.0)
        number("t2v_guidance_scale", self.t2v_guidance_scale, 0.0, 100.0)
        number("sd_guidance_scale", self.sd_guidance_scale, 0.0, 100.0)
        number("grad_scale", self.grad_scale, 1e-8, 1e6)
        number("tau", self.tau, 0.0, 100.0)
        number("fusion_weight", self.fusion_weight, 0.0, 1.0)
        if not 0 <= self.t_min <= self.t_max <= 999:
            raise ConfigError(f"assd.t_min={self.t_min}, assd.t_max={self.t_max}: use 0 <= t_min <= t_max <= 999 "
                              "(DDS: 50 and 948)")
        if len(self.gamma) != 3:
            raise ConfigError(f"assd.gamma must be 3 weights [γ_i-1, γ_i, γ_i+1] (window 3), got {self.gamma}")
        for k, g in enumerate(self.gamma):
            number(f"gamma[{k}]", g, 0.0, 1e6)
        if self.gamma[1] <= 0:
            raise ConfigError(f"assd.gamma={self.gamma}: the centre weight must be positive")
        if self.t2v_model and self.t2v != "modelscope":
            raise ConfigError("--t2v-model (assd.t2v_model) names a ModelScope/Zeroscope model; add --t2v modelscope "
                              "(AnimateDiff takes --base and --motion-adapter)")
        if not self.fusion_blocks and self.fusion:
            raise ConfigError("assd.fusion_blocks is empty; name UNet blocks (e.g. up_blocks.3) or use --no-fusion")


register_settings("assd", ASSDSettings)


# ----------------------------------------------------------------------------------- the paper's equations


def classifier_free_guidance(eps_uncond: Tensor, eps_cond: Tensor, scale: float) -> Tensor:
    """Eq. 3: ``ε^w = ε(·, ∅) + w (ε(·, y) - ε(·, ∅))``."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def sliding_smoothing(eps_ref: Tensor, gamma: list[float] | tuple[float, float, float]) -> Tensor:
    """Eq. 8 along the frame axis (dim 2 of ``(B, C, F, h, w)``), window 3:
    ``SS(ε̂^i) = γ_{i-1} ε̂^{i-1} + γ_i ε̂^i + γ_{i+1} ε̂^{i+1}`` with γ normalised to sum 1. At the first
    and last frame the missing neighbour's weight is dropped and the rest renormalised, so a prediction
    that is the same in every frame is left unchanged everywhere."""
    g_prev, g_mid, g_next = (float(g) for g in gamma)
    frames = eps_ref.shape[2]
    weights = torch.zeros(frames, frames, dtype=eps_ref.dtype, device=eps_ref.device)  # row i: weights of frames
    for i in range(frames):
        weights[i, i] = g_mid
        if i > 0:
            weights[i, i - 1] = g_prev
        if i < frames - 1:
            weights[i, i + 1] = g_next
    weights = weights / weights.sum(dim=1, keepdim=True)
    return torch.einsum("ij,bcjhw->bcihw", weights, eps_ref)


def adaptive_mask(eps_edit: Tensor, eps_ref: Tensor, tau: float) -> Tensor:
    """Eq. 9, elementwise: ``m = 1`` where ``|ε - ε̂| < max_frames(|ε - ε̂|) - τ``, else 0. The maximum is over
    the frame axis (dim 2) per (channel, y, x) and broadcast back to every frame."""
    delta = (eps_edit - eps_ref).abs()
    return (delta < delta.amax(dim=2, keepdim=True) - tau).to(eps_edit.dtype)


def video_dds_gradient(eps_edit: Tensor, eps_ref: Tensor) -> Tensor:
    """Eq. 7: ``∇_φ L_Video-DDS = ε_θ^w(Z_t, y*, t) - ε_θ^w(Ẑ_t, y, t)`` (∂Z/∂φ = I: φ is Z itself)."""
    return eps_edit - eps_ref


def assd_gradient(eps_edit: Tensor, eps_ref: Tensor, gamma: list[float], tau: float, use_mask: bool = True,
                  noise: Tensor | None = None) -> Tensor:
    """Eq. 10: ``m ⊙ (ε - SS(ε̂)) + (1 - m) ⊙ (ε - ε̂)``, m from Eq. 9 on the unsmoothed predictions
    (``use_mask=False``: m = 1, smoothing everywhere). With the injected ``noise`` given, SS acts on the
    prediction error only: ``SS(ε̂) := noise + SS(ε̂ - noise)`` (``assd.smooth: error``)."""
    ref_smoothed = (sliding_smoothing(eps_ref, gamma) if noise is None
                    else noise + sliding_smoothing(eps_ref - noise, gamma))
    smoothed = video_dds_gradient(eps_edit, ref_smoothed)
    if not use_mask:
        return smoothed
    m = adaptive_mask(eps_edit, eps_ref, tau)
    return m * smoothed + (1 - m) * video_dds_gradient(eps_edit, eps_ref)


def surrogate_loss(z: Tensor, gradient: Tensor, scale: float) -> Tensor:
    """The DDS reference's surrogate: ``s · Σ Z ⊙ g`` with g held constant, whose gradient on Z is ``s·g``."""
    return scale * (z * gradient).sum()


# ----------------------------------------------------------------------------------- the method


class ASSD:
    """ASSD on a text-to-video :class:`ModelBundle` (AnimateDiff or ModelScope) and, for the joint
    guidance, SD 1.5 (:class:`ImageGuidance`) in the same latent space. The video model's VAE encodes X
    and decodes Z."""

    name = "assd"
    inversion_steps = 0
    """``invert`` only encodes E(X): its :class:`Inversion` holds no DDIM steps."""

    def __init__(self, models: ModelBundle, cfg: EditConfig, image: ImageGuidance | None = None) -> None:
        self.models, self.cfg = models, cfg
        self.s: ASSDSettings = cfg.settings_for("assd")
        self.image = image
        if self.s.smoothing and self.s.smooth == "prediction" and self.s.tau == 0:
            warn("assd.tau is 0: where both branches agree up to rounding the smoothing alone moves the unedited video; "
                 "use a positive tau (default 0.3)")
        if self.s.sd_guidance and self.image is None:
            self.image = image_guidance_for(models, cfg)
        if self.image is not None:
            check_shared_latent_space(models, self.image)
        self.fused = spatial_self_attention_layers(models.unet, self.s.fusion_blocks) if self.s.fusion else []
        if self.s.fusion and not self.fused:
            have = sorted({l.block for l in spatial_self_attention_layers(models.unet)})
            raise UserError(f"assd.fusion_blocks {self.s.fusion_blocks} hold no spatial self-attention layer of this "
                            f"UNet; use some of {', '.join(have)} (default up_blocks.3), or --no-fusion")

    def _guidance_scales(self) -> tuple[float, float]:
        default = self.cfg.inversion.guidance_scale + 1.0  # toolkit convention ε_c + w(ε_c - ε_u) -> Eq. 3's
        s = self.s
        return (default if s.t2v_guidance_scale is None else s.t2v_guidance_scale,
                default if s.sd_guidance_scale is None else s.sd_guidance_scale)

    # ------------------------------------------------------------------ stage 1: E(X)
    @torch.no_grad()
    def invert(self, frames: Tensor, masks: Tensor, source_prompt: str, progress: Progress = no_progress) -> Inversion:
        """Ẑ = E(X), the posterior mean of the video model's VAE. Nothing else: ASSD has no inversion."""
        t0 = time.perf_counter()
        z = self.models.encode_video(frames, sample=False).float()
        progress("encode", 1, 1)
        meta = {"method": "assd", "source_prompt": source_prompt, "timesteps": [],
                "timings": {"encode": time.perf_counter() - t0}}
        return Inversion(latents=z, masks=masks.bool(), source_frames=frames.float().cpu(), meta=meta)

    def reconstruct(self, inversion: Inversion) -> Tensor:
        """D(E(X)): what the optimisation starts from."""
        return self.models.decode_latents(inversion.latents[:1].to(self.models.device))

    # ------------------------------------------------------------------ predictions
    def _video_eps(self, z: Tensor, t: int, emb: Tensor) -> Tensor:
        """``ε_θ`` of the T2V UNet for latents ``(B, C, F, h, w)`` and one embedding per batch row ``(B, L, D)``."""
        unet = self.models.unet
        if type(unet).__name__ != "UNet3DConditionModel":  # UNetMotionModel takes one embedding per frame
            emb = emb.repeat_interleave(z.shape[2], dim=0)
        return self.models.eps(z, t, emb).float()

    def _t2v_predictions(self, z_t: Tensor, z_ref_t: Tensor, t: int, emb: Tensor, w: float) -> tuple[Tensor, Tensor]:
        """One forward on ``[Ẑ_t ∅, Ẑ_t y, Z_t ∅, Z_t y*]`` (the fusion layout); returns (ε, ε̂) with CFG."""
        batch = torch.cat([z_ref_t, z_ref_t, z_t, z_t])
        ref_u, ref_c, edit_u, edit_c = self._video_eps(batch, t, emb).chunk(4)
        return classifier_free_guidance(edit_u, edit_c, w), classifier_free_guidance(ref_u, ref_c, w)

    def _image_gradient(self, z_t: Tensor, z_ref_t: Tensor, t: int, emb: Tensor, w: float) -> Tensor:
        """Eq. 14 for every frame as an image: ``ε_Ω^ω(z_t^i, y*) - ε_Ω^ω(ẑ_t^i, y)`` at the SD timestep with
        the same noise level as the video model's t."""
        image = self.image
        assert image is not None
        b, c, f, h, w_ = z_t.shape
        frames = lambda x: x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w_)  # noqa: E731
        batch = torch.cat([frames(z_ref_t), frames(z_ref_t), frames(z_t), frames(z_t)])
        t_img = matching_timestep(t, self.models.schedule, image.schedule)
        out = image.unet(batch.to(self.models.dtype), torch.as_tensor(t_img),
                         encoder_hidden_states=emb.repeat_interleave(b * f, dim=0)).sample.float()
        ref_u, ref_c, edit_u, edit_c = out.chunk(4)
        g = classifier_free_guidance(edit_u, edit_c, w) - classifier_free_guidance(ref_u, ref_c, w)
        return g.reshape(b, f, c, h, w_).permute(0, 2, 1, 3, 4)

    # ------------------------------------------------------------------ stage 2: score distillation
    def edit(self, inversion: Inversion, target_prompt: str, progress: Progress = no_progress) -> EditResult:
        s, models = self.s, self.models
        device = models.device
        source_prompt = inversion.meta.get("source_prompt", self.cfg.prompts.source)
        w_video, w_image = self._guidance_scales()
        t0 = time.perf_counter()
        z_ref = inversion.latents[:1].to(device, torch.float32)  # Ẑ = E(X), fixed
        z = z_ref.clone().requires_grad_(True)  # Z(φ), φ = Z
        optimizer = torch.optim.SGD([z], lr=s.lr)
        scale = s.grad_scale if s.grad_scale is not None else 2000.0 / (z.shape[-2] * z.shape[-1])
        negative = self.cfg.prompts.negative
        emb_video = models.encode_prompt([negative, source_prompt, negative, target_prompt])
        emb_image = (self.image.encode_prompt([negative, source_prompt, negative, target_prompt])
                     if s.sd_guidance and self.image is not None else None)
        gen = torch.Generator(device="cpu").manual_seed(self.cfg.seed)
        fusion = {l.name: WeightedFusionProcessor(l, s.fusion_weight) for l in self.fused}
        timesteps: list[int] = []
        with installed(models.unet, fusion):
            for i in range(s.iterations):
                t = int(torch.randint(s.t_min, s.t_max + 1, (1,), generator=gen))
                noise = torch.randn(z.shape, generator=gen).to(device)  # one ε for both branches
                timesteps.append(t)
                with torch.inference_mode():
                    alpha = models.schedule.alpha(t)
                    z_t, z_ref_t = add_noise(z.detach(), noise, alpha), add_noise(z_ref, noise, alpha)  # Eq. 1
                    eps_edit, eps_ref = self._t2v_predictions(z_t, z_ref_t, t, emb_video, w_video)
                    if s.smoothing:
                        g = assd_gradient(eps_edit, eps_ref, s.gamma, s.tau, s.adaptive_mask,  # Eqs. 8-10
                                          noise.float() if s.smooth == "error" else None)
                    else:
                        g = video_dds_gradient(eps_edit, eps_ref)  # Eq. 7
                    if emb_image is not None:
                        g = g + self._image_gradient(z_t, z_ref_t, t, emb_image, w_image)  # Eq. 15
                optimizer.zero_grad(set_to_none=True)
                surrogate_loss(z, g.clone(), scale).backward()  # clone: an ordinary tensor, constant to autograd
                optimizer.step()
                progress("assd", i + 1, s.iterations)
        latents = z.detach()
        frames = models.decode_latents(latents)
        elapsed = time.perf_counter() - t0
        info = {"iterations": s.iterations, "lr": s.lr, "grad_scale": scale, "t2v_guidance_scale": w_video,
                "sd_guidance_scale": w_image if emb_image is not None else None,
                "fused_layers": [l.name for l in self.fused], "timesteps": timesteps,
                "t2v": type(models.unet).__name__, "sd_guidance": emb_image is not None}
        return EditResult(frames.cpu(), latents.cpu(), target_prompt, {"distillation": elapsed}, info)


# ----------------------------------------------------------------------------------- models and registration

_IMAGE_GUIDANCE: dict[tuple[str, int], ImageGuidance] = {}
"""SD 1.5 image guidance per (base, video bundle): loaded once when methods are built per case (bench)."""


def image_guidance_for(models: ModelBundle, cfg: EditConfig) -> ImageGuidance:
    key = (cfg.model.base, id(models))
    if key not in _IMAGE_GUIDANCE:
        _IMAGE_GUIDANCE.clear()
        _IMAGE_GUIDANCE[key] = load_image_guidance(cfg.model, models)
    return _IMAGE_GUIDANCE[key]


def load_assd_models(cfg: EditConfig) -> ModelBundle:
    """The text-to-video bundle ASSD distils from: AnimateDiff (``model.base`` + ``model.motion_adapter``) or
    a ModelScope/Zeroscope model (``assd.t2v_model``)."""
    s: ASSDSettings = cfg.settings_for("assd")
    if s.t2v == "modelscope":
        return load_modelscope(s.t2v_model or DEFAULT_MODELSCOPE, cfg.model)
    return load_models(cfg.model)


def _make(models: ModelBundle, cfg: EditConfig) -> ASSD:
    return ASSD(models, cfg)


LADDER = {  # paper Fig. 5, top to bottom
    "assd-video-dds": ({"assd.smoothing": False, "assd.fusion": False, "assd.sd_guidance": False},
                       "ASSD ladder 1: Video DDS (Eq. 7)"),
    "assd-sliding": ({"assd.smoothing": True, "assd.fusion": False, "assd.sd_guidance": False},
                     "ASSD ladder 2: + sliding smoothing and adaptive mask (Eqs. 8-10)"),
    "assd-fusion": ({"assd.smoothing": True, "assd.fusion": True, "assd.sd_guidance": False},
                    "ASSD ladder 3: + weighted attention fusion (Eqs. 11-13)"),
}
register("assd", _make, {}, "ASSD, full method: + SD 1.5 joint guidance (Eqs. 14-15; ladder 4)", loader=load_assd_models)
for _name, (_over, _doc) in LADDER.items():
    register(_name, _make, _over, _doc, loader=load_assd_models)
