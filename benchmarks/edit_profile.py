"""Where the editing stage's time goes, and which speed options help it (issue 5: ``edit_only_s`` <= 16).

Full-size random-weight models (as ``speed.py``), one 50-step inversion with a single null-text
iteration per step (the editing loop's cost does not depend on it), then the 50-step edit:

- timed under each variant: the SDPA kernel tried first (``model.attention_backend``) and
  channels-last UNet weights (``model.channels_last``), best of two runs each, with the largest
  latent difference to the default variant;
- profiled once (default variant): CUDA time by kernel family (attention, matmul, convolution,
  normalisation, copies, other element-wise) and the top kernels.

Writes ``benchmarks/results/edit_profile_<gpu>.json`` and a markdown table; the last line printed
names the fastest variant as ``speed.py`` flags.

    python benchmarks/edit_profile.py [--frames 16 --size 512 --steps 50]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, result_name, synthetic_clip, timed_config, write  # noqa: E402
from speed import random_bundle  # noqa: E402

from videodirector.methods.videodirector import VideoDirector  # noqa: E402

SOURCE = "A brown bear, walking on rocky terrain, next to a stone wall."
TARGET = "A tiger, walking on rocky terrain, next to a stone wall."
FAMILIES = (("attention", ("fmha", "flash", "attention", "cudnn_sdpa", "sdpa")), ("matmul", ("gemm", "cutlass", "sm90", "nvjet")),
            ("convolution", ("conv", "implicit", "winograd", "cudnn::")), ("normalisation", ("norm",)),
            ("copies", ("copy", "cat", "transpose")))


def family(kernel: str) -> str:
    k = kernel.lower()
    return next((name for name, keys in FAMILIES if any(x in k for x in keys)), "other element-wise")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--backends", default="default,cudnn,efficient")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    models = random_bundle(device, dtype)
    cfg = timed_config(args.steps, 1, args.frames, args.size)
    frames, masks = synthetic_clip(args.frames, args.size)
    vd = VideoDirector(models, cfg)
    inv = vd.invert(frames, masks, SOURCE)
    vd.edit(inv, TARGET)  # warm-up

    def timed_edit() -> tuple[float, torch.Tensor]:
        if device.type == "cuda":
            torch.cuda.synchronize()
        res = vd.edit(inv, TARGET)
        return res.timings["edit_s"], res.latents

    variants: dict[str, dict] = {}
    reference = None
    for channels_last in (False, True):
        models.unet.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        for backend in args.backends.split(","):
            models.attention_backend = backend
            runs = [timed_edit() for _ in range(2)]
            latents = runs[0][1]
            if reference is None:
                reference = latents
            name = f"{backend}{' + channels_last' if channels_last else ''}"
            variants[name] = {"attention_backend": backend, "channels_last": channels_last,
                              "edit_s": min(r[0] for r in runs), "runs_s": [r[0] for r in runs],
                              "max_abs_diff_vs_default": float((latents - reference).abs().max())}
            print(name, variants[name], flush=True)
    models.unet.to(memory_format=torch.contiguous_format)
    models.attention_backend = "default"

    families: dict[str, float] = {}
    top: list[tuple[str, float, int]] = []
    if device.type == "cuda":
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            t_prof, _ = timed_edit()
            torch.cuda.synchronize()
        events = [e for e in prof.key_averages() if e.device_type.name == "CUDA" and e.self_device_time_total > 0]
        total = sum(e.self_device_time_total for e in events)
        for e in events:
            families[family(e.key)] = families.get(family(e.key), 0.0) + e.self_device_time_total / 1e6
        top = [(e.key[:90], e.self_device_time_total / 1e6, e.count)
               for e in sorted(events, key=lambda e: -e.self_device_time_total)[:15]]
        families["gpu_total"] = total / 1e6
        families["wall_profiled"] = t_prof
    best = min(variants.values(), key=lambda v: v["edit_s"])
    data = {"machine": machine(), "frames": args.frames, "size": args.size, "steps": args.steps,
            "variants": variants, "best": best, "gpu_time_by_family_s": families,
            "top_kernels": [{"kernel": k, "s": s, "calls": c} for k, s, c in top], "target_edit_only_s": 16}
    rows = [(f"edit_s {k}", f"{v['edit_s']:.2f} (diff {v['max_abs_diff_vs_default']:.3g})") for k, v in variants.items()]
    rows += [(f"GPU s {k}", f"{v:.2f}") for k, v in families.items()]
    rows += [(f"kernel {k}", f"{s:.2f} s, {c} calls") for k, s, c in top]
    write(result_name("edit_profile", data["machine"], device, args.frames, args.size), data, rows)
    flags = f"--attention-backend {best['attention_backend']}" + (" --channels-last" if best["channels_last"] else "")
    print(f"BEST_FLAGS {flags}", flush=True)


if __name__ == "__main__":
    main()
