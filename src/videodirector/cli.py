"""Command line: ``videodirector edit | invert | demo | bench | metrics``.

Thin: parses arguments, shows progress (stage, step, ETA) and calls :mod:`videodirector.api`.
User mistakes print one line (``error: ...``) and exit with status 2.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=(
    "Precise text-driven video editing with diffusion models (VideoDirector on AnimateDiff).\n\n"
    "Quick start: 'videodirector demo' edits a ShapeWorld clip with the bundled models, offline, on CPU."))
console = Console(stderr=True)


@contextmanager
def progress_bar():  # noqa: ANN201
    """A rich progress display; yields ``callback(stage, step, total)``."""
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False,
                  disable=not console.is_terminal and not _force_progress()) as prog:
        tasks: dict[str, Any] = {}

        def callback(stage: str, step: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=total)
            prog.update(tasks[stage], completed=step)

        yield callback


def _quiet() -> None:
    """Hide library progress bars and warnings that say nothing to a user of this tool."""
    import logging

    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    logging.getLogger("diffusers").setLevel(logging.ERROR)


def _force_progress() -> bool:
    import os

    return os.environ.get("VIDEODIRECTOR_PROGRESS", "") == "1"


def _overrides(**kw: Any) -> dict[str, Any]:
    keys = {
        "video": "input.video", "masks": "input.masks", "frames": "input.num_frames", "height": "input.height",
        "width": "input.width", "source_prompt": "prompts.source", "target_prompt": "prompts.target",
        "negative_prompt": "prompts.negative", "steps": "inversion.num_steps", "inner_steps": "inversion.null_inner_steps",
        "seed": "seed", "device": "model.device", "dtype": "model.dtype", "base": "model.base",
        "motion_adapter": "model.motion_adapter", "single_file": "model.single_file", "offline": "model.local_files_only",
        "fast_inversion": "inversion.fast", "gradient_checkpointing": "model.gradient_checkpointing",
        "compile": "model.compile", "tau_s": "control.self_replace_steps", "tau_c": "control.cross_replace_steps",
        "cross_mode": "control.cross_mode", "edit_target": "control.edit_target", "null_text": "inversion.null_text",
        "mask_blend": "control.mask_blend", "renoise": "control.mask_blend_renoise",
    }
    out = {keys[k]: v for k, v in kw.items() if v is not None and k in keys}
    if kw.get("edit_words"):
        words = [w for w in kw["edit_words"].split(",") if w]
        out["prompts.equalizer_words"] = words
        out["prompts.equalizer_values"] = [float(kw.get("edit_weight") or 1.0)] * len(words)
    if kw.get("stdg"):
        out["stdg.coefficients"] = [float(x) for x in kw["stdg"].split(",")]
    if kw.get("bundled"):
        from .api import bundled_model_config

        out.update({k: v for k, v in bundled_model_config(kw.get("device") or "auto").items()})
    return out


def _config(config: Optional[Path], overrides: dict[str, Any]):  # noqa: ANN202
    from .config import EditConfig, apply_overrides, load_config, validate

    cfg = load_config(config, overrides) if config else apply_overrides(EditConfig(), overrides)
    validate(cfg)
    return cfg


# Options shared by edit and invert ------------------------------------------------------------
VideoOpt = typer.Option(None, "--video", help="Input video (mp4/webm/gif/mov) or folder of frames.")
MasksOpt = typer.Option(None, "--masks", help="Folder of per-frame mask PNGs or a mask video (white = object).")
SrcOpt = typer.Option(None, "--source-prompt", help="Prompt describing the input video.")
NegOpt = typer.Option(None, "--negative-prompt", help="Negative prompt (initialises the null-text).")
FramesOpt = typer.Option(None, "--frames", help="Frames to sample (default 16, at most 32).")
HOpt = typer.Option(None, "--height", help="Height, a multiple of 8 (default 512).")
WOpt = typer.Option(None, "--width", help="Width, a multiple of 8 (default 512).")
StepsOpt = typer.Option(None, "--steps", help="DDIM steps (default 50).")
InnerOpt = typer.Option(None, "--inner-steps", help="Null-text iterations per step (default 10).")
SeedOpt = typer.Option(None, "--seed", help="Seed (default 42).")
DevOpt = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N.")
DtypeOpt = typer.Option(None, "--dtype", help="auto, float32, bfloat16 or float16.")
BaseOpt = typer.Option(None, "--base", help="SD 1.5 diffusers folder or hub id.")
AdapterOpt = typer.Option(None, "--motion-adapter", help="Motion adapter folder, hub id or .ckpt file.")
SingleOpt = typer.Option(None, "--single-file", help="Community SD 1.5 checkpoint (.safetensors); config from --base.")
OfflineOpt = typer.Option(None, "--offline/--online", help="Never touch the network (also HF_HUB_OFFLINE=1).")
BundledOpt = typer.Option(False, "--bundled", help="Use the bundled ShapeWorld models.")
FastOpt = typer.Option(None, "--fast-inversion", help="none (faithful), negative_prompt or direct: skip null-text optimisation.")
GcOpt = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing", help="Less GPU memory for null-text.")
CompileOpt = typer.Option(None, "--compile/--no-compile",
                          help="torch.compile the UNet's resnet, feed-forward and motion-module blocks (GPU; ~4 min once).")
NullOpt = typer.Option(None, "--null-text", help="multi_frame (paper), shared or none.")
StdgOpt = typer.Option(None, "--stdg", help="STDG coefficients eta_f,eta_b,zeta_f,zeta_b (default 0.5,0.5,0,0.5).")
CacheOpt = typer.Option(None, "--cache-dir", help="Inversion cache folder (default ~/.cache/videodirector).")
MethodOpt = typer.Option("videodirector", "--method", help="Method or ablation name (see 'videodirector bench --list').")


@app.command()
def edit(
    config: Optional[Path] = typer.Argument(None, help="YAML config (ours or the official VideoDirector format)."),
    video: Optional[str] = VideoOpt, masks: Optional[str] = MasksOpt, source_prompt: Optional[str] = SrcOpt,
    target_prompt: Optional[str] = typer.Option(None, "--target-prompt", help="The edited description."),
    negative_prompt: Optional[str] = NegOpt,
    edit_words: Optional[str] = typer.Option(None, "--edit-words", help="Comma-separated target words to reweight."),
    edit_weight: Optional[float] = typer.Option(None, "--edit-weight", help="Cross-attention weight of --edit-words."),
    frames: Optional[int] = FramesOpt, height: Optional[int] = HOpt, width: Optional[int] = WOpt,
    steps: Optional[int] = StepsOpt, inner_steps: Optional[int] = InnerOpt, seed: Optional[int] = SeedOpt,
    device: Optional[str] = DevOpt, dtype: Optional[str] = DtypeOpt, base: Optional[str] = BaseOpt,
    motion_adapter: Optional[str] = AdapterOpt, single_file: Optional[str] = SingleOpt, offline: Optional[bool] = OfflineOpt,
    bundled: bool = BundledOpt, fast_inversion: Optional[str] = FastOpt, gradient_checkpointing: Optional[bool] = GcOpt,
    compile: Optional[bool] = CompileOpt, null_text: Optional[str] = NullOpt, stdg: Optional[str] = StdgOpt,
    tau_s: Optional[float] = typer.Option(None, "--tau-s", help="SA-I/SA-II switch, fraction of steps (default 0.4)."),
    tau_c: Optional[float] = typer.Option(None, "--tau-c", help="Cross-attention control window (default 0.8)."),
    cross_mode: Optional[str] = typer.Option(None, "--cross-mode", help="refine (default) or replace."),
    edit_target: Optional[str] = typer.Option(None, "--edit-target", help="object (default) or background."),
    mask_blend: Optional[bool] = typer.Option(
        None, "--mask-blend/--no-mask-blend",
        help="Beyond the paper: keep the source exactly outside the masks' edit region (needs --masks)."),
    renoise: Optional[bool] = typer.Option(
        None, "--renoise/--no-renoise",
        help="With --mask-blend: start the edited region from fresh noise (new textures, e.g. a background edit)."),
    method: str = MethodOpt, cache_dir: Optional[Path] = CacheOpt,
    out: Path = typer.Option(Path("out/edit"), "--out", help="Output folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the inversion cache."),
) -> None:
    """Invert (or load the cached inversion) and edit a video; writes edited.mp4/.gif, side_by_side.mp4,
    contact_sheet.png and result.json."""
    from .api import Editor, load_inputs

    cfg = _config(config, _overrides(**locals()))
    if out.exists() and not overwrite:
        raise UserError(f"output folder {out} already exists; pass --overwrite to replace it or choose --out")
    frames_, masks_ = load_inputs(cfg)  # input mistakes surface before any model loads
    _quiet()
    editor = Editor(cfg, method=method, cache_dir=cache_dir)
    editor.check_prompts()
    with progress_bar() as cb:
        inv = editor.invert(frames_, masks_, progress=cb, use_cache=not no_cache)
        if inv.meta.get("cache", {}).get("hit"):
            console.print(f"using cached inversion {inv.meta['cache']['folder']}")
        res = editor.edit(inv, progress=cb)
    editor.save(res, inv, out, overwrite)
    console.print(f"wrote {out}/edited.mp4, side_by_side.mp4, contact_sheet.png, result.json")


@app.command()
def invert(
    config: Optional[Path] = typer.Argument(None, help="YAML config (ours or the official format)."),
    video: Optional[str] = VideoOpt, masks: Optional[str] = MasksOpt, source_prompt: Optional[str] = SrcOpt,
    negative_prompt: Optional[str] = NegOpt, frames: Optional[int] = FramesOpt, height: Optional[int] = HOpt,
    width: Optional[int] = WOpt, steps: Optional[int] = StepsOpt, inner_steps: Optional[int] = InnerOpt,
    seed: Optional[int] = SeedOpt, device: Optional[str] = DevOpt, dtype: Optional[str] = DtypeOpt,
    base: Optional[str] = BaseOpt, motion_adapter: Optional[str] = AdapterOpt, single_file: Optional[str] = SingleOpt,
    offline: Optional[bool] = OfflineOpt, bundled: bool = BundledOpt, fast_inversion: Optional[str] = FastOpt,
    gradient_checkpointing: Optional[bool] = GcOpt, compile: Optional[bool] = CompileOpt,
    null_text: Optional[str] = NullOpt, stdg: Optional[str] = StdgOpt,
    method: str = MethodOpt, cache_dir: Optional[Path] = CacheOpt,
    overwrite: bool = typer.Option(False, "--overwrite", help="Recompute and replace a cached inversion."),
) -> None:
    """Run stage 1 only and store the inversion (latents, null-text, STDG) in the cache, keyed by a hash of
    video, masks, prompt, model and settings; later 'edit' runs with new target prompts reuse it."""
    from .api import Editor, load_inputs

    cfg = _config(config, _overrides(**locals()))
    frames_, masks_ = load_inputs(cfg)
    _quiet()
    editor = Editor(cfg, method=method, cache_dir=cache_dir)
    with progress_bar() as cb:
        inv = editor.invert(frames_, masks_, progress=cb, overwrite_cache=overwrite)
    c = inv.meta["cache"]
    console.print(f"{'already cached' if c['hit'] else 'cached'}: {c['folder']}")


@app.command()
def demo(
    out: Path = typer.Option(Path("out/demo"), "--out", help="Output folder."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda."),
    steps: int = typer.Option(15, "--steps", help="DDIM steps (faithful: 50)."),
    inner_steps: int = typer.Option(3, "--inner-steps", help="Null-text iterations per step (faithful: 10)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
) -> None:
    """Edit a ShapeWorld clip with the bundled models (offline): red circle -> yellow square, and a
    background edit teal -> orange; writes outputs, ground truth and metrics.json."""
    from .world.demo import run_demo

    _quiet()
    if out.exists() and not overwrite:
        raise UserError(f"output folder {out} already exists; pass --overwrite to replace it or choose --out")
    with progress_bar() as cb:
        metrics = run_demo(out, device, steps, inner_steps, overwrite, cb)
    keys = ("gt_psnr", "background_psnr", "edit_accuracy", "trajectory_error_px")
    console.print("object edit: " + ", ".join(f"{k}={metrics[k]:.3f}" for k in keys))
    bg = metrics["edits"]["background_edit"]
    console.print("background edit: " + ", ".join(f"{k}={bg[k]:.3f}" for k in keys))
    console.print(f"wrote {out}/ (object_edit/, background_edit/, metrics.json)")


@app.command()
def metrics(
    edited: Path = typer.Argument(..., help="Edited video."),
    source: Path = typer.Argument(..., help="Source video."),
    masks: Optional[Path] = typer.Option(None, "--masks", help="Object masks of the source (for masked PSNR)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Target prompt (for CLIP text alignment)."),
    clip_model: Optional[str] = typer.Option(None, "--clip-model", help="CLIP hub id or folder for CLIP metrics."),
    frames: int = typer.Option(16, "--frames"), size: int = typer.Option(512, "--size"),
    flow: Optional[str] = typer.Option(None, "--flow", help="raft_large, raft_small or a RAFT .pth: adds warp error "
                                       "and motion smoothness (needs the metrics extra)."),
    lpips_net: Optional[str] = typer.Option(None, "--lpips", help="alex, vgg or squeeze: adds LPIPS, masked to the "
                                            "background with --masks (needs the metrics extra)."),
    device: str = typer.Option("cpu", "--device"),
) -> None:
    """Score any pair of videos: PSNR, SSIM, masked (background) PSNR, flicker; masked LPIPS with --lpips; CLIP
    metrics with --clip-model; flow warp error and motion smoothness with --flow."""
    from .metrics.video_pair import score_pair

    result = score_pair(edited, source, masks, prompt, clip_model, frames, size, flow, device, lpips_net)
    typer.echo(json.dumps(result, indent=2))


@app.command()
def bench(
    suite: str = typer.Option("shapeworld-v2", "--suite", help="Suite name: shapeworld-v2 (default) or shapeworld-v1."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated methods (default: all)."),
    device: str = typer.Option("auto", "--device"),
    cases: Optional[int] = typer.Option(None, "--cases", help="Use only the first N cases (CPU mode)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Override DDIM steps (CPU mode)."),
    inner_steps: Optional[int] = typer.Option(None, "--inner-steps", help="Override null-text iterations."),
    guidance_scale: Optional[float] = typer.Option(None, "--guidance-scale", help="CFG scale w of inversion and "
                                                   "editing (default: the bundled models' own, 3)."),
    results: Path = typer.Option(Path("benchmarks/results"), "--results", help="Results root."),
    list_methods: bool = typer.Option(False, "--list", help="List methods and exit."),
    shard: Optional[str] = typer.Option(None, "--shard", help="I/N: run only this worker's share, no summary "
                                        "(start N workers, then gather with a plain run)."),
    stored_only: bool = typer.Option(False, "--stored-only", help="Run nothing: summarise the cases that every "
                                     "method has finished (after a run cut short)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Run N shard workers in parallel (one GPU: a small "
                                "model is launch-bound, so they overlap), then gather."),
) -> None:
    """Run the ShapeWorld ground-truth suite (resumable) and write per-method JSON, summary.json and a report."""
    from .bench.runner import run_bench, run_workers
    from .methods.base import METHODS

    if list_methods:
        for name, (_, ov, doc) in METHODS.items():
            typer.echo(f"{name:22s} {doc}")
        return
    names = methods.split(",") if methods else None
    part = None
    if shard:
        i, _, n = shard.partition("/")
        if not (i.isdigit() and n.isdigit()):
            raise UserError(f"--shard {shard!r} is not I/N; write e.g. --shard 0/8")
        part = (int(i), int(n))
    if workers > 1 and (part or stored_only):
        raise UserError("--workers starts its own shards; leave out --shard and --stored-only")
    _quiet()
    if workers > 1:
        options = ["--suite", suite, "--device", device, "--results", str(results)]
        for flag, value in (("--methods", methods), ("--cases", cases), ("--steps", steps), ("--inner-steps", inner_steps),
                            ("--guidance-scale", guidance_scale)):
            if value is not None:
                options += [flag, str(value)]
        with progress_bar() as cb:
            run_workers(workers, options, suite, names, cases, results, cb)
    with progress_bar() as cb:
        summary = run_bench(suite, names, device, cases, steps, inner_steps, results, cb, part, stored_only,
                            guidance_scale)
    if part:
        console.print(f"shard {part[0]}/{part[1]} done; run again without --shard to write the summary")
        return
    console.print(f"wrote {results / suite}/summary.json and report.md ({len(summary)} methods)")


def main() -> None:
    from rich.markup import escape

    try:
        app()
    except UserError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
