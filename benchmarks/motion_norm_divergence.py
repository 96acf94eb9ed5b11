"""How far the motion-module GroupNorm choice moves the UNet: per frame (original AnimateDiff, the official
code) against joint over all frames (diffusers' ``AnimateDiffTransformer3D``), ``model.motion_norm``.

Builds the full-size architecture from its configs, as ``benchmarks/speed.py`` does: the SD 1.5 UNet and the
AnimateDiff v3 motion adapter, with random weights (or real ones with ``--base DIR --motion-adapter PATH``).
One model; only the motion modules' ``norm`` sub-modules are swapped (``models.motion_norm.set_motion_norm``),
so every other weight and input is shared. Inputs are seeded:

- clean latents ``z0`` ``(1, 4, F, h, w)``: a blob moving across the frame over a background whose level and
  contrast drift over the clip (frames with different statistics, as real footage has; with statistics alike
  in every frame the two norms agree), scaled to unit standard deviation as SD latents are;
- per-frame text embeddings ``(F, 77, 768)`` drawn once.

Reported:

1. for each timestep in ``--timesteps``, one UNet forward on ``z_t = sqrt(ᾱ_t) z0 + sqrt(1 - ᾱ_t) n``:
   ``‖ε_pf - ε_joint‖ / ‖ε_joint‖``, the largest absolute difference and the cosine similarity;
2. a deterministic DDIM trajectory of ``--ddim-steps`` steps (conditional ε only, leading timesteps, η = 0)
   from the same ``z_T`` with each norm: the latents' relative divergence ``‖z_pf - z_joint‖ / ‖z_joint‖``
   after every step, the last being the clean estimate;
3. on CUDA, a yardstick: the same joint forward in bfloat16 against float32 (the official code runs bf16).

Writes ``benchmarks/results/motion_norm_divergence_<device>_<frames>x<pixels>.json`` and a markdown table.

    python benchmarks/motion_norm_divergence.py --small     # CPU: 16 x 32 x 32 latents, 8 forwards, minutes
    python benchmarks/motion_norm_divergence.py             # CUDA: 16 x 64 x 64 latents, 10 DDIM steps
    python benchmarks/motion_norm_divergence.py --base src/videodirector/world/weights/sd \
        --motion-adapter src/videodirector/world/weights/motion_adapter --latent 16 --ddim-steps 25 --device cpu \
        --name motion_norm_divergence_cpu_shapeworld            # the bundled ShapeWorld models, seconds
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, result_name, write  # noqa: E402

from videodirector.diffusion.ddim import NoiseSchedule, ddim_step, leading_timesteps, step_size  # noqa: E402
from videodirector.models.loading import ANIMATEDIFF_SCHEDULER  # noqa: E402
from videodirector.models.motion_norm import motion_transformers, set_motion_norm  # noqa: E402

# Copied from benchmarks/speed.py (SD15_UNET, ADAPTER_V3): the SD 1.5 UNet and the AnimateDiff v3 motion adapter
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=[320, 640, 1280, 1280],
                 down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                 up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, cross_attention_dim=768,
                 attention_head_dim=8)
ADAPTER_V3 = dict(block_out_channels=[320, 640, 1280, 1280], motion_layers_per_block=2, motion_num_attention_heads=8,
                  motion_norm_num_groups=32, motion_max_seq_length=32, use_motion_mid_block=False)


def build_unet(args: argparse.Namespace, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """SD 1.5 UNet + AnimateDiff v3 adapter: random weights from the configs, or the given real weights."""
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    torch.manual_seed(0)
    if args.base:
        unet2d = UNet2DConditionModel.from_pretrained(args.base, subfolder="unet")
        p = Path(args.motion_adapter)
        adapter = MotionAdapter.from_single_file(str(p)) if p.is_file() else MotionAdapter.from_pretrained(str(p))
    else:
        unet2d, adapter = UNet2DConditionModel(**SD15_UNET), MotionAdapter(**ADAPTER_V3)
    unet = UNetMotionModel.from_unet2d(unet2d, adapter)
    return unet.requires_grad_(False).eval().to(device=device, dtype=dtype)


def moving_blob_latents(frames: int, size: int, seed: int = 0) -> torch.Tensor:
    """``(1, 4, F, size, size)``: a blob moving left to right on a textured background whose level and contrast
    drift over the clip, normalised to unit standard deviation."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    texture = torch.nn.functional.avg_pool2d(torch.randn(1, 4, size, size, generator=g), 5, 1, 2)[0]
    colour = torch.randn(4, 1, 1, generator=g)
    out = []
    for f in range(frames):
        s = f / max(frames - 1, 1)
        blob = torch.exp(-((xs - (-0.6 + 1.2 * s)) ** 2 + ys**2) / 0.08)
        level, contrast = -0.5 + 1.0 * s, 0.6 + 0.8 * s
        out.append(level + contrast * texture + 2.0 * colour * blob)
    z = torch.stack(out, dim=1)[None]  # (1, 4, F, h, w)
    return (z - z.mean()) / z.std()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """``‖a - b‖ / ‖b‖`` in float64."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def compare(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    a64, b64 = a.double().flatten(), b.double().flatten()
    return {"relative": rel(a, b), "max_abs": float((a64 - b64).abs().max()),
            "cosine": float(torch.nn.functional.cosine_similarity(a64, b64, dim=0))}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true",
                   help="CPU size: 32 x 32 latents, forwards at t=801,201, a 2-step DDIM trajectory")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--latent", type=int, default=None, help="latent side (default 64, --small 32)")
    p.add_argument("--timesteps", type=str, default=None, help="timesteps of the single forwards (default 901,501,101)")
    p.add_argument("--ddim-steps", type=int, default=None, help="DDIM trajectory length (default 10, --small 2)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--base", default=None, help="SD 1.5 diffusers folder (real weights; default random)")
    p.add_argument("--motion-adapter", default=None, help="motion adapter folder or original .ckpt (with --base)")
    p.add_argument("--no-yardstick", action="store_true", help="skip the CUDA bf16-vs-fp32 yardstick")
    p.add_argument("--out", type=Path, default=None, help="results folder (default benchmarks/results)")
    p.add_argument("--name", default=None, help="result file name (default motion_norm_divergence_<device>[_<F>x<px>])")
    args = p.parse_args(argv)
    if bool(args.base) != bool(args.motion_adapter):
        p.error("--base and --motion-adapter go together")
    latent = args.latent or (32 if args.small else 64)
    ddim_steps = args.ddim_steps if args.ddim_steps is not None else (2 if args.small else 10)
    timesteps = [int(t) for t in (args.timesteps or ("801,201" if args.small else "901,501,101")).split(",")]
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    info = machine()
    t_start = time.perf_counter()
    unet = build_unet(args, device, dtype)
    schedule = NoiseSchedule.from_scheduler_config(ANIMATEDIFF_SCHEDULER)
    g = torch.Generator().manual_seed(1)
    z0 = moving_blob_latents(args.frames, latent)
    noise = torch.randn(z0.shape, generator=g)
    emb = torch.randn(1, 77, unet.config.cross_attention_dim, generator=g).expand(args.frames, -1, -1).to(device)

    def eps(z: torch.Tensor, t: int, dt: torch.dtype = dtype) -> torch.Tensor:
        """ε of the UNet in its current norm and dtype ``dt``, back on the CPU in float32."""
        with torch.no_grad():
            return unet(z.to(device=device, dtype=dt), torch.tensor(t),
                        encoder_hidden_states=emb.to(dt)).sample.float().cpu()

    def noisy(t: int) -> torch.Tensor:
        a = schedule.alpha(t)
        return math.sqrt(a) * z0 + math.sqrt(1 - a) * noise

    forwards: dict[str, dict[str, float]] = {}
    outputs: dict[str, dict[int, torch.Tensor]] = {"per_frame": {}, "joint": {}}
    for mode in ("per_frame", "joint"):
        set_motion_norm(unet, mode)
        for t in timesteps:
            t0 = time.perf_counter()
            outputs[mode][t] = eps(noisy(t), t)
            print(f"{mode} forward t={t}: {time.perf_counter() - t0:.1f} s", flush=True)
    for t in timesteps:
        forwards[f"t={t}"] = compare(outputs["per_frame"][t], outputs["joint"][t])

    ts = leading_timesteps(ddim_steps, schedule.num_train_timesteps)
    delta = step_size(schedule, ddim_steps)
    trajectories: dict[str, list[torch.Tensor]] = {}
    for mode in ("per_frame", "joint"):
        set_motion_norm(unet, mode)
        z = noisy(ts[0])
        path = []
        for t in ts:
            z = ddim_step(eps(z, t), z, schedule.alpha(t), schedule.alpha(t - delta))
            path.append(z)
        trajectories[mode] = path
        print(f"{mode} DDIM trajectory of {ddim_steps} steps done", flush=True)
    ddim = [{"step": i, "t": t, "latent_relative": rel(a, b)}
            for i, (t, a, b) in enumerate(zip(ts, trajectories["per_frame"], trajectories["joint"]))]

    yardstick = None
    if device.type == "cuda" and dtype == torch.float32 and not args.no_yardstick:
        set_motion_norm(unet, "joint")
        t = timesteps[len(timesteps) // 2]
        unet.to(torch.bfloat16)
        bf16 = eps(noisy(t), t, torch.bfloat16)
        yardstick = {"what": f"joint, t={t}: bfloat16 against float32", **compare(bf16, outputs["joint"][t])}

    data = {
        "machine": info, "device": str(device), "dtype": args.dtype,
        "weights": {"base": args.base or "random:sd15", "motion_adapter": args.motion_adapter or "random:v3"},
        "frames": args.frames, "latent": latent, "motion_modules": len(motion_transformers(unet)),
        "unet_forward": forwards, "ddim": {"steps": ddim_steps, "timesteps": ts, "per_step": ddim},
        "yardstick": yardstick, "wall_s": time.perf_counter() - t_start,
        "note": "relative = ||per_frame - joint|| / ||joint||; random weights unless --base is given",
    }
    table = [(f"UNet ε, {k}: relative / max abs / cosine",
              f"{v['relative']:.4g} / {v['max_abs']:.4g} / {v['cosine']:.6f}") for k, v in forwards.items()]
    table += [(f"DDIM latent after step {d['step'] + 1}/{ddim_steps} (t={d['t']})", f"{d['latent_relative']:.4g}")
              for d in ddim]
    if yardstick:
        table.append((f"yardstick ({yardstick['what']}): relative / max abs",
                      f"{yardstick['relative']:.4g} / {yardstick['max_abs']:.4g}"))
    table.append(("setup", f"{args.frames} x {latent} x {latent} latents, {args.dtype} on {device.type}, "
                           f"{data['motion_modules']} motion modules, {data['weights']['motion_adapter']}"))
    name = args.name or result_name("motion_norm_divergence", info, device, args.frames, latent * 8)
    name += "" if dtype == torch.float32 else "_bf16"
    print(write(name, data, table, args.out))
    return data


if __name__ == "__main__":
    main()
