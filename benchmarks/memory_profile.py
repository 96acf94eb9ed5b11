"""Where the peak memory of a VideoDirector edit goes, at full size (issue 5).

``benchmarks/speed.py`` measured a 23.3 GB peak (16 x 512 x 512, bf16, H100) and, per stage, ``stage_peak_gb``.
This script takes the pivotal step apart, on the same random-weight SD 1.5 + AnimateDiff v3 models:

- **weights**: what the UNet, the VAE and the text encoder hold;
- **inversion**: a real 3-step ``VideoDirector.invert`` (1 null-text iteration a step), with the peak of each
  stage (the peak counter reset between stages); it also gives the latents the parts below work on;
- **(a) one null-text iteration** (forward + backward to the embedding, with the STDG recording processors
  installed as in the loop), without and with gradient checkpointing (``enable_gradient_checkpointing``), and
  with diffusers' own GEGLU instead of ``model.recompute_feedforward``'s;
- **(b) one STDG gradient** (reference forward, recorded forward, loss, backward to the latent), and the same
  with autograd over the whole recorded forward and diffusers' GEGLU (how it was before both savings);
- **(c) the VAE**: encoding the 16 frames at once (as ``ModelBundle.encode_video`` does), decoding them at once,
  and in chunks of ``--chunk`` (4, as ``ModelBundle.decode_latents`` does);
- **(d) the stored state**: the DDIM-inversion latents, per-step null embeddings and STDG guidance kept for
  editing, measured at the inversion's steps and scaled to ``--steps`` (50);
- **(e)** on CUDA (``--no-history`` leaves it out): ``torch.cuda.memory._record_memory_history`` over one pivotal
  step (an STDG gradient and a null-text iteration), replayed to the moment of the peak: the live tensors then,
  grouped by the innermost stack frame outside PyTorch that allocated them (top 15). Memory held before the
  recording started (weights, stored state, inputs) is one row.

Each figure is the peak over the call (``torch.cuda.max_memory_allocated``, reset before it) and the peak above
what was allocated when it began, after one unmeasured call of the same thing (one-time workspaces). On the CPU
(``--small``: the small test widths, 8 frames of 64 x 64) the figures are the process's resident set size sampled
by a thread, so they show that the script runs rather than where tensor memory goes; (e) is left out.

    python benchmarks/memory_profile.py                 # one H200: memory_profile_h200.{json,md}, about 2 minutes
    python benchmarks/memory_profile.py --small --out /tmp/mp   # CPU check, seconds
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import (  # noqa: E402
    GB, RESULTS, STAGES, MemoryMeter, StageTracker, fmt, machine, result_name, synthetic_clip, timed_config,
    track_videodirector, write,
)
from speed import SOURCE_PROMPT, random_bundle, sync, tiny_bundle  # noqa: E402

from videodirector.attention.control import FeatureRecorder, RecordingProcessor  # noqa: E402
from videodirector.attention.processors import installed  # noqa: E402
from videodirector.diffusion.ddim import step_size  # noqa: E402
from videodirector.diffusion.nulltext import null_text_step  # noqa: E402
from videodirector.guidance.stdg import stdg_guidance  # noqa: E402
from videodirector.methods.videodirector import VideoDirector, masks_by_tokens  # noqa: E402
from videodirector.models.feedforward import set_recompute_feedforward  # noqa: E402

TOP = 15


def measure(fn: Callable[[], Any], meter: MemoryMeter, warm: bool = True) -> dict[str, float]:
    """Peak memory of ``fn()`` (absolute, and above what was allocated when it began) and its wall time, after one
    unmeasured call when ``warm``."""
    if warm:
        fn()
        sync()
    if meter.cuda:
        torch.cuda.empty_cache()
    meter.reset()
    start = meter.current()
    t0 = time.perf_counter()
    fn()
    sync()
    seconds = time.perf_counter() - t0
    peak = meter.peak()
    return {"peak_gb": peak / GB, "above_start_gb": (peak - start) / GB, "start_gb": start / GB, "s": seconds}


def module_gb(mod: torch.nn.Module) -> float:
    return sum(t.numel() * t.element_size() for t in [*mod.parameters(), *mod.buffers()]) / GB


# ------------------------------------------------------------------------------------------- (e) history


def _site(frames: list[dict]) -> str:
    """The innermost frame outside PyTorch's own Python code, as ``package/file.py:line function``."""
    for f in frames:
        name = f.get("filename", "")
        norm = name.replace(os.sep, "/")
        if "/torch/" in norm or norm.startswith("<") or norm.endswith(("contextlib.py", "functools.py")):
            continue
        for cut in ("site-packages/", "/src/", "/benchmarks/"):
            if cut in norm:
                norm = ("" if cut == "site-packages/" else cut.strip("/") + "/") + norm.split(cut, 1)[1]
                break
        else:
            norm = norm.rsplit("/", 1)[-1]
        return f"{norm}:{f.get('line', '?')} {f.get('name', '?')}"
    return "(PyTorch internals: " + (frames[0].get("name", "?") if frames else "no stack") + ")"


def live_at_peak(snapshot: dict, device: int = 0) -> tuple[int, list[tuple[int, list[dict]]], int]:
    """Replay the allocation trace: the most bytes live at once among the allocations it saw, the live
    ``(size, frames)`` at that moment, and the number of trace entries."""
    trace = snapshot["device_traces"][device]

    def events():  # noqa: ANN202
        live: dict[int, tuple[int, list[dict]]] = {}
        cur = 0
        for i, e in enumerate(trace):
            a, addr = e["action"], e.get("addr")  # an "oom" entry has no address
            if a == "alloc":
                live[addr] = (e["size"], e.get("frames", []))
                cur += e["size"]
            elif a in ("free_requested", "free_completed") and addr in live:
                cur -= live.pop(addr)[0]
            yield i, cur, live

    best, at = 0, -1
    for i, cur, _ in events():
        if cur > best:
            best, at = cur, i
    for i, _, live in events():
        if i == at:
            return best, list(live.values()), len(trace)
    return 0, [], len(trace)


def history(fn: Callable[[], Any], max_entries: int) -> dict[str, Any]:
    """Record the allocations of ``fn()`` and summarise the live tensors at its peak by allocation site."""
    fn()  # one-time workspaces out of the way
    sync()
    torch.cuda.empty_cache()
    kwargs = {"context": "all", "stacks": "python", "max_entries": max_entries}
    try:
        torch.cuda.memory._record_memory_history(enabled="all", clear_history=True, **kwargs)
    except TypeError:  # older PyTorch
        torch.cuda.memory._record_memory_history(enabled="all", **kwargs)
    held = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    try:
        fn()
        sync()
        snapshot = torch.cuda.memory._snapshot()
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    measured_peak = torch.cuda.max_memory_allocated()
    peak_live, live, entries = live_at_peak(snapshot, torch.cuda.current_device())
    groups: dict[str, list[int]] = {}
    for size, frames in live:
        groups.setdefault(_site(frames), []).append(size)
    rows = sorted(groups.items(), key=lambda kv: -sum(kv[1]))
    top = [{"site": "(held before the step: weights, stored state, inputs)", "tensors": None, "gb": held / GB,
            "largest_mb": None}]
    top += [{"site": k, "tensors": len(v), "gb": sum(v) / GB, "largest_mb": max(v) / 2**20} for k, v in rows[:TOP]]
    rest = rows[TOP:]
    if rest:
        top.append({"site": f"({len(rest)} other sites)", "tensors": sum(len(v) for _, v in rest),
                    "gb": sum(sum(v) for _, v in rest) / GB, "largest_mb": max(max(v) for _, v in rest) / 2**20})
    return {"region": "one pivotal step: an STDG gradient, then a null-text iteration", "trace_entries": entries,
            "trace_may_be_truncated": entries >= max_entries, "measured_peak_gb": measured_peak / GB,
            "replayed_peak_gb": (held + peak_live) / GB, "held_before_gb": held / GB, "top": top,
            "note": "frees of tensors allocated before the recording are not in the trace, so the held row can "
                    "overstate what was still held at the peak by what the step freed of it"}


def history_table(h: dict[str, Any]) -> str:
    lines = ["", f"## Live tensors at the peak of {h['region']}", "",
             f"measured peak {h['measured_peak_gb']:.2f} GB, replayed {h['replayed_peak_gb']:.2f} GB "
             f"({h['trace_entries']} trace entries)", "",
             "| allocation site | tensors | GB | largest (MB) |", "|---|---|---|---|"]
    for r in h["top"]:
        tensors = "" if r["tensors"] is None else r["tensors"]
        largest = "" if r["largest_mb"] is None else f"{r['largest_mb']:.1f}"
        lines.append(f"| `{r['site']}` | {tensors} | {r['gb']:.3f} | {largest} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------ main


def main() -> None:  # noqa: PLR0915
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", action="store_true", help="the small test widths, 8 frames of 64 x 64 (CPU check)")
    p.add_argument("--frames", type=int, default=None, help="default 16 (8 with --small)")
    p.add_argument("--size", type=int, default=None, help="default 512 (64 with --small)")
    p.add_argument("--chunk", type=int, default=4, help="frames per VAE decode call in the chunked decode")
    p.add_argument("--steps", type=int, default=50, help="DDIM steps the stored state is scaled to")
    p.add_argument("--invert-steps", type=int, default=3, help="steps of the real inversion (at least 2)")
    p.add_argument("--no-history", action="store_true", help="leave out (e), the allocation history")
    p.add_argument("--history-entries", type=int, default=2_000_000, help="trace entries kept by (e)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--name", default=None)
    p.add_argument("--out", "--results", dest="out", type=Path, default=RESULTS)
    args = p.parse_args()
    frames_n = args.frames or (8 if args.small else 16)
    size = args.size or (64 if args.small else 512)
    T = max(2, args.invert_steps)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    m = (tiny_bundle if args.small else random_bundle)(device, dtype)
    meter = MemoryMeter(device)
    info = machine()
    data: dict[str, Any] = {"machine": info, "frames": frames_n, "size": size, "dtype": str(dtype), "small": args.small,
                            "memory_measure": meter.kind, "chunk": args.chunk, "steps": args.steps, "invert_steps": T}
    data["weights_gb"] = {k: module_gb(getattr(m, k)) for k in ("unet", "vae", "text_encoder")}
    data["weights_gb"]["total"] = sum(data["weights_gb"].values())

    # the inversion: a real short one, per stage (and the latents for the parts below)
    cfg = timed_config(T, 1, frames_n, size)
    vd = VideoDirector(m, cfg)
    frames, masks = synthetic_clip(frames_n, size)
    vd.invert(frames, masks, SOURCE_PROMPT)  # warm-up
    if meter.cuda:
        torch.cuda.empty_cache()
    before = meter.current()
    tracker = StageTracker(meter)
    with track_videodirector(m, tracker), tracker.stage("total"):
        inv = vd.invert(frames, masks, SOURCE_PROMPT)
        sync()
    peaks = tracker.peak_gb()
    data["inversion_stage_peak_gb"] = {**{k: peaks[k] for k in STAGES if k in peaks}, "total": peaks["total"]}
    data["inversion_memory_held_gb"] = (meter.current() - before) / GB

    # (d) stored state, measured at T steps and scaled to --steps
    counts = {"latents": (T + 1, args.steps + 1), "null_embeddings": (T, args.steps), "guidance": (T, args.steps),
              "reconstruction": (1, 1)}
    state = {}
    for k, (n_now, n_at) in counts.items():
        t = getattr(inv, k)
        if t is not None:
            state[k] = {"shape": list(t.shape), f"shape_at_{args.steps}_steps": [n_at, *t.shape[1:]],
                        "device": str(t.device), "dtype": str(t.dtype),
                        "gb": t.numel() * t.element_size() / GB, f"gb_at_{args.steps}_steps": t.numel() * t.element_size()
                        / n_now * n_at / GB}
    data["stored_state"] = state
    data["stored_state_gb_at_steps"] = sum(v[f"gb_at_{args.steps}_steps"] for v in state.values())

    # one pivotal step's parts, at step 1 (step 0 has no STDG), as the loop sets them up
    s, iv = cfg.stdg, cfg.inversion
    delta = step_size(m.schedule, T)
    i, t = 1, inv.meta["timesteps"][1]
    lat = inv.latents.to(device)
    z_ref, target = lat[T - i][None], lat[T - i - 1][None]
    z = z_ref + 0.01 * torch.randn(z_ref.shape, generator=torch.Generator().manual_seed(0)).to(z_ref)
    a_t, a_p = m.schedule.alpha(t), m.schedule.alpha(t - delta)
    cond, neg = m.encode_prompt([SOURCE_PROMPT, cfg.prompts.negative]).chunk(2)
    cond_f = cond.expand(frames_n, -1, -1)
    phi = neg.expand(frames_n, -1, -1).clone()
    latent_hw = tuple(lat.shape[-2:])
    tok_masks = {k: v.to(device) for k, v in masks_by_tokens(masks.to(device), latent_hw).items()}
    setup = vd._stdg_setup()
    rec = FeatureRecorder(setup.temporal, setup.appearance)
    procs = {l.name: RecordingProcessor(l, rec) for l in [*setup.temporal, *setup.appearance]}
    with torch.no_grad():
        eps_c = m.eps(z, t, cond_f)
    g = torch.zeros_like(z)

    def stdg(full_graph: bool = False) -> None:
        stdg_guidance(m.eps, rec, z, z_ref, t, cond_f, tok_masks, setup, s.threshold, full_graph=full_graph)

    def null_iteration() -> None:  # one iteration (inner_steps=1, never stopping early) and the step's final forward
        null_text_step(lambda zz, e: m.eps(zz, t, e), eps_c, z, target, phi, a_t, a_p, g, s.guidance_scale,
                       iv.guidance_scale, iv.null_lr, 1, -1.0)

    with installed(m.unet, procs):
        data["null_text_iteration"] = {"no_checkpointing": measure(null_iteration, meter)}
        m.unet.enable_gradient_checkpointing()
        m.unet.train()  # as model.gradient_checkpointing does
        try:
            data["null_text_iteration"]["gradient_checkpointing"] = measure(null_iteration, meter)
        finally:
            m.unet.disable_gradient_checkpointing()
            m.unet.eval()
        data["stdg_gradient"] = measure(stdg, meter)
        set_recompute_feedforward(m.unet, False)  # as before model.recompute_feedforward and the STDG tail cut
        try:
            data["null_text_iteration"]["without_feedforward_recompute"] = measure(null_iteration, meter)
            data["stdg_gradient_full_graph_without_feedforward_recompute"] = measure(lambda: stdg(True), meter)
        finally:
            set_recompute_feedforward(m.unet, True)
        if meter.cuda and not args.no_history:
            data["history"] = history(lambda: (stdg(), null_iteration()), args.history_entries)
        else:
            data["history"] = "left out: " + ("--no-history" if meter.cuda else "CUDA only")

    # (c) the VAE
    z0 = lat[0][None]
    data["vae"] = {f"encode_{frames_n}_frames_at_once": measure(lambda: m.encode_video(frames), meter),
                   f"decode_{frames_n}_frames_at_once": measure(lambda: m.decode_latents(z0, chunk=frames_n), meter),
                   f"decode_in_chunks_of_{args.chunk}": measure(lambda: m.decode_latents(z0, chunk=args.chunk), meter)}
    meter.close()

    name = args.name or result_name("memory_profile", info, device, frames_n, size) + ("_small" if args.small else "")
    rows: list[tuple[str, Any]] = [(f"weights {k} (GB)", fmt(v)) for k, v in data["weights_gb"].items()]
    rows += [(f"inversion ({T} steps) stage peak {k} (GB)", fmt(v)) for k, v in data["inversion_stage_peak_gb"].items()]

    def cell(r: dict) -> str:
        return f"peak {r['peak_gb']:.2f} GB, {r['above_start_gb']:.2f} GB above its start, {r['s']:.3f} s"

    rows += [(f"(a) null-text iteration, {k.replace('_', ' ')}", cell(v)) for k, v in data["null_text_iteration"].items()]
    rows.append(("(b) one STDG gradient", cell(data["stdg_gradient"])))
    rows.append(("(b) one STDG gradient, whole forward with autograd, stock GEGLU",
                 cell(data["stdg_gradient_full_graph_without_feedforward_recompute"])))
    rows += [(f"(c) VAE {k.replace('_', ' ')}", cell(v)) for k, v in data["vae"].items()]
    rows += [(f"(d) stored {k} {v[f'shape_at_{args.steps}_steps']} (GB)", fmt(v[f"gb_at_{args.steps}_steps"]))
             for k, v in state.items()]
    rows.append((f"(d) stored state, total at {args.steps} steps (GB)", fmt(data["stored_state_gb_at_steps"])))
    rows.append(("memory measure", data["memory_measure"]))
    path = write(name, data, rows, args.out)
    if isinstance(data["history"], dict):
        md = path.with_suffix(".md")
        md.write_text(md.read_text() + history_table(data["history"]))
    else:
        rows.append(("(e) allocation history", data["history"]))
    print(f"{path}\n" + "\n".join(f"  {k:<60} {v}" for k, v in rows), flush=True)
    if isinstance(data["history"], dict):
        print(history_table(data["history"]))


if __name__ == "__main__":
    main()
