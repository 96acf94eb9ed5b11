"""Full-size speed, memory and scratch disk of an I2VEdit edit (issue 19), on Stable Video Diffusion's real
architecture with random weights (``--tiny``: the tiny SVD-layout test widths on the CPU instead).

One process, in this order, on one clip of ``--frames`` (14) frames at 576 x 1024 with 25 Euler steps:

1. **inversion**: SARP + EDM inversion with the base model (``inversion_s``);
2. **motion LoRA** at the official training size 512 x 896 (rank 32 on the 16 temporal blocks, gradient
   checkpointing as the official config): ``--lora-steps`` steps are timed (default 30, after 3 warm-up
   steps) and ``lora_s`` is that rate times 250, the official step count (``lora_step_s`` per step);
3. **edit**: appearance refinement with frame-wise CFG and attention matching, store ``replay`` (each step's
   source attention recorded just in time; ``--store memory|disk`` for the others), decode included (``edit_s``).

``end_to_end_s = inversion_s + lora_s + edit_s``; ``peak_gb`` is the CUDA allocator's peak over the whole
run (tensors); ``disk_gb`` is the most the scratch folder of the attention store held (0 unless
``--store disk``). Targets (issue 19): end to end <= 5 min, peak <= 40 GB, disk <= 2 GB on one H100/H200.
Writes ``benchmarks/results/speed_i2vedit_<gpu>.{json,md}`` (``_tiny``/CPU names otherwise).

    python benchmarks/speed_i2vedit.py                 # one H200: about 2-3 minutes
    python benchmarks/speed_i2vedit.py --tiny --threads 1 --out /tmp/speed   # CPU check of the script
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import GB, fmt, gpu_slug, machine, write  # noqa: E402

OFFICIAL_LORA_STEPS = 250


def build_svd(tiny: bool, device: torch.device, dtype: torch.dtype):  # noqa: ANN201
    """SVD-img2vid's architecture (diffusers' defaults for the UNet, SVD's VAE and ViT-H/14 image encoder)
    with random weights, built on ``device``; or the tiny test widths."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    from videodirector.models.loading import SVD_SCHEDULER, SVDBundle
    from videodirector.models.svd_factory import SVDArch, build_svd_models

    torch.manual_seed(0)
    if tiny:
        unet, vae, enc, proc = build_svd_models(SVDArch())
    else:
        with torch.device(device):
            unet = UNetSpatioTemporalConditionModel(num_frames=14)
            vae = AutoencoderKLTemporalDecoder(down_block_types=("DownEncoderBlock2D",) * 4,
                                               block_out_channels=(128, 256, 512, 512), layers_per_block=2)
            enc = CLIPVisionModelWithProjection(CLIPVisionConfig(
                hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                image_size=224, patch_size=14, projection_dim=1024))
        proc = CLIPImageProcessor()
    for m in (unet, vae, enc):
        m.requires_grad_(False).eval().to(device=device, dtype=dtype)
    return SVDBundle(unet, vae, enc, proc, dict(SVD_SCHEDULER), device, dtype, {"svd": "random"})


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--frames", type=int, default=None, help="default 14 (tiny: 4)")
    p.add_argument("--height", type=int, default=None, help="default 576 (tiny: 64)")
    p.add_argument("--width", type=int, default=None, help="default 1024 (tiny: 64)")
    p.add_argument("--steps", type=int, default=None, help="Euler steps (default 25; tiny: 3)")
    p.add_argument("--lora-steps", type=int, default=None, help="timed LoRA steps (default 30; tiny: 2)")
    p.add_argument("--store", choices=["replay", "memory", "disk"], default="replay")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    tiny = args.tiny
    frames = args.frames or (4 if tiny else 14)
    h, w = args.height or (64 if tiny else 576), args.width or (64 if tiny else 1024)
    steps = args.steps or (3 if tiny else 25)
    lora_steps = args.lora_steps or (2 if tiny else 30)
    train_size = [h, w] if tiny else [512, 896]
    device = torch.device("cuda" if torch.cuda.is_available() and not tiny else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    from videodirector.config import EditConfig, apply_overrides
    from videodirector.methods.i2vedit import I2VEdit

    t_build = time.perf_counter()
    models = build_svd(tiny, device, dtype)
    build_s = time.perf_counter() - t_build
    scratch = Path(tempfile.mkdtemp(prefix="speed-i2vedit-"))
    disk_peak = 0

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    def progress(stage: str, step: int, total: int) -> None:  # noqa: ARG001
        nonlocal disk_peak
        disk_peak = max(disk_peak, folder_bytes(scratch))

    def run_cfg(lora: int) -> EditConfig:
        return apply_overrides(EditConfig(), {
            "i2vedit.num_steps": steps, "i2vedit.chunk_size": frames, "i2vedit.lora_steps": lora,
            "i2vedit.train_size": train_size, "i2vedit.store": args.store, "i2vedit.store_dir": str(scratch),
            "i2vedit.motion_lora": lora > 0})

    g = torch.Generator().manual_seed(0)
    video = torch.rand(frames, 3, h, w, generator=g) * 2 - 1
    first = video[0] * 0.5
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    res: dict = {"machine": machine(), "frames": frames, "height": h, "width": w, "steps": steps,
                 "train_size": train_size, "store": args.store, "dtype": str(dtype), "build_s": build_s}

    # 1. inversion (no LoRA here: timed on its own)
    method = I2VEdit(models, run_cfg(0))
    sync()
    t0 = time.perf_counter()
    inv = method.invert(video, torch.ones(frames, 1, h, w, dtype=torch.bool), "", progress)
    sync()
    res["inversion_s"] = time.perf_counter() - t0

    # 2. motion LoRA: warm-up steps, then the timed ones, extrapolated to the official 250
    from videodirector.methods.i2vedit import add_motion_lora, lora_enabled, train_motion_lora

    s = run_cfg(lora_steps).settings_for("i2vedit")
    add_motion_lora(models.unet, s)
    lora_enabled(models.unet, True)
    warm = dict(vars(s))
    warm["lora_steps"] = 1 if tiny else 3
    from videodirector.methods.i2vedit import I2VEditSettings

    train_motion_lora(models, video, I2VEditSettings(**warm), torch.Generator().manual_seed(1))
    sync()
    t0 = time.perf_counter()
    info = train_motion_lora(models, video, s, torch.Generator().manual_seed(2))
    sync()
    per_step = (time.perf_counter() - t0) / lora_steps
    res.update(lora_step_s=per_step, lora_measured_steps=lora_steps, lora_s=per_step * OFFICIAL_LORA_STEPS,
               lora_loss_last=info["loss_last"])
    lora_key = method._lora_key(inv.meta["frames_key"], 0)
    from videodirector.methods.i2vedit import lora_state

    method._loras[lora_key] = lora_state(models.unet)
    method.s.motion_lora = True  # the edit uses the LoRA just trained

    # 3. edit
    sync()
    t0 = time.perf_counter()
    out = method.edit_from_image(inv, first, progress)
    sync()
    res["edit_s"] = time.perf_counter() - t0
    method.close()
    res["end_to_end_s"] = res["inversion_s"] + res["lora_s"] + res["edit_s"]
    res["peak_gb"] = torch.cuda.max_memory_allocated() / GB if device.type == "cuda" else None
    res["disk_gb"] = disk_peak / GB
    res["store_bytes"] = out.info.get("store_bytes")
    res["replay_step_gb"] = out.info.get("replay_step_bytes", 0) / GB
    res["targets"] = {"end_to_end_s": 300, "peak_gb": 40, "disk_gb": 2}
    res["finite"] = bool(torch.isfinite(out.frames).all())
    name = f"speed_i2vedit_{gpu_slug(res['machine'])}" + ("_tiny" if tiny else "")
    if (frames, h, w, steps) != ((4, 64, 64, 3) if tiny else (14, 576, 1024, 25)):
        name += f"_{frames}x{h}x{w}_s{steps}"
    table = [(k, fmt(res[k])) for k in ("end_to_end_s", "inversion_s", "lora_s", "lora_step_s", "edit_s", "peak_gb",
                                         "disk_gb", "replay_step_gb", "build_s")]
    path = write(name, res, table, args.out)
    print(f"wrote {path}: " + ", ".join(f"{k}={v}" for k, v in table))


if __name__ == "__main__":
    main()
