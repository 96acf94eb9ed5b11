"""Python API mirroring the CLI.

    from videodirector import api
    editor = api.Editor(api.load_config("edit.yaml"))
    inversion = editor.invert()                       # cached: a second call with the same inputs loads it
    result = editor.edit(inversion, "a tiger walking on rocky terrain")
    editor.save(result, inversion, "out/tiger")
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from . import __version__
from .config import EditConfig, apply_overrides, load_config  # noqa: F401  (re-exported)
from .errors import CacheEntryError, DeviceOutOfMemoryError, InputError, UserError
from .io.masks import check_masks_match, load_masks
from .io.outputs import atomic_folder, contact_sheet, hstack_videos, mask_overlay, to_uint8, write_json, write_video
from .io.video import load_video_with_info
from .methods import catalog as _catalog  # noqa: F401  (registers every method and its settings)
from .methods.base import METHODS, MODEL_LOADERS, EditResult, Inversion, Progress, check_frames, no_progress
from .models.loading import ModelBundle, load_models, resolve_dtype
from .notices import warn

BUNDLED_WEIGHTS = Path(__file__).parent / "world" / "weights"
LOW_RECONSTRUCTION_PSNR = 20.0
"""Below this PSNR (dB) of the decoded stage-1 trajectory against the source frames, the inversion did not
recover the video (a failed one scores about 10 dB; the bundled models reach 35-38 dB on ShapeWorld) and
the edit will not keep its content: ``save`` warns."""
BUNDLED_GUIDANCE_SCALE = 3.0
"""CFG scale ``w`` (Eq. 10) of the bundled ShapeWorld models: the one their quality gate samples with
(``world.check``). SD 1.5's 7.5 (the official configs') over-guides these small models: on the bench,
every method drew objects larger and shifted, and the full method scored worse on every metric
(``benchmarks/results/shapeworld-v2/RUN.md``). The bench and the demo use it; an edit of your own
video keeps the config's (7.5 by default)."""


def load_inputs(cfg: EditConfig) -> tuple[Tensor, Tensor]:
    """Frames ``(F, 3, H, W)`` and masks ``(F, 1, H, W)`` from ``cfg.input`` (full-frame mask if none given)."""
    i = cfg.input
    if not i.video:
        raise InputError("no input video; pass --video PATH or set input.video in the config")
    frames, info = load_video_with_info(i.video, i.num_frames, i.height, i.width, i.resize_mode)
    if i.masks:  # one decode of the video: its frame count and size check the masks
        masks = load_masks(i.masks, i.num_frames, i.height, i.width, info.num_frames, i.resize_mode, i.ellipse_mask,
                           video_size=(info.height, info.width))
    else:
        if cfg.control.mask_blend:
            raise InputError("the mask blend needs masks; pass --masks DIR (one per frame) or leave out --mask-blend")
        masks = torch.ones(frames.shape[0], 1, *frames.shape[-2:], dtype=torch.bool)
    check_masks_match(masks, frames)
    return frames, masks


def default_cache_dir() -> Path:
    return Path(os.environ.get("VIDEODIRECTOR_CACHE", Path.home() / ".cache" / "videodirector")) / "inversions"


def check_cache_location(folder: str | Path) -> None:
    """One line, before any work, when the inversion cache cannot be written: a path under a file, a file
    where the folder should be, or a folder without write permission (nothing is created here)."""
    from .errors import OutputLocationError

    folder = Path(folder).expanduser().absolute()
    fix = "pass another --cache-dir, or --no-cache"
    if folder.exists() and not folder.is_dir():
        raise OutputLocationError(f"the inversion cache {folder} is a file, not a folder; {fix}")
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputLocationError(f"the inversion cache {folder} lies under the file {probe}; {fix}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise OutputLocationError(f"the inversion cache {folder} cannot be written (no permission on {probe}); {fix}")


def versions() -> dict[str, str]:
    import diffusers
    import transformers

    return {"videodirector": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def method_config(name: str, cfg: EditConfig, overrides: dict[str, Any] | None = None) -> EditConfig:
    """``cfg`` with the registered settings of the method or variant ``name``, then ``overrides`` (one edit's
    own settings), which win where both name a key."""
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return apply_overrides(apply_overrides(cfg, METHODS[name][1]), overrides or {})


def oom_guard(fn):  # noqa: ANN001, ANN201
    """Turn a CUDA out-of-memory error into a one-line message naming the flags that help."""

    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        try:
            return fn(*args, **kwargs)
        except torch.cuda.OutOfMemoryError:
            raise DeviceOutOfMemoryError(
                "GPU out of memory; try --gradient-checkpointing, --dtype bfloat16, fewer --frames or a smaller "
                "--height/--width, or --fast-inversion direct") from None

    wrapper.__doc__ = fn.__doc__
    return wrapper


class Editor:
    """Loads models once; inverts videos (with a cache) and edits them with any registered method."""

    def __init__(self, cfg: EditConfig, method: str | None = None, models: ModelBundle | None = None,
                 cache_dir: str | Path | None = None, overrides: dict[str, Any] | None = None) -> None:
        """``overrides``: dotted settings of this one edit (``{"control.mask_blend_dilation": 0}``), applied
        after the method's registered ones, so they win where both name a key."""
        method = method or cfg.method or "videodirector"  # the config's method (official Video-P2P YAMLs)
        self.cfg = method_config(method, cfg, overrides)
        check_frames(self.cfg.input.num_frames, method)  # before any model loads
        self.method_name = method
        if self.cfg.model.threads:
            torch.set_num_threads(self.cfg.model.threads)
        loader = MODEL_LOADERS.get(method)
        self.models = models or (loader(self.cfg) if loader else load_models(self.cfg.model))
        check_blocks(self.models.unet, self.cfg)
        self.method = METHODS[method][0](self.models, self.cfg)
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        if hasattr(self.method, "tuning_cache"):  # weights tuned per clip are cached beside the inversions
            self.method.tuning_cache = self.cache_dir.parent / "tuned"

    # ---------------------------------------------------------------- inputs
    def load_inputs(self) -> tuple[Tensor, Tensor]:
        return load_inputs(self.cfg)

    def check_prompts(self, target_prompt: str | None = None) -> None:
        """Fail fast (before any inversion) on prompt words that the edit cannot find."""
        if not getattr(self.method, "needs_prompts", True):  # I2VEdit: an edited first frame, no prompts
            return
        from .attention.seq_align import require_words

        from .attention.seq_align import unknown_words

        p, tok = self.cfg.prompts, self.models.tokenizer
        if len(tok.get_vocab()) < CLOSED_VOCABULARY:
            words = [w for prompt in (p.source, target_prompt or p.target) for w in unknown_words(prompt, tok)]
            if words:
                warn(f"the models' tokenizer does not know {', '.join(repr(w) for w in dict.fromkeys(words))}: the "
                     "bundled ShapeWorld models only know ShapeWorld scenes (coloured shapes moving on striped, "
                     "checkered or gradient backgrounds); use real weights (--base, --motion-adapter) for real footage")
        require_words(target_prompt or p.target, p.equalizer_words, tok, "edit")
        require_words(p.source, p.blend_words_source, tok, "local-blend source")
        require_words(target_prompt or p.target, p.blend_words_target, tok, "local-blend target")

    def cache_key(self, frames: Tensor, masks: Tensor, source_prompt: str) -> str:
        h = hashlib.sha256()
        h.update(frames.numpy().tobytes() if frames.dtype == torch.uint8 else to_uint8(frames).tobytes())
        h.update(masks.to(torch.uint8).numpy().tobytes())
        # the precision the method computes in: a float32 bundle may be autocast (Video-P2P's T2S model)
        compute = resolve_dtype(self.cfg.model.dtype, self.models.device)
        settings = {"method": self.method_name, "source": source_prompt, **inversion_settings(self.cfg),
                    "models": self.models.fingerprint(), "compute_dtype": str(compute)}
        h.update(json.dumps(settings, sort_keys=True).encode())
        return h.hexdigest()[:24]

    # ---------------------------------------------------------------- stages
    @oom_guard
    def invert(self, frames: Tensor | None = None, masks: Tensor | None = None, source_prompt: str | None = None,
               progress: Progress = no_progress, use_cache: bool = True, overwrite_cache: bool = False) -> Inversion:
        """Stage 1, cached by a hash of video, masks, prompt, model and settings."""
        if frames is None or masks is None:
            frames, masks = self.load_inputs()
        source_prompt = source_prompt if source_prompt is not None else self.cfg.prompts.source
        if not source_prompt and getattr(self.method, "needs_prompts", True):
            raise InputError("no source prompt; pass --source-prompt describing the input video")
        check_masks_match(masks, frames)
        key = self.cache_key(frames, masks, source_prompt)
        folder = self.cache_dir / key
        if use_cache and not overwrite_cache and folder.exists():
            try:
                inv = Inversion.load(folder, expected=self._expected_meta(frames, masks, source_prompt))
                inv.meta["cache"] = {"key": key, "hit": True, "folder": str(folder)}
                return inv
            except CacheEntryError as exc:
                warn(f"{exc}; computing the inversion again and replacing the entry")
        if hasattr(self.method, "tuning_cache"):  # methods that tune weights per clip cache them beside inversions
            self.method.tuning_cache = self.cache_dir.parent / "tuned" if use_cache else None
        inv = self.method.invert(frames, masks, source_prompt, progress)
        for name in ("latents", "null_embeddings", "guidance", "reconstruction"):
            value = getattr(inv, name)
            if value is not None and not torch.isfinite(value).all():
                raise UserError(f"the inversion produced non-finite values ({name}); lower inversion.guidance_scale or "
                                "the STDG coefficients (--stdg), or use --dtype float32")
        inv.meta["cache"] = {"key": key, "hit": False, "folder": str(folder)}
        if use_cache:
            with atomic_folder(folder, overwrite=True, own_files=Inversion.FILES, flag="--cache-dir") as tmp:
                inv.save(tmp)
        return inv

    def _expected_meta(self, frames: Tensor, masks: Tensor, source_prompt: str) -> dict[str, Any]:
        """What a cache entry for these inputs must say of itself (checked on read). A method that stores its
        frames otherwise (I2VEdit: clips side by side) says which shapes through ``stored_shapes``."""
        stored = getattr(self.method, "stored_shapes", None)
        return {"source_prompt": source_prompt,
                "num_steps": getattr(self.method, "inversion_steps", self.cfg.inversion.num_steps),
                "shape": stored(frames) if stored else {"source_frames": list(frames.shape), "masks": list(masks.shape)}}

    @oom_guard
    def edit(self, inversion: Inversion, target_prompt: str | None = None, progress: Progress = no_progress) -> EditResult:
        target = target_prompt if target_prompt is not None else self.cfg.prompts.target
        if not target and getattr(self.method, "needs_prompts", True):
            raise InputError("no target prompt; pass --target-prompt with the edited description")
        result = self.method.edit(inversion, target, progress)
        if not torch.isfinite(result.latents).all():
            raise UserError("the edit produced non-finite values (NaN or inf); lower inversion.guidance_scale, "
                            "--edit-weight or --stdg, or use --dtype float32")
        return result

    # ---------------------------------------------------------------- outputs
    def save(self, result: EditResult, inversion: Inversion, out: str | Path, overwrite: bool = False,
             extra: dict[str, Any] | None = None) -> Path:
        """Write edited.mp4/.gif, side_by_side.mp4 (source | edited | mask), contact_sheet.png (source, edited,
        mask, reconstruction and ``extra["rows"]``) and result.json, with the reconstruction PSNR: how well
        stage 1 gives back the source (the decoded end of its trajectory against the source frames)."""
        fps = getattr(self.method, "output_fps", self.cfg.output.fps)  # I2VEdit: the rate its edit is conditioned on
        extra = dict(extra or {})
        rows = dict(extra.pop("rows", {}))
        src = to_uint8(getattr(self.method, "source_video", lambda inv: inv.source_frames)(inversion))
        edited = to_uint8(result.frames)
        overlay = mask_overlay(src, inversion.masks[: len(src)])
        if "reconstruction" not in rows:
            rows["reconstruction"] = to_uint8(self.method.reconstruct(inversion).cpu())
        recon_psnr = psnr_uint8(rows["reconstruction"], src)
        if recon_psnr < LOW_RECONSTRUCTION_PSNR:
            warn(f"the inversion reconstructs the source at only {recon_psnr:.1f} dB PSNR (below "
                 f"{LOW_RECONSTRUCTION_PSNR:g} dB), so the edit will not keep the video's content; check that the "
                 "source prompt describes the video and that the models can draw it, and use the faithful settings "
                 "(--steps 50 --inner-steps 10)")
        with atomic_folder(out, overwrite, inputs=[self.cfg.input.video, self.cfg.input.masks]) as tmp:
            write_video(tmp / "edited.mp4", edited, fps)
            write_video(tmp / "edited.gif", edited, fps)
            write_video(tmp / "side_by_side.mp4", hstack_videos([src, edited, overlay],
                                                                labels=["source", "edited", "mask"]), fps)
            contact_sheet({"source": src, "edited": edited, "mask": overlay, **rows}, tmp / "contact_sheet.png")
            write_json(tmp / "result.json", {
                "method": self.method_name, "source_prompt": inversion.meta.get("source_prompt"),
                "target_prompt": result.target_prompt, "seed": self.cfg.seed, "fps": fps,
                "reconstruction_psnr": round(recon_psnr, 3),
                "reconstruction_psnr_note": "dB, the decoded end of the inversion trajectory against the source frames",
                "config": self.cfg.to_dict(),
                "timings": {"inversion": inversion.meta.get("timings", {}), "edit": result.timings},
                "inversion_cache": inversion.meta.get("cache"), "mean_null_inner_iterations":
                    inversion.meta.get("mean_inner_iterations"), "versions": versions(),
                "device": str(self.models.device), "dtype": str(self.models.dtype), **extra,
            })
        return Path(out)


CLOSED_VOCABULARY = 10_000
"""A tokenizer with fewer tokens than this has a closed vocabulary (the bundled ShapeWorld one has 238;
CLIP's has 49,408): words outside it are spelt letter by letter, and the model never learnt them."""


def psnr_uint8(a: "np.ndarray", b: "np.ndarray") -> float:
    """PSNR in dB of two uint8 videos ``(F, H, W, 3)`` (peak 255); 100 for identical videos."""
    import numpy as np

    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def check_blocks(unet: torch.nn.Module, cfg: EditConfig) -> None:
    """Every STDG block named in the config exists in the UNet (a one-line error naming those it has)."""
    have = {name for name, _ in unet.named_children() if name in ("mid_block",)}
    for group in ("down_blocks", "up_blocks"):
        have |= {f"{group}.{i}" for i in range(len(getattr(unet, group, [])))}
    for key in ("temporal_block_weights", "appearance_block_weights"):
        for block in getattr(cfg.stdg, key):
            if block not in have:
                raise UserError(f"stdg.{key} names {block!r}, which this UNet does not have; use some of "
                                f"{', '.join(sorted(have))} (official: up_blocks.1, up_blocks.2)")


def inversion_settings(cfg: EditConfig) -> dict[str, Any]:
    """The settings that stage 1 (inversion) reads besides the video, masks, source prompt and models.
    Part of the inversion cache key; the bench shares one inversion between methods that agree on them."""
    out = {"negative": cfg.prompts.negative, "inversion": asdict(cfg.inversion), "stdg": asdict(cfg.stdg),
           "seed": cfg.seed}
    for section, settings in sorted(cfg.method_settings.items()):  # a method section's stage-1 settings
        if hasattr(settings, "inversion_settings"):
            out[section] = settings.inversion_settings()
    return out


def bundled_model_config(device: str = "auto", weights: str | Path | None = None) -> dict[str, Any]:
    """Overrides that point a config at the bundled ShapeWorld models (or at ``weights``, a folder
    that ``world.train`` exported in the same layout)."""
    root = Path(weights) if weights is not None else BUNDLED_WEIGHTS
    if not (root / "sd" / "unet" / "config.json").is_file():
        if weights is not None:
            raise UserError(f"no ShapeWorld weights in {root} (expected sd/unet/config.json); give the folder "
                            "that 'python -m videodirector.world.train --dest' wrote")
        raise UserError(f"bundled ShapeWorld weights missing in {root}; reinstall videodirector")
    return {"model.base": str(root / "sd"), "model.motion_adapter": str(root / "motion_adapter"),
            "model.local_files_only": True, "model.device": device}


def edit_first_frame(cfg: EditConfig, frame: Tensor, source_prompt: str, target_prompt: str,
                     method: str = "videodirector", progress: Progress = no_progress,
                     models: ModelBundle | None = None) -> Tensor:
    """Edit one frame ``(3, H, W)`` in [-1, 1] from text with a method of this toolkit (VideoDirector on a
    one-frame video, on the text-to-video models of ``cfg.model``: ``--base``/``--motion-adapter`` or
    ``--bundled``): what I2VEdit's ``--first-frame-prompt`` starts from. Returns the edited frame."""
    if not source_prompt or not target_prompt:
        raise InputError("--first-frame-prompt edits frame 0 from text: pass --source-prompt describing the video's first "
                         "frame too")
    one = apply_overrides(cfg, {"input.num_frames": 1})
    editor = Editor(one, method=method, models=models)
    masks = torch.ones(1, 1, *frame.shape[-2:], dtype=torch.bool)
    inv = editor.invert(frame[None].float(), masks, source_prompt, progress, use_cache=False)
    return editor.edit(inv, target_prompt, progress).frames[0]


def timed(fn, *args, **kwargs) -> tuple[Any, float]:  # noqa: ANN001
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0
