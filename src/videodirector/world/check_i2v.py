"""Quality gate of the ShapeWorld image-to-video model (``world.train --model i2v``).

    python -m videodirector.world.check_i2v [--weights DIR] [--clips 32] [--lora-clips 8] [--device auto]

Loads the model through the same loader as real SVD (``models.loading.load_svd``) and writes
``benchmarks/results/world_check_i2v.json`` with, on held-out clips (seeds below 1,000,000):

* ``first_frame_psnr``: a clip generated from a first frame (25 Euler steps, frame-wise CFG 1 -> 2 as
  I2VEdit samples) against that first frame, at frame 0 (target >= 25 dB);
* ``colour_acc``, ``shape_acc``: the object's colour and shape read from every generated frame
  (``world.read.classify`` per frame) against the first frame's object (target >= 0.9 each);
* ``moving_fraction`` (diagnostic): generated clips whose object moves (>= 4 px) or changes size;
* ``inversion_psnr``: SARP + EDM inversion with the first frame's condition, then unguided sampling back,
  decoded, against the VAE reconstruction (target >= 25 dB);
* ``motion_acc_lora`` and ``motion_acc_base``: a motion LoRA tuned on the source clip (I2VEdit's coarse motion
  extraction, ``--lora-steps``), then a clip generated from fresh noise and the same first frame; its motion
  read from the pixels against the source's, with and without the LoRA (target: with >= 0.8, above without).

The targets are stated in the file and each result says whether it is met.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ..diffusion.edm import frame_guidance_scales, sarp
from ..io.outputs import write_json
from ..metrics.ground_truth import centroids, psnr
from ..models.loading import load_svd
from .read import classify, frame_hits, object_mask
from .scene import MOTIONS, render, sample_clip

TARGETS = {"first_frame_psnr": 25.0, "colour_acc": 0.9, "shape_acc": 0.9, "inversion_psnr": 25.0,
           "motion_acc_lora": 0.8}
DEFAULT_WEIGHTS = Path(__file__).parent / "weights" / "i2v"


def moves(video: torch.Tensor, background: str) -> bool:
    """The object's centroid travels >= 4 px between the first and last frames, or its area changes by 1.5x."""
    m = object_mask(video, background)
    c = centroids(m)
    area = m[:, 0].float().sum((1, 2))
    ok = ~torch.isnan(c).any(1)
    if ok.sum() < 2:
        return False
    idx = ok.nonzero()[:, 0]
    ratio = float(area[idx[-1]] / area[idx[0]].clamp_min(1))
    return bool((c[idx[-1]] - c[idx[0]]).norm() >= 4 or ratio > 1.5 or ratio < 1 / 1.5)


def main(argv: list[str] | None = None) -> dict:
    from ..methods.i2vedit import (
        I2VEditSettings, add_motion_lora, edit_condition, edm_invert, edm_sample, inversion_condition, lora_enabled,
        train_motion_lora,
    )

    p = argparse.ArgumentParser(prog="python -m videodirector.world.check_i2v", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    p.add_argument("--clips", type=int, default=32, help="held-out first frames for generation")
    p.add_argument("--inversions", type=int, default=8)
    p.add_argument("--lora-clips", type=int, default=8)
    p.add_argument("--lora-steps", type=int, default=250)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--frames", type=int, default=14)
    p.add_argument("--guidance", type=float, default=2.0, help="max_guidance_scale of the frame-wise CFG")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/world_check_i2v.json"))
    args = p.parse_args(argv)
    if not (args.weights / "unet" / "config.json").is_file():
        p.error(f"no image-to-video model in {args.weights}; train it first: python -m videodirector.world.train "
                "--model i2v (see docs/methods/i2vedit.md)")
    t0 = time.time()
    models = load_svd(str(args.weights), device=args.device, local_files_only=True)
    s = I2VEditSettings(num_steps=args.steps, max_guidance_scale=args.guidance, lora_steps=args.lora_steps,
                        chunk_size=args.frames)
    guidance = frame_guidance_scales(args.frames, 1.0, args.guidance)
    g = torch.Generator().manual_seed(0)
    sigma0 = float((700.0**2 + 1) ** 0.5)

    def generate(first: torch.Tensor) -> torch.Tensor:
        cond = edit_condition(models, first, s, g)
        h, w = first.shape[-2] // models.vae_scale_factor, first.shape[-1] // models.vae_scale_factor
        z = torch.randn(1, args.frames, models.vae.config.latent_channels, h, w, generator=g).to(models.device) * sigma0
        return models.decode_latents(edm_sample(models, z, cond, args.steps, guidance, g, latent_noise=0.02)).cpu()

    # generation from first frames
    rows, hits, frames_hit, n_frames, moving, ff = [], {"colour": 0, "shape": 0}, {"colour": 0, "shape": 0}, 0, 0, []
    for k in range(args.clips):
        spec = sample_clip(200 + k, frames=args.frames, motion=list(MOTIONS)[k % len(MOTIONS)], distractor_prob=0.0)
        src = render(spec)[0][0]
        out = generate(src[0])
        ff.append(psnr(out[:1], src[:1]))
        got = classify(out, spec.background)
        for a in hits:
            hits[a] += int(got[a] == getattr(spec, a))
        for a, n in frame_hits(out, spec, tuple(frames_hit)).items():
            frames_hit[a] += n
        n_frames += out.shape[0]
        moving += int(moves(out, spec.background))
        rows.append({"caption": spec.caption(), "first_frame_psnr": ff[-1], **{f"got_{a}": got[a] for a in hits}})
    parts = {"generation_s": time.time() - t0}
    # EDM inversion and reconstruction
    inv = []
    for k in range(args.inversions):
        src = render(sample_clip(300 + k, frames=args.frames))[0][0]
        gi = torch.Generator().manual_seed(k)
        x_in = sarp(src, s.sarp_alpha, gi)
        cond = inversion_condition(models, x_in[0], s, gi)
        z = models.encode_latents(x_in, sample=False)[None]
        traj = edm_invert(models, z, cond, args.steps)
        rec = edm_sample(models, traj[-1], cond, args.steps, None, gi)
        inv.append(psnr(models.decode_latents(rec).cpu(), models.decode_latents(z).cpu()))
    parts["inversion_s"] = time.time() - t0 - sum(parts.values())
    # motion after LoRA tuning
    lora_hits, base_hits = 0, 0
    for k in range(args.lora_clips):
        spec = sample_clip(400 + k, frames=args.frames, motion=list(MOTIONS)[k % len(MOTIONS)], distractor_prob=0.0)
        src = render(spec)[0][0]
        lora_enabled(models.unet, False)
        base_hits += int(classify(generate(src[0]), spec.background)["motion"] == spec.motion)
        add_motion_lora(models.unet, s)
        lora_enabled(models.unet, True)
        train_motion_lora(models, src, s, torch.Generator().manual_seed(k))
        lora_hits += int(classify(generate(src[0]), spec.background)["motion"] == spec.motion)
    lora_enabled(models.unet, False)
    parts["lora_s"] = time.time() - t0 - sum(parts.values())
    n = max(args.clips, 1)
    result = {
        "first_frame_psnr": sum(ff) / max(len(ff), 1),
        "colour_acc": frames_hit["colour"] / max(n_frames, 1), "shape_acc": frames_hit["shape"] / max(n_frames, 1),
        "clip_colour_acc": hits["colour"] / n, "clip_shape_acc": hits["shape"] / n,
        "moving_fraction": moving / n,
        "inversion_psnr": sum(inv) / max(len(inv), 1),
        "motion_acc_lora": lora_hits / max(args.lora_clips, 1), "motion_acc_base": base_hits / max(args.lora_clips, 1),
        "targets": TARGETS,
        "settings": {"clips": args.clips, "inversions": args.inversions, "lora_clips": args.lora_clips,
                     "lora_steps": args.lora_steps, "steps": args.steps, "frames": args.frames,
                     "guidance": f"frame-wise 1 -> {args.guidance:g}", "device": str(models.device),
                     "seconds": time.time() - t0, "seconds_by_part": parts},
        "per_clip": rows,
    }
    result["met"] = {k: bool(result[k] >= v) for k, v in TARGETS.items()}
    result["met"]["motion_lora_above_base"] = result["motion_acc_lora"] > result["motion_acc_base"]
    card = args.weights / "training.json"
    if card.is_file():
        result["training"] = json.loads(card.read_text())
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k.endswith(("acc", "psnr", "fraction", "lora", "base"))
                      or k == "met"}, indent=2, default=str))
    return result


if __name__ == "__main__":
    main()
