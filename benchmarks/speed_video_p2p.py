"""Full-size speed and memory of a Video-P2P edit (issue 17), on SD 1.5's real architecture with random weights
(``--tiny``: the tiny SD-layout test widths on the CPU instead).

One process, one clip of 8 frames at 512 x 512, the UNet inflated to the T2S model, bf16 autocast over float32
weights (what ``model.dtype: auto`` runs on CUDA), in this order:

1. **tuning** (stage 1, gradient checkpointing): ``--tune-steps`` steps timed after 3 warm-up steps (default 20);
   ``tune_s`` is that rate times 500, the paper's step count;
2. **inversion**: DDIM inversion, all 50 steps (``invert_s``);
3. **null-text**: the shared null-text optimisation, ``--null-steps`` of the 50 outer steps timed (default 5),
   every one at the full 10 iterations (early stopping off, the worst case); ``null_text_s`` is that rate
   times 50;
4. **edit**: the four-row decoupled-guidance edit with attention control and local blend, all 50 steps and the
   decode (``edit_s``); the same with ``--fast`` (``edit_fast_s``, no null-text).

``end_to_end_s = tune_s + invert_s + null_text_s + edit_s``; ``fast_end_to_end_s = tune_s + invert_s +
edit_fast_s``; ``peak_gb`` is the CUDA allocator's peak over these stages. Each stage costs the same per step,
so the rates extrapolate (the timed steps are stated in the JSON).

Then the official cost structure of stage 2, at reduced steps: float32 without autocast, the UNet's parameters
unfrozen, their gradients left in place and never freed (``run_videop2p.py``): inversion and edit 5 steps,
null-text 2 outer steps x 10 iterations, each extrapolated to 50; ``reference_ratio`` = that stage 2 over ours
(tuning is the same in both: the official code also autocasts it with checkpointing).

Targets (issue 17, one H100/H200): end to end <= 150 s, ``--fast`` <= 90 s, peak <= 20 GB.
Writes ``benchmarks/results/speed_video-p2p_<gpu>.{json,md}`` (``_tiny`` on the CPU check).

    python benchmarks/speed_video_p2p.py                      # one H200: about 2 minutes
    python benchmarks/speed_video_p2p.py --tiny --threads 1   # CPU check of the script
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import GB, fmt, gpu_slug, machine, write  # noqa: E402

PAPER_TUNE_STEPS, DDIM_STEPS, NULL_ITERS = 500, 50, 10
SOURCE, TARGET = "a red circle moving right on the background", "a blue circle moving right on the background"


def build(tiny: bool, device: torch.device):  # noqa: ANN201
    """A T2S :class:`ModelBundle`: SD 1.5's UNet, VAE and CLIP ViT-L text encoder with random weights (or the
    tiny test widths), float32 weights on ``device``; the bundled tokenizer (a closed vocabulary, enough here)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from videodirector.api import BUNDLED_WEIGHTS
    from videodirector.diffusion.ddim import NoiseSchedule
    from videodirector.models.factory import ArchSpec, TEST_WORDS, build_models
    from videodirector.models.loading import ModelBundle
    from videodirector.models.t2s import T2SUNet

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(BUNDLED_WEIGHTS / "sd" / "tokenizer")
    if tiny:
        unet2d, _, vae, text = build_models(ArchSpec(words=list(TEST_WORDS)))
        from videodirector.models.tokenizer import build_clip_tokenizer
        import tempfile

        tokenizer = CLIPTokenizer.from_pretrained(build_clip_tokenizer(list(TEST_WORDS), tempfile.mkdtemp()))
    else:
        with torch.device(device):
            unet2d = UNet2DConditionModel(sample_size=64, cross_attention_dim=768)  # SD 1.5's UNet config
            vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                                layers_per_block=2, latent_channels=4, sample_size=512)
            text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                num_attention_heads=12, max_position_embeddings=77))
    with torch.device(device):  # the inflated copy is built on the device too
        unet = T2SUNet.from_unet2d(unet2d)
    del unet2d
    for m in (unet, vae, text):
        m.requires_grad_(False).eval().to(device)
    schedule = NoiseSchedule.from_scheduler_config({"beta_schedule": "scaled_linear", "set_alpha_to_one": False})
    return ModelBundle(unet, vae, text, tokenizer, schedule, device, torch.float32, {"base": "random"})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--tune-steps", type=int, default=None, help="timed tuning steps (default 20; tiny: 2)")
    p.add_argument("--null-steps", type=int, default=None, help="timed null-text outer steps (default 5; tiny: 1)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tiny = args.tiny
    frames, size = (4, 64) if tiny else (8, 512)
    steps = 3 if tiny else DDIM_STEPS
    tune_steps = args.tune_steps or (2 if tiny else 20)
    null_steps = min(args.null_steps or (1 if tiny else 5), steps)
    device = torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    from videodirector.config import EditConfig, apply_overrides
    from videodirector.diffusion.ddim import leading_timesteps, step_size
    from videodirector.methods.video_p2p import VideoP2P

    t0 = time.perf_counter()
    models = build(tiny, device)
    build_s = time.perf_counter() - t0

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def cfg(**over) -> EditConfig:  # noqa: ANN003
        return apply_overrides(EditConfig(), {
            "model.device": device.type, "model.dtype": "bfloat16" if device.type == "cuda" else "float32",
            "inversion.num_steps": steps, "inversion.null_inner_steps": NULL_ITERS,
            "inversion.early_stop_epsilon": -1.0, "inversion.early_stop_slope": 0.0,  # every iteration runs
            "video_p2p.cross_mode": "replace", "prompts.blend_words_source": ["red"],
            "prompts.blend_words_target": ["blue"], **over})

    g = torch.Generator().manual_seed(0)
    video = torch.rand(frames, 3, size, size, generator=g) * 2 - 1
    masks = torch.ones(frames, 1, size, size, dtype=torch.bool)
    res: dict = {"machine": machine(), "frames": frames, "size": size, "ddim_steps": steps,
                 "null_inner_iterations": NULL_ITERS, "autocast": "bfloat16" if device.type == "cuda" else "none",
                 "build_s": build_s}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    # 1. tuning: warm-up, then the timed rate, extrapolated to the paper's 500 steps
    method = VideoP2P(models, cfg(**{"video_p2p.tune_steps": 3}))
    method.tune(video, SOURCE)
    method.s.tune_steps = tune_steps
    sync()
    t0 = time.perf_counter()
    state, losses = method.tune(video, SOURCE)
    sync()
    res["tune_step_s"] = (time.perf_counter() - t0) / tune_steps
    res.update(tune_measured_steps=tune_steps, tune_s=res["tune_step_s"] * PAPER_TUNE_STEPS)

    # 2. inversion, all steps
    key = method.tuning_key(video, SOURCE)
    from videodirector.methods import video_p2p

    video_p2p._TUNED[key] = state  # the invert and edit below use these weights without tuning again
    method.s = dataclasses.replace(method.s, tune_steps=tune_steps, fast=True)  # fast: no null-text in invert
    sync()
    t0 = time.perf_counter()
    inv_fast = method.invert(video, masks, SOURCE)
    sync()
    res["invert_s"] = inv_fast.meta["timings"]["invert_s"]
    res["fast_reconstruction_s"] = inv_fast.meta["timings"]["null_text_s"]  # not part of --fast's edit

    # 3. null-text: the first outer steps at 10 iterations each, extrapolated to 50
    ts = leading_timesteps(steps, models.schedule.num_train_timesteps)
    delta = step_size(models.schedule, steps)
    lat = inv_fast.latents.to(device)
    cond, empty = models.encode_prompt([SOURCE, ""]).chunk(2)
    method.s = dataclasses.replace(method.s, fast=False)
    with method.weights(state):
        sync()
        t0 = time.perf_counter()
        nulls, _, iters = method._null_text(lat[steps - null_steps:], ts[:null_steps], delta,
                                            cond.expand(frames, -1, -1), empty, lambda *a: None)
        sync()
    res["null_step_s"] = (time.perf_counter() - t0) / null_steps
    res.update(null_measured_steps=null_steps, null_iterations=iters, null_text_s=res["null_step_s"] * steps)

    # 4. edits: the full method (null-text embeddings of the right shape; their values do not change the cost)
    from videodirector.methods.base import Inversion

    full_inv = Inversion(inv_fast.latents, inv_fast.masks, inv_fast.source_frames,
                         nulls[:1].expand(steps, -1, -1, -1).clone(), None, inv_fast.reconstruction, inv_fast.meta)
    sync()
    t0 = time.perf_counter()
    out = method.edit(full_inv, TARGET)
    sync()
    res["edit_s"] = time.perf_counter() - t0
    method.s = dataclasses.replace(method.s, fast=True)
    sync()
    t0 = time.perf_counter()
    out_fast = method.edit(inv_fast, TARGET)
    sync()
    res["edit_fast_s"] = time.perf_counter() - t0
    res["end_to_end_s"] = res["tune_s"] + res["invert_s"] + res["null_text_s"] + res["edit_s"]
    res["fast_end_to_end_s"] = res["tune_s"] + res["invert_s"] + res["edit_fast_s"]
    res["peak_gb"] = torch.cuda.max_memory_allocated() / GB if device.type == "cuda" else None
    res["finite"] = bool(torch.isfinite(out.frames).all() and torch.isfinite(out_fast.frames).all())

    # 5. the official cost structure of stage 2 at reduced steps: fp32, unfrozen UNet, gradients kept
    ref_steps, ref_null = min(5, steps), min(2, steps)
    ref = VideoP2P(models, cfg(**{"model.dtype": "float32", "video_p2p.tune_steps": tune_steps}))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    models.unet.requires_grad_(True)
    try:
        with ref.weights(state), torch.no_grad():
            sync()
            t0 = time.perf_counter()
            for t in ts[:ref_steps]:  # DDIM inversion forwards
                ref.eps(lat[0][None], t, cond.expand(frames, -1, -1))
            sync()
            ref_invert_step = (time.perf_counter() - t0) / ref_steps
        with ref.weights(state):
            sync()
            t0 = time.perf_counter()
            ref._null_text(lat[steps - ref_null:], ts[:ref_null], delta, cond.expand(frames, -1, -1), empty,
                           lambda *a: None)
            sync()
            ref_null_step = (time.perf_counter() - t0) / ref_null
        ref_inv = dataclasses.replace(full_inv, latents=full_inv.latents[-(ref_steps + 1):],
                                      null_embeddings=full_inv.null_embeddings[:ref_steps],
                                      meta={**full_inv.meta, "timesteps": ts[:ref_steps]})
        sync()
        t0 = time.perf_counter()
        ref.edit(ref_inv, TARGET)
        sync()
        ref_edit_step = (time.perf_counter() - t0) / ref_steps
    finally:
        models.unet.requires_grad_(False)
        for prm in models.unet.parameters():
            prm.grad = None
    ref_stage2 = (ref_invert_step + ref_null_step + ref_edit_step) * steps
    ours_stage2 = res["invert_s"] + res["null_text_s"] + res["edit_s"]
    res.update(reference_stage2_s=ref_stage2, stage2_s=ours_stage2, reference_ratio=ref_stage2 / ours_stage2,
               reference_end_to_end_s=res["tune_s"] + ref_stage2,
               reference_peak_gb=torch.cuda.max_memory_allocated() / GB if device.type == "cuda" else None,
               reference_measured={"invert_steps": ref_steps, "null_outer_steps": ref_null, "edit_steps": ref_steps})
    res["targets"] = {"end_to_end_s": 150, "fast_end_to_end_s": 90, "peak_gb": 20}
    name = f"speed_video-p2p_{gpu_slug(res['machine'])}" + ("_tiny" if tiny else "")
    table = [(k, fmt(res[k])) for k in ("end_to_end_s", "fast_end_to_end_s", "peak_gb", "reference_ratio", "tune_s",
                                         "tune_step_s", "invert_s", "null_text_s", "null_step_s", "edit_s",
                                         "edit_fast_s", "reference_stage2_s", "reference_peak_gb", "build_s")]
    path = write(name, res, table, args.out)
    print(f"wrote {path}: " + ", ".join(f"{k}={v}" for k, v in table))


if __name__ == "__main__":
    main()
