"""Where the time of editing from a cached inversion goes, and how fast the UNet itself can go.

Full-size random-weight models (as ``speed.py``), bf16, 16 x 512^2, no autograd. Parts (``--parts``):

* ``edit``: the 50-step edit on a synthetic cached inversion (random latents, the negative prompt's embedding
  as null-text, small random ``G_t``), compiled as ``model.compile`` does, each step timed on its own (a
  synchronisation per step). Steps are grouped by what runs on them: SA-I + cross control on 3 branches,
  SA-II + cross control on 4, SA-II alone on 4. The same edit runs twice more: with the cross-attention
  maps formed (``CrossControlProcessor.form_maps``, Eq. 7 as written) and with SA-II's boolean mask at every
  resolution (``edit_with_maps``, ``edit_with_bool_mask``); the latents' largest difference is reported, and each
  arm's own ``gpu_slowdown_s`` (seconds the card was power-capped while that arm ran).
  Beside them, the plain UNet forward at 3 and 4 clips (no control) under the same compile: the difference
  is the control's cost (``unet_s_per_video`` ``compiled b3/b4``).
* ``scopes``: the UNet's seconds per video at batches of 1-4 clips under each compilation: none (eager),
  resnets, feed-forwards and motion modules (:data:`PROBE_BLOCKS`), plus the spatial ``Transformer2DModel`` s
  compiled whole (default processors), and the whole UNet as one graph (batch 4 only; ``--skip-whole``).
* ``sa2``: SA-II's attention at each resolution: the mask carried in extra head dimensions
  (``attention_hiding_keys``, what ``mutual_self_attention`` runs on CUDA from 2,048 tokens), the same with a
  boolean mask (``attention_masking_keys``, what it runs below), an unmasked call over the same ``2N`` keys and
  a plain call over ``N``.

Writes ``benchmarks/results/edit_speed_probe_<gpu>.{json,md}``.

    python benchmarks/edit_speed_probe.py [--parts edit,scopes,sa2] [--skip-whole] [--repeats 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from _common import SlowdownWatch, machine, result_name, synthetic_clip, timed_config, write  # noqa: E402
from speed import SOURCE_PROMPT, TARGET_PROMPT, random_bundle, sync, tiny_bundle  # noqa: E402

import videodirector.attention.control as control  # noqa: E402
from videodirector.diffusion.ddim import linspace_timesteps  # noqa: E402
from videodirector.methods.base import Inversion  # noqa: E402
from videodirector.methods.videodirector import VideoDirector  # noqa: E402
from videodirector.models.compile import compile_blocks  # noqa: E402


PROBE_BLOCKS = ("ResnetBlock2D", "FeedForward", "AnimateDiffTransformer3D")
"""The blocks of ``model.compile`` before it took the transformer blocks too: the ``scopes`` part's ``regional``
variant (today's ``COMPILED_BLOCKS`` add ``BasicTransformerBlock``)."""
PARTS = ("edit", "scopes", "sa2")


def best_of(fn, repeats: int) -> float:  # noqa: ANN001
    """Seconds of the fastest of ``repeats`` calls of ``fn``, after two warm-up calls, each call synchronised."""
    times = []
    for i in range(repeats + 2):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return min(times)


def drop_compiled(unet: torch.nn.Module) -> None:
    """Undo every ``module.compile`` inside ``unet``: each module runs its eager call again."""
    for m in unet.modules():
        m._compiled_call_impl = None


def synthetic_inversion(models, steps: int, frames: int, size: int) -> Inversion:  # noqa: ANN001
    """A cached inversion of the right shapes: what the edit reads, none of what it costs to make."""
    g = torch.Generator().manual_seed(0)
    h = size // 8
    video, masks = synthetic_clip(frames, size)
    neg = models.encode_prompt([""]).cpu()
    return Inversion(
        latents=torch.randn(steps + 1, 4, frames, h, h, generator=g).to(models.dtype),
        masks=masks, source_frames=video,
        null_embeddings=neg[None].expand(steps, 1, *neg.shape[1:]).clone(),
        guidance=(0.01 * torch.randn(steps, 4, frames, h, h, generator=g)).to(models.dtype),
        meta={"source_prompt": SOURCE_PROMPT, "negative_prompt": "",
              "timesteps": linspace_timesteps(steps, models.schedule.num_train_timesteps),
              "settings": {"inversion": {"fast": "none"}}})


def unet_per_video(models, videos: int, frames: int, h: int, repeats: int) -> float:  # noqa: ANN001
    """Seconds per video of one UNet forward at a batch of ``videos`` clips (best of ``repeats`` after two warm-ups)."""
    z = torch.randn(videos, 4, frames, h, h, device=models.device, dtype=models.dtype)
    emb = models.encode_prompt(["a"] * videos).repeat_interleave(frames, 0)
    with torch.no_grad():
        return best_of(lambda: models.eps(z, 500, emb), repeats) / videos


def edit_by_phase(vd: VideoDirector, inv: Inversion) -> tuple[dict, torch.Tensor]:
    """Per-step seconds of one edit (after a warm-up edit), grouped by batch layout and control; its latents."""
    stamps: list[float] = []

    def progress(stage: str, i: int, n: int) -> None:
        sync()
        stamps.append(time.perf_counter())

    vd.edit(inv, TARGET_PROMPT)  # warm-up: compiles the batch layouts
    sync()
    slowdown = SlowdownWatch()  # per arm: an A/B on a power-capped card says which arm was capped
    t0 = time.perf_counter()
    res = vd.edit(inv, TARGET_PROMPT, progress=progress)
    step_s = [b - a for a, b in zip([t0, *stamps[:-1]], stamps)]
    sched = res.info["schedule"]
    sa1, sa2, cross = (range(*sched[k]) for k in ("sa1_steps", "sa2_steps", "cross_steps"))
    groups: dict[str, list[float]] = {}
    for i, s in enumerate(step_s):
        key = ("sa1" if i in sa1 else "sa2" if i in sa2 else "none") + ("+cross" if i in cross else "")
        groups.setdefault(key, []).append(s)
    return {"edit_s": res.timings["edit_s"], "decode_s": res.timings["decode_s"], "step_s": step_s,
            "gpu_slowdown_s": slowdown.since(),
            "phases": {k: {"steps": len(v), "mean_step_s": sum(v) / len(v), "total_s": sum(v)}
                       for k, v in groups.items()}}, res.latents


def masked_attention(device: torch.device, dtype: torch.dtype, frames: int, h: int, repeats: int) -> dict:
    """SA-II's call at each spatial resolution of SD 1.5 (heads 8, width 320/640/1280), two edit branches."""
    out = {}
    g = torch.Generator(device=device).manual_seed(0)
    for side, width in ((h, 320), (h // 2, 640), (h // 4, 1280)):
        n, d = side * side, width // 8
        q, k_r, v_r, k_e, v_e = (torch.randn(2 * frames, 8, n, d, device=device, dtype=dtype, generator=g)
                                 for _ in range(5))
        obj = torch.zeros(2 * frames, n, dtype=torch.bool, device=device)
        obj[:, : n // 4] = True
        keys, values = torch.cat([k_r, k_e], 2), torch.cat([v_r, v_e], 2)
        hidden = torch.cat([obj, torch.zeros_like(obj)], 1)
        out[f"{side}x{side}"] = {
            "extra_dims_s": best_of(lambda: control.attention_hiding_keys(q, [k_r, k_e], [v_r, v_e], hidden), repeats),
            "bool_mask_s": best_of(lambda: control.attention_masking_keys(q, [k_r, k_e], [v_r, v_e], hidden), repeats),
            "unmasked_2n_s": best_of(lambda: F.scaled_dot_product_attention(q, keys, values), repeats),
            "plain_n_s": best_of(lambda: F.scaled_dot_product_attention(q, k_e, v_e), repeats),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    p.add_argument("--skip-whole", action="store_true", help="leave out the whole-UNet compile (the longest compile)")
    p.add_argument("--tiny", action="store_true", help="the test models' widths (checks the script on a CPU)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    parts = args.parts.split(",")
    if unknown := sorted(set(parts) - set(PARTS)):
        p.error(f"unknown part {unknown[0]!r}; choose from {', '.join(PARTS)}")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    models = (tiny_bundle if args.tiny else random_bundle)(device, dtype)
    info = machine()
    h = args.size // 8
    data: dict = {"machine": info, "frames": args.frames, "size": args.size, "steps": args.steps, "dtype": str(dtype)}
    name = result_name("edit_speed_probe", info, device, args.frames, args.size) + ("_tiny" if args.tiny else "")

    slowdown = SlowdownWatch()

    def save() -> None:
        data["gpu_slowdown_s"] = slowdown.since()
        runs = ("edit", "edit_with_maps", "edit_with_bool_mask")
        rows = [(k, v) for k, v in data.items() if k not in ("machine", *runs, "unet_s_per_video", "sa2_attention")]
        for run in runs:
            for k, v in data.get(run, {}).get("phases", {}).items():
                rows.append((f"{run} phase {k}: steps, s/step", f"{v['steps']}, {v['mean_step_s']:.4f}"))
            for k in ("edit_s", "decode_s"):
                if k in data.get(run, {}):
                    rows.append((f"{run} {k}", f"{data[run][k]:.3f}"))
            if run in data:
                rows.append((f"{run} gpu_slowdown_s", data[run].get("gpu_slowdown_s")))
        for k, v in data.get("unet_s_per_video", {}).items():
            rows.append((f"UNet s/video {k}", f"{v:.4f}"))
        for k, v in data.get("sa2_attention", {}).items():
            rows.append((f"SA-II attention {k}: extra dims / bool mask / unmasked 2N / plain N (ms)",
                         " / ".join(f"{1000 * x:.2f}" for x in v.values())))
        write(name, data, rows, args.out)

    per_video: dict[str, float] = {}
    data["unet_s_per_video"] = per_video
    if "edit" in parts:
        compile_blocks(models.unet)  # what model.compile does
        for v in (3, 4):
            per_video[f"compiled b{v}"] = unet_per_video(models, v, args.frames, h, args.repeats)
        cfg = timed_config(args.steps, 1, args.frames, args.size)
        vd = VideoDirector(models, cfg)
        inv = synthetic_inversion(models, args.steps, args.frames, args.size)
        data["edit"], latents = edit_by_phase(vd, inv)
        save()
        before, control.CrossControlProcessor.form_maps = control.CrossControlProcessor.form_maps, True
        try:
            data["edit_with_maps"], other = edit_by_phase(vd, inv)
            data["maps_max_abs_diff"] = float((other - latents).abs().max())
        finally:
            control.CrossControlProcessor.form_maps = before
        save()
        from_tokens, control.FLASH_MASK_MIN_TOKENS = control.FLASH_MASK_MIN_TOKENS, sys.maxsize  # the boolean mask everywhere
        try:
            data["edit_with_bool_mask"], other = edit_by_phase(vd, inv)
            data["bool_mask_max_abs_diff"] = float((other - latents).abs().max())
        finally:
            control.FLASH_MASK_MIN_TOKENS = from_tokens
        data["latents_max_abs"] = float(latents.abs().max())
        save()
    if "sa2" in parts:
        data["sa2_attention"] = masked_attention(device, dtype, args.frames, h, args.repeats)
        save()
    if "scopes" in parts:
        drop_compiled(models.unet)  # the edit part's compile
        for v in (1, 2, 3, 4):
            per_video[f"eager b{v}"] = unet_per_video(models, v, args.frames, h, args.repeats)
        save()
        compile_blocks(models.unet, PROBE_BLOCKS)
        for v in (1, 2, 3, 4):
            per_video[f"regional b{v}"] = unet_per_video(models, v, args.frames, h, args.repeats)
        save()
        spatial = [m for m in models.unet.modules() if type(m).__name__ == "Transformer2DModel"]
        for m in spatial:
            m.compile(dynamic=False)
        for v in (2, 3, 4):
            per_video[f"regional+spatial b{v}"] = unet_per_video(models, v, args.frames, h, args.repeats)
        save()
        if not args.skip_whole:
            drop_compiled(models.unet)
            models.unet.compile(dynamic=False)
            per_video["whole b4"] = unet_per_video(models, 4, args.frames, h, args.repeats)
            save()
    print(Path(args.out or "benchmarks/results") / f"{name}.md")


if __name__ == "__main__":
    main()
