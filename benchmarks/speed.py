"""Full-size speed and memory of a VideoDirector edit (issue 5).

Builds the real architectures from their configs: SD 1.5 UNet + AnimateDiff v3 motion adapter, the SD
VAE and a CLIP ViT-L/14 text encoder. Weights are random, or real when ``--base``/``--motion-adapter``
are given. Then it runs the complete pipeline on a 16 x 512 x 512 clip with 50 steps:

- VAE encode;
- DDIM inversion;
- null-text optimisation with STDG, fixed at 10 inner iterations per step (the worst case: random
  weights make early stopping meaningless);
- editing with SA-I/SA-II and cross-attention control;
- decode.

A short warm-up run (5 steps) comes first and is reported as ``warmup_s`` (with ``--compile``: also
``compile_s``, the one-time compilation), not counted. Two more (warmed)
5-step runs at 1 and at 10 inner iterations give the cost of one null-text iteration, from which
``estimated_at_mean_inner_s`` scales the worst case to ``--mean-inner`` iterations per step (the mean
that early stopping gives on the ShapeWorld suite, read from the bench results when present).

Writes ``benchmarks/results/speed_<gpu>.json`` and a markdown table. With ``--reference`` the same
inputs also run in the official cost structure (``inversion.reference_cost``). The script reports
the ratio and the largest output difference.

    python benchmarks/speed.py [--frames 16 --size 512 --steps 50 --reference --fast]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import NEVER_STOP_EARLY, machine, result_name, synthetic_clip, write  # noqa: E402

from videodirector.config import EditConfig, apply_overrides  # noqa: E402
from videodirector.diffusion.ddim import NoiseSchedule  # noqa: E402
from videodirector.methods.videodirector import VideoDirector  # noqa: E402
from videodirector.models.compile import compile_blocks  # noqa: E402
from videodirector.models.loading import ANIMATEDIFF_SCHEDULER, ModelBundle, load_models  # noqa: E402
from videodirector.models.tokenizer import build_clip_tokenizer  # noqa: E402

SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=[320, 640, 1280, 1280],
                 down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                 up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3, cross_attention_dim=768,
                 attention_head_dim=8)
ADAPTER_V3 = dict(block_out_channels=[320, 640, 1280, 1280], motion_layers_per_block=2, motion_num_attention_heads=8,
                  motion_norm_num_groups=32, motion_max_seq_length=32, use_motion_mid_block=False)
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[128, 256, 512, 512],
              down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2,
              sample_size=512, scaling_factor=0.18215)
CLIP_L = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
              max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu")
WORDS = "a brown bear walking on rocky terrain next to stone wall tiger".split()


def random_bundle(device: torch.device, dtype: torch.dtype) -> ModelBundle:
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel, UNetMotionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNetMotionModel.from_unet2d(UNet2DConditionModel(**SD15_UNET), MotionAdapter(**ADAPTER_V3))
    vae = AutoencoderKL(**SD_VAE)
    text = CLIPTextModel(CLIPTextConfig(**CLIP_L))
    tok = CLIPTokenizer.from_pretrained(build_clip_tokenizer(WORDS, tempfile.mkdtemp()))
    for mod in (unet, vae, text):
        mod.requires_grad_(False).eval().to(device=device, dtype=dtype)
    return ModelBundle(unet, vae, text, tok, NoiseSchedule.from_scheduler_config(ANIMATEDIFF_SCHEDULER), device, dtype,
                       {"base": "random:sd15", "motion_adapter": "random:v3"})


def add_estimate(data: dict, bench: Path, mean_inner: float | None = None) -> None:
    """``estimated_at_mean_inner_s``: the worst case with ``inner - mean`` null-text iterations fewer per step,
    at the measured cost of one iteration; the mean comes from a ShapeWorld bench run of ``videodirector``."""
    if mean_inner is None and bench.is_file():
        result = json.loads(bench.read_text())
        mean_inner = result["summary"]["mean_null_inner_iterations"]["mean"]
        data["mean_inner_source"] = f"{bench.parent.name}/{bench.name} ({len(result['cases'])} cases)"
    if mean_inner is not None:
        data["mean_inner_iterations"] = mean_inner
        data["estimated_at_mean_inner_s"] = (data["end_to_end_s"] - data["null_text_iteration_s"] * data["steps"]
                                             * (data["null_inner_steps"] - mean_inner))


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run(vd: VideoDirector, frames: torch.Tensor, masks: torch.Tensor) -> dict:
    sync()
    t0 = time.perf_counter()
    inv = vd.invert(frames, masks, "A brown bear, walking on rocky terrain, next to a stone wall.")
    sync()
    t_inv = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = vd.edit(inv, "A tiger, walking on rocky terrain, next to a stone wall.")
    sync()
    t_edit = time.perf_counter() - t0
    return {"inversion": inv, "result": res, "invert_s": t_inv, "edit_only_s": t_edit,
            "stages": {**inv.meta["timings"], **res.timings}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--inner", type=int, default=10)
    p.add_argument("--reference", action="store_true", help="also run the official cost structure")
    p.add_argument("--reference-steps", type=int, default=None,
                   help="run the reference comparison at this many steps (both modes; default: --steps)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet; the warm-up (which compiles) is reported as compile_s, not counted")
    p.add_argument("--fast", action="store_true", help="also time --fast-inversion direct")
    p.add_argument("--attention-backend", default="default", choices=["default", "cudnn", "flash", "efficient"],
                   help="model.attention_backend: the SDPA kernel tried first (benchmarks/edit_profile.py compares them)")
    p.add_argument("--channels-last", action="store_true", help="model.channels_last: channels-last UNet weights")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--base", default=None)
    p.add_argument("--motion-adapter", default=None)
    p.add_argument("--name", default=None)
    p.add_argument("--mean-inner", type=float, default=None,
                   help="mean null-text iterations per step under early stopping (default: from the bench results)")
    suites = [Path(__file__).parent / "results" / s / "videodirector.json" for s in ("shapeworld-v2", "shapeworld-v1")]
    p.add_argument("--bench-results", type=Path, default=next((f for f in suites if f.is_file()), suites[0]),
                   help="bench result of videodirector whose mean null-text iterations scale the estimate "
                        "(default: the newest suite with results)")
    p.add_argument("--estimate-only", type=Path, default=None, metavar="SPEED_JSON",
                   help="only (re)compute the estimate in an existing result file from --bench-results")
    args = p.parse_args()
    if args.estimate_only:
        data = json.loads(args.estimate_only.read_text())
        add_estimate(data, args.bench_results, args.mean_inner)
        args.estimate_only.write_text(json.dumps(data, indent=2) + "\n")
        print({k: data.get(k) for k in ("mean_inner_iterations", "estimated_at_mean_inner_s", "mean_inner_source")})
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    over = {"inversion.num_steps": args.steps, "inversion.null_inner_steps": args.inner, **NEVER_STOP_EARLY,
            "input.height": args.size, "input.width": args.size, "input.num_frames": args.frames}
    cfg = apply_overrides(EditConfig(), over)
    if args.base:
        cfg = apply_overrides(cfg, {"model.base": args.base, "model.motion_adapter": args.motion_adapter,
                                    "model.device": str(device)})
        models = load_models(cfg.model)
    else:
        models = random_bundle(device, dtype)
    models.attention_backend = args.attention_backend
    if args.channels_last:
        models.unet.to(memory_format=torch.channels_last)
    if args.compile:
        compile_blocks(models.unet)
    if args.gradient_checkpointing:
        models.unet.enable_gradient_checkpointing()
        models.unet.train()
    frames, masks = synthetic_clip(args.frames, args.size)
    short = {"inversion.num_steps": 5, "inversion.null_inner_steps": 1}
    t0 = time.perf_counter()
    warm = run(VideoDirector(models, apply_overrides(cfg, short)), frames, masks)  # cuDNN/cuBLAS set-up, not counted
    warmup_s = time.perf_counter() - t0
    # one null-text iteration: two warmed 5-step runs at 1 and 10 iterations (the warm-up run itself carries
    # one-time set-up, which made the earlier estimate, taken against it, too low: 0.173 s against 0.198 s of
    # GPU work per iteration in benchmarks/pivotal_profile.py)
    p1 = run(VideoDirector(models, apply_overrides(cfg, short)), frames, masks)
    p10 = run(VideoDirector(models, apply_overrides(cfg, {**short, "inversion.null_inner_steps": 10})), frames, masks)
    per_iter = (p10["stages"]["pivotal_tuning_s"] - p1["stages"]["pivotal_tuning_s"]) / (5 * 9)
    del warm, p1, p10
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    out = run(VideoDirector(models, cfg), frames, masks)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    data = {"machine": machine(), "frames": args.frames, "size": args.size, "steps": args.steps,
            "null_inner_steps": args.inner, "dtype": str(dtype), "compiled": args.compile,
            "attention_backend": args.attention_backend, "channels_last": args.channels_last,
            "end_to_end_s": out["invert_s"] + out["edit_only_s"], "edit_only_s": out["edit_only_s"],
            "peak_gb": peak, "warmup_s": warmup_s, "null_text_iteration_s": per_iter, "stages_s": out["stages"], "targets": {"end_to_end_s": 150, "peak_gb": 24,
                                                                   "edit_only_s": 16, "reference_ratio": 1.6}}
    if args.compile:  # the warm-up run compiled the graphs
        from torch._dynamo.utils import counters

        data["compile_s"] = warmup_s
        data["compiled_graphs"] = counters["stats"]["unique_graphs"]
        data["graph_breaks"] = sum(counters["graph_break"].values())
    add_estimate(data, args.bench_results, args.mean_inner)
    # the headline (speed_h100) is the compiled run; an eager run is speed_h100_eager
    name = args.name or result_name("speed", data["machine"], device, args.frames, args.size) + \
        ("" if args.compile or device.type != "cuda" else "_eager")

    def save() -> None:  # after each part, so a run cut short still leaves its numbers
        rows = [(k, f"{v:.2f}" if isinstance(v, float) else v) for k, v in data.items()
                if k not in ("machine", "stages_s", "targets")]
        rows += [(f"stage {k}", f"{v:.2f}") for k, v in out["stages"].items()]
        write(name, data, rows)
        print({k: v for k, v in data.items() if k not in ("machine", "stages_s")}, flush=True)

    save()
    if args.fast:
        fast = run(VideoDirector(models, apply_overrides(cfg, {"inversion.fast": "direct"})), frames, masks)
        data["fast_direct_end_to_end_s"] = fast["invert_s"] + fast["edit_only_s"]
        save()
    if args.reference:
        ref_cfg, opt = cfg, out
        if args.reference_steps and args.reference_steps != args.steps:
            ref_cfg = apply_overrides(cfg, {"inversion.num_steps": args.reference_steps})
            opt = run(VideoDirector(models, ref_cfg), frames, masks)
            data["reference_steps"] = args.reference_steps
            data["optimized_at_reference_steps_s"] = opt["invert_s"] + opt["edit_only_s"]
        ref = run(VideoDirector(models, apply_overrides(ref_cfg, {"inversion.reference_cost": True})), frames, masks)
        data["reference_s"] = ref["invert_s"] + ref["edit_only_s"]
        data["reference_ratio"] = data["reference_s"] / (opt["invert_s"] + opt["edit_only_s"])
        data["reference_max_abs_diff"] = float((ref["result"].latents - opt["result"].latents).abs().max())
        save()


if __name__ == "__main__":
    main()
