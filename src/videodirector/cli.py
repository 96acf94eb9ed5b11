"""Command line: ``videodirector edit | invert | demo | bench | metrics``.

Thin: parses arguments, shows progress (stage, step, ETA) and calls :mod:`videodirector.api`.
User mistakes print one line (``error: ...``) and exit with status 2; warnings print one line each
(``warning: ...``). Ctrl-C stops the run (status 130) and leaves no half-written output.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import __version__, notices
from .errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=(
    "Precise text-driven video editing with diffusion models (VideoDirector on AnimateDiff).\n\n"
    "Quick start: 'videodirector demo' edits a ShapeWorld clip with the bundled models, offline, on CPU."))
console = Console(stderr=True)
PROGRESS_INTERVAL_S = float(os.environ.get("VIDEODIRECTOR_PROGRESS_INTERVAL", "10"))
"""Seconds between plain progress lines when stderr is not a terminal."""


# ------------------------------------------------------------------------------------ interruption
_interrupted = False


def _on_sigint(signum: int, frame: Any) -> None:  # noqa: ARG001
    """First Ctrl-C: raise KeyboardInterrupt and remember it (Python drops one raised inside a ``__del__``
    or a callback, so :func:`check_interrupt` raises it again at the next step); second: stop at once.

    Inside a module import (torch's, say) the interrupt is not raised: an exception thrown through the C++
    that an import calls back from aborts the process (``terminate called after throwing an instance of
    'pybind11::error_already_set'``, status -6), and one that a library swallows leaves the module half-built.
    An import writes nothing of ours, so the run stops there at once, with the usual line."""
    global _interrupted
    if _interrupted:
        os._exit(130)
    _interrupted = True
    if _inside_import(frame):
        sys.stderr.write(f"error: {INTERRUPTED}\n")
        sys.stderr.flush()
        os._exit(130)
    raise KeyboardInterrupt


def _inside_import(frame: Any) -> bool:
    """Whether Python is executing a module import at ``frame`` or in a caller of it."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


def install_interrupt_handler() -> None:
    global _interrupted
    _interrupted = False
    signal.signal(signal.SIGINT, _on_sigint)


def check_interrupt() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed and the interrupt got lost on the way."""
    if _interrupted:
        raise KeyboardInterrupt


# ------------------------------------------------------------------------------------ progress
class ProgressLines:
    """Plain progress for a log file or pipe: one line per stage start and end, and otherwise at most one
    every ``interval`` seconds: ``stage: step/total (pct), elapsed, eta``."""

    def __init__(self, interval: float = PROGRESS_INTERVAL_S) -> None:
        self.interval = interval
        self.start: dict[str, float] = {}
        self.last_line = 0.0

    def __call__(self, stage: str, step: int, total: int) -> None:
        now = time.monotonic()
        first = stage not in self.start
        if first:
            self.start[stage] = now
        if not (first or step >= total or now - self.last_line >= self.interval):
            return
        self.last_line = now
        elapsed = now - self.start[stage]
        eta = elapsed / step * (total - step) if step > 0 else float("nan")
        pct = 100.0 * step / total if total else 100.0
        line = f"{stage}: {step}/{total} ({pct:.0f}%), {_clock(elapsed)} elapsed"
        line += ", done" if step >= total else (f", eta {_clock(eta)}" if step > 0 else "")
        print(line, file=sys.stderr, flush=True)


def _clock(seconds: float) -> str:
    if seconds != seconds:  # nan
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


@contextmanager
def progress_bar():  # noqa: ANN201
    """Yields ``callback(stage, step, total)``: a rich progress display on a terminal, plain lines on stderr
    otherwise. Each call also checks for a pending Ctrl-C."""
    if not console.is_terminal and not _force_progress():
        lines = ProgressLines()

        def plain(stage: str, step: int, total: int) -> None:
            check_interrupt()
            lines(stage, step, total)

        yield plain
        return
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False) as prog:
        tasks: dict[str, Any] = {}

        def callback(stage: str, step: int, total: int) -> None:
            check_interrupt()
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=total)
            prog.update(tasks[stage], completed=step)

        yield callback


def _quiet() -> None:
    """Hide library progress bars and warnings that say nothing to a user of this tool."""
    import logging
    import warnings

    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(diffusers|transformers|torch)\.")


def _force_progress() -> bool:
    return os.environ.get("VIDEODIRECTOR_PROGRESS", "") == "1"


def _threads(n: Optional[int]) -> None:
    if n is not None:
        if not 1 <= n <= 1024:
            raise UserError(f"--threads {n}: use a number of CPU threads from 1 to 1024")
        import torch

        torch.set_num_threads(n)


# ------------------------------------------------------------------------------------ settings
_KEYS = {
    "video": "input.video", "masks": "input.masks", "frames": "input.num_frames", "height": "input.height",
    "width": "input.width", "source_prompt": "prompts.source", "target_prompt": "prompts.target",
    "negative_prompt": "prompts.negative", "steps": "inversion.num_steps", "inner_steps": "inversion.null_inner_steps",
    "guidance_scale": "inversion.guidance_scale", "seed": "seed", "device": "model.device", "dtype": "model.dtype",
    "base": "model.base", "motion_adapter": "model.motion_adapter", "single_file": "model.single_file",
    "offline": "model.local_files_only", "threads": "model.threads",
    "fast_inversion": "inversion.fast", "gradient_checkpointing": "model.gradient_checkpointing",
    "compile": "model.compile", "tau_s": "control.self_replace_steps", "tau_c": "control.cross_replace_steps",
    "cross_mode": "control.cross_mode", "edit_target": "control.edit_target", "null_text": "inversion.null_text",
    "mask_blend": "control.mask_blend", "renoise": "control.mask_blend_renoise",
    "mask_blend_dilation": "control.mask_blend_dilation",
    "lora_steps": "i2vedit.lora_steps", "svd": "i2vedit.model", "svd_variant": "i2vedit.variant",
    "tune_steps": "video_p2p.tune_steps", "fast": "video_p2p.fast", "cross_window": "video_p2p.cross_replace_steps",
    "temporal_window": "video_p2p.temporal_replace_steps", "frame_attention": "video_p2p.frame_attention",
    "iterations": "assd.iterations", "lr": "assd.lr", "t2v": "assd.t2v", "t2v_model": "assd.t2v_model",
}
EDIT_WEIGHT_ALONE = "--edit-weight"
"""Where ``_overrides`` keeps an ``--edit-weight`` given without ``--edit-words`` until the config's words are known."""
_OFF_FLAGS = {"no_smoothing": "assd.smoothing", "no_fusion": "assd.fusion", "no_sd_guidance": "assd.sd_guidance"}
"""Flags that switch a method's component off (``--no-fusion`` sets ``assd.fusion: false``)."""


def _numbers(flag: str, text: str, count: int | None = None) -> list[float]:
    try:
        values = [float(x) for x in text.split(",")]
    except ValueError:
        values = []
    if not values or (count is not None and len(values) != count):
        what = f"{count} comma-separated numbers" if count else "comma-separated numbers"
        raise UserError(f"{flag} {text!r} is not {what}; write e.g. {flag} 0.5,0.5,0,0.5")
    return values


def _i2vedit_overrides(kw: dict[str, Any]) -> dict[str, Any]:
    """I2VEdit's options: the edited first frame, beta, the mask threshold and its component switches."""
    out: dict[str, Any] = {}
    if kw.get("first_frame"):
        out["i2vedit.first_frames"] = [kw["first_frame"]]
    if kw.get("temporal_step_thr"):
        out["i2vedit.temporal_step_thr"] = [float(b) for b in kw["temporal_step_thr"]]
    if kw.get("mask_thr") is not None:
        out["i2vedit.mask_thr"] = [kw["mask_thr"], kw["mask_thr"]]
    for flag, key in (("no_sarp", "i2vedit.sarp"), ("no_motion_lora", "i2vedit.motion_lora"),
                      ("no_matching", "i2vedit.matching")):
        if kw.get(flag):
            out[key] = False
    return out


def _overrides(**kw: Any) -> dict[str, Any]:
    """Dotted config keys from the command-line options (None = not given)."""
    out = {_KEYS[k]: v for k, v in kw.items() if v is not None and k in _KEYS}
    out.update(_i2vedit_overrides(kw))
    out.update({key: False for flag, key in _OFF_FLAGS.items() if kw.get(flag)})
    if kw.get("edit_words"):
        words = [w.strip() for w in kw["edit_words"].split(",") if w.strip()]
        weight = kw.get("edit_weight")
        out["prompts.equalizer_words"] = words
        out["prompts.equalizer_values"] = [float(1.0 if weight is None else weight)] * len(words)
    elif kw.get("edit_weight") is not None:  # for the words a config file names: resolved by _config
        out[EDIT_WEIGHT_ALONE] = kw["edit_weight"]
    if kw.get("stdg"):
        out["stdg.coefficients"] = _numbers("--stdg", kw["stdg"], 4)
    if kw.get("blend_words"):
        pair = kw["blend_words"]
        out["prompts.blend_words_source"], out["prompts.blend_words_target"] = [pair[0]], [pair[1]]
    if str(kw.get("method") or "").startswith(("video-p2p", "vp2p-")):  # Video-P2P reads its own section
        if "control.cross_mode" in out:
            out["video_p2p.cross_mode"] = out.pop("control.cross_mode")
        if "inversion.guidance_scale" in out:  # its CFG is eps_u + s (eps_c - eps_u), official s = 7.5
            out["video_p2p.guidance_scale"] = out.pop("inversion.guidance_scale")
        elif kw.get("bundled"):
            from .api import BUNDLED_GUIDANCE_SCALE

            out["video_p2p.guidance_scale"] = BUNDLED_GUIDANCE_SCALE + 1.0  # the same guidance as w = 3
    if kw.get("bundled"):
        given = [f for f, k in (("--base", "base"), ("--motion-adapter", "motion_adapter"),
                                ("--single-file", "single_file")) if kw.get(k)]
        if given:
            raise UserError(f"--bundled and {given[0]} both name the models; keep --bundled for the bundled "
                            f"ShapeWorld models or {given[0]} for your own weights, not both")
        from .api import BUNDLED_GUIDANCE_SCALE, bundled_model_config

        out.update(bundled_model_config(kw.get("device") or "auto"))
        out.setdefault("inversion.guidance_scale", BUNDLED_GUIDANCE_SCALE)
    return out


def _config(config: Optional[Path], overrides: dict[str, Any], method: str):  # noqa: ANN202
    """The run's settings, validated as the method will run them: the YAML (ours or official) or the defaults,
    then the method's own settings (a variant's), then the options, which win. Weights given on the command
    line (``--bundled``, ``--base``) replace a YAML's single-file checkpoint (the official ``dreambooth_path``)
    unless ``--single-file`` is given too."""
    from .api import method_config
    from .config import EditConfig, apply_overrides, load_config, validate
    from .methods.base import check_frames

    weight = overrides.pop(EDIT_WEIGHT_ALONE, None)
    cfg = load_config(config, check=False) if config else EditConfig()
    cfg = method_config(method, cfg, overrides)
    if weight is not None:  # --edit-weight for the config's own --edit-words
        if not cfg.prompts.equalizer_words:
            raise UserError("--edit-weight sets the cross-attention weight of --edit-words; name the words too, "
                            "e.g. --edit-words tiger --edit-weight 2")
        overrides["prompts.equalizer_values"] = [float(weight)] * len(cfg.prompts.equalizer_words)
        cfg = apply_overrides(cfg, {"prompts.equalizer_values": overrides["prompts.equalizer_values"]})
    if "model.single_file" not in overrides and ("model.base" in overrides):
        cfg.model.single_file = None
    validate(cfg)
    check_frames(cfg.input.num_frames, method)  # the method's own limit (AnimateDiff's 32; I2VEdit more)
    return cfg


def _preflight(out: Optional[Path], overwrite: bool, cache_dir: Optional[Path], use_cache: bool = True,
               inputs: tuple[Any, ...] = ()) -> None:
    """Check every output and cache location before any work starts (``out`` must not hold ``inputs``)."""
    from .api import check_cache_location, default_cache_dir
    from .io.outputs import check_output_location

    if out is not None:
        check_output_location(out, overwrite, inputs=[i for i in inputs if i])
    if use_cache:
        check_cache_location(cache_dir or default_cache_dir())


def _method(method: Optional[str], config: Optional[Path]) -> str:
    """The method to run: ``--method``, else the one the config was written for, else VideoDirector."""
    if method:
        return method
    if config is not None:
        from .config import load_config
        from .methods import catalog  # noqa: F401  (registers the official formats)

        return load_config(config).method or "videodirector"
    return "videodirector"


def _first_frame_from_text(cfg: Any, frame: Any, prompt: str, given: bool) -> tuple[Any, str]:
    """``--first-frame-prompt``: edit frame 0 with VideoDirector on one frame (``api.edit_first_frame``) and
    hand it to I2VEdit as its edited first frame (a PNG in a scratch folder, removed after the run)."""
    import tempfile

    from PIL import Image

    from .api import edit_first_frame
    from .config import apply_overrides
    from .io.outputs import to_uint8

    if given:
        raise UserError("--first-frame and --first-frame-prompt both give the edited first frame; keep one")
    with progress_bar() as cb:
        edited = edit_first_frame(cfg, frame, cfg.prompts.source, prompt, progress=cb)
    folder = tempfile.mkdtemp(prefix="videodirector-first-frame-")
    path = Path(folder) / "first_frame.png"
    try:
        Image.fromarray(to_uint8(edited[None].cpu())[0]).save(path)
    except BaseException:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
        raise
    return apply_overrides(cfg, {"i2vedit.first_frames": [str(path)]}), folder


def _edit_targets(cfg: Any, method: str) -> list[str]:
    """What ``edit`` edits towards, one output each: the config's prompt (``''``), or I2VEdit's edited first
    frames when there are several."""
    if _needs_prompts(method):
        return [""]
    frames = cfg.settings_for("i2vedit").first_frames
    return list(frames) if len(frames) > 1 else [""]


def _needs_prompts(method: str) -> bool:
    """False for methods driven by something else than prompts (I2VEdit: an edited first frame)."""
    from .methods.base import METHODS

    return getattr(METHODS.get(method, (None,))[0], "needs_prompts", True)


def _require_prompts(cfg: Any, target: bool) -> None:
    from .errors import InputError

    if not cfg.prompts.source.strip():
        raise InputError("no source prompt; pass --source-prompt describing the input video")
    if target and not cfg.prompts.target.strip():
        raise InputError("no target prompt; pass --target-prompt with the edited description")


def _d(text: str, default: Any) -> str:
    """Help text with its default, written the way typer writes the defaults it shows itself."""
    return f"{text} \\[default: {default}]"


# Options shared by edit and invert ------------------------------------------------------------
VideoOpt = typer.Option(None, "--video", help="Input video (mp4, webm, mov, gif) or folder of frames. \\[default: the config's]")
MasksOpt = typer.Option(None, "--masks", help="Folder of per-frame mask images or a mask video (non-zero = object). "
                        "\\[default: none, the whole frame]")
SrcOpt = typer.Option(None, "--source-prompt", help="Prompt describing the input video.")
NegOpt = typer.Option(None, "--negative-prompt", help=_d("Negative prompt (initialises the null-text).", "''"))
FramesOpt = typer.Option(None, "--frames", help=_d("Frames to sample, 1 to 32.", 16))
HOpt = typer.Option(None, "--height", help=_d("Height, a multiple of 8.", 512))
WOpt = typer.Option(None, "--width", help=_d("Width, a multiple of 8.", 512))
StepsOpt = typer.Option(None, "--steps", help=_d("DDIM steps.", 50))
InnerOpt = typer.Option(None, "--inner-steps", help=_d("Null-text iterations per step.", 10))
GuidanceOpt = typer.Option(None, "--guidance-scale", help=_d("CFG scale w (Eq. 10) of inversion and editing.",
                                                             "7.5; 3 with --bundled"))
SeedOpt = typer.Option(None, "--seed", help=_d("Seed, 0 to 2**63-1.", 42))
DevOpt = typer.Option(None, "--device", help=_d("auto (CUDA when present), cpu, cuda or cuda:N.", "auto"))
DtypeOpt = typer.Option(None, "--dtype", help=_d("auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16 or "
                                                 "float16 (GPU only).", "auto"))
ThreadsOpt = typer.Option(None, "--threads", help=_d("CPU threads for torch; 1 on a busy or small machine.",
                                                     "one per core"))
BaseOpt = typer.Option(None, "--base", help=_d("SD 1.5 diffusers folder or hub id; replaces a YAML's dreambooth_path.",
                                               "stable-diffusion-v1-5/stable-diffusion-v1-5"))
AdapterOpt = typer.Option(None, "--motion-adapter", help=_d("Motion adapter folder, hub id or .ckpt file.",
                                                            "guoyww/animatediff-motion-adapter-v1-5-3"))
SingleOpt = typer.Option(None, "--single-file", help="Community SD 1.5 checkpoint (.safetensors); its config comes "
                         "from --base. \\[default: none]")
OfflineOpt = typer.Option(None, "--offline/--online", help=_d("Never touch the network (also HF_HUB_OFFLINE=1).",
                                                              "online"))
BundledOpt = typer.Option(False, "--bundled", help="Use the bundled ShapeWorld models (no download; they only know "
                          "ShapeWorld scenes); replaces a YAML's dreambooth_path and motion_module.")
FastOpt = typer.Option(None, "--fast-inversion", help=_d("none (faithful), negative_prompt or direct: skip the null-text "
                                                         "optimisation (beyond the paper).", "none"))
GcOpt = typer.Option(None, "--gradient-checkpointing/--no-gradient-checkpointing",
                     help=_d("Less GPU memory for null-text.", "off"))
CompileOpt = typer.Option(None, "--compile/--no-compile",
                          help=_d("torch.compile the UNet's resnet, feed-forward, transformer and motion-module blocks "
                                  "(GPU; about 6 minutes once).", "off"))
NullOpt = typer.Option(None, "--null-text", help=_d("multi_frame (paper), shared or none.", "multi_frame"))
StdgOpt = typer.Option(None, "--stdg", help=_d("STDG coefficients eta_f,eta_b,zeta_f,zeta_b.", "0.5,0.5,0,0.5"))
CacheOpt = typer.Option(None, "--cache-dir", help=_d("Inversion cache folder.", "~/.cache/videodirector/inversions"))
MethodOpt = typer.Option(None, "--method", help="Method or ablation name (see 'videodirector bench --list'). "
                         "\\[default: the config's method (video-p2p for official Video-P2P YAMLs), else videodirector]")
FirstFrameOpt = typer.Option(None, "--first-frame", help="I2VEdit: the video's first frame, edited with any image "
                             "tool (png/jpg). \\[default: the config's i2vedit.first_frames]")
SvdOpt = typer.Option(None, "--svd", help=_d("I2VEdit: Stable Video Diffusion hub id or diffusers folder.",
                                             "stabilityai/stable-video-diffusion-img2vid"))
SvdVariantOpt = typer.Option(None, "--svd-variant", help="I2VEdit: weights variant, fp16 for SVD's half-precision "
                             "files. \\[default: none]")
LoraStepsOpt = typer.Option(None, "--lora-steps", help=_d("I2VEdit: motion-LoRA training steps per clip.", 250))
BetaOpt = typer.Option(None, "--temporal-step-thr", help=_d("I2VEdit: temporal stage boundaries B1 B2 (local 0.5 0.8, "
                       "shape change 0.4 0.5, global 0.8 0.9).", "0.5 0.8"))
MaskThrOpt = typer.Option(None, "--mask-thr", help=_d("I2VEdit: spatial matching threshold.", 0.35))
NoSarpOpt = typer.Option(False, "--no-sarp", help="I2VEdit: no smooth-area random perturbation.")
NoLoraOpt = typer.Option(False, "--no-motion-lora", help="I2VEdit: no motion LoRA.")
NoMatchOpt = typer.Option(False, "--no-matching", help="I2VEdit: no attention matching.")
IterOpt = typer.Option(None, "--iterations", help=_d("ASSD: SGD iterations on the latent.", 200))
LrOpt = typer.Option(None, "--lr", help=_d("ASSD: SGD learning rate.", 0.1))
NoSmoothOpt = typer.Option(False, "--no-smoothing", help="ASSD: Video DDS gradient, no sliding smoothing or adaptive mask.")
NoFusionOpt = typer.Option(False, "--no-fusion", help="ASSD: no weighted attention fusion.")
NoSdOpt = typer.Option(False, "--no-sd-guidance", help="ASSD: no joint SD 1.5 image guidance.")
T2vOpt = typer.Option(None, "--t2v", help=_d("ASSD: text-to-video guidance, animatediff or modelscope.", "animatediff"))
T2vModelOpt = typer.Option(None, "--t2v-model", help=_d("ASSD: ModelScope/Zeroscope hub id or folder (with --t2v "
                                                        "modelscope).", "ali-vilab/text-to-video-ms-1.7b"))


def _version(value: bool) -> None:
    if value:
        typer.echo(f"videodirector {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Precise text-driven video editing with diffusion models (VideoDirector on AnimateDiff)."""


@app.command()
def edit(
    config: Optional[Path] = typer.Argument(None, help="YAML config (ours or the official VideoDirector format)."),
    video: Optional[str] = VideoOpt, masks: Optional[str] = MasksOpt, source_prompt: Optional[str] = SrcOpt,
    target_prompt: Optional[str] = typer.Option(None, "--target-prompt", help="The edited description."),
    negative_prompt: Optional[str] = NegOpt,
    edit_words: Optional[str] = typer.Option(None, "--edit-words", help="Comma-separated target words whose "
                                             "cross-attention is reweighted. \\[default: none]"),
    edit_weight: Optional[float] = typer.Option(None, "--edit-weight", help=_d("Cross-attention weight of --edit-words.", 1)),
    frames: Optional[int] = FramesOpt, height: Optional[int] = HOpt, width: Optional[int] = WOpt,
    steps: Optional[int] = StepsOpt, inner_steps: Optional[int] = InnerOpt, guidance_scale: Optional[float] = GuidanceOpt,
    seed: Optional[int] = SeedOpt, device: Optional[str] = DevOpt, dtype: Optional[str] = DtypeOpt,
    threads: Optional[int] = ThreadsOpt, base: Optional[str] = BaseOpt, motion_adapter: Optional[str] = AdapterOpt,
    single_file: Optional[str] = SingleOpt, offline: Optional[bool] = OfflineOpt, bundled: bool = BundledOpt,
    fast_inversion: Optional[str] = FastOpt, gradient_checkpointing: Optional[bool] = GcOpt,
    compile: Optional[bool] = CompileOpt, null_text: Optional[str] = NullOpt, stdg: Optional[str] = StdgOpt,
    tau_s: Optional[float] = typer.Option(None, "--tau-s", help=_d("SA-I/SA-II switch, fraction of steps.", 0.4)),
    tau_c: Optional[float] = typer.Option(None, "--tau-c", help=_d("Cross-attention control window, fraction of steps.", 0.8)),
    cross_mode: Optional[str] = typer.Option(None, "--cross-mode", help=_d("refine or replace.", "refine")),
    edit_target: Optional[str] = typer.Option(None, "--edit-target", help=_d("object or background.", "object")),
    mask_blend: Optional[bool] = typer.Option(
        None, "--mask-blend/--no-mask-blend",
        help=_d("Beyond the paper: keep the source exactly outside the masks' edit region (needs --masks).", "off")),
    renoise: Optional[bool] = typer.Option(
        None, "--renoise/--no-renoise",
        help=_d("With --mask-blend: start the edited region from fresh noise (new textures).", "off")),
    mask_blend_dilation: Optional[int] = typer.Option(
        None, "--mask-blend-dilation", metavar="N",
        help=_d("With --mask-blend: latent pixels of room around the object; 0 for a new colour, 1 for a new shape.", 1)),
    iterations: Optional[int] = IterOpt, lr: Optional[float] = LrOpt, no_smoothing: bool = NoSmoothOpt,
    no_fusion: bool = NoFusionOpt, no_sd_guidance: bool = NoSdOpt, t2v: Optional[str] = T2vOpt,
    t2v_model: Optional[str] = T2vModelOpt,
    tune_steps: Optional[int] = typer.Option(None, "--tune-steps", min=0, max=100000,
                                             help=_d("Video-P2P: stage-1 tuning steps (0: untuned).", 500)),
    fast: Optional[bool] = typer.Option(None, "--fast/--no-fast", help=_d("Video-P2P: no null-text; the source "
                                        "branch at guidance 1 (official --fast).", "off")),
    blend_words: Optional[tuple[str, str]] = typer.Option(
        None, "--blend-words", help="Local blend on word SRC of the source prompt and TGT of the target prompt "
        "(Video-P2P: its local blend). \\[default: none, a global edit]"),
    cross_window: Optional[float] = typer.Option(None, "--cross-window", help=_d(
        "Video-P2P: cross-attention control on steps [0, int(r (T+1))).", 0.2)),
    temporal_window: Optional[float] = typer.Option(None, "--temporal-window", help=_d(
        "Video-P2P: temporal-attention injection on steps [0, int(T s)).", 0.5)),
    frame_attention: Optional[str] = typer.Option(None, "--frame-attention", help=_d(
        "Video-P2P: first (frame 0's keys) or sparse_causal (frames 0 and i-1).", "first")),
    first_frame: Optional[str] = FirstFrameOpt, svd: Optional[str] = SvdOpt, svd_variant: Optional[str] = SvdVariantOpt,
    first_frame_prompt: Optional[str] = typer.Option(
        None, "--first-frame-prompt", help="I2VEdit: edit the first frame from this text instead of --first-frame "
        "(VideoDirector on one frame with --source-prompt, on the --base/--motion-adapter or --bundled models). "
        "\\[default: none]"),
    lora_steps: Optional[int] = LoraStepsOpt, temporal_step_thr: Optional[tuple[float, float]] = BetaOpt,
    mask_thr: Optional[float] = MaskThrOpt, no_sarp: bool = NoSarpOpt, no_motion_lora: bool = NoLoraOpt,
    no_matching: bool = NoMatchOpt,
    method: Optional[str] = MethodOpt, cache_dir: Optional[Path] = CacheOpt,
    out: Path = typer.Option(Path("out/edit"), "--out", help="Output folder (created; must not hold other files)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier output of this tool at --out."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the inversion cache."),
) -> None:
    """Invert (or load the cached inversion) and edit a video; writes edited.mp4/.gif, side_by_side.mp4,
    contact_sheet.png and result.json (with the reconstruction PSNR)."""
    _threads(threads)
    method = _method(method, config)
    flags = _overrides(**locals())
    cfg = _config(config, flags, method)
    if _needs_prompts(method):
        _require_prompts(cfg, target=True)
    _preflight(out, overwrite, cache_dir, use_cache=not no_cache, inputs=(cfg.input.video, cfg.input.masks))
    from .api import Editor, load_inputs

    frames_, masks_ = load_inputs(cfg)  # input mistakes surface before any model loads
    check_interrupt()
    _quiet()
    scratch, extra = None, {}
    try:
        if first_frame_prompt:
            cfg, scratch = _first_frame_from_text(cfg, frames_[0], first_frame_prompt, first_frame is not None)
            extra = {"first_frame_prompt": first_frame_prompt}
        editor = Editor(cfg, method=method, cache_dir=cache_dir, overrides=flags)  # flags win over a variant's settings
        editor.check_prompts()
        check_interrupt()
        with progress_bar() as cb:
            inv = editor.invert(frames_, masks_, progress=cb, use_cache=not no_cache)
            if inv.meta.get("cache", {}).get("hit"):
                console.print(f"using cached inversion {inv.meta['cache']['folder']}", highlight=False)
            targets = _edit_targets(cfg, method)
            results = [editor.edit(inv, t or None, progress=cb) for t in targets]
        check_interrupt()
        if len(results) > 1:  # I2VEdit with several edited first frames (official keyframe_paths): out/edit0, ...
            for k, (t, r) in enumerate(zip(targets, results)):
                editor.save(r, inv, Path(out) / f"edit{k}", overwrite, {**extra, "first_frame": t})
            console.print(f"wrote {out}/edit0 ... edit{len(results) - 1}", highlight=False)
            return
        editor.save(results[0], inv, out, overwrite, extra)
    finally:  # the first frame edited from text is scratch, whatever happened
        if scratch is not None:
            import shutil

            shutil.rmtree(scratch, ignore_errors=True)
    console.print(f"wrote {out}/edited.mp4, side_by_side.mp4, contact_sheet.png, result.json", highlight=False)


@app.command()
def invert(
    config: Optional[Path] = typer.Argument(None, help="YAML config (ours or the official VideoDirector format)."),
    video: Optional[str] = VideoOpt, masks: Optional[str] = MasksOpt, source_prompt: Optional[str] = SrcOpt,
    negative_prompt: Optional[str] = NegOpt, frames: Optional[int] = FramesOpt, height: Optional[int] = HOpt,
    width: Optional[int] = WOpt, steps: Optional[int] = StepsOpt, inner_steps: Optional[int] = InnerOpt,
    guidance_scale: Optional[float] = GuidanceOpt, seed: Optional[int] = SeedOpt, device: Optional[str] = DevOpt,
    dtype: Optional[str] = DtypeOpt, threads: Optional[int] = ThreadsOpt, base: Optional[str] = BaseOpt,
    motion_adapter: Optional[str] = AdapterOpt, single_file: Optional[str] = SingleOpt,
    offline: Optional[bool] = OfflineOpt, bundled: bool = BundledOpt, fast_inversion: Optional[str] = FastOpt,
    gradient_checkpointing: Optional[bool] = GcOpt, compile: Optional[bool] = CompileOpt,
    null_text: Optional[str] = NullOpt, stdg: Optional[str] = StdgOpt,
    svd: Optional[str] = SvdOpt, svd_variant: Optional[str] = SvdVariantOpt, lora_steps: Optional[int] = LoraStepsOpt,
    no_sarp: bool = NoSarpOpt, no_motion_lora: bool = NoLoraOpt,
    method: Optional[str] = MethodOpt, cache_dir: Optional[Path] = CacheOpt,
    overwrite: bool = typer.Option(False, "--overwrite", help="Recompute and replace a cached inversion."),
) -> None:
    """Run stage 1 only and store the inversion (latents, null-text, STDG) in the cache, keyed by a hash of
    video, masks, prompt, model and settings; later 'edit' runs with new target prompts reuse it."""
    _threads(threads)
    method = _method(method, config)
    flags = _overrides(**locals())
    cfg = _config(config, flags, method)
    if _needs_prompts(method):
        _require_prompts(cfg, target=False)
    _preflight(None, False, cache_dir)
    from .api import Editor, load_inputs

    frames_, masks_ = load_inputs(cfg)
    check_interrupt()
    _quiet()
    editor = Editor(cfg, method=method, cache_dir=cache_dir, overrides=flags)
    check_interrupt()
    with progress_bar() as cb:
        inv = editor.invert(frames_, masks_, progress=cb, overwrite_cache=overwrite)
    c = inv.meta["cache"]
    console.print(f"{'already cached' if c['hit'] else 'cached'}: {c['folder']}", highlight=False)


@app.command()
def demo(
    out: Path = typer.Option(Path("out/demo"), "--out", help="Output folder (created; must not hold other files)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda."),
    steps: int = typer.Option(15, "--steps", min=1, max=1000, help="DDIM steps (faithful: 50)."),
    inner_steps: int = typer.Option(3, "--inner-steps", min=0, max=1000,
                                    help="Null-text iterations per step (faithful: 10)."),
    threads: Optional[int] = ThreadsOpt,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier output of this tool at --out."),
    method: str = typer.Option("videodirector", "--method", help="Method or ablation name (see 'videodirector "
                               "bench --list')."),
    iterations: Optional[int] = typer.Option(None, "--iterations", min=1, max=100000,
                                             help=_d("ASSD: SGD iterations (faithful: 200).", 20)),
) -> None:
    """Edit a ShapeWorld clip with the bundled models (offline): red circle -> yellow square, and a
    background edit teal -> orange; writes outputs, ground truth and metrics.json."""
    _threads(threads)
    from .config import EditConfig, apply_overrides, validate

    validate(apply_overrides(EditConfig(), {"model.device": device}))
    from .api import method_config

    method_config(method, EditConfig())  # an unknown method is one line, before any work
    if not _needs_prompts(method):  # I2VEdit's demo runs on the bundled image-to-video model
        from .api import BUNDLED_WEIGHTS

        if not (BUNDLED_WEIGHTS / "i2v" / "unet" / "config.json").is_file():
            raise UserError(f"the {method} demo needs the bundled ShapeWorld image-to-video model, which is not trained "
                            "yet; train it with 'python -m videodirector.world.train --model i2v', or edit your own video "
                            "with real SVD weights: videodirector edit --method i2vedit --first-frame EDITED.png")
    _preflight(out, overwrite, None, use_cache=False)
    from .world.demo import DEMO_ASSD_ITERATIONS, run_demo

    _quiet()
    with progress_bar() as cb:
        metrics = run_demo(out, device, steps, inner_steps, overwrite, cb, method=method,
                           overrides={"assd.iterations": iterations or DEMO_ASSD_ITERATIONS})
    keys = ("gt_psnr", "background_psnr", "edit_accuracy", "trajectory_error_px", "reconstruction_psnr")
    console.print("object edit: " + ", ".join(f"{k}={metrics['edits']['object_edit'][k]:.3f}" for k in keys),
                  highlight=False)
    bg = metrics["edits"]["background_edit"]
    console.print("background edit: " + ", ".join(f"{k}={bg[k]:.3f}" for k in keys), highlight=False)
    console.print(f"wrote {out}/ (object_edit/, background_edit/, metrics.json)", highlight=False)


@app.command()
def metrics(
    edited: Path = typer.Argument(..., help="Edited video."),
    source: Path = typer.Argument(..., help="Source video."),
    masks: Optional[Path] = typer.Option(None, "--masks", help="Object masks of the source (for masked PSNR). "
                                         "\\[default: none]"),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Target prompt (for CLIP text alignment). \\[default: none]"),
    clip_model: Optional[str] = typer.Option(None, "--clip-model", help="CLIP hub id or folder for CLIP metrics. "
                                             "\\[default: none]"),
    frames: int = typer.Option(16, "--frames", min=1, max=1024, help="Frames compared."),
    size: int = typer.Option(512, "--size", min=8, max=4096, help="Side the frames are resized to."),
    flow: Optional[str] = typer.Option(None, "--flow", help="raft_large, raft_small or a RAFT .pth: adds warp error "
                                       "and motion smoothness (needs the metrics extra). \\[default: none]"),
    lpips_net: Optional[str] = typer.Option(None, "--lpips", help="alex, vgg or squeeze: adds LPIPS, masked to the "
                                            "background with --masks (needs the metrics extra). \\[default: none]"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N."),
    threads: Optional[int] = ThreadsOpt,
) -> None:
    """Score any pair of videos: PSNR, SSIM, masked (background) PSNR, flicker; masked LPIPS with --lpips; CLIP
    metrics with --clip-model; flow warp error and motion smoothness with --flow."""
    _threads(threads)
    from .config import EditConfig, apply_overrides, validate

    validate(apply_overrides(EditConfig(), {"model.device": device}))
    from .metrics.video_pair import score_pair

    result = score_pair(edited, source, masks, prompt, clip_model, frames, size, flow, device, lpips_net)
    typer.echo(json.dumps(result, indent=2))


@app.command()
def bench(
    suite: str = typer.Option("shapeworld-v2", "--suite", help="Suite name: shapeworld-v2, shapeworld-v2-holdout (its "
                              "recipe on a second seed range) or shapeworld-v1."),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated methods. \\[default: all]"),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda or cuda:N."),
    cases: Optional[int] = typer.Option(None, "--cases", min=1, help="Use only the first N cases (CPU mode). "
                                        "\\[default: all]"),
    case_ids: Optional[str] = typer.Option(None, "--case-ids", help="Comma-separated case ids, e.g. "
                                           "01-colour,13-shape: use only these. \\[default: all]"),
    steps: Optional[int] = typer.Option(None, "--steps", min=1, max=1000, help=_d("DDIM steps.", 25)),
    inner_steps: Optional[int] = typer.Option(None, "--inner-steps", min=0, max=1000,
                                              help=_d("Null-text iterations per step.", 10)),
    guidance_scale: Optional[float] = typer.Option(None, "--guidance-scale", help=_d(
        "CFG scale w of inversion and editing.", "the bundled models' own, 3")),
    results: Path = typer.Option(Path("benchmarks/results"), "--results", help="Results root."),
    list_methods: bool = typer.Option(False, "--list", help="List methods and exit."),
    shard: Optional[str] = typer.Option(None, "--shard", help="I/N: run only this worker's share, no summary "
                                        "(start N workers, then gather with a plain run). \\[default: all]"),
    stored_only: bool = typer.Option(False, "--stored-only", help="Run nothing: summarise the cases that every "
                                     "method has finished (after a run cut short)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Run N shard workers in parallel (one GPU: a small "
                                "model is launch-bound, so they overlap), then gather."),
    threads: Optional[int] = ThreadsOpt,
    tune_steps: Optional[int] = typer.Option(None, "--tune-steps", min=0, max=100000,
                                             help=_d("Video-P2P: stage-1 tuning steps.", 500)),
    settings: Optional[list[str]] = typer.Option(None, "--set", metavar="KEY=VALUE", help=(
        "Config override for every method, as a dotted key and a YAML value (repeatable), e.g. "
        "--set assd.iterations=30 --set model.dtype=float32.")),
) -> None:
    """Run the ShapeWorld ground-truth suite (resumable) and write per-method JSON, summary.json and a report."""
    _threads(threads)
    from .config import parse_settings
    from .methods import catalog  # noqa: F401  (registers the methods' settings sections)

    overrides = parse_settings(settings or [])  # checked before any work
    if tune_steps is not None:
        overrides["video_p2p.tune_steps"] = tune_steps
    from .bench.runner import run_bench, run_workers
    from .methods.base import METHODS

    if list_methods:
        for name, (_, ov, doc) in METHODS.items():
            typer.echo(f"{name:22s} {doc}")
        return
    names = methods.split(",") if methods else None
    ids = [i.strip() for i in case_ids.split(",") if i.strip()] if case_ids is not None else None
    if ids == []:
        raise UserError(f"--case-ids {case_ids!r} names no case; give ids such as 05-colour,13-shape")
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
        for flag, value in (("--methods", methods), ("--cases", cases), ("--case-ids", case_ids), ("--steps", steps),
                            ("--inner-steps", inner_steps),
                            ("--guidance-scale", guidance_scale), ("--tune-steps", tune_steps)):
            if value is not None:
                options += [flag, str(value)]
        for kv in settings or []:
            options += ["--set", kv]
        with progress_bar() as cb:
            run_workers(workers, options, suite, names, cases, results, cb, case_ids=ids)
    with progress_bar() as cb:
        summary = run_bench(suite, names, device, cases, steps, inner_steps, results, cb, part, stored_only,
                            guidance_scale, overrides or None, case_ids=ids)
    if part:
        console.print(f"shard {part[0]}/{part[1]} done; run again without --shard to write the summary")
        return
    console.print(f"wrote {results / suite}/summary.json and report.md ({len(summary)} methods)", highlight=False)


def _error(message: str, code: int) -> None:
    from rich.markup import escape

    console.print(f"[red]error:[/red] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the CLI, turning every failure into one line on stderr.

    Exit status: 0 done, 2 a mistake in the input (the line says how to fix it), 1 anything else (an
    internal error; ``VIDEODIRECTOR_DEBUG=1`` shows its traceback), 130 interrupted by Ctrl-C."""
    usage_errors, click_errors, aborts = _click_exception_types()
    install_interrupt_handler()
    notices.reset()
    notices.set_sink(lambda m: console.print(f"[yellow]warning:[/yellow] {_escape(m)}", highlight=False, soft_wrap=True))
    try:
        status = app(args=argv, prog_name="videodirector", standalone_mode=False)
        check_interrupt()
        if status == 130:  # typer turns a KeyboardInterrupt inside a command into this status
            raise KeyboardInterrupt
        if isinstance(status, int) and status:
            sys.exit(status)
    except (KeyboardInterrupt, *aborts):
        _error(INTERRUPTED, 130)
    except Exception as exc:  # noqa: BLE001
        if _interrupted:  # a failure after Ctrl-C is its echo (an import it cut short, say): report the interrupt
            _error(INTERRUPTED, 130)
        _report(exc, usage_errors, click_errors)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        notices.set_sink(None)


INTERRUPTED = "interrupted; nothing was written under a final name"


def _report(exc: Exception, usage_errors: tuple[type, ...], click_errors: tuple[type, ...]) -> None:
    """One line for a failure that is not an interrupt: exit 2 for a mistake in the input, 1 otherwise."""
    if isinstance(exc, UserError):
        _error(str(exc), 2)
    if isinstance(exc, usage_errors):
        cmd = exc.ctx.command_path if getattr(exc, "ctx", None) is not None else "videodirector"
        _error(f"{exc.format_message()} (see '{cmd} --help')", 2)
    if isinstance(exc, click_errors):
        _error(exc.format_message(), 2)
    text = " ".join(str(exc).split())[:300]
    if isinstance(exc, MemoryError) or "can't allocate memory" in text or "not enough memory" in text:
        _error("out of memory; use fewer --frames or a smaller --height/--width", 2)
    if os.environ.get("VIDEODIRECTOR_DEBUG") == "1":
        raise exc
    _error(f"internal error ({type(exc).__name__}: {text}); rerun with VIDEODIRECTOR_DEBUG=1 for the traceback "
           "and please report it", 1)


def _click_exception_types() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """Usage errors, other click errors and aborts, from click and from the copy of click that newer typer
    releases carry inside them."""
    import importlib

    usage, other, aborts = [], [], []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        usage.append(mod.UsageError)
        other.append(mod.ClickException)
        if hasattr(mod, "Abort"):
            aborts.append(mod.Abort)
    return tuple(usage), tuple(other), tuple(aborts)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(" ".join(text.split()))


if __name__ == "__main__":
    main()
