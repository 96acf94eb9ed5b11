"""VideoDirector (Wang et al., CVPR 2025): Algorithm I of the supplementary, on AnimateDiff.

Stage 1, :meth:`VideoDirector.invert` — video pivotal inversion:
  1. ``z* = E(V)``                                            (line 1)
  2. DDIM inversion ``z*_0 -> z*_T`` with the source prompt   (lines 2-4)
  3. for t = T..1: STDG ``G_t`` (Eqs. 2-4), then multi-frame null-text optimisation with
     ``ε̄ = ε̂ - sqrt(1 - ᾱ_t) G_t`` in the DDIM direction term      (lines 5-17)

Stage 2, :meth:`VideoDirector.edit` — attention-controlled editing, one UNet call per step on
``[edit-uncond, edit-cond, recon-uncond, recon-cond]``: SA-I/SA-II (Eq. 6), prompt-to-prompt
(Eq. 7), CFG (Eq. 10) and the cached ``G_t`` (lines 18-33).

Where the official code differs from the paper, the code's behaviour is the default (official code):
stage 2 walks diffusers' leading timesteps with stage-1 quantities indexed by step
(``control.edit_timesteps``), the appearance loss pools mean keys (``stdg.appearance_loss``).
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.profiler import record_function

from ..attention.control import (
    CrossControlProcessor, EditContext, EditSchedule, FeatureRecorder, RecordingProcessor, SelfControlProcessor,
    cross_attention_edit, unet_level_hw,
)
from ..attention.processors import Branches, Clock, attention_layers, installed, select_layers
from ..attention.seq_align import require_words
from ..config import EditConfig
from ..diffusion.ddim import (
    cfg_combine, ddim_invert, ddim_step, leading_timesteps, linspace_timesteps, step_size,
)
from ..diffusion.nulltext import expand_null, null_text_step
from ..diffusion.nulltext_graph import NullTextGraph
from ..diffusion.static_graph import capture_together
from ..errors import InputError
from ..notices import warn
from ..guidance.stdg import STDGGraph, STDGSetup, clamp_guidance, resize_mask, stdg_guidance
from ..io.masks import latent_keep_region
from ..models.loading import ModelBundle
from .base import EditResult, Inversion, Progress, no_progress, register


def masks_by_tokens(masks: Tensor, latent_hw: tuple[int, int], levels: int = 4) -> dict[int, Tensor]:
    """Object masks at every UNet resolution, keyed by token count: ``{h·w: (F, h·w) bool}``."""
    sizes = [unet_level_hw(latent_hw, level) for level in range(levels)]
    return {h * w: resize_mask(masks, (h, w)) for h, w in sizes}


class VideoDirector:
    """VideoDirector on a :class:`ModelBundle`; settings from :class:`EditConfig`."""

    name = "videodirector"

    def __init__(self, models: ModelBundle, cfg: EditConfig) -> None:
        self.models, self.cfg = models, cfg

    # ------------------------------------------------------------------ helpers

    def _stdg_setup(self) -> STDGSetup:
        """STDG's layers and weights. The appearance term reads spatial self-attention keys (official
        ``app_guidance.block_type: spatial``) or, with ``stdg.appearance_layers: temporal``, the keys of the
        motion modules' temporal attentions in the same blocks (official ``temp``: 6 per SD 1.5 up block)."""
        s = self.cfg.stdg
        unet = self.models.unet
        temporal = select_layers(unet, "temporal", list(s.temporal_block_weights))
        appearance = select_layers(unet, "temporal" if s.appearance_layers == "temporal" else "self",
                                   list(s.appearance_block_weights))
        return STDGSetup(
            temporal=temporal,
            appearance=appearance,
            temporal_weights={l.name: s.temporal_block_weights[l.block] for l in temporal},
            appearance_weights={l.name: s.appearance_block_weights[l.block] for l in appearance},
            coefficients=tuple(s.coefficients),  # type: ignore[arg-type]
            top_k=s.top_k,
            appearance_mode=s.appearance_loss,
        )

    def _per_frame(self, emb: Tensor, num_frames: int) -> Tensor:
        return emb.expand(num_frames, -1, -1)

    # ------------------------------------------------------------------ stage 1

    def invert(self, frames: Tensor, masks: Tensor, source_prompt: str, progress: Progress = no_progress,
               generator: torch.Generator | None = None) -> Inversion:
        """Stage 1: video pivotal inversion (Algorithm I lines 1-17).

        Args:
            frames: ``(F, 3, H, W)`` in [-1, 1].
            masks: ``(F, 1, H, W)`` bool object masks (already ellipse-augmented if wanted).
        """
        cfg, m = self.cfg, self.models
        inv = cfg.inversion
        if masks.shape[0] != frames.shape[0] or masks.shape[-2:] != frames.shape[-2:]:
            raise InputError(f"masks {tuple(masks.shape)} do not match frames {tuple(frames.shape)}; "
                             "give one mask per frame at the frame size")
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        if generator is None:
            generator = torch.Generator(device=m.device).manual_seed(cfg.seed)
        z0 = m.encode_video(frames, generator=generator)  # line 1
        timings["encode_s"] = time.perf_counter() - t0
        num_frames = z0.shape[2]
        T = inv.num_steps
        timesteps = linspace_timesteps(T, m.schedule.num_train_timesteps)
        delta = step_size(m.schedule, T)
        cond, neg = m.encode_prompt([source_prompt, cfg.prompts.negative]).chunk(2)
        cond_f = self._per_frame(cond, num_frames)

        def eps_src(z: Tensor, t: int) -> Tensor:
            return m.eps(z, t, cond_f)

        # lines 2-4: DDIM inversion with the source prompt, no CFG
        t0 = time.perf_counter()
        with torch.no_grad():
            latents = ddim_invert(eps_src, z0, m.schedule, timesteps,
                                  callback=lambda s: progress("invert", s.index + 1, s.total))
        timings["ddim_inversion_s"] = time.perf_counter() - t0

        null_embeddings = guidance = None
        inner_iters: list[int] = []
        reconstruction = None
        t0 = time.perf_counter()
        if inv.fast == "none":
            null_embeddings, guidance, reconstruction, inner_iters = self._pivotal_tuning(
                latents, masks, timesteps, delta, cond, neg, progress)
        elif inv.fast == "negative_prompt":
            # NPI: the null-text is the source embedding; CFG collapses to ε_c (no optimisation).
            with torch.no_grad():
                z = latents[T][None]
                for i, t in enumerate(timesteps):
                    z = ddim_step(eps_src(z, t), z, m.schedule.alpha(t), m.schedule.alpha(t - delta))
                    progress("reconstruct", i + 1, T)
            reconstruction = z
        else:  # direct: stage 2 adds the per-step offset of the reconstruction path; exact by construction
            reconstruction = latents[0][None].clone()
        timings["pivotal_tuning_s"] = time.perf_counter() - t0
        meta = {
            "method": self.name,
            "source_prompt": source_prompt,
            "negative_prompt": cfg.prompts.negative,
            "timesteps": timesteps,
            "null_inner_iterations": inner_iters,
            "mean_inner_iterations": (sum(inner_iters) / len(inner_iters)) if inner_iters else 0.0,
            "settings": {"inversion": vars(inv), "stdg": vars(cfg.stdg), "seed": cfg.seed},
            "models": m.sources,
            "timings": timings,
        }
        return Inversion(latents, masks.cpu(), frames.cpu(), null_embeddings, guidance, reconstruction, meta)

    def _pivotal_tuning(self, latents: Tensor, masks: Tensor, timesteps: list[int], delta: int, cond: Tensor,
                        neg: Tensor, progress: Progress) -> tuple[Tensor | None, Tensor | None, Tensor, list[int]]:
        """Algorithm I lines 5-17: per step, STDG ``G_t`` then null-text optimisation (Eq. 13)."""
        cfg, m = self.cfg, self.models
        inv, s = cfg.inversion, cfg.stdg
        num_frames = latents.shape[2]
        cond_f = self._per_frame(cond, num_frames)
        latent_hw = tuple(latents.shape[-2:])
        tok_masks = {k: v.to(m.device) for k, v in masks_by_tokens(masks.to(m.device), latent_hw).items()}
        use_stdg = s.enabled and any(s.coefficients)
        setup = self._stdg_setup() if use_stdg else None
        recorder = FeatureRecorder(setup.temporal, setup.appearance) if setup else None
        processors = {l.name: RecordingProcessor(l, recorder) for l in [*setup.temporal, *setup.appearance]} if setup else {}
        if inv.null_text == "multi_frame":
            phi = neg.expand(num_frames, -1, -1).clone()
        else:
            phi = neg.clone()
        if inv.reference_cost:  # official: parameters never frozen, so every backward builds weight gradients
            m.unet.requires_grad_(True)
        graphs: tuple[NullTextGraph | None, STDGGraph | None] = (None, None)
        try:
            with installed(m.unet, processors):
                if inv.cuda_graph and not inv.reference_cost and inv.null_text != "none":
                    graphs = _pivotal_graphs(m, latents[-1][None], phi, cond_f, tok_masks, setup if use_stdg else None,
                                             recorder, s, inv.guidance_scale)
                return self._pivotal_loop(latents, timesteps, delta, cond_f, neg, num_frames, tok_masks, use_stdg,
                                          setup, recorder, phi, progress, *graphs)
        finally:
            m.unet.requires_grad_(False)
            for p_ in m.unet.parameters():
                p_.grad = None
            captured = any(g_ is not None and g_.graph is not None for g_ in graphs)
            for g_ in graphs:
                if g_ is not None:
                    g_.release()
            graphs = (None, None)  # their tensors too, so that the whole pool is free
            if captured:
                torch.cuda.empty_cache()  # the graphs' pool goes back before the edit

    def _pivotal_loop(self, latents, timesteps, delta, cond_f, neg, num_frames, tok_masks, use_stdg, setup,  # noqa: ANN001
                      recorder, phi, progress, graph, stdg_graph):  # noqa: ANN001, ANN202
        """The loop of lines 5-17; ``graph``/``stdg_graph`` (``inversion.cuda_graph``) replace the eager null-text
        iterations and STDG gradients when given."""
        cfg, m = self.cfg, self.models
        inv, s = cfg.inversion, cfg.stdg
        T = len(timesteps)
        nulls, guides, iters = [], [], []
        z = latents[T][None]
        for i, t in enumerate(timesteps):
            z_ref, target = latents[T - i][None], latents[T - i - 1][None]
            a_t, a_p = m.schedule.alpha(t), m.schedule.alpha(t - delta)
            with record_function("pivotal.guidance_and_eps_cond"):
                if use_stdg and inv.reference_cost:
                    g, eps_c = self._reference_stdg(recorder, z, z_ref, t, cond_f, tok_masks, setup)
                elif use_stdg and not torch.equal(z, z_ref) and stdg_graph is not None:
                    g, eps_c = stdg_graph(z, z_ref, t)
                elif use_stdg and not torch.equal(z, z_ref):
                    g, eps_c = stdg_guidance(m.eps, recorder, z, z_ref, t, cond_f, tok_masks, setup, s.threshold)
                else:  # at t = T the current latent is z*_T, so every STDG loss and G are exactly zero
                    with torch.no_grad():
                        eps_c = m.eps(z, t, cond_f)
                    g = torch.zeros_like(z) if use_stdg else None
            if inv.null_text == "none":
                with torch.no_grad():
                    eps_u = m.eps(z, t, self._per_frame(neg, num_frames))
                    z = ddim_step(cfg_combine(eps_c, eps_u, inv.guidance_scale), z, a_t, a_p, g, s.guidance_scale)
            else:
                lr = inv.null_lr * (1 - inv.null_lr_decay * i / T)
                stop_below = inv.early_stop_epsilon + inv.early_stop_slope * i
                if graph is not None:  # inversion.cuda_graph
                    step = graph.step(eps_c, z, target, phi, t, a_t, a_p, g, lr, inv.null_inner_steps, stop_below)
                else:
                    step = null_text_step(
                        lambda zz, e, t=t: m.eps(zz, t, e), eps_c, z, target, phi, a_t, a_p, g, s.guidance_scale,
                        inv.guidance_scale, lr, inv.null_inner_steps, stop_below,
                        _clear_caches if inv.reference_cost else None,
                    )
                phi, z = step.phi, step.z_next
                nulls.append(phi)
                iters.append(step.iterations)
            if g is not None:
                guides.append(g[0])
            progress("null-text" if inv.null_text != "none" else "trajectory", i + 1, T)
        return (torch.stack(nulls) if nulls else None, torch.stack(guides) if guides else None, z, iters)

    def _reference_stdg(self, recorder, z, z_ref, t, cond_f, tok_masks, setup):  # noqa: ANN001, ANN202
        """Official cost structure (official code): four gradients, each with its own reference and grad forward
        (zero-weight terms included), then one more forward for ε_c. Same G as :func:`stdg_guidance`, with
        ``stdg.threshold`` clamping the combined G as there."""
        from dataclasses import replace as dc_replace

        m = self.models
        total = torch.zeros_like(z)
        for k, w in enumerate(setup.coefficients):
            one = [0.0, 0.0, 0.0, 0.0]
            one[k] = 1.0
            g_k, _ = stdg_guidance(m.eps, recorder, z, z_ref, t, cond_f, tok_masks, dc_replace(setup, coefficients=tuple(one)),
                                   full_graph=True)
            total = total + w * g_k
            _clear_caches()
        with torch.no_grad():
            eps_c = m.eps(z, t, cond_f)
        return clamp_guidance(total, self.cfg.stdg.threshold), eps_c

    # ------------------------------------------------------------------ stage 2

    def edit(self, inversion: Inversion, target_prompt: str, progress: Progress = no_progress) -> EditResult:
        """Stage 2: attention-controlled editing (Algorithm I lines 18-33)."""
        cfg, m = self.cfg, self.models
        c, p = cfg.control, cfg.prompts
        source_prompt = inversion.meta["source_prompt"]
        negative = inversion.meta.get("negative_prompt", "")
        tok = m.tokenizer
        require_words(target_prompt, p.equalizer_words, tok, "equalizer")
        require_words(source_prompt, p.blend_words_source, tok, "local-blend source")
        require_words(target_prompt, p.blend_words_target, tok, "local-blend target")
        t_start = time.perf_counter()
        latents = inversion.latents.to(m.device)
        T = inversion.num_steps
        F_ = latents.shape[2]
        latent_hw = tuple(latents.shape[-2:])
        timesteps = (leading_timesteps(T, m.schedule.num_train_timesteps) if c.edit_timesteps == "official"
                     else inversion.meta["timesteps"])
        delta = step_size(m.schedule, T)
        tgt, src, neg = m.encode_prompt([target_prompt, source_prompt, negative]).chunk(3)
        nulls = inversion.null_embeddings
        fast = inversion.meta.get("settings", {}).get("inversion", {}).get("fast", "none")
        guidance = inversion.guidance.to(m.device) if inversion.guidance is not None else None

        clock = Clock(0, T)
        sa1_tokens = c.sa1_max_tokens or math.prod(unet_level_hw(latent_hw, 1))  # official: query_len <= 32²
        schedule = EditSchedule.build(T, c.self_replace_steps, c.cross_replace_steps, c.mutual_layers,
                                      c.mutual_end_step, c.cross_layers, sa1_tokens, c.sa1, c.sa2, c.cross)
        region = inversion.masks if c.edit_target == "object" else ~inversion.masks  # what SA-II must not copy
        ctx = EditContext(clock, schedule, F_, {k: v.to(m.device) for k, v in
                                               masks_by_tokens(region.to(m.device), latent_hw).items()})
        cross = cross_attention_edit(source_prompt, target_prompt, tok, c.cross_mode, p.equalizer_words,
                                     p.equalizer_values, (p.blend_words_source, p.blend_words_target), latent_hw,
                                     p.blend_threshold, int(p.blend_start * T))
        blend = cross.blend
        keep = None  # mask blend (beyond the paper): 1 where the reconstruction latent is kept
        if c.mask_blend:
            keep = latent_keep_region(inversion.masks.to(m.device), latent_hw, c.edit_target,
                                      c.mask_blend_dilation).to(latents)
        # the latent blend only where the kept source is the frame's context (an object edit keeps the background):
        # the decoder mixes globally, so a background edit's few kept object cells would pull the new background's
        # colour back towards the source's (ShapeWorld: navy came out teal); its object is kept in pixels below
        blend_from = int(c.mask_blend_start * T) if c.edit_target == "object" else T
        processors: dict[str, object] = {}
        for layer in attention_layers(m.unet):
            if layer.kind == "self" and (c.sa1 or c.sa2):
                processors[layer.name] = SelfControlProcessor(layer, ctx)
            elif layer.kind == "cross" and (c.cross or blend is not None):
                processors[layer.name] = CrossControlProcessor(layer, ctx, cross.mode, cross.mapper, cross.alphas,
                                                               cross.equalizer, blend)

        # the reconstruction path is conditioned on [E(neg), E(src)] (official code)
        fixed_emb = {"edit_cond": self._per_frame(tgt, F_), "recon_uncond": self._per_frame(neg, F_),
                     "recon_cond": self._per_frame(src, F_)}
        e = latents[T][None]
        if keep is not None and c.mask_blend_renoise:
            # fresh Gaussian noise where the edit may change, and no source structure there: no SA-I map, and no
            # G_t, which was computed on the source trajectory and pulls the region back to the source's pattern
            g = torch.Generator().manual_seed(cfg.seed)
            e = torch.lerp(torch.randn(e.shape, generator=g).to(e), e, keep)
            ctx.free_by_tokens = masks_by_tokens(keep[0].permute(1, 0, 2, 3) < 0.5, latent_hw)
            guidance = guidance * keep[0] if guidance is not None else None  # (T, C, F, h, w) x (1, F, h, w)
        with installed(m.unet, processors), torch.no_grad():
            for i, t in enumerate(timesteps):
                clock.step = i
                if nulls is not None:
                    uncond = expand_null(nulls[i].to(m.device), F_)
                elif fast == "negative_prompt":
                    uncond = self._per_frame(src, F_)
                else:
                    uncond = self._per_frame(neg, F_)
                z_recon = latents[T - i][None]
                # recon-uncond feeds only SA-II's edit-uncond keys and direct inversion: otherwise leave it out
                ctx.branches = Branches.NAMES if fast == "direct" or i in schedule.sa2_steps \
                    else Branches.WITHOUT_RECON_UNCOND
                z_in = {"edit_uncond": e, "edit_cond": e, "recon_uncond": z_recon, "recon_cond": z_recon}
                emb = {**fixed_emb, "edit_uncond": uncond}
                eps = m.eps(torch.cat([z_in[b] for b in ctx.branches]), t, torch.cat([emb[b] for b in ctx.branches]))
                a_t, a_p = m.schedule.alpha(t), m.schedule.alpha(t - delta)
                g = guidance[i][None] if guidance is not None else None
                e = ddim_step(cfg_combine(eps[1:2], eps[0:1], cfg.inversion.guidance_scale), e, a_t, a_p, g,
                              cfg.stdg.guidance_scale)
                ref = latents[T - i - 1][None]  # the reconstruction path at the next step
                if fast == "direct":  # PnP-Inversion: add the reconstruction path's per-step error back
                    r = ddim_step(cfg_combine(eps[3:4], eps[2:3], cfg.inversion.guidance_scale), z_recon, a_t, a_p)
                    e = e + (ref - r)
                if keep is not None and i >= blend_from:  # z <- z + K (z_rec - z)
                    e = torch.lerp(e, ref, keep)
                if blend is not None:  # prompt-to-prompt's local blend, from step int(T start_blend) on
                    e = blend.apply(i, e, ref)
                progress("edit", i + 1, T)
        t_edit = time.perf_counter() - t_start
        t0 = time.perf_counter()
        frames = m.decode_latents(e)
        if keep is not None:  # the decoder mixes globally: keep the source's own pixels too (soft, bilinear edge)
            keep_px = F.interpolate(keep[0].permute(1, 0, 2, 3), size=frames.shape[-2:], mode="bilinear",
                                    align_corners=False)
            frames = torch.lerp(frames, inversion.source_frames.to(frames), keep_px.to(frames))
        timings = {"edit_s": t_edit, "decode_s": time.perf_counter() - t0}
        return EditResult(frames.cpu(), e.cpu(), target_prompt, timings,
                          {"timesteps": timesteps, "schedule": {k: [r.start, r.stop] for k, r in vars(schedule).items()
                                                                if isinstance(r, range)}})

    def reconstruct(self, inversion: Inversion) -> Tensor:
        """Decode the end of the stage-1 trajectory: what inversion alone gives back, ``(F, 3, H, W)``."""
        z = inversion.reconstruction if inversion.reconstruction is not None else inversion.latents[0][None]
        return self.models.decode_latents(z.to(self.models.device))


def _pivotal_graphs(m: ModelBundle, z: Tensor, phi: Tensor, cond_f: Tensor, tok_masks: dict[int, Tensor],
                    setup: STDGSetup | None, recorder: FeatureRecorder | None, s, cfg_scale: float,  # noqa: ANN001
                    ) -> tuple[NullTextGraph | None, STDGGraph | None]:
    """``inversion.cuda_graph``: the null-text iteration and the STDG gradient on static tensors, on a GPU
    captured into one memory pool (they never run at once, so the pool holds the larger one's activations);
    on the CPU uncaptured, the same work run eagerly. ``(None, None)``, with a notice, if the capture fails."""
    graph = NullTextGraph(lambda zz, t, e: m.eps(zz, t, e), z, phi, s.guidance_scale, cfg_scale)
    stdg_graph = STDGGraph(m.eps, recorder, z, cond_f, tok_masks, setup, s.threshold) if setup is not None else None
    if m.device.type != "cuda":
        return graph, stdg_graph
    if stdg_graph is not None:  # warm-up inputs: the first step's, where z_t = z*_t
        stdg_graph.z.copy_(z)
        stdg_graph.z_ref.copy_(z)
    try:
        capture_together([g for g in (graph, stdg_graph) if g is not None])
    except RuntimeError as err:  # e.g. a kernel that cannot be captured on this GPU or PyTorch
        warn(f"inversion.cuda_graph: capturing the pivotal stage failed ({str(err).splitlines()[0][:160]}); "
             "running it eagerly")
        return None, None
    return graph, stdg_graph


def _clear_caches() -> None:
    """What the official code does after every STDG call and null-text iteration (official code)."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _make(models: ModelBundle, cfg: EditConfig) -> VideoDirector:
    return VideoDirector(models, cfg)


register("videodirector", _make, doc="VideoDirector, full method (official-code defaults)")
register("vd-shared-null", _make, {"inversion.null_text": "shared"}, "ablation: shared null-text instead of multi-frame")
register("vd-no-stdg", _make, {"stdg.enabled": False}, "ablation: no spatial-temporal decoupled guidance")
register("vd-no-self-control", _make, {"control.sa1": False, "control.sa2": False}, "ablation: no SA-I and no SA-II")
register("vd-no-sa1", _make, {"control.sa1": False}, "ablation: no SA-I")
register("vd-no-sa2", _make, {"control.sa2": False}, "ablation: no SA-II")
register("vd-no-cross", _make, {"control.cross": False}, "ablation: no cross-attention control")
register("vd-no-null", _make, {"inversion.null_text": "none"},
         "ablation: no null-text optimisation (DDIM inversion; the edit's unconditional branch is the negative prompt)")
# prompt-to-prompt keeps its own self-attention map injection (what SA-I is) but has no SA-II
register("vanilla-t2v", _make, {"inversion.null_text": "shared", "stdg.enabled": False, "control.sa2": False},
         "paper Fig. 2a: DDIM inversion + shared null-text + prompt-to-prompt on the T2V model")
register("ddim-p2p", _make, {"inversion.null_text": "none", "stdg.enabled": False, "control.sa2": False},
         "DDIM inversion + prompt-to-prompt, no null-text")
# the coefficients of this bench variant are set per case by bench.runner (BACKGROUND_COEFFICIENTS_BY_METHOD)
register("vd-bg-no-appearance", _make, {}, "bench variant, beyond the paper: background and texture cases without "
         "STDG's appearance term (zeta_f = 0), object cases as videodirector; on your own video: "
         "--edit-target background --stdg 0.5,0.5,0,0")
# renoise on texture cases is set per case by bench.runner (OVERRIDES_BY_METHOD_AND_KIND)
register("vd-mask-blend", _make, {"control.mask_blend": True, "control.mask_blend_dilation": 0},
         "beyond the paper: the full method plus the mask blend with no room around the object (the source kept outside "
         "the masks' edit region; texture edits start that region from fresh noise); --mask-blend [--renoise] leaves "
         "one latent pixel of room, as vd-mask-blend-dilated")
register("vd-mask-blend-dilated", _make, {"control.mask_blend": True},
         "beyond the paper: vd-mask-blend with the option's default room around the object (control.mask_blend_dilation = 1 "
         "latent pixel; vd-mask-blend uses 0); on your own video: --mask-blend")
# its room around the object is set per case by bench.runner (OVERRIDES_BY_METHOD_AND_KIND): none but on shape cases
register("vd-mask-blend-per-edit", _make, {"control.mask_blend": True},
         "beyond the paper: the mask blend with the room chosen per edit as the docs advise: one latent pixel for a new "
         "shape, none for a new colour, background or texture; on your own video: --mask-blend, plus "
         "--mask-blend-dilation 0 for a colour edit")
register("vd-motion-per-frame", _make, {"model.motion_norm": "per_frame"},
         "fidelity check: the full method with the original AnimateDiff module's per-frame motion GroupNorm "
         "(model.motion_norm) on models trained with diffusers' joint one; how much the choice moves an edit")
register("vd-fast-npi", _make, {"inversion.fast": "negative_prompt"}, "beyond the paper: negative-prompt inversion")
register("vd-fast-direct", _make, {"inversion.fast": "direct"}, "beyond the paper: direct (PnP) inversion")
