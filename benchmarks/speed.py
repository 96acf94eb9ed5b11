"""Full-size speed and memory of a VideoDirector edit, next to diffusers' plain video-to-video pipeline (issue 5).

Builds the real architectures from their configs: SD 1.5 UNet + AnimateDiff v3 motion adapter, the SD
VAE and a CLIP ViT-L/14 text encoder. Weights are random, or real when ``--base``/``--motion-adapter``
are given (``--tiny``: the small SD 1.5-layout test widths instead, for CPU checks). Then, in one process:

1. **warm-up**: a 5-step run (with ``--compile`` it compiles the graphs: ``compile_s``), not counted;
2. **main**: the complete pipeline on a 16 x 512 x 512 clip with 50 steps: VAE encode, DDIM inversion,
   null-text optimisation with STDG fixed at 10 inner iterations per step (the worst case: random weights
   make early stopping meaningless), editing with SA-I/SA-II and cross-attention control, decode.
   ``end_to_end_s``, ``edit_only_s`` (editing from a cached inversion, decode included), ``peak_gb``,
   ``reserved_gb`` (what the caching allocator holds at the end), ``peak_reserved_gb`` (the most it held
   during the run: what a card must have, less the CUDA context), and
   ``stage_peak_gb``: the peak of each stage, the peak counter reset between stages (encode, DDIM inversion,
   one STDG gradient, one null-text iteration, the whole pivotal stage, the edit loop, the decode);
3. **peer**: diffusers' ``AnimateDiffVideoToVideoPipeline`` on the same model objects (the same
   ``UNetMotionModel``, VAE, text encoder and tokenizer; a ``DDIMScheduler`` with AnimateDiff's schedule) and
   the same input clip: 50 steps at strength 0.8 (so 40 denoising steps), guidance scale 7.5 in diffusers'
   convention ``ε_u + s (ε_c - ε_u)`` (our Eq. 10, ``ε_c + w (ε_c - ε_u)`` with w = 7.5, is s = 8.5 there; the
   cost is the same), decode included (``output_type="pt"``, diffusers' default ``decode_chunk_size`` 16;
   ``--peer-decode-chunk``). A short warm-up call first (it compiles the batch-2 graphs with ``--compile``), then a
   timed call: ``peer_v2v_s``, ``peer_v2v_peak_gb``, and the ratios ``edit_over_peer_time`` (our edit from a cached
   inversion / the peer) and ``peak_over_peer_peak`` (our peak / the peer's). Ours runs first; the peer runs after
   it on the same objects, and the models' state (attention processors, dtype, device, requires_grad, train/eval)
   is recorded before it and compared after it (``peer_state_changes``, restored if anything changed), so the
   comparisons that follow it run on the state ours ran on;
4. **fast**: ``--fast-inversion direct`` end to end (``fast_direct_end_to_end_s``);
5. **reference**: our path and the official cost structure (``inversion.reference_cost``) at
   ``--reference-steps`` (default 5), both eager (with ``--compile`` the compiled blocks are bypassed for both: the
   reference's trainable parameters would recompile every graph): ``reference_ratio``, ``reference_max_abs_diff``;
6. **estimate**: two warmed 5-step runs at 1 and 10 inner iterations give the cost of one null-text
   iteration (``null_text_iteration_s``), from which ``estimated_at_mean_inner_s`` scales the worst case to the
   mean number of iterations that early stopping gives on the ShapeWorld suite (from the bench results);
7. with ``--eager-too`` (and ``--compile``): the main run again with the compiled blocks bypassed: ``eager_*``.

With ``--cuda-graph-too`` (CUDA), after all other parts: the same edit with ``inversion.cuda_graph``
(``graph_end_to_end_s``, ``graph_peak_gb``, ``graph_reserved_gb``, ``graph_peak_reserved_gb``, and the largest and mean difference of its
final latents from the main run's). ``--no-recompute-feedforward`` turns ``model.recompute_feedforward`` off.

Parts 3-7 run in that order, each only when its predicted time ends before ``--budget-s`` (default 580 s from
the start of the process), so that one command fits in a 10-minute slot; a part left out is listed under
``skipped``, and the results file is written after every part. A partial run adds a part later, merged into the
same file: ``--only-peer``, ``--only-reference``. ``--skip-peer``, ``--skip-fast``, ``--skip-reference``,
``--skip-estimate`` leave parts out; ``--steps`` sets the steps of ours and of the peer.

Writes ``benchmarks/results/speed_videodirector_<gpu>.{json,md}`` (``<gpu>``: ``h200``, ``h100``, ...; ``_eager``
without ``--compile``; ``_<frames>x<size>``, ``_steps<n>`` and ``_tiny`` for other sizes; ``--out`` another
folder, ``--name`` another name). Beside an ``_eager`` file, the compiled one lists the eager peak and times under
``counterpart`` (and the other way round). The older ``speed_h100*.json`` are kept as they are.

    python benchmarks/speed.py --compile        # the headline, one command
    python benchmarks/speed.py --compile --only-reference --reference-steps 10   # when the reference was skipped
    python benchmarks/speed.py                  # eager: speed_videodirector_<gpu>_eager.json
    python benchmarks/speed.py --tiny --frames 2 --size 64 --steps 2 --inner 1 --threads 1 --out DIR  # CPU smoke

Estimated wall time on one H200, from the H100 figures (``speed_h100*.json``; the H200 should be no slower):

- ``--compile``: imports and model build ~35 s, warm-up with compilation ~260 s, main ~145 s, peer ~50 s
  (compiling its batch-2 graphs ~40 s, then ~8 s timed), fast ~20 s, reference at 5 steps ~75 s (eager: ~16 s
  ours, ~52 s official, ~5 s warm-up), estimate ~20 s: about 600 s, so the guard should leave out the estimate,
  and the reference too if compilation is slower than on the H100;
- ``--compile --only-reference --reference-steps 10``: ~35 + 5 + 31 + 103 = ~175 s;
- eager (no ``--compile``): ~35 + 30 + 160 + 12 + 24 + 68 + 25 = ~355 s, every part included.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()  # the --budget-s clock starts at import

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from _common import (  # noqa: E402
    GB, RESULTS, MemoryMeter, SlowdownWatch, StageTracker, fmt, gpu_slug, machine, max_rss_bytes, synthetic_clip,
    timed_config, track_videodirector, write,
)

from videodirector.config import apply_overrides  # noqa: E402
from videodirector.diffusion.ddim import NoiseSchedule  # noqa: E402
from videodirector.methods.videodirector import VideoDirector  # noqa: E402
from videodirector.models.compile import compile_blocks, eager  # noqa: E402
from videodirector.models.feedforward import set_recompute_feedforward  # noqa: E402
from videodirector.models.loading import ANIMATEDIFF_SCHEDULER, ModelBundle, load_models, sdpa_priority  # noqa: E402
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
SOURCE_PROMPT = "A brown bear, walking on rocky terrain, next to a stone wall."
TARGET_PROMPT = "A tiger, walking on rocky terrain, next to a stone wall."

PEER_STRENGTH = 0.8
PEER_GUIDANCE = 7.5
"""diffusers' convention, ``ε_u + s (ε_c - ε_u)``: the issue's 7.5. Our Eq. 10's w = 7.5 would be s = 8.5 there;
the scale changes no cost."""

HEADLINE = ("end_to_end_s", "edit_only_s", "peak_gb", "peer_v2v_s", "peer_v2v_peak_gb", "edit_over_peer_time",
            "peak_over_peer_peak", "reference_ratio", "fast_direct_end_to_end_s")
"""The keys the issue asks for (with ``machine``), first in the tables."""


def _bundle(unet2d, adapter, vae, text, tok, device: torch.device, dtype: torch.dtype,  # noqa: ANN001
            sources: dict[str, str]) -> ModelBundle:
    from diffusers import UNetMotionModel

    unet = UNetMotionModel.from_unet2d(unet2d, adapter)
    set_recompute_feedforward(unet, True)  # as model.recompute_feedforward (auto) does on CUDA
    for mod in (unet, vae, text):
        mod.requires_grad_(False).eval().to(device=device, dtype=dtype)
    return ModelBundle(unet, vae, text, tok, NoiseSchedule.from_scheduler_config(ANIMATEDIFF_SCHEDULER), device, dtype,
                       sources)


def random_bundle(device: torch.device, dtype: torch.dtype) -> ModelBundle:
    """SD 1.5 UNet + AnimateDiff v3 adapter, SD VAE and CLIP ViT-L at full width, random weights."""
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet2d, adapter = UNet2DConditionModel(**SD15_UNET), MotionAdapter(**ADAPTER_V3)
    vae = AutoencoderKL(**SD_VAE)
    text = CLIPTextModel(CLIPTextConfig(**CLIP_L))
    with tempfile.TemporaryDirectory() as d:
        tok = CLIPTokenizer.from_pretrained(build_clip_tokenizer(WORDS, d))
    return _bundle(unet2d, adapter, vae, text, tok, device, dtype, {"base": "random:sd15", "motion_adapter": "random:v3"})


def tiny_bundle(device: torch.device, dtype: torch.dtype) -> ModelBundle:
    """The same layout at the small widths of the test models (``models.factory.ArchSpec``), random weights:
    for checking the scripts on a CPU in seconds."""
    from transformers import CLIPTokenizer

    from videodirector.models.factory import ArchSpec, build_models

    arch = ArchSpec(words=list(WORDS))
    unet2d, adapter, vae, text = build_models(arch, seed=0)
    with tempfile.TemporaryDirectory() as d:
        tok = CLIPTokenizer.from_pretrained(build_clip_tokenizer(arch.words, d))
    return _bundle(unet2d, adapter, vae, text, tok, device, dtype, {"base": "random:tiny", "motion_adapter": "random:tiny"})


def add_estimate(data: dict, bench: Path, mean_inner: float | None = None) -> None:
    """``estimated_at_mean_inner_s``: the worst case with ``inner - mean`` null-text iterations fewer per step,
    at the measured cost of one iteration; the mean comes from a ShapeWorld bench run of ``videodirector``."""
    if mean_inner is None and bench.is_file():
        result = json.loads(bench.read_text())
        mean_inner = result["summary"]["mean_null_inner_iterations"]["mean"]
        data["mean_inner_source"] = f"{bench.parent.name}/{bench.name} ({len(result['cases'])} cases)"
    if mean_inner is not None and "null_text_iteration_s" in data and "end_to_end_s" in data:
        data["mean_inner_iterations"] = mean_inner
        data["estimated_at_mean_inner_s"] = (data["end_to_end_s"] - data["null_text_iteration_s"] * data["steps"]
                                             * (data["null_inner_steps"] - mean_inner))


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def run(vd: VideoDirector, frames: torch.Tensor, masks: torch.Tensor, meter: MemoryMeter | None = None) -> dict:
    """One whole edit, timed; with ``meter``, also the peak memory of the run (``peak_gb``) and of each stage."""
    tracker = StageTracker(meter) if meter is not None else None
    if meter is not None and meter.cuda:
        torch.cuda.empty_cache()
        meter.restart_reserved()
    with (track_videodirector(vd.models, tracker) if tracker else contextlib.nullcontext([])) as missing, \
            (tracker.stage("total") if tracker else contextlib.nullcontext()):
        sync()
        t0 = time.perf_counter()
        inv = vd.invert(frames, masks, SOURCE_PROMPT)
        sync()
        t_inv = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = vd.edit(inv, TARGET_PROMPT)
        sync()
        t_edit = time.perf_counter() - t0
    out = {"inversion": inv, "result": res, "invert_s": t_inv, "edit_only_s": t_edit,
           "stages": {**inv.meta["timings"], **res.timings}}
    if meter is not None and meter.cuda:  # reserved now (after any empty_cache of the run) and its high mark
        out["reserved_gb"] = torch.cuda.memory_reserved() / GB
        out["peak_reserved_gb"] = meter.peak_reserved() / GB
    if tracker is not None:
        peaks = tracker.peak_gb()
        out["peak_gb"] = peaks.pop("total")
        out["stage_peak_gb"] = peaks
        out["stage_start_gb"] = {k: v for k, v in tracker.start_gb().items() if k != "total"}
        if missing:
            out["stages_not_found"] = missing
    return out


# ------------------------------------------------------------------------------------------------ the peer


def peer_pipeline(models: ModelBundle):  # noqa: ANN201
    """diffusers' ``AnimateDiffVideoToVideoPipeline`` on the bundle's own objects. The bundle's UNet is already the
    ``UNetMotionModel`` (SD 1.5 UNet + motion adapter), so no adapter is passed: the pipeline would only use it to
    build that model again."""
    from diffusers import AnimateDiffVideoToVideoPipeline, DDIMScheduler

    pipe = AnimateDiffVideoToVideoPipeline(vae=models.vae, text_encoder=models.text_encoder, tokenizer=models.tokenizer,
                                           unet=models.unet, motion_adapter=None,
                                           scheduler=DDIMScheduler.from_config(ANIMATEDIFF_SCHEDULER))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_peer(pipe, models: ModelBundle, frames: torch.Tensor, steps: int, decode_chunk: int,  # noqa: ANN001
             meter: MemoryMeter, negative: str) -> dict:
    """One timed call of the peer pipeline, with its peak memory, split at the first and last denoising steps
    into encode (+ prompt + first step), the other denoising steps and decode."""
    tracker = StageTracker(meter)
    video = ((frames + 1) / 2).clamp(0, 1)[None]  # (1, F, 3, H, W) in [0, 1], the pipeline's input range
    marks: dict[str, float] = {}
    last = max(0, min(int(steps * PEER_STRENGTH), steps) - 1)

    def on_step(_pipe, i: int, _t, _kwargs) -> dict:  # noqa: ANN001
        if i == 0 or i == last:
            sync()
            marks["encode_and_first_step" if i == 0 else "denoise"] = time.perf_counter()
            tracker.split("encode_and_first_step" if i == 0 else "denoise")
        return {}

    if meter.cuda:
        torch.cuda.empty_cache()
        meter.restart_reserved()
    generator = torch.Generator(models.device).manual_seed(0)
    with tracker.stage("total"), sdpa_priority(models.attention_backend):
        sync()
        t0 = time.perf_counter()
        frames_out = pipe(video=video, prompt=TARGET_PROMPT, negative_prompt=negative or None,
                          height=frames.shape[-2], width=frames.shape[-1], num_inference_steps=steps,
                          strength=PEER_STRENGTH, guidance_scale=PEER_GUIDANCE, generator=generator, output_type="pt",
                          decode_chunk_size=decode_chunk, callback_on_step_end=on_step).frames
        frames_out = frames_out.cpu()  # as ours: its frames come back to the host
        sync()
        t1 = time.perf_counter()
        tracker.split("decode")
    peaks = tracker.peak_gb()
    times, prev = {}, t0
    for k in ("encode_and_first_step", "denoise"):
        if k in marks:
            times[k + "_s"], prev = marks[k] - prev, marks[k]
    times["decode_s"] = t1 - prev
    return {"s": t1 - t0, "peak_gb": peaks.pop("total"), "peak_reserved_gb": meter.peak_reserved() / GB,
            "stage_peak_gb": peaks, "stages_s": times,
            "denoising_steps": last + 1, "frames_shape": list(frames_out.shape)}


def model_state(models: ModelBundle) -> dict:
    """What a pipeline could leave changed on the shared models and what would change our measurement."""
    state: dict = {}
    for name in ("unet", "vae", "text_encoder"):
        mod = getattr(models, name)
        params = list(mod.parameters())
        state[name] = {"dtypes": sorted({str(p.dtype) for p in params}), "devices": sorted({str(p.device) for p in params}),
                       "requires_grad": sum(p.requires_grad for p in params), "training": mod.training}
    state["unet_processors"] = {k: type(v).__name__ for k, v in models.unet.attn_processors.items()}
    return state


def restore_state(models: ModelBundle, before: dict, processors: dict) -> list[str]:
    """Compare with ``before``; put back what differs; return what differed."""
    after = model_state(models)
    changed = [k for k in before if before[k] != after[k]]
    for name in ("unet", "vae", "text_encoder"):
        if name in changed:
            mod = getattr(models, name)
            mod.to(device=models.device, dtype=models.dtype).requires_grad_(False)
            mod.train(before[name]["training"])
    if "unet_processors" in changed:
        models.unet.set_attn_processor(dict(processors))
    return changed


# ------------------------------------------------------------------------------------------------ the run


class Budget:
    """Skips a part whose predicted time would pass ``seconds`` from the start of the process (0: no limit)."""

    def __init__(self, seconds: float, data: dict) -> None:
        self.seconds, self.data = seconds, data

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - T_START) if self.seconds > 0 else math.inf

    def allows(self, part: str, predicted: float) -> bool:
        if predicted <= self.left():
            return True
        why = f"predicted {predicted:.0f} s, {max(0.0, self.left()):.0f} s left of --budget-s {self.seconds:.0f}"
        self.data.setdefault("skipped", {})[part] = why
        print(f"skipping {part}: {why}", flush=True)
        return False


def default_name(info: dict, device: torch.device, args: argparse.Namespace) -> str:
    base = f"speed_videodirector_{gpu_slug(info) if device.type == 'cuda' else 'cpu'}"
    if (args.frames, args.size) != (16, 512):
        base += f"_{args.frames}x{args.size}"
    if args.steps != 50:
        base += f"_steps{args.steps}"
    if args.tiny:
        base += "_tiny"
    if device.type == "cuda" and not args.compile:
        base += "_eager"
    return base


def add_ratios(data: dict) -> None:
    if data.get("peer_v2v_s") and "edit_only_s" in data:
        data["edit_over_peer_time"] = data["edit_only_s"] / data["peer_v2v_s"]
    if data.get("peer_v2v_peak_gb") and "peak_gb" in data:
        data["peak_over_peer_peak"] = data["peak_gb"] / data["peer_v2v_peak_gb"]


def table(data: dict) -> list[tuple[str, object]]:
    nested = ("machine", "stages_s", "targets", "stage_peak_gb", "stage_start_gb", "peer_stage_peak_gb",
              "peer_stages_s", "skipped", "eager_stage_peak_gb", "counterpart", "peer_state_changes", "graph_stages_s",
              "graph_stage_peak_gb")
    rows = [(k, fmt(data[k])) for k in HEADLINE if k in data]
    rows += [(f"stage peak {k} (GB)", fmt(v)) for k, v in data.get("stage_peak_gb", {}).items()]
    rows += [(f"peer stage peak {k} (GB)", fmt(v)) for k, v in data.get("peer_stage_peak_gb", {}).items()]
    rows += [(f"eager stage peak {k} (GB)", fmt(v)) for k, v in data.get("eager_stage_peak_gb", {}).items()]
    rows += [(f"graph stage peak {k} (GB)", fmt(v)) for k, v in data.get("graph_stage_peak_gb", {}).items()]
    rows += [(f"graph stage {k}", fmt(v)) for k, v in data.get("graph_stages_s", {}).items()]
    rows += [(k, fmt(v)) for k, v in data.items() if k not in HEADLINE and k not in nested]
    rows += [(f"stage {k}", fmt(v)) for k, v in data.get("stages_s", {}).items()]
    rows += [(f"peer stage {k}", fmt(v)) for k, v in data.get("peer_stages_s", {}).items()]
    if "counterpart" in data:
        c = data["counterpart"]
        rows += [(f"{c['file']}: {k}", fmt(v)) for k, v in c.items() if k != "file"]
    rows += [(f"skipped {k}", v) for k, v in data.get("skipped", {}).items()]
    rows.append(("peer_state_changes", data.get("peer_state_changes", "peer not run")))
    return rows


def main() -> None:  # noqa: C901, PLR0912, PLR0915
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--steps", type=int, default=50, help="DDIM steps of ours and of the peer (default 50)")
    p.add_argument("--inner", type=int, default=10)
    p.add_argument("--tiny", action="store_true", help="the small test widths instead of SD 1.5's (CPU checks)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet's blocks; the warm-up (which compiles) is reported as compile_s")
    p.add_argument("--skip-peer", action="store_true", help="leave out diffusers' AnimateDiffVideoToVideoPipeline")
    p.add_argument("--skip-reference", action="store_true", help="leave out the official cost structure")
    p.add_argument("--skip-fast", action="store_true", help="leave out --fast-inversion direct")
    p.add_argument("--skip-estimate", action="store_true", help="leave out the 1- and 10-iteration runs")
    p.add_argument("--only-peer", action="store_true",
                   help="only the peer pipeline (warm-up + timed call), merged into an existing results file")
    p.add_argument("--only-reference", action="store_true",
                   help="only the reference comparison (eager), merged into an existing results file")
    p.add_argument("--eager-too", action="store_true",
                   help="with --compile: run the main measurement again with the compiled blocks bypassed")
    p.add_argument("--reference", action="store_true", help="(kept for old commands: the reference runs by default)")
    p.add_argument("--fast", action="store_true", help="(kept for old commands: --fast-inversion direct runs by default)")
    p.add_argument("--reference-steps", type=int, default=None,
                   help="steps of the reference comparison, both paths (default: 5, at most --steps; "
                        "speed_h100_eager.json used 10)")
    p.add_argument("--warmup-steps", type=int, default=None, help="steps of the warm-up run (default: 5, at most --steps)")
    p.add_argument("--estimate-steps", type=int, default=None,
                   help="steps of the 1- and 10-iteration runs (default: 5, at most --steps)")
    p.add_argument("--peer-warmup-steps", type=int, default=None,
                   help="steps of the peer's warm-up call (default: 5, at most --steps)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (a busy CPU can be faster with 1)")
    p.add_argument("--peer-decode-chunk", type=int, default=16,
                   help="the peer's decode_chunk_size (frames per VAE encode and decode call; diffusers' default 16)")
    p.add_argument("--budget-s", type=float, default=580,
                   help="skip parts predicted to end later than this many seconds after start (0: no limit)")
    p.add_argument("--attention-backend", default="default", choices=["default", "cudnn", "flash", "efficient"],
                   help="model.attention_backend: the SDPA kernel tried first (benchmarks/edit_profile.py compares them)")
    p.add_argument("--channels-last", action="store_true", help="model.channels_last: channels-last UNet weights")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--cuda-graph-too", action="store_true",
                   help="after the main run, the same edit with inversion.cuda_graph (time, peaks, difference)")
    p.add_argument("--no-recompute-feedforward", action="store_true",
                   help="model.recompute_feedforward off: autograd keeps the GEGLU activations (the old peak)")
    p.add_argument("--base", default=None)
    p.add_argument("--motion-adapter", default=None)
    p.add_argument("--name", default=None, help="results file name (default: speed_videodirector_<gpu>...)")
    p.add_argument("--out", "--results", dest="out", type=Path, default=RESULTS,
                   help="folder for the results (default benchmarks/results)")
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
    if args.only_peer and args.only_reference:
        p.error("--only-peer and --only-reference exclude each other")
    partial = args.only_peer or args.only_reference
    for k in ("warmup_steps", "estimate_steps", "peer_warmup_steps", "reference_steps"):
        if getattr(args, k) is None:
            setattr(args, k, min(5, args.steps))
    args.peer_warmup_steps = max(2, args.peer_warmup_steps)  # at strength 0.8, one step would denoise none
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    info = machine()
    name = args.name or default_name(info, device, args)
    path = args.out / f"{name}.json"
    data: dict = json.loads(path.read_text()) if partial and path.is_file() else {}
    same = ("frames", "size", "steps", "null_inner_steps", "dtype", "tiny") + (("compiled",) if args.only_peer else ())
    differ = [k for k in same if k in data and data[k] != {"frames": args.frames, "size": args.size, "steps": args.steps,
              "null_inner_steps": args.inner, "dtype": str(dtype), "tiny": args.tiny, "compiled": args.compile}[k]]
    if differ:
        p.error(f"{path} was measured with other settings ({', '.join(f'{k}={data[k]}' for k in differ)}); "
                "give the same ones, or --name for a separate file")
    for part in (["peer"] if args.only_peer else ["reference"] if args.only_reference else []):
        data.get("skipped", {}).pop(part, None)
    if not partial:
        data.pop("skipped", None)
    data.update({"machine": info, "frames": args.frames, "size": args.size, "steps": args.steps,
                 "null_inner_steps": args.inner, "dtype": str(dtype), "compiled": args.compile,
                 "attention_backend": args.attention_backend, "channels_last": args.channels_last,
                 "gradient_checkpointing": args.gradient_checkpointing, "tiny": args.tiny,
                 "recompute_feedforward": not args.no_recompute_feedforward})
    data["targets"] = {"end_to_end_s": 120, "peak_gb": 16, "edit_only_s": 10}  # issue 20
    budget = Budget(args.budget_s, data)
    cfg = timed_config(args.steps, args.inner, args.frames, args.size)
    if args.base:
        cfg = apply_overrides(cfg, {"model.base": args.base, "model.motion_adapter": args.motion_adapter,
                                    "model.device": str(device)})
        models = load_models(cfg.model)
    else:
        models = (tiny_bundle if args.tiny else random_bundle)(device, dtype)
    models.attention_backend = args.attention_backend
    set_recompute_feedforward(models.unet, not args.no_recompute_feedforward)
    if args.channels_last:
        models.unet.to(memory_format=torch.channels_last)
    compiled = args.compile and not args.only_reference  # the reference comparison runs eagerly anyway
    if compiled:
        compile_blocks(models.unet)
    if args.gradient_checkpointing:
        models.unet.enable_gradient_checkpointing()
        models.unet.train()
    data["build_s"] = time.perf_counter() - T_START
    frames, masks = synthetic_clip(args.frames, args.size)
    meter = MemoryMeter(device)
    data["memory_measure"] = meter.kind
    # seconds the card ran power-capped or thermally slowed during this invocation (None: not readable here)
    slowdown = SlowdownWatch()
    slowdown_key = "gpu_slowdown_s" + ("_reference" if args.only_reference else "_peer" if args.only_peer else "")
    short = {"inversion.num_steps": args.warmup_steps, "inversion.null_inner_steps": 1}

    def save() -> None:  # after each part, so a run cut short still leaves its numbers
        add_ratios(data)
        data[slowdown_key] = slowdown.since()
        counterpart = args.out / (name[: -len("_eager")] if name.endswith("_eager") else name + "_eager")
        if not args.name and counterpart.with_suffix(".json").is_file():
            c = json.loads(counterpart.with_suffix(".json").read_text())
            data["counterpart"] = {"file": counterpart.name + ".json", "compiled": c.get("compiled"),
                                   **{k: c[k] for k in ("end_to_end_s", "edit_only_s", "peak_gb") if k in c}}
        if device.type == "cpu":
            data["process_max_rss_gb"] = max_rss_bytes() / GB
        write(name, data, table(data), args.out)

    save()
    if not partial:
        t0 = time.perf_counter()
        run(VideoDirector(models, apply_overrides(cfg, short)), frames, masks)  # cuDNN/cuBLAS set-up, compilation
        data["warmup_s"] = time.perf_counter() - t0
        if compiled:
            from torch._dynamo.utils import counters

            data["compile_s"] = data["warmup_s"]
            data["compiled_graphs"] = counters["stats"]["unique_graphs"]
            data["graph_breaks"] = sum(counters["graph_break"].values())
        out = run(VideoDirector(models, cfg), frames, masks, meter)
        data.update({"end_to_end_s": out["invert_s"] + out["edit_only_s"], "edit_only_s": out["edit_only_s"],
                     "peak_gb": out["peak_gb"], "stage_peak_gb": out["stage_peak_gb"],
                     "stage_start_gb": out["stage_start_gb"], "stages_s": out["stages"]})
        if "reserved_gb" in out:
            data["reserved_gb"] = out["reserved_gb"]
            data["peak_reserved_gb"] = out["peak_reserved_gb"]
        if "stages_not_found" in out:
            data["stages_not_found"] = out["stages_not_found"]
        main_latents = out["result"].latents
        del out
        save()
    e2e = data.get("end_to_end_s", 0.0)
    per_step = e2e / args.steps if e2e else 0.0

    if not args.skip_peer and not args.only_reference and budget.allows(
            "peer", ((args.peer_warmup_steps + args.steps) * PEER_STRENGTH * data.get("edit_only_s", 0) / args.steps * 0.7
                     + (45 if compiled else 5)) if e2e else 0):
        pipe = peer_pipeline(models)
        processors = dict(models.unet.attn_processors)
        before = model_state(models)
        t0 = time.perf_counter()
        run_peer(pipe, models, frames, args.peer_warmup_steps, args.peer_decode_chunk, meter, cfg.prompts.negative)
        data["peer_warmup_s"] = time.perf_counter() - t0
        peer = run_peer(pipe, models, frames, args.steps, args.peer_decode_chunk, meter, cfg.prompts.negative)
        data["peer_state_changes"] = restore_state(models, before, processors)
        if compiled:  # the peer's batch of 2 (CFG) compiles its own graphs in its warm-up
            from torch._dynamo.utils import counters

            data["compiled_graphs_after_peer"] = counters["stats"]["unique_graphs"]
        del pipe
        data.update({"peer_v2v_s": peer["s"], "peer_v2v_peak_gb": peer["peak_gb"],
                     "peer_v2v_peak_reserved_gb": peer["peak_reserved_gb"],
                     "peer_stage_peak_gb": peer["stage_peak_gb"], "peer_stages_s": peer["stages_s"],
                     "peer_pipeline": "diffusers.AnimateDiffVideoToVideoPipeline", "peer_steps": args.steps,
                     "peer_denoising_steps": peer["denoising_steps"], "peer_strength": PEER_STRENGTH,
                     "peer_guidance_scale": PEER_GUIDANCE, "peer_decode_chunk_size": args.peer_decode_chunk,
                     "peer_compiled": compiled,
                     "peer_order": "after ours; model state compared before/after (peer_state_changes), restored if changed"})
        save()

    if not args.skip_fast and not partial and budget.allows(
            "fast", data["stages_s"]["ddim_inversion_s"] + 1.2 * data["edit_only_s"] + 1):
        fast = run(VideoDirector(models, apply_overrides(cfg, {"inversion.fast": "direct"})), frames, masks)
        data["fast_direct_end_to_end_s"] = fast["invert_s"] + fast["edit_only_s"]
        del fast
        save()

    n_ref = args.reference_steps
    if not args.skip_reference and not args.only_peer and budget.allows(
            "reference", per_step * n_ref * (4.7 if compiled else 4.4) + (5 if compiled or partial else 0)):
        ref_cfg = apply_overrides(cfg, {"inversion.num_steps": n_ref})
        with eager() if compiled else contextlib.nullcontext():
            if compiled or partial:  # the eager kernels' one-time set-up, not counted
                run(VideoDirector(models, apply_overrides(cfg, {"inversion.num_steps": 2, "inversion.null_inner_steps": 1})),
                    frames, masks)
            opt = run(VideoDirector(models, ref_cfg), frames, masks)
            ref = run(VideoDirector(models, apply_overrides(ref_cfg, {"inversion.reference_cost": True})), frames, masks)
        data["reference_steps"] = n_ref
        data["reference_mode"] = "eager (compiled blocks bypassed)" if args.compile else "eager"
        data["optimized_at_reference_steps_s"] = opt["invert_s"] + opt["edit_only_s"]
        data["reference_s"] = ref["invert_s"] + ref["edit_only_s"]
        data["reference_ratio"] = data["reference_s"] / data["optimized_at_reference_steps_s"]
        data["reference_max_abs_diff"] = float((ref["result"].latents - opt["result"].latents).abs().max())
        del opt, ref
        save()

    n_est = args.estimate_steps
    if not args.skip_estimate and not partial and budget.allows("estimate", per_step * n_est * 1.5):
        # one null-text iteration: two warmed runs at 1 and 10 iterations (the warm-up run itself carries
        # one-time set-up, which made an estimate taken against it too low)
        est = {"inversion.num_steps": n_est, "inversion.null_inner_steps": 1}
        p1 = run(VideoDirector(models, apply_overrides(cfg, est)), frames, masks)
        p10 = run(VideoDirector(models, apply_overrides(cfg, {**est, "inversion.null_inner_steps": 10})), frames, masks)
        data["null_text_iteration_s"] = (p10["stages"]["pivotal_tuning_s"] - p1["stages"]["pivotal_tuning_s"]) / (n_est * 9)
        data["estimate_steps"] = n_est
        add_estimate(data, args.bench_results, args.mean_inner)
        del p1, p10
        save()

    if args.eager_too and compiled and not partial and budget.allows("eager_too", e2e * 1.25):
        with eager():
            out = run(VideoDirector(models, cfg), frames, masks, meter)
        data.update({"eager_end_to_end_s": out["invert_s"] + out["edit_only_s"], "eager_edit_only_s": out["edit_only_s"],
                     "eager_peak_gb": out["peak_gb"], "eager_stage_peak_gb": out["stage_peak_gb"]})
        del out
        save()

    if args.cuda_graph_too and device.type == "cuda" and not partial:
        # last, so that an experimental capture that fails hard cannot cost the parts above
        gr = run(VideoDirector(models, apply_overrides(cfg, {"inversion.cuda_graph": True})), frames, masks, meter)
        data.update({"graph_end_to_end_s": gr["invert_s"] + gr["edit_only_s"], "graph_peak_gb": gr["peak_gb"],
                     "graph_reserved_gb": gr["reserved_gb"], "graph_peak_reserved_gb": gr["peak_reserved_gb"],
                     "graph_stages_s": gr["stages"],
                     "graph_stage_peak_gb": gr["stage_peak_gb"],
                     "graph_vs_main_max_abs_diff": float((gr["result"].latents - main_latents).abs().max()),
                     "graph_vs_main_mean_abs_diff": float((gr["result"].latents - main_latents).abs().mean())})
        del gr
        save()

    meter.close()
    data["wall_s"] = time.perf_counter() - T_START
    save()
    rows = [(k, v) for k, v in table(data)
            if k in HEADLINE or k.startswith(("stage peak", "peer stage peak", "skipped", "eager_", "graph_", "wall_s", "compile_s",
                                              "gpu_slowdown", "peer_state_changes"))]
    print(f"\n{path}\n" + "\n".join(f"  {k:<36} {v}" for k, v in rows), flush=True)


if __name__ == "__main__":
    main()
