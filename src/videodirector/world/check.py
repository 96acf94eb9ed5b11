"""Quality gate of the bundled ShapeWorld models.

    python -m videodirector.world.check [--captions 64] [--steps 25] [--device auto] [--weights DIR]

``--weights DIR`` checks a folder exported by ``world.train --dest DIR`` instead of the bundled models.

Writes ``benchmarks/results/world_check.json`` with:

* ``colour_acc``, ``shape_acc``, ``motion_acc``: generated clips (held-out seeds, CFG 3, DDIM) are
  analysed from their pixels by rules: object pixels are the largest region nearer an object colour
  than the caption's background shades and the gray box; colour = majority nearest object colour;
  shape = best IoU against the four shape templates at the object's centroid and area, each tried at
  five angles (majority over frames); motion = centroid displacement (8
  directions) or area change (growing/shrinking). Target: >= 0.90 each.
* ``vae_psnr``: VAE reconstruction of held-out frames (target >= 32 dB).
* ``inversion_psnr``: DDIM inversion without CFG, then reconstruction, against the VAE reconstruction
  (target >= 30 dB).
* ``direction_preference`` (diagnostic, no target): how much worse the video model denoises a held-out
  clip when its caption names the opposite direction (``direction_preference``); 0 means the model
  ignores direction words, and its clips then move wherever the starting noise leads.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Callable

import torch
from rich.progress import track

from ..api import BUNDLED_GUIDANCE_SCALE, bundled_model_config
from ..config import EditConfig, apply_overrides
from ..errors import UserError
from ..diffusion.ddim import NoiseSchedule, cfg_combine, ddim_invert, ddim_sample, leading_timesteps, linspace_timesteps
from ..io.outputs import write_json
from ..metrics.ground_truth import psnr
from ..models.loading import load_models
from .read import classify
from .scene import MOTIONS, render, sample_clip

HELD_OUT_SEEDS = range(0, 10_000)  # training uses seeds >= 1_000_000


OPPOSITE_MOTION = {"right": "left", "left": "right", "up": "down", "down": "up", "up right": "down left",
                   "down left": "up right", "up left": "down right", "down right": "up left",
                   "growing": "shrinking", "shrinking": "growing"}


def with_motion(caption: str, motion: str, new: str) -> str:
    """``caption`` with its motion phrase for ``motion`` replaced by the one for ``new``."""
    def verb(m: str) -> str:
        return m if m in ("growing", "shrinking") else f"moving {m}"
    return caption.replace(f" {verb(motion)} ", f" {verb(new)} ", 1)


@torch.no_grad()
def direction_preference(encode: Callable[[torch.Tensor], torch.Tensor],
                         eps: Callable[[torch.Tensor, int, list[str]], torch.Tensor],
                         schedule: NoiseSchedule, n: int = 8, timesteps: tuple[int, ...] = (700, 900),
                         seed: int = 0) -> dict[str, float]:
    """How much the video model's denoising depends on the caption's direction word.

    For ``n`` held-out clips ``x`` (one per motion in turn) with caption ``c`` and the same caption
    with the opposite direction ``c'``, at each ``t`` with one noise draw ``ε``::

        L(c) = ‖ε_θ(√ᾱ_t z_0 + √(1-ᾱ_t) ε, t, c) − ε‖²,   preference(t) = mean (L(c') − L(c)) / L(c)

    ``encode``: ``(F, 3, H, W)`` frames → ``(1, C, F, h, w)`` latents; ``eps(z_t, t, [caption])`` → ε
    prediction. Returns ``{"t=700": ..., "t=900": ..., "mean": ...}``: about 0 when direction words are
    ignored, positive when the model expects the named direction."""
    g = torch.Generator().manual_seed(seed)
    out: dict[str, float] = {}
    for t in timesteps:
        a = schedule.alpha(t)
        rel = []
        for k in range(n):
            spec = sample_clip(50_000 + k, motion=list(MOTIONS)[k % len(MOTIONS)], distractor_prob=0.0)
            z0 = encode(render(spec)[0][0])
            noise = torch.randn(z0.shape, generator=g).to(z0)
            zt = math.sqrt(a) * z0 + math.sqrt(1 - a) * noise
            true, wrong = spec.caption(), with_motion(spec.caption(), spec.motion, OPPOSITE_MOTION[spec.motion])
            loss_true = float((eps(zt, t, [true]).float() - noise.float()).pow(2).mean())
            loss_wrong = float((eps(zt, t, [wrong]).float() - noise.float()).pow(2).mean())
            rel.append((loss_wrong - loss_true) / loss_true)
        out[f"t={t}"] = sum(rel) / n
    out["mean"] = sum(out.values()) / len(timesteps)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m videodirector.world.check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--captions", type=int, default=64)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--inversions", type=int, default=8)
    p.add_argument("--inversion-steps", type=int, default=50)
    p.add_argument("--device", default="auto")
    p.add_argument("--weights", type=Path, default=None,
                   help="exported weights folder to check (default: the bundled models)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/world_check.json"))
    args = p.parse_args(argv)
    t0 = time.time()
    try:
        cfg = apply_overrides(EditConfig(), bundled_model_config(args.device, args.weights))
    except UserError as exc:
        p.error(str(exc))
    m = load_models(cfg.model)
    # VAE
    specs = [sample_clip(s) for s in range(32)]
    vids, _ = render(specs)
    frames = vids[:, ::4].flatten(0, 1)
    rec = m.decode_latents(m.encode_video(frames, sample=False)).cpu()
    vae_psnr = psnr(rec, frames)
    parts = {"load_and_vae_s": time.time() - t0}
    # inversion without CFG
    inv_psnrs = []
    for spec in track(specs[: args.inversions], description="inversion (no CFG)"):
        v = render(spec)[0][0]
        z0 = m.encode_video(v, sample=False)
        cond = m.encode_prompt([spec.caption()]).expand(v.shape[0], -1, -1)
        ts = linspace_timesteps(args.inversion_steps)
        with torch.no_grad():
            lat = ddim_invert(lambda z, t: m.eps(z, t, cond), z0, m.schedule, ts)
            zr = ddim_sample(lambda z, t: m.eps(z, t, cond), lat[-1][None], m.schedule, ts)
        inv_psnrs.append(psnr(m.decode_latents(zr).cpu(), m.decode_latents(z0).cpu()))
    parts["inversion_s"] = time.time() - t0 - sum(parts.values())
    direction = direction_preference(
        lambda v: m.encode_video(v, sample=False),
        lambda z, t, caps: m.eps(z, t, m.encode_prompt(caps).expand(z.shape[2], -1, -1)), m.schedule)
    # generation accuracy
    hits = {"colour": 0, "shape": 0, "motion": 0}
    rows = []
    g = torch.Generator().manual_seed(0)
    for k in track(range(args.captions), description="generation from held-out captions"):
        spec = sample_clip(100 + k, motion=list(MOTIONS)[k % len(MOTIONS)], distractor_prob=0.0)
        cond, unc = m.encode_prompt([spec.caption(), ""]).chunk(2)
        emb = torch.cat([unc.expand(16, -1, -1), cond.expand(16, -1, -1)])

        def eps(z: torch.Tensor, t: int) -> torch.Tensor:
            e = m.eps(torch.cat([z, z]), t, emb)
            return cfg_combine(e[1:], e[:1], BUNDLED_GUIDANCE_SCALE)

        z = torch.randn(1, 4, 16, 16, 16, generator=g).to(m.device, m.dtype)
        with torch.no_grad():
            z = ddim_sample(eps, z, m.schedule, leading_timesteps(args.steps))
        got = classify(m.decode_latents(z).cpu(), spec.background)
        for a in hits:
            hits[a] += int(got[a] == getattr(spec, a))
        rows.append({"caption": spec.caption(), **{f"got_{a}": got[a] for a in hits}})
    parts["generation_and_classification_s"] = time.time() - t0 - sum(parts.values())
    n = args.captions
    result = {
        "colour_acc": hits["colour"] / n, "shape_acc": hits["shape"] / n, "motion_acc": hits["motion"] / n,
        "vae_psnr": vae_psnr, "inversion_psnr": sum(inv_psnrs) / len(inv_psnrs),
        "direction_preference": direction,
        "targets": {"colour_acc": 0.9, "shape_acc": 0.9, "motion_acc": 0.9, "vae_psnr": 32, "inversion_psnr": 30},
        "settings": {"captions": n, "sampling_steps": args.steps, "cfg": f"eps_c + {BUNDLED_GUIDANCE_SCALE:g} (eps_c - eps_u)",
                     "inversions": args.inversions, "inversion_steps": args.inversion_steps,
                     "device": str(m.device), "seconds": time.time() - t0, "seconds_by_part": parts},
        "training": json.loads((Path(cfg.model.base).parent / "training.json").read_text()),
        "per_caption": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k.endswith(("acc", "psnr", "preference"))}, indent=2))
    return result


if __name__ == "__main__":
    main()
