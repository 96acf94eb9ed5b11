"""Where the time of one STDG step goes, at full size (issue 5).

The H100 speed run put STDG at about 0.8 s a step, against about 0.3 s expected from one partial
reference forward, one forward with autograd and one partial backward. This script times each part
(CUDA-synchronised, median of ``--repeats``) next to the building blocks it should cost, and adds a
``torch.profiler`` table of one whole STDG call (by GPU time and by host time).

    python benchmarks/stdg_profile.py [--frames 16 --size 512]

Writes ``benchmarks/results/stdg_profile_<gpu>.{json,md}``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, result_name, synthetic_clip, write  # noqa: E402
from speed import random_bundle  # noqa: E402

from videodirector.attention.control import FeatureRecorder, RecordingProcessor  # noqa: E402
from videodirector.attention.processors import installed  # noqa: E402
from videodirector.config import EditConfig  # noqa: E402
from videodirector.guidance.stdg import stdg_guidance, stdg_loss  # noqa: E402
from videodirector.methods.videodirector import VideoDirector, masks_by_tokens  # noqa: E402


def timed(fn, repeats: int) -> float:  # noqa: ANN001
    """Median wall time of ``fn()`` in seconds, synchronised, after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--name", default=None)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    m = random_bundle(device, dtype)
    vd = VideoDirector(m, EditConfig())
    setup = vd._stdg_setup()
    rec = FeatureRecorder(setup.temporal, setup.appearance)
    procs = {l.name: RecordingProcessor(l, rec) for l in [*setup.temporal, *setup.appearance]}
    h = args.size // 8
    g = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, args.frames, h, h, generator=g).to(device)
    z_ref = z + 0.05 * torch.randn(z.shape, generator=g).to(device)
    cond = m.encode_prompt(["a brown bear walking on rocky terrain"]).expand(args.frames, -1, -1)
    masks = synthetic_clip(args.frames, args.size)[1].to(device)
    tok_masks = masks_by_tokens(masks, (h, h))
    t = 501

    def forward() -> None:
        with torch.no_grad():
            m.eps(z, t, cond)

    def null_text_iteration() -> None:
        phi = cond.detach().clone().requires_grad_(True)
        m.eps(z, t, phi).float().square().mean().backward()

    def input_grad() -> None:
        zz = z.detach().requires_grad_(True)
        torch.autograd.grad(m.eps(zz, t, cond).float().square().mean(), zz)

    ref_store: dict = {}

    def reference_forward() -> None:
        nonlocal ref_store
        with torch.no_grad(), rec.capture(stop_early=True) as ref:
            m.eps(z_ref, t, cond)
        ref_store = dict(ref)

    graph: dict = {}

    def recorded_forward() -> None:
        zz = z.detach().requires_grad_(True)
        with rec.capture() as cur:
            m.eps(zz, t, cond)
        graph.update(z=zz, cur=dict(cur))

    def loss_and_backward() -> None:
        recorded_forward()
        loss = stdg_loss(ref_store, graph["cur"], tok_masks, setup)
        torch.autograd.grad(loss, graph["z"])

    def full_stdg() -> None:
        stdg_guidance(m.eps, rec, z, z_ref, t, cond, tok_masks, setup)

    parts = {}
    with installed(m.unet, procs):
        for name, fn in [("forward_no_grad", forward), ("null_text_iteration_fwd_bwd", null_text_iteration),
                         ("input_grad_fwd_bwd_plain", input_grad), ("stdg_reference_forward", reference_forward),
                         ("stdg_recorded_forward", recorded_forward), ("stdg_recorded_forward_loss_backward", loss_and_backward),
                         ("stdg_total", full_stdg)]:
            parts[name] = timed(fn, args.repeats)
            print(f"{name}: {parts[name]:.4f} s", flush=True)
        tables = {}
        if device.type == "cuda":
            from torch.profiler import ProfilerActivity, profile

            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                full_stdg()
                torch.cuda.synchronize()
            for key in ("self_cuda_time_total", "self_cpu_time_total"):
                tables[key] = prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=45)
                print(tables[key], flush=True)
    data = {"machine": machine(), "frames": args.frames, "size": args.size, "dtype": str(dtype),
            "seconds": parts, "profile_tables": tables}
    name = args.name or result_name("stdg_profile", data["machine"], device, args.frames, args.size)
    write(name, data, [(k, f"{v:.4f}") for k, v in parts.items()])


if __name__ == "__main__":
    main()
