"""Where the time of one whole pivotal-tuning step goes, inside the real loop, at full size (issue 5).

The speed run measured 2.63 s per pivotal step at 10 null-text iterations, but the parts timed in
isolation (STDG with ε_c, ten iterations, the final forward) add up to about 2.14 s. This script runs
the real ``VideoDirector.invert`` loop and profiles one whole step with ``torch.profiler``, using the
labels the loop carries (``pivotal.guidance_and_eps_cond``, ``null_text.iteration``,
``null_text.final_forward``). It reports, for that step:

- the host span and the GPU kernel time of each labelled part, and its number of kernels;
- the GPU busy time (union of kernel intervals) against the step's wall time, i.e. how long the GPU
  waits for the host, split into gaps over and under 1 ms;
- the heaviest kernels.

It also records the unprofiled wall time of every step, to check that profiling does not change the picture.

    python benchmarks/pivotal_profile.py [--frames 16 --size 512 --steps 6 --inner 10 --trace trace.json.gz]
    python benchmarks/pivotal_profile.py --reanalyse trace.json.gz benchmarks/results/pivotal_profile_h100.json

Writes ``benchmarks/results/pivotal_profile_<gpu>.{json,md}``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, schedule

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, result_name, synthetic_clip, timed_config, write  # noqa: E402
from speed import random_bundle  # noqa: E402

from videodirector.config import apply_overrides  # noqa: E402
from videodirector.methods.videodirector import VideoDirector  # noqa: E402

LABELS = ("pivotal.guidance_and_eps_cond", "null_text.iteration", "null_text.final_forward")


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
    p.add_argument("--reanalyse", nargs=2, type=Path, metavar=("TRACE", "RESULT_JSON"),
                   help="only recompute the analysis of an earlier run from its trace")
    args = p.parse_args()
    if args.reanalyse:
        reanalyse(*args.reanalyse)
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    models = random_bundle(device, dtype)
    cfg = timed_config(args.steps, args.inner, args.frames, args.size)
    frames, masks = synthetic_clip(args.frames, args.size)
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
    trace = args.trace or Path(tempfile.mkdtemp()) / "trace.json.gz"
    tmp = trace.with_suffix(".tmp.json")
    prof.export_chrome_trace(str(tmp))
    with open(tmp, "rb") as src, gzip.open(trace, "wb") as dst:
        shutil.copyfileobj(src, dst)
    tmp.unlink()
    data = {"machine": machine(), "frames": args.frames, "size": args.size, "steps": args.steps,
            "null_inner_steps": args.inner, "dtype": str(dtype), "profiled_step": k,
            "unprofiled_step_wall_s": step_walls,
            "unprofiled_mean_wall_s_after_step0": sum(step_walls[1:]) / max(1, len(step_walls) - 1),
            "profiled_step_wall_s": profiled_wall}
    report(data, analyse_trace(trace), args.name or result_name("pivotal_profile", data["machine"], device,
                                                                args.frames, args.size))


def _union(intervals: list[tuple[float, float]]) -> float:
    total, cur = 0.0, None
    for s, e in sorted(intervals):
        if cur is None or s > cur[1]:
            total += 0 if cur is None else cur[1] - cur[0]
            cur = [s, e]
        else:
            cur[1] = max(cur[1], e)
    return total + (0 if cur is None else cur[1] - cur[0])


def analyse_trace(path: Path) -> dict:
    """From a Chrome trace of one profiled step: host span and GPU kernel time of every labelled part,
    GPU busy time (union of kernel intervals), kernel counts, idle gaps and the heaviest kernels."""
    events = json.load(gzip.open(path))["traceEvents"]
    step = next(e for e in events if e.get("cat") == "user_annotation" and e["name"].startswith("ProfilerStep"))
    t0, t1 = step["ts"], step["ts"] + step["dur"]
    kernels = sorted((e["ts"], e["ts"] + e["dur"], e["name"]) for e in events
                     if e.get("cat") in ("kernel", "gpu_memset", "gpu_memcpy") and t0 <= e["ts"] < t1 + 1e6)
    parts: dict[str, dict] = {}
    for e in events:
        if e.get("cat") != "user_annotation" or e["name"] not in LABELS:
            continue
        gpu = next((g for g in events if g.get("cat") == "gpu_user_annotation" and g["name"] == e["name"]
                    and abs(g["ts"] - e["ts"]) < 0.5 * e["dur"] + 1e5), None)  # the same range on the GPU timeline
        inside = [(max(s, gpu["ts"]), min(x, gpu["ts"] + gpu["dur"])) for s, x, _ in kernels
                  if gpu and x > gpu["ts"] and s < gpu["ts"] + gpu["dur"]]
        p = parts.setdefault(e["name"], {"count": 0, "host_span_s": 0.0, "gpu_span_s": 0.0, "gpu_kernels_s": 0.0,
                                         "kernels": 0})
        p["count"] += 1
        p["host_span_s"] += e["dur"] / 1e6
        p["gpu_span_s"] += (gpu["dur"] if gpu else 0) / 1e6
        p["gpu_kernels_s"] += _union(inside) / 1e6
        p["kernels"] += len(inside)
    by_name: dict[str, list[float]] = {}
    for s, e, name in kernels:
        by_name.setdefault(name[:80], []).append(e - s)
    top = sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:15]
    busy = _union([(s, e) for s, e, _ in kernels]) / 1e6
    gaps = [b[0] - a[1] for a, b in zip(kernels, kernels[1:]) if b[0] > a[1]]
    return {"profiled_step_host_s": (t1 - t0) / 1e6, "parts": parts, "kernels": len(kernels),
            "gpu_busy_s": busy, "gpu_idle_s": (t1 - t0) / 1e6 - busy,
            "idle_in_gaps_over_1ms_s": sum(g for g in gaps if g > 1000) / 1e6,
            "idle_in_gaps_under_1ms_s": sum(g for g in gaps if g <= 1000) / 1e6,
            "top_kernels": [{"kernel": n, "gpu_s": sum(v) / 1e6, "count": len(v)} for n, v in top]}


def report(data: dict, analysis: dict, name: str) -> None:
    data = {**data, **analysis}
    table = [("unprofiled step wall (mean of steps 1..)", f"{data['unprofiled_mean_wall_s_after_step0']:.3f} s"),
             ("profiled step wall", f"{data['profiled_step_wall_s']:.3f} s"),
             ("kernels in the profiled step", data["kernels"]),
             ("GPU busy (union of kernels)", f"{data['gpu_busy_s']:.3f} s"),
             ("GPU idle", f"{data['gpu_idle_s']:.3f} s ({data['idle_in_gaps_under_1ms_s']:.3f} s in gaps under 1 ms)")]
    table += [(f"{lab} (x{v['count']})", f"host {v['host_span_s']:.3f} s, GPU kernels {v['gpu_kernels_s']:.3f} s "
               f"({v['kernels']} kernels)") for lab, v in data["parts"].items()]
    table += [(f"kernel {r['kernel'][:70]} (x{r['count']})", f"{r['gpu_s'] * 1e3:.1f} ms") for r in data["top_kernels"][:12]]
    write(name, data, table)
    for row in table:
        print(f"{row[0]:<80} {row[1]}")


def reanalyse(trace: Path, result: Path) -> None:
    """Recompute the analysis of an earlier run from its trace, keeping its measured wall times."""
    old = json.loads(result.read_text())
    keep = ("machine", "frames", "size", "steps", "null_inner_steps", "dtype", "profiled_step", "unprofiled_step_wall_s",
            "unprofiled_mean_wall_s_after_step0", "profiled_step_wall_s")
    report({k: old[k] for k in keep}, analyse_trace(trace), result.stem)


if __name__ == "__main__":
    main()
