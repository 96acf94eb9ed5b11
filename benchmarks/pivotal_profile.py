"""Where the time of one whole pivotal-tuning step goes, inside the real loop, at full size (issue 5).

The speed run measured 2.63 s per pivotal step at 10 null-text iterations, but the parts timed in
isolation (STDG with ε_c, ten iterations, the final forward) add up to about 2.14 s. This script runs
the real ``VideoDirector.invert`` loop and profiles one whole step with ``torch.profiler``, using the
labels the loop carries (``pivotal.guidance_and_eps_cond``, ``null_text.iteration``,
``null_text.final_forward``). It reports, for that step:

- the wall time of each labelled part and what is left outside every label;
- the GPU busy time (sum of kernel times) against the wall time, i.e. how long the GPU waits for the host;
- the host time spent waiting in synchronisations (``cudaStreamSynchronize`` and the like);
- the top operators by host and by GPU time.

It also records the unprofiled wall time of every step, to check that profiling does not change the picture.

    python benchmarks/pivotal_profile.py [--frames 16 --size 512 --steps 6 --inner 10 --trace trace.json.gz]

Writes ``benchmarks/results/pivotal_profile_<gpu>.{json,md}``.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write  # noqa: E402
from speed import random_bundle  # noqa: E402

from videodirector.config import EditConfig, apply_overrides  # noqa: E402
from videodirector.methods.videodirector import VideoDirector  # noqa: E402

LABELS = ("pivotal.guidance_and_eps_cond", "null_text.iteration", "null_text.final_forward")
SYNC_OPS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpyAsync")


def step_clock() -> tuple[list[float], object]:
    """A progress callback that records when DDIM inversion and each pivotal step end (synchronised).
    ``ends[0]`` is the end of DDIM inversion, ``ends[i + 1]`` the end of pivotal step ``i``."""
    ends: list[float] = [0.0]

    def progress(stage: str, i: int, total: int) -> None:  # noqa: ARG001
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if stage == "invert":
            ends[0] = time.perf_counter()
        elif stage == "null-text":
            ends.append(time.perf_counter())

    return ends, progress


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--inner", type=int, default=10)
    p.add_argument("--profile-step", type=int, default=3, help="which step to profile (0-based; step 0 has no STDG)")
    p.add_argument("--trace", type=Path, default=None, help="also write a Chrome trace (.json.gz) of that step")
    p.add_argument("--name", default=None)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    models = random_bundle(device, dtype)
    over = {"inversion.num_steps": args.steps, "inversion.null_inner_steps": args.inner,
            "inversion.early_stop_epsilon": -1.0, "inversion.early_stop_slope": 0.0,
            "input.height": args.size, "input.width": args.size, "input.num_frames": args.frames}
    cfg = apply_overrides(EditConfig(), over)
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(args.frames, 3, args.size, args.size, generator=g) * 2 - 1
    masks = torch.zeros(args.frames, 1, args.size, args.size, dtype=torch.bool)
    masks[:, :, args.size // 4: 3 * args.size // 4, args.size // 4: 3 * args.size // 4] = True
    prompt = "A brown bear, walking on rocky terrain, next to a stone wall."

    VideoDirector(models, apply_overrides(cfg, {"inversion.num_steps": 3, "inversion.null_inner_steps": 1})).invert(
        frames, masks, prompt)  # warm-up: cuDNN/cuBLAS set-up
    ends, clock = step_clock()  # 1. unprofiled wall time of every step
    VideoDirector(models, cfg).invert(frames, masks, prompt, progress=clock)
    step_walls = [b - a for a, b in zip(ends, ends[1:])]

    k = args.profile_step  # 2. one profiled step
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts, schedule=schedule(wait=k, warmup=0, active=1, repeat=1)) as prof:
        marks, inner_clock = step_clock()

        def progress(stage: str, i: int, total: int) -> None:
            inner_clock(stage, i, total)
            if stage == "null-text":
                prof.step()

        VideoDirector(models, cfg).invert(frames, masks, prompt, progress=progress)
    profiled_wall = marks[k + 1] - marks[k]
    rows = prof.key_averages()
    by_key = {r.key: r for r in rows}

    def dev_total(r) -> float:  # noqa: ANN001
        return getattr(r, "device_time_total", getattr(r, "cuda_time_total", 0.0))

    def dev_self(r) -> float:  # noqa: ANN001
        return getattr(r, "self_device_time_total", getattr(r, "self_cuda_time_total", 0.0))

    parts = {lab: {"wall_s": by_key[lab].cpu_time_total / 1e6 if lab in by_key else 0.0,
                   "count": by_key[lab].count if lab in by_key else 0,
                   "gpu_s": dev_total(by_key[lab]) / 1e6 if lab in by_key else 0.0} for lab in LABELS}
    labelled = sum(v["wall_s"] for v in parts.values())
    gpu_busy = sum(dev_self(r) for r in rows if r.key not in LABELS) / 1e6
    syncs = {op: {"host_s": by_key[op].self_cpu_time_total / 1e6, "count": by_key[op].count}
             for op in SYNC_OPS if op in by_key}
    top_host = sorted((r for r in rows if r.key not in LABELS), key=lambda r: -r.self_cpu_time_total)[:15]
    top_gpu = sorted((r for r in rows if r.key not in LABELS), key=lambda r: -dev_self(r))[:15]
    if args.trace:
        tmp = args.trace.with_suffix(".tmp.json")
        prof.export_chrome_trace(str(tmp))
        with open(tmp, "rb") as src, gzip.open(args.trace, "wb") as dst:
            shutil.copyfileobj(src, dst)
        tmp.unlink()

    data = {
        "machine": machine(), "frames": args.frames, "size": args.size, "steps": args.steps,
        "null_inner_steps": args.inner, "dtype": str(dtype), "profiled_step": k,
        "unprofiled_step_wall_s": step_walls, "unprofiled_mean_wall_s_after_step0": sum(step_walls[1:]) / max(1, len(step_walls) - 1),
        "profiled_step_wall_s": profiled_wall, "parts": parts, "labelled_s": labelled,
        "outside_labels_s": profiled_wall - labelled, "gpu_busy_s": gpu_busy, "gpu_idle_s": profiled_wall - gpu_busy,
        "syncs": syncs,
        "top_host_ops": [{"op": r.key, "self_host_ms": r.self_cpu_time_total / 1e3, "count": r.count} for r in top_host],
        "top_gpu_ops": [{"op": r.key, "self_gpu_ms": dev_self(r) / 1e3, "count": r.count} for r in top_gpu],
    }
    table = [("unprofiled step wall (mean of steps 1..)", f"{data['unprofiled_mean_wall_s_after_step0']:.3f} s"),
             ("profiled step wall", f"{profiled_wall:.3f} s")]
    table += [(f"{lab} (x{v['count']})", f"{v['wall_s']:.3f} s wall, {v['gpu_s']:.3f} s GPU") for lab, v in parts.items()]
    table += [("outside every label", f"{data['outside_labels_s']:.3f} s"),
              ("GPU busy (kernels)", f"{gpu_busy:.3f} s"), ("GPU idle", f"{data['gpu_idle_s']:.3f} s")]
    table += [(f"sync {op} (x{v['count']})", f"{v['host_s']:.3f} s host") for op, v in syncs.items()]
    table += [(f"host: {r['op']} (x{r['count']})", f"{r['self_host_ms']:.1f} ms") for r in data["top_host_ops"][:10]]
    table += [(f"GPU: {r['op'][:60]} (x{r['count']})", f"{r['self_gpu_ms']:.1f} ms") for r in data["top_gpu_ops"][:10]]
    name = args.name or ("pivotal_profile_h100" if "H100" in data["machine"].get("gpu", "") else
                         f"pivotal_profile_{device.type}_{args.frames}x{args.size}")
    write(name, data, table)
    for row in table:
        print(f"{row[0]:<70} {row[1]}")


if __name__ == "__main__":
    main()
