"""Video-P2P (Liu et al., CVPR 2024): video editing with cross-attention control, on an inflated SD 1.5 UNet.

Stage 1, :meth:`VideoP2P.tune` — model initialisation (paper §3.2, "T2S"):
  the image UNet inflated to the T2S model (``models.t2s``: frame attention Eqs. 6-7, new temporal
  attention), then its ``attn1.to_q``, ``attn2.to_q`` and temporal attentions tuned on the clip with the
  ε-MSE of Eq. 1. Cached per clip, prompt, base model and settings.

Stage 2a, :meth:`VideoP2P.invert` — video inversion:
  DDIM inversion with the source prompt at guidance 1 (Eq. 3), then one *shared* unconditional embedding
  per step for all frames (Eqs. 8-9), warm-started from the previous step.

Stage 2b, :meth:`VideoP2P.edit` — decoupled-guidance attention control (§3.3, Algorithm 1):
  one UNet call per step on ``[z_src | ∅_t optimised, z_tgt | ∅ = "", z_src | P, z_tgt | P*]``, the
  prompt-to-prompt edit of the conditional cross-attention maps (Eq. 10) in the window ``int(r·51)``,
  the source's temporal-attention maps injected into the target on ``[0, int(50·s))`` (official code; the
  paper does not describe it), CFG per branch, then the local blend (Algorithm 1 lines 11-12, Eq. 11).

Where paper and official code disagree, the code is the default and the paper an option
(``docs/methods/video-p2p.md`` lists every choice): cross window 0.2 (paper 0.4), the temporal
injection, reweighting always applied inside the cross window, fast mode's guidance-1 source branch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file
from torch import Tensor

from ..attention.control import (
    CrossControlProcessor, EditContext, EditSchedule, TemporalInjectionProcessor, cross_attention_edit, step_window,
)
from ..attention.processors import Clock, attention_layers, installed
from ..attention.seq_align import require_words
from ..config import EditConfig, register_official_format, register_settings
from ..diffusion.ddim import cfg_combine, ddim_invert, ddim_step, leading_timesteps, step_size
from ..diffusion.nulltext import expand_null, null_text_step
from ..errors import ConfigError, InputError
from ..models.loading import ModelBundle, resolve_dtype
from ..notices import warn
from .base import EditResult, Inversion, Progress, _file_digest, no_progress, register

OFFICIAL_TRAINABLE = ("attn1.to_q", "attn2.to_q", "attn_temp")
"""Module-name endings tuned in stage 1 (official ``trainable_modules``); ``norm_temp`` stays frozen."""


@dataclass
class VideoP2PSettings:
    """Settings of Video-P2P (config section ``video_p2p``). Defaults are the official code's. The compute
    precision is ``model.dtype``: ``auto`` autocasts to bfloat16 on CUDA (the official stage 2 is float32 only;
    ``--dtype float32`` runs it so)."""

    tune_steps: int = 500
    """Stage-1 tuning steps (paper and four official configs: 500; car-drive and penguin-run: 300). 0: untuned T2S."""
    tune_lr: float = 3e-5
    """AdamW learning rate (official ``learning_rate``); constant, no warm-up."""
    tune_weight_decay: float = 1e-2
    tune_grad_clip: float = 1.0
    """Gradient-norm clip (official ``max_grad_norm``)."""
    tune_seed: int = 33
    """Seed of stage 1 (official ``seed``): VAE samples, noise and timesteps."""
    trainable: list[str] = field(default_factory=lambda: list(OFFICIAL_TRAINABLE))
    """Modules tuned: every module whose name ends with one of these (official ``trainable_modules``)."""
    frame_attention: Literal["first", "sparse_causal"] = "first"
    """``first``: each frame attends to frame 0 (Video-P2P, Eq. 6); ``sparse_causal``: to frames 0 and i-1
    (Tune-A-Video)."""
    null_text: Literal["shared", "per_frame"] = "shared"
    """``shared``: one 1×77×D embedding per step for all frames (paper Eqs. 8-9, official); ``per_frame``:
    F×77×D ("multi-uncond", the paper's Tab. 2 comparison)."""
    fast: bool = False
    """Official ``--fast``: no null-text optimisation; the source branch takes its pure conditional prediction."""
    decoupled_guidance: bool = True
    """Target branch with the initialised ("") unconditional embedding (§3.3); False: both branches use the
    optimised one (the paper's "w/o DG" ablation)."""
    guidance_scale: float = 7.5
    """CFG scale ``s`` in ``ε_u + s (ε_c - ε_u)`` (diffusers' convention, official 7.5); the ``inversion``
    section's ``guidance_scale`` is not read by this method."""
    cross_mode: Literal["refine", "replace"] = "refine"
    """Prompt-to-prompt edit of the cross-attention (official ``is_word_swap``: replace for word swaps)."""
    cross_replace_steps: float = 0.2
    """Cross-attention control on steps ``[0, int(r (T + 1)))`` (official default 0.2; paper 0.4)."""
    temporal_replace_steps: float = 0.5
    """Source temporal-attention maps injected into the target on steps ``[0, int(T s))`` (official
    ``self_replace_steps``, 0.5; the paper does not describe it)."""
    local_blend: bool = True
    """Blend with the blend words' attention masks (needs ``prompts.blend_words_source/target`` or
    ``auto_blend_words``; official: only when ``blend_word`` is configured)."""
    auto_blend_words: bool = False
    """Beyond the official code: with no blend words given, blend on the first word where the prompts differ."""

    def validate(self) -> None:
        if not 0 <= self.tune_steps <= 100_000:
            raise ConfigError(f"video_p2p.tune_steps={self.tune_steps}: use 0 (untuned) to 100000 (official 300 or 500)")
        for key, low, high in (("tune_lr", 0.0, 1.0), ("tune_weight_decay", 0.0, 1.0), ("tune_grad_clip", 1e-8, 1e6),
                               ("guidance_scale", 0.0, 50.0), ("cross_replace_steps", 0.0, 1.0),
                               ("temporal_replace_steps", 0.0, 1.0)):
            v = getattr(self, key)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and low <= v <= high):
                raise ConfigError(f"video_p2p.{key}={v!r} is out of range: use a finite number from {low:g} to {high:g}")
        if not 0 <= self.tune_seed <= 2**63 - 1:
            raise ConfigError(f"video_p2p.tune_seed={self.tune_seed}: use an integer from 0 to 2**63-1 (official 33)")
        if not self.trainable:
            raise ConfigError("video_p2p.trainable is empty; name modules to tune (official: attn1.to_q, attn2.to_q, "
                              "attn_temp) or set video_p2p.tune_steps: 0")

    def tuning_settings(self) -> dict[str, Any]:
        keys = ("tune_steps", "tune_lr", "tune_weight_decay", "tune_grad_clip", "tune_seed", "trainable",
                "frame_attention")
        return {k: getattr(self, k) for k in keys}

    def inversion_settings(self) -> dict[str, Any]:
        """What stage 1 and the inversion read (part of the inversion cache key)."""
        return {**self.tuning_settings(), "null_text": self.null_text, "fast": self.fast,
                "guidance_scale": self.guidance_scale}


register_settings("video_p2p", VideoP2PSettings)


def trainable_parameters(unet: torch.nn.Module, endings: list[str] | tuple[str, ...]) -> dict[str, torch.nn.Parameter]:
    """Parameters of every module whose qualified name ends with one of ``endings`` (official selection)."""
    out: dict[str, torch.nn.Parameter] = {}
    for name, module in unet.named_modules():
        if any(name.endswith(e) for e in endings):
            for pname, p in module.named_parameters():
                out[f"{name}.{pname}"] = p
    return out


def first_differing_words(source: str, target: str) -> tuple[str, str] | None:
    """The first word pair (by position) where two prompts differ, or None (``auto_blend_words``)."""
    for a, b in zip(source.split(), target.split()):
        if a != b:
            return a, b
    return None


# --------------------------------------------------------------------------- tuned-weights cache


class TunedWeights:
    """Stage-1 weights of one clip (the trainable set only), cached as ``t2s.safetensors`` + ``t2s.json``
    (size and sha256 of the tensors), verified on read like :class:`Inversion`."""

    TENSORS, META = "t2s.safetensors", "t2s.json"

    @staticmethod
    def save(folder: Path, state: dict[str, Tensor], meta: dict[str, Any]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{TunedWeights.TENSORS}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
            size, digest = _file_digest(tmp)
            os.replace(tmp, folder / TunedWeights.TENSORS)
        finally:
            tmp.unlink(missing_ok=True)
        tmp = folder / f".{TunedWeights.META}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            tmp.write_text(json.dumps({**meta, "size": size, "sha256": digest}, indent=2, default=str) + "\n")
            os.replace(tmp, folder / TunedWeights.META)
        finally:
            tmp.unlink(missing_ok=True)

    @staticmethod
    def load(folder: Path, expected_keys: set[str]) -> dict[str, Tensor] | None:
        """The cached weights, or None (with a notice) when the entry is missing, damaged or for other modules."""
        try:
            meta = json.loads((folder / TunedWeights.META).read_text())
            data = (folder / TunedWeights.TENSORS).read_bytes()
        except (OSError, ValueError):
            return None
        if len(data) != meta.get("size") or hashlib.sha256(data).hexdigest() != meta.get("sha256"):
            warn(f"the tuned-weights cache entry {folder} is damaged; tuning again")
            return None
        state = load_safetensors_bytes(data)
        if set(state) != expected_keys or not all(torch.isfinite(v).all() for v in state.values()):
            warn(f"the tuned-weights cache entry {folder} does not fit this model; tuning again")
            return None
        return state


_TUNED: OrderedDict[str, dict[str, Tensor]] = OrderedDict()
"""In-memory tuned weights by cache key (the last two clips): a second edit of a clip, or the bench's
ablations sharing one inversion, do not tune again even without the disk cache."""


# --------------------------------------------------------------------------- the method


class VideoP2P:
    """Video-P2P on a T2S :class:`ModelBundle` (``models.t2s.load_t2s_models``); settings from
    :class:`EditConfig` (its ``video_p2p`` section, ``inversion`` for the null-text schedule, ``prompts``
    for words)."""

    name = "video-p2p"

    def __init__(self, models: ModelBundle, cfg: EditConfig) -> None:
        from ..models.t2s import T2SUNet

        if not isinstance(models.unet, T2SUNet):
            raise InputError("Video-P2P runs on the inflated image UNet (models.t2s.load_t2s_models), not on "
                             "AnimateDiff's UNet; load its models through api.Editor(cfg, method='video-p2p')")
        self.models, self.cfg = models, cfg
        self.s: VideoP2PSettings = cfg.settings_for("video_p2p")
        models.unet.set_frame_attention(self.s.frame_attention)
        self.params = trainable_parameters(models.unet, self.s.trainable)
        if not self.params:
            raise ConfigError(f"video_p2p.trainable {self.s.trainable} names no module of this UNet; use the official "
                              f"{list(OFFICIAL_TRAINABLE)}")
        self.base_state = {k: p.detach().clone() for k, p in self.params.items()}
        self.compute_dtype = resolve_dtype(cfg.model.dtype, models.device)
        self.tuning_cache: Path | None = None
        """Folder of cached tuned weights (set by ``api.Editor`` from its cache folder; None: memory only)."""

    # ------------------------------------------------------------------ helpers

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bfloat16/float16 runs autocast the float32 T2S weights (official: fp32 weights, fp16 autocast)."""
        if self.compute_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.models.device.type, dtype=self.compute_dtype)

    def eps(self, z: Tensor, t: int, emb: Tensor) -> Tensor:
        with self._autocast():
            return self.models.eps(z, t, emb).float()

    def tuning_key(self, frames: Tensor, source_prompt: str) -> str:
        """Cache key of stage 1: the clip, the prompt, the base model, the compute precision (the T2S weights
        are float32 whatever autocasts them) and the tuning settings."""
        from ..io.outputs import to_uint8

        h = hashlib.sha256(to_uint8(frames).tobytes())
        h.update(json.dumps({"prompt": source_prompt, "shape": list(frames.shape), "models": self.models.fingerprint(),
                             "compute_dtype": str(self.compute_dtype), **self.s.tuning_settings()}, sort_keys=True).encode())
        return h.hexdigest()[:24]

    @contextlib.contextmanager
    def weights(self, state: dict[str, Tensor] | None):
        """The T2S model with ``state`` (tuned weights) in place of the trainable set; the base weights
        are restored on exit, so models shared between edits stay untuned."""
        try:
            if state is not None:
                with torch.no_grad():
                    for k, p in self.params.items():
                        p.copy_(state[k].to(p))
            yield
        finally:
            with torch.no_grad():
                for k, p in self.params.items():
                    p.copy_(self.base_state[k])

    def tuned_state(self, frames: Tensor, source_prompt: str, progress: Progress = no_progress) -> tuple[dict[str, Tensor] | None, dict[str, Any]]:
        """Stage-1 weights from memory, the disk cache or :meth:`tune` (None when ``tune_steps`` is 0)."""
        if self.s.tune_steps == 0:
            return None, {"key": None, "steps": 0}
        key = self.tuning_key(frames, source_prompt)
        info: dict[str, Any] = {"key": key, "steps": self.s.tune_steps}
        if key in _TUNED:
            _TUNED.move_to_end(key)
            return _TUNED[key], {**info, "source": "memory"}
        folder = self.tuning_cache / key if self.tuning_cache is not None else None
        state = TunedWeights.load(folder, set(self.params)) if folder is not None and folder.is_dir() else None
        if state is not None:
            info["source"] = str(folder)
        else:
            t0 = time.perf_counter()
            state, losses = self.tune(frames, source_prompt, progress)
            info.update(source="tuned", tune_s=time.perf_counter() - t0, loss_first=losses[0], loss_last=losses[-1],
                        loss_mean_first_tenth=sum(losses[: max(1, len(losses) // 10)]) / max(1, len(losses) // 10),
                        loss_mean_last_tenth=sum(losses[-max(1, len(losses) // 10):]) / max(1, len(losses) // 10))
            if folder is not None:
                TunedWeights.save(folder, state, {"source_prompt": source_prompt, **self.s.tuning_settings(),
                                                  "models": self.models.fingerprint()})
        _TUNED[key] = state
        while len(_TUNED) > 2:
            _TUNED.popitem(last=False)
        return state, info

    # ------------------------------------------------------------------ stage 1

    def tune(self, frames: Tensor, source_prompt: str, progress: Progress = no_progress) -> tuple[dict[str, Tensor], list[float]]:
        """Stage 1: tune the official trainable set on the clip with the ε-MSE of Eq. 1.

        AdamW (lr 3e-5, weight decay 1e-2, eps 1e-8), gradient-norm clip 1.0, one ``t ~ U{0..999}`` per
        step, ``z_0`` a fresh VAE posterior *sample* each step (official), seed 33. Gradient checkpointing on
        GPU (or with ``model.gradient_checkpointing``). Returns the tuned weights (on the CPU) and the losses.
        """
        m, s = self.models, self.s
        unet = m.unet
        gen = torch.Generator().manual_seed(s.tune_seed)
        with torch.no_grad():
            posterior = m.vae.encode(frames.to(m.device, torch.float32)).latent_dist
            cond = m.encode_prompt([source_prompt])
        acp = m.schedule.alphas_cumprod
        opt = torch.optim.AdamW(list(self.params.values()), lr=s.tune_lr, betas=(0.9, 0.999),
                                weight_decay=s.tune_weight_decay, eps=1e-8)
        checkpointing = m.device.type == "cuda" or self.cfg.model.gradient_checkpointing
        losses: list[float] = []
        for p in self.params.values():
            p.requires_grad_(True)
        if checkpointing:
            unet.enable_gradient_checkpointing()
        try:
            with self.weights(None):  # starts from the base weights; restored below after the copy
                for step in range(s.tune_steps):
                    noise_latent = torch.randn(posterior.mean.shape, generator=gen).to(m.device)
                    z0 = (posterior.mean + posterior.std * noise_latent) * m.scaling_factor  # latent_dist.sample()
                    z0 = z0.permute(1, 0, 2, 3).unsqueeze(0)  # (1, C, F, h, w)
                    noise = torch.randn(z0.shape, generator=gen).to(m.device)
                    t = int(torch.randint(0, m.schedule.num_train_timesteps, (1,), generator=gen))
                    a = float(acp[t])
                    z_t = a**0.5 * z0 + (1 - a) ** 0.5 * noise  # DDPM q(z_t | z_0)
                    with self._autocast():
                        pred = unet(z_t, torch.as_tensor(t, device=m.device), encoder_hidden_states=cond).sample
                    loss = F.mse_loss(pred.float(), noise)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(list(self.params.values()), s.tune_grad_clip)
                    opt.step()
                    losses.append(loss.item())
                    progress("tuning", step + 1, s.tune_steps)
                state = {k: p.detach().cpu().clone() for k, p in self.params.items()}
        finally:
            for p in self.params.values():
                p.requires_grad_(False)
                p.grad = None
            if checkpointing and not self.cfg.model.gradient_checkpointing:
                unet.disable_gradient_checkpointing()
        return state, losses

    # ------------------------------------------------------------------ stage 2a

    def invert(self, frames: Tensor, masks: Tensor, source_prompt: str, progress: Progress = no_progress) -> Inversion:
        """Stage 1 (tuning, cached) and stage 2a: DDIM inversion at guidance 1, then the shared null-text
        optimisation (Eqs. 8-9; skipped with ``fast``). ``masks`` are only carried for outputs."""
        cfg, m, s = self.cfg, self.models, self.s
        inv = cfg.inversion
        if masks.shape[0] != frames.shape[0] or masks.shape[-2:] != frames.shape[-2:]:
            raise InputError(f"masks {tuple(masks.shape)} do not match frames {tuple(frames.shape)}; "
                             "give one mask per frame at the frame size (or none)")
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        state, tuning = self.tuned_state(frames, source_prompt, progress)
        timings["tune_s"] = time.perf_counter() - t0
        T = inv.num_steps
        timesteps = leading_timesteps(T, m.schedule.num_train_timesteps)  # official: 981, 961, ..., 1
        delta = step_size(m.schedule, T)
        with self.weights(state), torch.no_grad():
            t0 = time.perf_counter()
            z0 = m.encode_video(frames, sample=False)  # official: latent_dist.mean
            cond, empty = m.encode_prompt([source_prompt, ""]).chunk(2)
            F_ = z0.shape[2]
            cond_f = cond.expand(F_, -1, -1)

            def on_step(info) -> None:  # noqa: ANN001
                progress("inversion", info.index + 1, info.total)

            latents = ddim_invert(lambda z, t: self.eps(z, t, cond_f), z0.float(), m.schedule, timesteps, on_step)
            timings["invert_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        nulls, iters = None, []
        with self.weights(state):
            if s.fast:  # the edit's source branch: DDIM at guidance 1 from z*_T, what fast mode reconstructs
                with torch.no_grad():
                    z = latents[T][None]
                    for i, t in enumerate(timesteps):
                        z = ddim_step(self.eps(z, t, cond_f), z, m.schedule.alpha(t), m.schedule.alpha(t - delta))
                        progress("reconstruction", i + 1, T)
            else:
                nulls, z, iters = self._null_text(latents, timesteps, delta, cond_f, empty, progress)
        timings["null_text_s"] = time.perf_counter() - t0
        meta = {"method": "video-p2p", "source_prompt": source_prompt, "timesteps": timesteps, "tuning": tuning,
                "settings": {"video_p2p": asdict(s), "inversion": asdict(inv)}, "timings": timings,
                "mean_inner_iterations": (sum(iters) / len(iters)) if iters else 0.0, "inner_iterations": iters}
        return Inversion(latents.cpu(), masks.bool().cpu(), frames.float().cpu(), nulls, None, z.float().cpu(), meta)

    def _null_text(self, latents: Tensor, timesteps: list[int], delta: int, cond_f: Tensor, empty: Tensor,
                   progress: Progress) -> tuple[Tensor, Tensor, list[int]]:
        """Shared (or per-frame) null-text optimisation (paper Eqs. 8-9; official ``null_optimization``):
        ∅ starts from "" and is warm-started step to step; Adam with lr ``1e-2 (1 - i/100)``; at most 10
        iterations of ``‖z*_{t-1} - DDIM(ε_u + s (ε_c - ε_u))‖²``, stopping below ``1e-5 + 2e-5 i``."""
        cfg, m = self.cfg, self.models
        inv = cfg.inversion
        T = len(timesteps)
        F_ = latents.shape[2]
        phi = empty.float() if self.s.null_text == "shared" else empty.float().expand(F_, -1, -1).clone()
        nulls, iters = [], []
        z = latents[T][None]
        for i, t in enumerate(timesteps):
            a_t, a_p = m.schedule.alpha(t), m.schedule.alpha(t - delta)
            with torch.no_grad():
                eps_c = self.eps(z, t, cond_f)
            step = null_text_step(
                lambda zz, e, t=t: self.eps(zz, t, e), eps_c, z, latents[T - i - 1][None], phi, a_t, a_p, None, 1.0,
                self.s.guidance_scale - 1.0,  # cfg_combine's w: ε_c + w(ε_c - ε_u) = ε_u + s(ε_c - ε_u)
                inv.null_lr * (1 - inv.null_lr_decay * i / T), inv.null_inner_steps,
                inv.early_stop_epsilon + inv.early_stop_slope * i,
            )
            phi, z = step.phi, step.z_next
            nulls.append(phi)
            iters.append(step.iterations)
            progress("null-text", i + 1, T)
        return torch.stack(nulls).cpu(), z, iters

    # ------------------------------------------------------------------ stage 2b

    def blend_words(self, source: str, target: str) -> tuple[list[str], list[str]]:
        p = self.cfg.prompts
        if p.blend_words_source or p.blend_words_target:
            return list(p.blend_words_source), list(p.blend_words_target)
        if self.s.auto_blend_words and (pair := first_differing_words(source, target)):
            return [pair[0]], [pair[1]]
        return [], []

    def edit(self, inversion: Inversion, target_prompt: str, progress: Progress = no_progress) -> EditResult:
        """Stage 2b: decoupled-guidance attention control (Algorithm 1), one batched UNet call per step."""
        cfg, m, s = self.cfg, self.models, self.s
        p, tok = cfg.prompts, m.tokenizer
        source_prompt = inversion.meta["source_prompt"]
        require_words(target_prompt, p.equalizer_words, tok, "equalizer")
        words_src, words_tgt = self.blend_words(source_prompt, target_prompt) if s.local_blend else ([], [])
        require_words(source_prompt, words_src, tok, "local-blend source")
        require_words(target_prompt, words_tgt, tok, "local-blend target")
        frames = inversion.source_frames
        state, _ = self.tuned_state(frames, source_prompt, progress)
        t_start = time.perf_counter()
        latents = inversion.latents.to(m.device)
        T = inversion.num_steps
        F_ = latents.shape[2]
        latent_hw = tuple(latents.shape[-2:])
        timesteps = leading_timesteps(T, m.schedule.num_train_timesteps)
        delta = step_size(m.schedule, T)
        src, tgt, empty = m.encode_prompt([source_prompt, target_prompt, ""]).chunk(3)
        nulls = inversion.null_embeddings
        fast = nulls is None  # fast mode: no optimised null-text, row 0 takes "" (official --fast)
        clock = Clock(0, T)
        schedule = EditSchedule(range(0), range(0), range(0), 0, step_window(s.cross_replace_steps, T + 1), range(0, 10**6))
        ctx = EditContext(clock, schedule, F_, {})
        ctx.branches = ("recon_uncond", "edit_uncond", "recon_cond", "edit_cond")  # the official four rows
        cross = cross_attention_edit(source_prompt, target_prompt, tok, s.cross_mode, p.equalizer_words,
                                     p.equalizer_values, (words_src, words_tgt), latent_hw, p.blend_threshold,
                                     int(p.blend_start * T))
        blend = cross.blend
        temporal_steps = step_window(s.temporal_replace_steps, T)
        processors: dict[str, object] = {}
        for layer in attention_layers(m.unet):
            if layer.kind == "cross":
                processors[layer.name] = CrossControlProcessor(layer, ctx, cross.mode, cross.mapper, cross.alphas,
                                                               cross.equalizer, blend)
            elif layer.kind == "temporal":
                processors[layer.name] = TemporalInjectionProcessor(layer, ctx, temporal_steps)
        per_frame = lambda e: e.expand(F_, -1, -1)  # noqa: E731
        z_src = z_tgt = latents[T][None]
        with self.weights(state), installed(m.unet, processors), torch.no_grad():
            for i, t in enumerate(timesteps):
                clock.step = i
                null_src = expand_null(nulls[i].to(m.device), F_) if nulls is not None else per_frame(empty)
                null_tgt = per_frame(empty) if s.decoupled_guidance else null_src
                eps = self.eps(torch.cat([z_src, z_tgt, z_src, z_tgt]), t,
                               torch.cat([null_src, null_tgt, per_frame(src), per_frame(tgt)]))
                eu_src, eu_tgt, ec_src, ec_tgt = eps.chunk(4)
                w = s.guidance_scale - 1.0  # cfg_combine's w, diffusers' s = w + 1
                eps_src = ec_src if fast else cfg_combine(ec_src, eu_src, w)  # fast: guidance 1, as the inversion
                eps_tgt = cfg_combine(ec_tgt, eu_tgt, w)
                a_t, a_p = m.schedule.alpha(t), m.schedule.alpha(t - delta)
                z_src, z_tgt = ddim_step(eps_src, z_src, a_t, a_p), ddim_step(eps_tgt, z_tgt, a_t, a_p)
                if blend is not None:  # Algorithm 1 lines 11-12, from step int(0.2 T) on
                    z_tgt = blend.apply(i, z_tgt, z_src)
                progress("edit", i + 1, T)
        t_edit = time.perf_counter() - t_start
        t0 = time.perf_counter()
        out = m.decode_latents(z_tgt)
        timings = {"edit_s": t_edit, "decode_s": time.perf_counter() - t0}
        info = {"timesteps": timesteps, "blend_words": [words_src, words_tgt],
                "cross_steps": [schedule.cross_steps.start, schedule.cross_steps.stop],
                "temporal_steps": [temporal_steps.start, temporal_steps.stop], "source_branch": z_src.cpu()}
        return EditResult(out.cpu(), z_tgt.cpu(), target_prompt, timings, info)

    def reconstruct(self, inversion: Inversion) -> Tensor:
        """Decode what inversion alone gives back (the null-text trajectory's end, or fast mode's source branch)."""
        z = inversion.reconstruction if inversion.reconstruction is not None else inversion.latents[0][None]
        return self.models.decode_latents(z.to(self.models.device))


def _make(models: ModelBundle, cfg: EditConfig) -> VideoP2P:
    return VideoP2P(models, cfg)


def _load(cfg: EditConfig) -> ModelBundle:
    from ..models.t2s import load_t2s_models

    return load_t2s_models(cfg.model, cfg.settings_for("video_p2p").frame_attention)


def _register(name: str, overrides: dict[str, Any], doc: str) -> None:
    register(name, _make, overrides, doc, loader=_load)


_register("video-p2p", {}, "Video-P2P, full method (official-code defaults)")
_register("video-p2p-fast", {"video_p2p.fast": True}, "Video-P2P --fast: no null-text, source branch at guidance 1")
_register("vp2p-untuned", {"video_p2p.tune_steps": 0}, "Video-P2P ablation: untuned T2S (paper: w/o model initialisation)")
_register("vp2p-per-frame-null", {"video_p2p.null_text": "per_frame"},
          "Video-P2P ablation: per-frame null-text instead of shared (paper: multi-uncond)")
_register("vp2p-no-decoupled", {"video_p2p.decoupled_guidance": False},
          "Video-P2P ablation: no decoupled guidance (both branches with the optimised null)")
_register("vp2p-no-local-blend", {"video_p2p.local_blend": False}, "Video-P2P ablation: no local blend (global edit)")


# --------------------------------------------------------------------------- the official YAMLs

VIDEOP2P_TUNE_KEYS = {"pretrained_model_path", "output_dir", "train_data", "validation_data", "learning_rate",
                      "train_batch_size", "max_train_steps", "checkpointing_steps", "validation_steps",
                      "trainable_modules", "seed", "mixed_precision", "use_8bit_adam", "gradient_checkpointing",
                      "enable_xformers_memory_efficient_attention", "gradient_accumulation_steps",
                      "resume_from_checkpoint", "lr_scheduler", "lr_warmup_steps", "adam_beta1", "adam_beta2",
                      "adam_weight_decay", "adam_epsilon", "max_grad_norm", "scale_lr"}
VIDEOP2P_TRAIN_DATA_KEYS = {"video_path", "prompt", "n_sample_frames", "width", "height", "sample_start_idx",
                            "sample_frame_rate"}
VIDEOP2P_P2P_KEYS = {"pretrained_model_path", "image_path", "prompt", "prompts", "blend_word", "eq_params", "save_name",
                     "is_word_swap", "cross_replace_steps", "self_replace_steps", "video_len", "mixed_precision"}
VIDEOP2P_IGNORED = {
    "output_dir": "where the official stage 1 saves its pipeline; here stage 1 is cached beside the inversions",
    "pretrained_model_path (p2p file)": "the official stage-1 output; here stage 1 runs (cached) from the tune "
                                        "file's base model",
    "validation_data, validation_steps": "the official stage-1 validation sampling, which never feeds stage 2",
    "checkpointing_steps, resume_from_checkpoint": "stage-1 checkpoints (never reached in the shipped configs)",
    "train_batch_size, gradient_accumulation_steps": "1 in every official config, the only value supported",
    "mixed_precision": "tuning autocasts float32 weights in model.dtype (auto: bfloat16 on CUDA)",
    "use_8bit_adam, enable_xformers_memory_efficient_attention": "kernel choices: AdamW and PyTorch attention here",
    "lr_scheduler, lr_warmup_steps, adam_beta1, adam_beta2, adam_epsilon, scale_lr": "Tune-A-Video's defaults "
        "(constant LR, no warm-up, betas 0.9/0.999, eps 1e-8) are what stage 1 runs; other values are refused",
    "save_name": "the official GIF name; outputs go to --out",
    "train_data.sample_start_idx, train_data.sample_frame_rate": "0 and 1 in every config: the first frames in order",
}
"""Keys of the official Video-P2P YAMLs accepted without effect, and why (``docs/methods/video-p2p.md``)."""
_TAV_DEFAULTS = {"lr_scheduler": "constant", "lr_warmup_steps": 0, "adam_beta1": 0.9, "adam_beta2": 0.999,
                 "adam_epsilon": 1e-8, "scale_lr": False, "train_batch_size": 1, "gradient_accumulation_steps": 1}


def is_official_videop2p(data: dict[str, Any]) -> bool:
    """A stage-1 ``<name>-tune.yaml`` (``train_data`` + ``trainable_modules``) or stage-2 ``<name>-p2p.yaml``."""
    return ("train_data" in data and "trainable_modules" in data) or ("image_path" in data and "prompts" in data)


def _number(data: dict[str, Any], key: str, default: float) -> float:
    """A number of an official YAML (PyYAML reads ``3e-5``, without a dot, as a string; OmegaConf as a float)."""
    v = data.get(key, default)
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"official Video-P2P config key '{key}' must be a number, got {v!r}") from None


def _partner(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """The other file of an official pair in ``folder``: the p2p file whose ``prompt`` is the tune file's
    ``train_data.prompt`` (or the reverse), preferring the one that reads the same clip folder."""
    import yaml

    is_tune = "train_data" in data
    prompt = (data.get("train_data") or {}).get("prompt") if is_tune else data.get("prompt")
    clip = Path(str((data.get("train_data") or {}).get("video_path") if is_tune else data.get("image_path"))).name
    found: list[tuple[int, dict[str, Any]]] = []
    for f in sorted(folder.glob("*-p2p.yaml" if is_tune else "*-tune.yaml")):
        try:
            other = yaml.safe_load(f.read_text()) or {}
        except (OSError, yaml.YAMLError):
            continue
        if not isinstance(other, dict):
            continue
        o_prompt = other.get("prompt") if is_tune else (other.get("train_data") or {}).get("prompt")
        o_clip = Path(str(other.get("image_path") if is_tune else (other.get("train_data") or {}).get("video_path"))).name
        if o_prompt == prompt:
            found.append((int(o_clip != clip), other))
    return min(found, key=lambda x: x[0])[1] if found else {}


def from_official_videop2p(data: dict[str, Any], folder: Path | None) -> EditConfig:
    """Map an official Video-P2P YAML (either file of a pair; the other is found beside it) onto
    :class:`EditConfig` with ``method: video-p2p``.

    Paths resolve as the official scripts run them, from the repository root: the working directory first,
    then the folder above ``configs/``. The tune file gives the clip, the source prompt, the base model and
    stage 1; the p2p file the target prompt, blend words, reweighting, replace/refine and the windows. Keys
    without effect are listed in :data:`VIDEOP2P_IGNORED`; unknown keys are an error."""
    folder = folder or Path(".")
    other = _partner(data, folder)
    tune, p2p = (data, other) if "train_data" in data else (other, data)
    train = tune.get("train_data", {}) or {}
    for d, known, what in ((tune, VIDEOP2P_TUNE_KEYS, "-tune"), (p2p, VIDEOP2P_P2P_KEYS, "-p2p"),
                           (train, VIDEOP2P_TRAIN_DATA_KEYS, "-tune train_data")):
        unknown = [k for k in d if k not in known]
        if unknown:
            raise ConfigError(f"unknown key '{unknown[0]}' in official Video-P2P{what} config; known keys: "
                              f"{', '.join(sorted(known))}")
    for k, v in _TAV_DEFAULTS.items():
        if k in tune and tune[k] != v and not (isinstance(v, float) and math.isclose(_number(tune, k, v), v)):
            raise ConfigError(f"official Video-P2P config key '{k}: {tune[k]}' is not supported (every shipped config "
                              f"uses {v}); remove it")
    root = folder.parent if folder.name == "configs" else folder

    def resolve(p: str | None) -> str | None:
        if p in (None, ""):
            return None
        q = Path(str(p)).expanduser()
        if q.is_absolute() or q.exists():
            return str(q)
        return str(root / q) if (root / q).exists() else str(q)

    prompts = [str(x) for x in (p2p.get("prompts") or [])]
    blend = [str(x) for x in (p2p.get("blend_word") or [])]
    eq = p2p.get("eq_params", {}) or {}
    settings: dict[str, Any] = {
        "cross_mode": "replace" if p2p.get("is_word_swap") else "refine",
        "cross_replace_steps": _number(p2p, "cross_replace_steps", 0.2),
        "temporal_replace_steps": _number(p2p, "self_replace_steps", 0.5),
    }
    if tune:
        settings.update(tune_steps=int(_number(tune, "max_train_steps", 500)), tune_lr=_number(tune, "learning_rate", 3e-5),
                        tune_weight_decay=_number(tune, "adam_weight_decay", 1e-2),
                        tune_grad_clip=_number(tune, "max_grad_norm", 1.0), tune_seed=int(_number(tune, "seed", 33)),
                        trainable=[str(m) for m in tune.get("trainable_modules", OFFICIAL_TRAINABLE)])
    out: dict[str, Any] = {
        "method": "video-p2p",
        "seed": int(_number(tune, "seed", 33)),
        "model": {"base": resolve(tune.get("pretrained_model_path")) or "stable-diffusion-v1-5/stable-diffusion-v1-5",
                  "gradient_checkpointing": bool(tune.get("gradient_checkpointing", False))},
        "input": {"video": resolve(train.get("video_path") or p2p.get("image_path")),
                  "num_frames": int(train.get("n_sample_frames", p2p.get("video_len", 8))),
                  "height": int(train.get("height", 512)), "width": int(train.get("width", 512))},
        "prompts": {
            "source": str(train.get("prompt") or p2p.get("prompt") or (prompts[0] if prompts else "")),
            "target": prompts[1] if len(prompts) > 1 else "",
            "blend_words_source": blend[:1], "blend_words_target": blend[1:2],
            "equalizer_words": [str(w) for w in eq.get("words", []) or []],
            "equalizer_values": [float(v) for v in eq.get("values", []) or []],
        },
        "video_p2p": settings,
    }
    from ..config import from_dict

    return from_dict(EditConfig, out)


register_official_format("video-p2p", is_official_videop2p, from_official_videop2p)
