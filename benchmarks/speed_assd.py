"""ASSD end to end at full size on one GPU: time and peak memory, random weights built from the real configs.

Two settings, one command:

* **ModelScope**: the ``ali-vilab/text-to-video-ms-1.7b`` UNet3D architecture (``block_out_channels``
  [320, 640, 1280, 1280], ``attention_head_dim`` 64, ``cross_attention_dim`` 1024, OpenCLIP-H-sized text tower),
  16 frames at 256² (latents 32²), with SD 1.5 (its UNet and CLIP-L-sized text tower) on the same latents,
  the paper's 200 iterations, bf16. Targets (issue 18): <= 60 s end to end and <= 24 GB peak on one H100/H200.
* **AnimateDiff**: SD 1.5 + the AnimateDiff v3 motion adapter at 16x512² (latents 64²), the toolkit's default
  models; the first ``--animatediff-iterations`` iterations are timed and the rest extrapolated (the JSON says
  which), so that the whole script stays under two minutes on an H200.

End to end = E(X) + the distillation (text encoding, every iteration) + D(Z), after the models are on the GPU
(no weights are read: the models are random, built on the GPU). Peak = ``torch.cuda.max_memory_allocated``.

    python benchmarks/speed_assd.py            # GPU: writes benchmarks/results/speed_assd_<gpu>.json and .md
    python benchmarks/speed_assd.py --tiny     # CPU smoke test with tiny models: speed_assd_cpu_tiny.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import GB, gpu_slug, machine, synthetic_clip, write  # noqa: E402

from videodirector.config import EditConfig, apply_overrides  # noqa: E402
from videodirector.diffusion.ddim import NoiseSchedule  # noqa: E402
from videodirector.methods.assd import ASSD  # noqa: E402
from videodirector.models.loading import ANIMATEDIFF_SCHEDULER, ImageGuidance, ModelBundle  # noqa: E402
from videodirector.models.tokenizer import build_clip_tokenizer  # noqa: E402

MODELSCOPE_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                        "beta_schedule": "scaled_linear", "set_alpha_to_one": False, "steps_offset": 1,
                        "clip_sample": False, "prediction_type": "epsilon"}
"""``ali-vilab/text-to-video-ms-1.7b`` ``scheduler/scheduler_config.json`` (the same ᾱ as SD 1.5's)."""

SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                 block_out_channels=[320, 640, 1280, 1280],
                 down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
                 up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
                 cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32)
MODELSCOPE_UNET = dict(sample_size=32, in_channels=4, out_channels=4, layers_per_block=2,
                       block_out_channels=[320, 640, 1280, 1280],
                       down_block_types=["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
                       up_block_types=["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3,
                       cross_attention_dim=1024, attention_head_dim=64, norm_num_groups=32)
ANIMATEDIFF_V3_ADAPTER = dict(block_out_channels=[320, 640, 1280, 1280], motion_layers_per_block=2,
                              motion_num_attention_heads=8, motion_norm_num_groups=32, motion_max_seq_length=32,
                              use_motion_mid_block=False)
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[128, 256, 512, 512],
              down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2,
              norm_num_groups=32, sample_size=512, scaling_factor=0.18215)
OPENCLIP_H_TEXT = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23, num_attention_heads=16)
CLIP_L_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)

TINY_UNET2D = dict(SD15_UNET, block_out_channels=[32, 64, 64, 64], cross_attention_dim=32, attention_head_dim=8,
                   sample_size=8)
TINY_UNET3D = dict(MODELSCOPE_UNET, block_out_channels=[32, 64, 64, 64], cross_attention_dim=32, attention_head_dim=8,
                   sample_size=8)
TINY_ADAPTER = dict(ANIMATEDIFF_V3_ADAPTER, block_out_channels=[32, 64, 64, 64])
TINY_VAE = dict(SD_VAE, block_out_channels=[32, 32, 32, 32], layers_per_block=1, sample_size=64)
TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)

WORDS = "a cat dog in the grass sun".split()


def text_tower(spec: dict, tokenizer_dir: Path):  # noqa: ANN201
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(build_clip_tokenizer(WORDS, tokenizer_dir))
    n = len(tok)
    return CLIPTextModel(CLIPTextConfig(vocab_size=n, max_position_embeddings=77, bos_token_id=n - 2,
                                        eos_token_id=n - 1, pad_token_id=n - 1, **spec)), tok


def build(kind: str, tiny: bool, device: torch.device, dtype: torch.dtype, tmp: Path) -> tuple[ModelBundle, ImageGuidance]:
    """Random-weight video bundle and SD 1.5 image guidance, built directly on ``device``."""
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel, UNet3DConditionModel, UNetMotionModel

    torch.manual_seed(0)
    with torch.device(device):
        unet2d = UNet2DConditionModel(**(TINY_UNET2D if tiny else SD15_UNET))
        vae = AutoencoderKL(**(TINY_VAE if tiny else SD_VAE))
        sd_text, sd_tok = text_tower(TINY_TEXT if tiny else CLIP_L_TEXT, tmp / "tok_l")
        if kind == "modelscope":
            unet = UNet3DConditionModel(**(TINY_UNET3D if tiny else MODELSCOPE_UNET))
            text, tok = text_tower(TINY_TEXT if tiny else OPENCLIP_H_TEXT, tmp / "tok_h")
            schedule = NoiseSchedule.from_scheduler_config(MODELSCOPE_SCHEDULER)
        else:
            unet = UNetMotionModel.from_unet2d(unet2d, MotionAdapter(**(TINY_ADAPTER if tiny else ANIMATEDIFF_V3_ADAPTER)))
            text, tok = sd_text, sd_tok
            schedule = NoiseSchedule.from_scheduler_config(ANIMATEDIFF_SCHEDULER)
    for m in (unet, unet2d, vae, text, sd_text):
        m.requires_grad_(False).eval().to(device=device, dtype=dtype)
    video = ModelBundle(unet, vae, text, tok, schedule, device, dtype, {"t2v": kind})
    image_schedule = NoiseSchedule.from_scheduler_config(MODELSCOPE_SCHEDULER)  # SD 1.5's scaled_linear
    image = ImageGuidance(unet2d, sd_text, sd_tok, image_schedule, 4, 0.18215, "random SD 1.5")
    return video, image


def run(kind: str, frames: int, size: int, iterations: int, timed: int, tiny: bool, device: torch.device,
        dtype: torch.dtype, tmp: Path) -> dict:
    """One ASSD edit (full method) timed end to end; ``timed`` < ``iterations`` extrapolates the loop."""
    video, image = build(kind, tiny, device, dtype, tmp)
    cfg = apply_overrides(EditConfig(), {"assd.iterations": timed, "assd.t2v": "animatediff",
                                         "prompts.source": "a cat in the grass in the sun", "model.device": str(device)})
    method = ASSD(video, cfg, image=image)
    clip, masks = synthetic_clip(frames, size)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sync()
    t0 = time.perf_counter()
    inv = method.invert(clip, masks, "a cat in the grass in the sun")
    sync()
    t1 = time.perf_counter()
    marks: list[float] = []
    res = method.edit(inv, "a dog in the grass in the sun", progress=lambda s, i, n: (sync(), marks.append(time.perf_counter())))
    sync()
    t2 = time.perf_counter()
    loop = marks[-1] - t1
    per_it = (marks[-1] - marks[0]) / max(1, len(marks) - 1) if len(marks) > 1 else loop
    decode_and_text = (t2 - t1) - loop
    end_to_end = (t1 - t0) + decode_and_text + loop + per_it * (iterations - timed)
    out = {"t2v": kind, "frames": frames, "size": size, "latent": size // 8, "iterations": iterations,
           "iterations_timed": timed, "extrapolated": timed < iterations, "end_to_end_s": round(end_to_end, 2),
           "encode_s": round(t1 - t0, 3), "per_iteration_s": round(per_it, 4), "first_iteration_s": round(marks[0] - t1, 3),
           "dtype": str(dtype).removeprefix("torch."), "fused_layers": len(method.fused),
           "t2v_params_m": round(sum(p.numel() for p in video.unet.parameters()) / 1e6, 1),
           "sd_params_m": round(sum(p.numel() for p in image.unet.parameters()) / 1e6, 1),
           "finite": bool(torch.isfinite(res.frames).all())}
    if device.type == "cuda":
        out["peak_gb"] = round(torch.cuda.max_memory_allocated() / GB, 2)
    del video, image, method
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="tiny models on the CPU (smoke test)")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--animatediff-iterations", type=int, default=30, help="iterations timed at 16x512 (rest extrapolated)")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    device = torch.device("cpu" if a.tiny or not torch.cuda.is_available() else "cuda")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    import tempfile

    info = machine()
    runs = {}
    with tempfile.TemporaryDirectory() as d:
        if a.tiny:
            runs["modelscope"] = run("modelscope", 4, 64, 4, 4, True, device, dtype, Path(d))
            runs["animatediff"] = run("animatediff", 4, 64, 4, 2, True, device, dtype, Path(d))
        else:
            runs["modelscope"] = run("modelscope", 16, 256, a.iterations, a.iterations, False, device, dtype, Path(d))
            runs["animatediff"] = run("animatediff", 16, 512, a.iterations, min(a.iterations, a.animatediff_iterations),
                                      False, device, dtype, Path(d))
    ms = runs["modelscope"]
    name = "speed_assd_cpu_tiny" if a.tiny else f"speed_assd_{gpu_slug(info)}"
    data = {"machine": info, "end_to_end_s": ms["end_to_end_s"], "peak_gb": ms.get("peak_gb"), "runs": runs,
            "targets": {"end_to_end_s": 60, "peak_gb": 24}, "tiny": a.tiny}
    table = []
    for k, r in runs.items():
        table += [(f"{k}: frames x size", f"{r['frames']} x {r['size']}²"),
                  (f"{k}: end to end (s){' (extrapolated)' if r['extrapolated'] else ''}", r["end_to_end_s"]),
                  (f"{k}: per iteration (s)", r["per_iteration_s"]), (f"{k}: peak (GB)", r.get("peak_gb", "n/a"))]
    path = write(name, data, table, a.out)
    print(path)
    for k, r in runs.items():
        print(k, r)


if __name__ == "__main__":
    main()
