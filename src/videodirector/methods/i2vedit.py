"""I2VEdit (Ouyang et al., SIGGRAPH Asia 2024): first-frame-guided video editing on Stable Video Diffusion.

The user edits the first frame with any image tool; the method carries the edit through the video.
Fig. 2 of the paper, per clip of the source video (clips of ``chunk_size`` frames overlapping by one):

Coarse motion extraction (training stage), :meth:`I2VEdit.invert`:
  1. EDM inversion of the SARP-perturbed source clip with the base model (Eqs. 5-6), recording the
     spatial self-attention Q/K and temporal self-attention probabilities of every step
     (:func:`edm_invert`; the official code inverts before it trains);
  2. a motion LoRA on every temporal transformer block, trained on the clip with SVD's EDM objective
     (Eq. 4; :func:`train_motion_lora`), with skip-interval cross-attention to clip 1 (Eq. 3) for
     later clips.

Appearance refinement (inference stage), :meth:`I2VEdit.edit`:
  3. EDM denoising from the inverted z_T with base + LoRA, conditioned on the edited first frame
     (or, for clip k > 1, on the previous clip's last edited frame), frame-wise CFG 1 → 2;
  4. fine-grained attention matching on the conditional half (:class:`MatchingProcessor`): spatial
     ``masked_copy`` (Eqs. 7-8) and the three-stage temporal selector ``copy_v2``;
  5. the clips are joined, the overlapping first frame of every later clip dropped.

Where paper and official code differ, the code is the default and the paper an option
(``docs/methods/i2vedit.md`` lists every choice). The numbers of EDM live in ``diffusion.edm``.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..attention.processors import Clock, ControlProcessor, installed
from ..config import MAX_INPUT_FRAMES, ConfigError, EditConfig, register_official_format, register_settings
from ..diffusion.edm import (
    c_noise, denoised, edit_step_for_inversion_step, euler_step, frame_guidance_scales,
    inversion_schedule, karras_sigmas, loss_weight, sarp, scale_model_input, step_for_sigma, training_sigmas,
)
from ..errors import InputError, UserError
from ..io.outputs import atomic_write_bytes
from ..models.loading import SVD_HUB_IDS, SVDBundle, load_svd
from .base import EditResult, Inversion, Progress, no_progress, register

# ============================================================================================ settings

BETA_PRESETS = {"local": [0.5, 0.8], "shape": [0.4, 0.5], "global": [0.8, 0.9]}
"""Paper §5.1 temporal-stage boundaries β: local edits, large shape changes, global style transfer."""


@dataclass
class I2VEditSettings:
    """Settings of I2VEdit (config section ``i2vedit``). Defaults are the official code's."""

    model: str = SVD_HUB_IDS[0]
    """Stable Video Diffusion: hub id (``-img2vid`` 14 frames, the official base; ``-img2vid-xt``) or a diffusers folder."""
    variant: str | None = None
    """``fp16`` loads SVD's half-precision files (``*.fp16.safetensors``, as the official code)."""
    first_frames: list[str] = field(default_factory=list)
    """Edited first frames (image files); each gives one edited video (official ``keyframe_paths``)."""
    num_steps: int = 25
    """Euler steps of inversion and editing (official ``num_steps``)."""
    chunk_size: int = 14
    """Frames per clip (official ``chunk_size``; SVD's 14 by default, the shipped configs use 11 and 16)."""
    overlap: int = 1
    """Frames shared by consecutive clips (official ``overlay_size``; the official code asserts 1)."""
    fps: int = 7
    """Frame rate of the written videos, and the edit's fps time id ``fps - 1`` (official ``output_fps``: 5 or 7;
    it takes the place of ``output.fps`` for this method)."""
    motion_bucket_id: int = 127
    noise_aug_strength: float = 0.02
    """Noise added to the conditioning (inversion: pixels before the VAE; training and editing: latents)."""
    inversion_fps: int = 8
    """fps time id of the inversion (the official code passes 8 directly, without the ``- 1``)."""
    train_fps: int = 6
    """fps time id of the motion-LoRA training (official)."""
    max_guidance_scale: float = 2.0
    """Frame-wise CFG runs linearly from ``min_guidance_scale`` (frame 0) to this (last frame)."""
    min_guidance_scale: float = 1.0
    sarp: bool = True
    """Smooth-area random perturbation of the inversion input (Eq. 5; official ``use_sarp``)."""
    sarp_alpha: float = 0.005
    """α of Eq. 5 (official ``sarp_noise_scale``; appendix: 0.0005-0.005 work)."""
    motion_lora: bool = True
    """Coarse motion extraction (official ``use_motion_lora``)."""
    lora_rank: int = 32
    lora_steps: int = 250
    """Training steps per clip (paper: 250; the example config trains 300 and loads checkpoint 250)."""
    lora_lr: float = 5e-4
    lora_weight_decay: float = 1e-2
    lora_dropout: float = 0.1
    lora_init: Literal["peft", "official"] = "peft"
    """``peft``: peft's defaults (Kaiming-uniform A, dropout on the LoRA input); ``official``: A ~ N(0, 1/r²),
    B = 0, dropout on the LoRA branch output (the official cloneofsimo-style LoRA)."""
    train_time_ids: Literal["swapped", "inference"] = "swapped"
    """``swapped``: the official training order [fps, noise_aug, motion_bucket]; ``inference``: SVD's
    [fps, motion_bucket, noise_aug]."""
    train_size: list[int] | None = None
    """``[height, width]`` of the LoRA training clips (official: [512, 896] with 576×1024 output); None:
    the output size."""
    lora_scale: float = 1.0
    gradient_checkpointing: bool = True
    """Recompute the UNet's activations in the LoRA's backward (official ``gradient_checkpointing: True``)."""
    matching: bool = True
    """Fine-grained attention matching (official ``use_attention_matching``)."""
    spatial_matching: bool = True
    temporal_matching: bool = True
    mask_thr: list[float] = field(default_factory=lambda: [0.35, 0.35])
    """Spatial matching threshold ``thr`` of Eq. 8 at the first and last frame, interpolated linearly."""
    mask_compare: Literal["ge", "gt"] = "ge"
    """``ge``: M = 1 where d ≥ thr (official code); ``gt``: d > thr (paper Eq. 8)."""
    temporal_step_thr: list[float] = field(default_factory=lambda: list(BETA_PRESETS["local"]))
    """β₁, β₂ of the temporal attention selector (local [0.5, 0.8], shape change [0.4, 0.5], global [0.8, 0.9])."""
    per_first_frame: list[dict[str, list[float]]] = field(default_factory=list)
    """Per edited first frame (same order as ``first_frames``), its own ``temporal_step_thr`` and/or ``mask_thr``
    (the official ``attention_matching_params.params.editK``); frames without an entry use the two above."""
    store: Literal["memory", "disk", "replay"] = "memory"
    """Where the recorded source attention lives between inversion and edit: ``memory`` (model dtype, on the
    device), ``disk`` (one safetensors file per step in a scratch folder, removed afterwards) or ``replay``
    (beyond the official code: nothing is kept; before each edit step one base-model forward on the cached
    inversion latent of the matching step records that step alone: one step's attention in memory, one
    batch-1 forward more per step)."""
    store_dir: str | None = None
    """Scratch folder of ``store: disk`` (default: the system's temporary folder)."""
    skip_interval: bool = False
    """Skip-interval cross-attention of later clips to clip 1's temporal keys/values (Eq. 3; official
    ``use_consistency_attention_control``: false in ``customize_train.yaml``)."""
    reconstruct: bool = False
    """Also sample the inversion back without guidance (the reconstruction in result.json); otherwise the
    reconstruction is the VAE round trip of the inversion input."""


    def inversion_settings(self) -> dict[str, Any]:
        """What stage 1 (inversion and motion LoRAs) reads of these settings: part of the cache key."""
        return {k: getattr(self, k) for k in ("model", "variant", "num_steps", "chunk_size", "overlap",
                                              "motion_bucket_id", "noise_aug_strength", "inversion_fps", "sarp",
                                              "sarp_alpha", "skip_interval")}

    def validate(self) -> None:
        def num(key: str, v: float, lo: float, hi: float) -> None:
            if v is None or not math.isfinite(v) or not lo <= v <= hi:
                raise ConfigError(f"i2vedit.{key}={v!r} is out of range: use a finite number from {lo:g} to {hi:g}")

        num("num_steps", self.num_steps, 2, 1000)
        num("chunk_size", self.chunk_size, 2, 128)
        if self.overlap != 1:
            raise ConfigError(f"i2vedit.overlap={self.overlap}: clips overlap by exactly one frame (the official code "
                              "asserts it); use 1")
        num("fps", self.fps, 1, 240)
        num("motion_bucket_id", self.motion_bucket_id, 0, 1023)
        num("noise_aug_strength", self.noise_aug_strength, 0, 10)
        num("max_guidance_scale", self.max_guidance_scale, 0, 50)
        num("min_guidance_scale", self.min_guidance_scale, 0, 50)
        num("sarp_alpha", self.sarp_alpha, 0, 1)
        num("lora_rank", self.lora_rank, 1, 1024)
        num("lora_steps", self.lora_steps, 0, 100_000)
        num("lora_lr", self.lora_lr, 1e-8, 1.0)
        num("lora_weight_decay", self.lora_weight_decay, 0, 10)
        num("lora_dropout", self.lora_dropout, 0, 0.99)
        num("lora_scale", self.lora_scale, 0, 10)
        if len(self.mask_thr) != 2:
            raise ConfigError(f"i2vedit.mask_thr={self.mask_thr}: give [first-frame, last-frame] thresholds, e.g. "
                              "[0.35, 0.35]")
        for v in self.mask_thr:
            num("mask_thr", v, 0, 1)
        b = self.temporal_step_thr
        if len(b) != 2 or not all(isinstance(x, float) and math.isfinite(x) for x in b) or not 0 <= b[0] <= b[1] <= 1:
            raise ConfigError(f"i2vedit.temporal_step_thr={b}: give β1 β2 with 0 <= β1 <= β2 <= 1 (local edits 0.5 "
                              "0.8, shape changes 0.4 0.5, global 0.8 0.9)")
        for k, entry in enumerate(self.per_first_frame):
            unknown = set(entry) - {"temporal_step_thr", "mask_thr"}
            if unknown:
                raise ConfigError(f"i2vedit.per_first_frame[{k}] has the unknown key {sorted(unknown)[0]!r}; use "
                                  "temporal_step_thr and mask_thr")
            I2VEditSettings(**{**{f: getattr(self, f) for f in ("temporal_step_thr", "mask_thr")}, **entry}).validate()
        if self.train_size is not None and (len(self.train_size) != 2 or any(v % 8 or not 16 <= v <= 4096
                                                                              for v in self.train_size)):
            raise ConfigError(f"i2vedit.train_size={self.train_size}: give [height, width], multiples of 8 from 16 "
                              "to 4096 (official [512, 896]), or null for the output size")


register_settings("i2vedit", I2VEditSettings)


# ============================================================================================ official YAML

OFFICIAL_IGNORED = {
    "output_dir": "mapped to output.out",
    "enable_xformers_memory_efficient_attention": "PyTorch's SDPA is always used",
    "enable_torch_2_attn": "PyTorch's SDPA is always used",
    "train_motion_lora_only": "ignored: 'videodirector invert --method i2vedit' trains (and caches) the LoRAs alone",
    "retrain_motion_lora": "ignored: the LoRA cache decides (cached LoRAs are reused; --no-cache trains again)",
    "visualize_attention_store": "ignored (no attention visualisation)",
    "visualize_attention_store_steps": "ignored (no attention visualisation)",
    "save_last_frames": "ignored: the clips are edited in one run, the last latent is passed on in memory",
    "load_from_last_frames_latents": "ignored: resuming a run at a later clip is not supported",
    "load_from_previous_consistency_edit_controller": "ignored: resuming a run at a later clip is not supported",
    "load_from_previous_consistency_store_controller": "ignored: resuming a run at a later clip is not supported",
    "data_params.normalize": "always true (frames in [-1, 1])",
    "data_params.save_sampled_frame": "ignored",
    "data_params.pad_to_fit": "ignored: frames are stretched to input.height x input.width (a notice says so when true)",
    "data_params.begin_clip_id": "0 is honoured; a later start needs the resume files above (a notice says so)",
    "train_motion_lora_params.cache_latents": "always: the clip's latents are encoded once",
    "train_motion_lora_params.cached_latent_dir": "ignored",
    "train_motion_lora_params.use_unet_lora": "always true",
    "train_motion_lora_params.save_pretrained_model": "ignored",
    "train_motion_lora_params.checkpointing_steps": "ignored: the LoRA after i2vedit.lora_steps is cached",
    "train_motion_lora_params.validation_steps": "ignored: no validation samples during training",
    "train_motion_lora_params.mixed_precision": "model.dtype decides",
    "train_motion_lora_params.gradient_checkpointing": "ignored",
    "train_motion_lora_params.image_encoder_gradient_checkpointing": "ignored (the image encoder is frozen)",
    "train_motion_lora_params.train_data.use_data_aug": "must be empty (no augmentation), as in every official config",
    "train_motion_lora_params.train_data.pad_to_fit": "ignored, as data_params.pad_to_fit",
    "train_motion_lora_params.validation_data": "ignored: no validation samples during training",
    "attention_matching_params.lora_dir": "ignored: LoRAs come from the cache",
    "attention_matching_params.load_attention_store": "ignored: the source attention is recorded or replayed",
    "attention_matching_params.load_consistency_attention_store": "ignored, as load_attention_store",
    "attention_matching_params.load_consistency_train_attention_store": "ignored, as load_attention_store",
    "attention_matching_params.registered_modules": "must be the official attn1 of both block kinds",
    "attention_matching_params.cross_replace_steps": "must be 0 (cross-attention is not controlled)",
    "attention_matching_params.temporal_self_replace_steps": "must be 1 (the stages alone gate)",
    "attention_matching_params.spatial_self_replace_steps": "must be 1 (every step is matched)",
    "attention_matching_params.spatial_attention_chunk_size": "always 1 (one frame at a time)",
    "long_video_params": "mode skip-interval or auto-regressive (one code path); registered_modules temporal attn1",
}
"""Keys of the official I2VEdit YAML that are accepted but not (or not fully) honoured, and why."""
OFFICIAL_SIGNATURE = {"data_params", "attention_matching_params"}
SVD_FOLDER_NAMES = {h.split("/")[1]: h for h in SVD_HUB_IDS}


def is_official_i2vedit(data: dict[str, Any]) -> bool:
    return OFFICIAL_SIGNATURE <= set(data)


def _f(v: Any, key: str) -> float:
    """A number of the official YAML (PyYAML reads ``5e-4`` as a string)."""
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ConfigError(f"official I2VEdit config key '{key}' must be a number, got {v!r}") from None


def from_official_i2vedit(data: dict[str, Any], base_dir: Path | None = None) -> EditConfig:
    """Map the official I2VEdit YAML (``config/customize_train.yaml``, ``customize_subsequent_edit.yaml``)
    onto :class:`EditConfig` with method section ``i2vedit``; see :data:`OFFICIAL_IGNORED` for the keys that
    are accepted without effect. Paths resolve against the working directory, then the YAML's folder."""
    from ..config import from_dict, resolve_official_path
    from ..notices import warn

    known_top = {"pretrained_model_path", "seed", "num_steps", "use_sarp", "use_motion_lora", "use_inversed_latents",
                 "use_attention_matching", "use_consistency_attention_control", "dtype", "data_params",
                 "train_motion_lora_params", "sarp_params", "attention_matching_params"} | {
        k for k in OFFICIAL_IGNORED if "." not in k}
    unknown = sorted(set(data) - known_top)
    if unknown:
        raise ConfigError(f"unknown key '{unknown[0]}' in official I2VEdit config; known keys: "
                          f"{', '.join(sorted(known_top))}")
    d = data.get("data_params") or {}
    tr = data.get("train_motion_lora_params") or {}
    am = data.get("attention_matching_params") or {}
    if data.get("use_inversed_latents") is False:
        raise ConfigError("use_inversed_latents: false (editing from fresh noise) is not supported; set it to true")
    mode = am.get("control_mode") or {"spatial_self": "masked_copy", "temporal_self": "copy_v2"}
    if mode != {"spatial_self": "masked_copy", "temporal_self": "copy_v2"}:
        raise ConfigError(f"attention_matching_params.control_mode {mode} is not supported; the official configs use "
                          "{spatial_self: masked_copy, temporal_self: copy_v2}")
    if _f(am.get("cross_replace_steps", 0.0), "cross_replace_steps") != 0.0:
        raise ConfigError("attention_matching_params.cross_replace_steps must be 0 (cross-attention is not controlled)")
    if (tr.get("train_data") or {}).get("use_data_aug"):
        raise ConfigError("train_motion_lora_params.train_data.use_data_aug is not supported; leave it empty (~)")
    params = am.get("params") or {}
    edits = [params[k] or {} for k in sorted(params, key=lambda k: int(str(k).removeprefix("edit") or 0))] or [{}]
    first = edits[0]
    unknown = sorted({k for e in edits for k in e} - {"temporal_step_thr", "mask_thr"})
    if unknown:
        raise ConfigError(f"unknown key '{unknown[0]}' in attention_matching_params.params; the official configs give "
                          "temporal_step_thr and mask_thr per keyframe")
    per_frame = [{k: [_f(v, k) for v in e[k]] for k in ("temporal_step_thr", "mask_thr") if k in e} for e in edits]
    if d.get("pad_to_fit"):
        warn("data_params.pad_to_fit is not supported: frames are stretched to the output size")
    begin, end = int(d.get("begin_clip_id", 0) or 0), d.get("end_clip_id")
    if begin:
        warn(f"data_params.begin_clip_id={begin}: resuming at a later clip is not supported; this run edits from "
             "clip 0")

    def path(p: Any) -> str | None:
        return resolve_official_path(str(p), base_dir) if p not in (None, "") else None

    model = str(data.get("pretrained_model_path") or SVD_HUB_IDS[0])
    resolved = path(model) or model
    if not Path(resolved).exists() and Path(model).name in SVD_FOLDER_NAMES:
        resolved = SVD_FOLDER_NAMES[Path(model).name]  # the README's ckpts/<name> download of the hub model
    chunk = int(d.get("chunk_size", 14))
    height, width = (list(d.get("output_res") or [576, 1024]) + [576, 1024])[:2]
    inp: dict[str, Any] = {"video": path(d.get("video_path")), "height": int(height), "width": int(width)}
    end_t, fps_s = _f(d.get("end_t", -1), "end_t"), _f(d.get("sample_fps", -1), "sample_fps")
    if end_t > 0 and fps_s > 0:
        n = int((end_t - _f(d.get("start_t", 0), "start_t")) * fps_s)
        if end is not None and begin == 0:
            n = min(n, int(end) * (chunk - 1) + 1)
        inp["num_frames"] = n
    steps = int(tr.get("max_train_steps", 250))
    if am.get("best_checkpoint_index") is not None:
        steps = min(steps, int(am["best_checkpoint_index"]))
    size = tr.get("train_data") or {}
    out: dict[str, Any] = {
        "method": "i2vedit",  # the CLI runs it when --method is not given
        "seed": int(data.get("seed", 23)),
        "input": inp,
        "output": {"out": str(data.get("output_dir") or "out"), "fps": int(d.get("output_fps", 7))},
        "i2vedit": {
            "model": resolved, "variant": "fp16",
            "first_frames": [path(k) for k in d.get("keyframe_paths") or []],
            "num_steps": int(data.get("num_steps", 25)), "chunk_size": chunk, "overlap": int(d.get("overlay_size", 1)),
            "fps": int(d.get("output_fps", 7)), "sarp": bool(data.get("use_sarp", True)),
            "sarp_alpha": _f((data.get("sarp_params") or {}).get("sarp_noise_scale", 0.005), "sarp_noise_scale"),
            "motion_lora": bool(data.get("use_motion_lora", True)), "lora_rank": int(tr.get("lora_rank", 32)),
            "lora_steps": steps, "lora_lr": _f(tr.get("learning_rate", 5e-4), "learning_rate"),
            "lora_weight_decay": _f(tr.get("adam_weight_decay", 1e-2), "adam_weight_decay"),
            "lora_dropout": _f(tr.get("lora_unet_dropout", 0.1), "lora_unet_dropout"), "lora_init": "official",
            "train_size": [int(size["height"]), int(size["width"])] if size.get("height") else None,
            "lora_scale": _f(am.get("lora_scale", 1.0), "lora_scale"),
            "matching": bool(data.get("use_attention_matching", True)),
            "max_guidance_scale": _f(am.get("max_guidance_scale", 2.0), "max_guidance_scale"),
            "store": "disk" if am.get("disk_store") else "memory",
            "temporal_step_thr": [_f(v, "temporal_step_thr") for v in first.get("temporal_step_thr", [0.5, 0.8])],
            "mask_thr": [_f(v, "mask_thr") for v in first.get("mask_thr", [0.35, 0.35])],
            "skip_interval": bool(data.get("use_consistency_attention_control", False)),
            "per_first_frame": per_frame if len(edits) > 1 else [],
        },
    }
    return from_dict(EditConfig, out)


# ============================================================================================ clips


def clip_ranges(num_frames: int, chunk: int, overlap: int = 1) -> list[tuple[int, int]]:
    """``(start, length)`` of each clip: clip k covers ``[k (chunk - overlap), + chunk)``; the last may be
    shorter (at least 2 frames: a lone overlap frame makes no clip)."""
    step = chunk - overlap
    out, start = [], 0
    while True:
        length = min(chunk, num_frames - start)
        out.append((start, length))
        if start + length >= num_frames:
            break
        start += step
    if len(out) > 1 and out[-1][1] <= overlap:
        out.pop()
    return out


def join_clips(clips: list[Tensor], overlap: int = 1) -> Tensor:
    """Concatenate per-clip videos along dim 0, dropping the ``overlap`` leading frames of every later clip."""
    return torch.cat([c if k == 0 else c[overlap:] for k, c in enumerate(clips)])


def time_ids(fps: float, motion_bucket_id: float, noise_aug: float, order: str = "inference") -> Tensor:
    """SVD's ``added_time_ids`` ``(1, 3)``: ``[fps, motion_bucket_id, noise_aug]``; ``swapped`` gives the
    official training order ``[fps, noise_aug, motion_bucket_id]``."""
    values = [fps, noise_aug, motion_bucket_id] if order == "swapped" else [fps, motion_bucket_id, noise_aug]
    return torch.tensor([values], dtype=torch.float32)


def uint8_round_trip(x: Tensor) -> Tensor:
    """[-1, 1] -> uint8 by truncation -> [-1, 1] (the official PIL round trip of the inversion's conditions)."""
    return ((x + 1) / 2 * 255).clamp(0, 255).to(torch.uint8).float() / 255 * 2 - 1


# ============================================================================================ layers

PLACES = ("down", "mid", "up")
COARSE_TEMPORAL = {("down", 4), ("down", 5), ("mid", 0), ("up", 0), ("up", 1)}
"""Temporal layers replaced in stage 2 (official ``copy_v2``): ``down_blocks.2`` (4× downscale), the mid
block (8×), and the first two attentions of ``up_blocks.1`` (4×; its third is kept edited)."""


@dataclass(frozen=True)
class SVDLayer:
    """A self-attention layer of SVD's UNet with the official (place, position) index."""

    name: str
    kind: Literal["spatial", "temporal"]
    place: str
    position: int

    @property
    def coarse(self) -> bool:
        return (self.place, self.position) in COARSE_TEMPORAL


def svd_self_attention_layers(unet: torch.nn.Module) -> list[SVDLayer]:
    """The ``attn1`` of every spatial (``transformer_blocks``) and temporal (``temporal_transformer_blocks``)
    block, indexed like the official call counters: down positions ``2·block + attention``, mid 0, up
    positions ``3·(block - 1) + attention``."""
    layers = []
    for key in unet.attn_processors:
        name = key[: -len(".processor")]
        if not name.endswith(".attn1"):
            continue
        kind = "temporal" if ".temporal_transformer_blocks." in name else "spatial"
        parts = name.split(".")
        if parts[0] == "mid_block":
            place, pos = "mid", int(parts[2])
        else:
            place = "down" if parts[0] == "down_blocks" else "up"
            block, att = int(parts[1]), int(parts[3])
            pos = 2 * block + att if place == "down" else 3 * (block - 1) + att
        layers.append(SVDLayer(name, kind, place, pos))
    order = {p: i for i, p in enumerate(PLACES)}
    return sorted(layers, key=lambda l: (order[l.place], l.position, l.kind))


def lora_target_regex() -> str:
    """The official motion-LoRA targets: every Linear under ``attn1``, ``attn2`` or ``ff`` (``ff_in`` too)
    of every temporal transformer block."""
    mods = ("ff_in.net.0.proj", "ff_in.net.2", "attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
            "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0", "ff.net.0.proj", "ff.net.2")
    return r".*temporal_transformer_blocks\.\d+\.(" + "|".join(m.replace(".", r"\.") for m in mods) + ")"


# ============================================================================================ store


class AttentionStore:
    """What matching needs from the source, per step: spatial Q/K, temporal probabilities, and clip 1's
    temporal K/V for skip-interval attention. ``memory`` keeps tensors in the model dtype where they were
    made; ``disk`` writes one safetensors file per step into a scratch folder, removed by :meth:`close`, when the
    store is collected, or at exit."""

    def __init__(self, mode: str = "memory", folder: str | None = None) -> None:
        self.mode = mode
        self.steps: dict[int, dict[str, Tensor]] = {}
        self.folder: Path | None = None
        self._remove_folder: weakref.finalize | None = None
        if mode == "disk":
            self.folder = Path(tempfile.mkdtemp(prefix="i2vedit-store-", dir=folder))
            # gone with the store, or at exit, even if nobody calls close() (a run that stops on an error)
            self._remove_folder = weakref.finalize(self, shutil.rmtree, self.folder, True)
        self._loaded: tuple[int, dict[str, Tensor]] | None = None

    def put(self, step: int, key: str, value: Tensor) -> None:
        self.steps.setdefault(step, {})[key] = value.detach()

    def finish_step(self, step: int) -> None:
        """Disk mode: move the step's tensors to its file."""
        if self.mode == "disk" and step in self.steps:
            from safetensors.torch import save_file

            assert self.folder is not None
            tensors = {k: v.cpu().contiguous() for k, v in self.steps.pop(step).items()}
            old = self._read(step)
            save_file({**old, **tensors}, str(self.folder / f"{step:04d}.safetensors"))
            self._loaded = None

    def _read(self, step: int) -> dict[str, Tensor]:
        assert self.folder is not None
        f = self.folder / f"{step:04d}.safetensors"
        if not f.is_file():
            return {}
        from safetensors.torch import load_file

        return load_file(str(f))

    def get(self, step: int, key: str, device: torch.device | None = None) -> Tensor | None:
        if self.mode == "disk" and step not in self.steps:
            if self._loaded is None or self._loaded[0] != step:
                self._loaded = (step, self._read(step))
            v = self._loaded[1].get(key)
        else:
            v = self.steps.get(step, {}).get(key)
        return v.to(device) if v is not None and device is not None else v

    def has_step(self, step: int) -> bool:
        return step in self.steps or (self.folder is not None and (self.folder / f"{step:04d}.safetensors").is_file())

    def nbytes(self) -> int:
        mem = sum(v.numel() * v.element_size() for s in self.steps.values() for v in s.values())
        disk = sum(f.stat().st_size for f in self.folder.glob("*.safetensors")) if self.folder else 0
        return mem + disk

    def close(self) -> None:
        self.steps.clear()
        self._loaded = None
        if self._remove_folder is not None:
            self._remove_folder()


# ============================================================================================ processors


@dataclass
class MatchingPlan:
    """What the attention processors do at the current step, shared by all of them."""

    clock: Clock
    mode: Literal["record", "edit", "train", "plain"]
    store: AttentionStore | None = None
    """Source attention: written in ``record`` mode, read in ``edit`` mode."""
    kv_source: AttentionStore | None = None
    """Clip 1's temporal K/V to prepend (skip-interval, Eq. 3), read at ``clock.step``."""
    kv_record: AttentionStore | None = None
    """Where this run's temporal K/V go (clip 1 with skip-interval on)."""
    spatial: bool = True
    temporal: bool = True
    mask_thr: tuple[float, float] = (0.35, 0.35)
    mask_compare: str = "ge"
    beta: tuple[float, float] = (0.5, 0.8)
    cfg: bool = False
    """The batch is ``[uncond, cond]``: only the conditional half is matched."""

    def temporal_stage(self) -> int:
        """1, 2 or 3 at the current step s: s < ⌊β₁ n⌋, < ⌊β₂ n⌋, or later (paper §4.2, official ``copy_v2``)."""
        return temporal_stage(self.clock.step, self.clock.num_steps, self.beta)


def temporal_stage(step: int, num_steps: int, beta: tuple[float, float] | list[float]) -> int:
    """Stage of the temporal attention selector at denoising step ``step`` (0 = noisiest) of ``num_steps``."""
    if step < int(beta[0] * num_steps):
        return 1
    if step < int(beta[1] * num_steps):
        return 2
    return 3


def spatial_difference(a_src: Tensor, a_edit: Tensor) -> Tensor:
    """Eq. 7: ``d = Σ_keys mean_heads |A_src - A_edit| / 2`` per query, clamped to [0, 1]. Maps
    ``(heads, N, N)`` -> ``(N,)``; each row sums to 1, so the L1 distance is at most 2."""
    return (a_src - a_edit).abs().mean(0).sum(-1).clamp(0, 2) / 2


def matching_mask(d: Tensor, thr: float, compare: str = "ge") -> Tensor:
    """Eq. 8: ``M = 1`` where ``d ≥ thr`` (official; ``>`` in the paper), else ``M = d``."""
    over = d >= thr if compare == "ge" else d > thr
    return torch.where(over, torch.ones_like(d), d)


def masked_copy(q_edit: Tensor, k_edit: Tensor, v_edit: Tensor, q_src: Tensor, k_src: Tensor, thr: float,
                compare: str = "ge") -> Tensor:
    """Spatial attention matching of one frame (official ``masked_copy``), tensors ``(heads, N, d)``:
    ``A_w = (1 - M) A_src + M A_edit`` with M from Eqs. 7-8 (one value per query), output ``A_w V_edit``.
    fp32 with an explicit softmax, as the official code."""
    scale = q_edit.shape[-1] ** -0.5
    a_edit = (q_edit.float() @ k_edit.float().transpose(-1, -2) * scale).softmax(-1)
    a_src = (q_src.float() @ k_src.float().transpose(-1, -2) * scale).softmax(-1)
    m = matching_mask(spatial_difference(a_src, a_edit), thr, compare)[None, :, None]
    a_w = (1 - m) * a_src + m * a_edit
    return (a_w @ v_edit.float()).to(v_edit.dtype)


class MatchingProcessor(ControlProcessor):
    """Self-attention of one SVD layer under I2VEdit's control (a diffusers attention processor).

    ``record``: plain attention; stores Q/K (spatial) or the probabilities (temporal) for the step.
    ``edit``: the conditional half is matched against the stored source (spatial ``masked_copy``,
    temporal selector). With ``kv_source`` the temporal keys/values of clip 1 are prepended (Eq. 3) in
    every mode; with ``kv_record`` this run's temporal K/V are stored."""

    def __init__(self, layer: SVDLayer, plan: MatchingPlan) -> None:
        super().__init__(layer)  # type: ignore[arg-type]
        self.plan = plan

    def attend(self, attn, query: Tensor, key: Tensor, value: Tensor) -> Tensor:  # noqa: ANN001
        p, layer, step = self.plan, self.layer, self.plan.clock.step
        if layer.kind == "temporal":
            if p.kv_record is not None:
                p.kv_record.put(step, f"{layer.name}/k", key)
                p.kv_record.put(step, f"{layer.name}/v", value)
            if p.kv_source is not None:
                k1 = p.kv_source.get(step, f"{layer.name}/k", key.device)
                v1 = p.kv_source.get(step, f"{layer.name}/v", value.device)
                if k1 is not None and v1 is not None:
                    if k1.shape[0] * 2 == key.shape[0]:  # a CFG batch reads clip 1's K/V in both halves
                        k1, v1 = k1.repeat(2, 1, 1, 1), v1.repeat(2, 1, 1, 1)
                    if (k1.shape[0], k1.shape[1], k1.shape[3]) == (key.shape[0], key.shape[1], key.shape[3]):
                        key = torch.cat([k1.to(key.dtype), key], 2)
                        value = torch.cat([v1.to(value.dtype), value], 2)
        if p.mode == "record":
            assert p.store is not None
            if layer.kind == "spatial":
                p.store.put(step, f"{layer.name}/q", query)
                p.store.put(step, f"{layer.name}/k", key)
            else:
                probs = (query.float() @ key.float().transpose(-1, -2) * query.shape[-1] ** -0.5).softmax(-1)
                p.store.put(step, f"{layer.name}/p", probs.to(query.dtype))
            return F.scaled_dot_product_attention(query, key, value)
        if p.mode != "edit":
            return F.scaled_dot_product_attention(query, key, value)
        return self._edit(query, key, value)

    def _edit(self, query: Tensor, key: Tensor, value: Tensor) -> Tensor:
        p, layer, step = self.plan, self.layer, self.plan.clock.step
        out = F.scaled_dot_product_attention(query, key, value)
        half = query.shape[0] // 2 if p.cfg else 0  # matched rows: the conditional half
        assert p.store is not None
        if layer.kind == "spatial" and p.spatial:
            q_src, k_src = p.store.get(step, f"{layer.name}/q", query.device), p.store.get(step, f"{layer.name}/k",
                                                                                           query.device)
            if q_src is None:
                return out
            f = query.shape[0] - half
            t0, t1 = p.mask_thr
            rows = []
            for i in range(f):  # one frame at a time (official spatial_attention_chunk_size 1)
                thr = t0 + (t1 - t0) * (i / (f - 1) if f > 1 else 0.0)
                rows.append(masked_copy(query[half + i], key[half + i], value[half + i], q_src[i], k_src[i], thr,
                                        p.mask_compare))
            out = torch.cat([out[:half], torch.stack(rows)])
        elif layer.kind == "temporal" and p.temporal:
            stage = p.temporal_stage()
            if stage == 1 or (stage == 2 and layer.coarse):
                probs = p.store.get(step, f"{layer.name}/p", query.device)
                if probs is not None:
                    src = (probs.to(value.dtype) @ value[half:])
                    out = torch.cat([out[:half], src])
        return out


@contextmanager
def matching(unet: torch.nn.Module, plan: MatchingPlan) -> Iterator[list[SVDLayer]]:
    """Install a :class:`MatchingProcessor` on every self-attention layer for the duration of the block."""
    layers = svd_self_attention_layers(unet)
    with installed(unet, {l.name: MatchingProcessor(l, plan) for l in layers}):
        yield layers


# ============================================================================================ conditioning


@dataclass
class Condition:
    """SVD's three conditions for one clip: CLIP embedding ``(1, 1, D)``, the unscaled VAE latent
    ``(1, C, h, w)`` concatenated to every frame, and the micro-conditioning ``added_time_ids (1, 3)``."""

    embedding: Tensor
    latent: Tensor
    time_ids: Tensor


def inversion_condition(models: SVDBundle, first: Tensor, s: I2VEditSettings, generator: torch.Generator) -> Condition:
    """Official ``init_image``: the clip's source first frame after a uint8 round trip; CLIP embedding of it,
    VAE mode of it plus ``0.02 N(0, 1)`` pixel noise; time ids ``[8, 127, 0.02]``."""
    img = uint8_round_trip(first[None].float())
    emb = models.encode_image(img)
    noise = torch.randn(img.shape, generator=generator)
    lat = models.encode_latents(img + s.noise_aug_strength * noise, scaled=False)
    return Condition(emb, lat, time_ids(s.inversion_fps, s.motion_bucket_id, s.noise_aug_strength))


def edit_condition(models: SVDBundle, image: Tensor | None, s: I2VEditSettings, generator: torch.Generator,
                   latent: Tensor | None = None) -> Condition:
    """The edit's condition: CLIP embedding of ``image (3, H, W)``; its VAE mode (or a given scaled latent
    ÷ scaling factor: a later clip reuses the previous clip's last latent); time ids ``[fps - 1, 127, 0.02]``.
    The 0.02 latent noise is drawn per call of :func:`cfg_inputs` (conditional half only)."""
    assert image is not None
    emb = models.encode_image(image[None].float())
    lat = models.encode_latents(image[None].float(), scaled=False) if latent is None else latent / models.scaling_factor
    return Condition(emb, lat.float(), time_ids(s.fps - 1, s.motion_bucket_id, s.noise_aug_strength))


def unet_input(models: SVDBundle, x: Tensor, sigma: float, cond_latent: Tensor) -> Tensor:
    """``[c_in(σ) x ; c]`` over channels: ``x (B, F, C, h, w)``, ``c (B, 1 or F, C, h, w)``."""
    c = cond_latent.expand(x.shape[0], x.shape[1], *cond_latent.shape[-3:])
    return torch.cat([scale_model_input(x, sigma), c.to(x.dtype)], dim=2)


# ============================================================================================ EDM inversion


def edm_invert(models: SVDBundle, latents: Tensor, cond: Condition, num_steps: int, progress: Progress = no_progress,
               stage: str = "EDM inversion", record: MatchingPlan | None = None) -> list[Tensor]:
    """EDM (Euler) inversion, low to high noise (paper Eq. 6; official ``euler_loop``): at each step the UNet
    is evaluated at the current σ (:func:`diffusion.edm.inversion_schedule`), ``D`` from the v-prediction
    (EDM Table 1) and a forward Euler step to the next σ. ``latents (1, F, C, h, w)`` scaled. Returns the
    trajectory ``[x_0, ..., x_n]``; ``x_n / √(σ_max² + 1)`` is z_T. With ``record``, the processors store
    what step i saw under the sampling step that reads it (n - 1 - i)."""
    levels, ts = inversion_schedule(karras_sigmas(num_steps))
    x = latents.float()
    traj = [x]
    emb, tid = cond.embedding, cond.time_ids.to(models.device)
    lat = cond.latent[:, None].to(models.device)
    for i in range(num_steps):
        sigma, nxt = float(levels[i]), float(levels[i + 1])
        if record is not None:
            record.clock.step = edit_step_for_inversion_step(i, num_steps)
        with torch.no_grad():
            v = models.velocity(unet_input(models, x, sigma, lat), float(ts[i]), emb, tid).float()
        x = euler_step(x, denoised(v, x, sigma), sigma, nxt)
        traj.append(x)
        if record is not None:
            for st in (record.store, record.kv_record):
                if st is not None:
                    st.finish_step(record.clock.step)
        progress(stage, i + 1, num_steps)
    return traj


def edm_sample(models: SVDBundle, z: Tensor, cond: Condition, num_steps: int, guidance: Tensor | None,
               generator: torch.Generator, progress: Progress = no_progress, stage: str = "edit",
               plan: MatchingPlan | None = None, latent_noise: float = 0.0,
               before_step: Callable[[int], None] | None = None) -> Tensor:
    """Deterministic Euler sampling from ``z (1, F, C, h, w)`` at σ_max (already × ``init_noise_sigma``)
    with frame-wise CFG (``guidance (F,)``; None: conditional only). The batch is ``[uncond, cond]``: zero
    CLIP embedding and zero conditioning latent; ``latent_noise · N(0, 1)`` is added to the conditional
    latent at every step (the official editing pipeline's 0.02)."""
    sigmas = karras_sigmas(num_steps)
    x = z.float()
    f = x.shape[1]
    emb = cond.embedding.to(models.device)
    lat = cond.latent.to(models.device)[:, None]
    tid = cond.time_ids.to(models.device)
    for j in range(num_steps):
        sigma, nxt = float(sigmas[j]), float(sigmas[j + 1])
        if before_step is not None:
            before_step(j)
        if plan is not None:
            plan.clock.step = j
        noisy = lat + latent_noise * torch.randn(lat.shape, generator=generator).to(lat) if latent_noise else lat
        with torch.no_grad():
            if guidance is None:
                v = models.velocity(unet_input(models, x, sigma, noisy), float(c_noise(sigma)), emb, tid).float()
            else:
                xin = torch.cat([unet_input(models, x, sigma, torch.zeros_like(noisy)),
                                 unet_input(models, x, sigma, noisy)])
                vv = models.velocity(xin, float(c_noise(sigma)), torch.cat([torch.zeros_like(emb), emb]),
                                     tid.repeat(2, 1)).float()
                vu, vc = vv.chunk(2)
                g = guidance.to(vc).view(1, f, 1, 1, 1)
                v = vu + g * (vc - vu)
        x = euler_step(x, denoised(v, x, sigma), sigma, nxt)
        progress(stage, j + 1, num_steps)
    return x


# ============================================================================================ motion LoRA


def add_motion_lora(unet: torch.nn.Module, s: I2VEditSettings) -> list[str]:
    """Add the motion LoRA with peft (``inject_adapter_in_model``; rank r, α = r so the scale is 1) to the
    official targets, or re-initialise it when present. With ``lora_init: official``: A ~ N(0, 1/r²), B = 0,
    and the dropout on the LoRA branch's output (a forward hook on each ``lora_B``) instead of peft's
    dropout on its input. Returns the adapted module names."""
    from peft import LoraConfig, inject_adapter_in_model

    official = s.lora_init == "official"
    if not motion_lora_layers(unet):
        config = LoraConfig(r=s.lora_rank, lora_alpha=s.lora_rank, lora_dropout=0.0 if official else s.lora_dropout,
                            target_modules=lora_target_regex(), init_lora_weights=True)
        inject_adapter_in_model(config, unet, adapter_name=LORA_NAME)
        if official:
            for _, module in motion_lora_layers(unet):
                module.lora_B[LORA_NAME].register_forward_hook(
                    lambda m, inp, out, p=s.lora_dropout: F.dropout(out, p, m.training))
    names = []
    for name, module in motion_lora_layers(unet):
        names.append(name)
        module.reset_lora_parameters(LORA_NAME, init_lora_weights=True)
        if official:
            torch.nn.init.normal_(module.lora_A[LORA_NAME].weight, std=1.0 / s.lora_rank)
            torch.nn.init.zeros_(module.lora_B[LORA_NAME].weight)
    return names


LORA_NAME = "motion"


def motion_lora_layers(unet: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """``(name, peft LoraLayer)`` of every module carrying the motion LoRA."""
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in unet.named_modules() if isinstance(m, LoraLayer) and LORA_NAME in m.lora_A]


def lora_state(unet: torch.nn.Module) -> dict[str, Tensor]:
    """The LoRA weights (``...lora_A.motion.weight`` / ``lora_B``), float32 on the CPU."""
    return {n: p.detach().float().cpu().clone() for n, p in unet.named_parameters() if ".lora_" in n}  # a copy


def load_lora_state(unet: torch.nn.Module, state: dict[str, Tensor]) -> None:
    have = {n: p for n, p in unet.named_parameters() if ".lora_" in n}
    if set(have) != set(state):
        raise UserError("the cached motion LoRA does not fit this model; delete the motion_lora cache folder")
    with torch.no_grad():
        for n, p in have.items():
            p.copy_(state[n].to(p))


def lora_enabled(unet: torch.nn.Module, on: bool, scale: float = 1.0) -> None:
    """Switch the motion LoRA on at ``scale`` (editing) or off (inversion uses the base model)."""
    for _, m in motion_lora_layers(unet):
        m.enable_adapters(on)
        if on:
            m.set_adapter(LORA_NAME)
            m.set_scale(LORA_NAME, scale)


def train_motion_lora(models: SVDBundle, frames: Tensor, s: I2VEditSettings, generator: torch.Generator,
                      progress: Progress = no_progress, stage: str = "motion LoRA",
                      kv_source: AttentionStore | None = None) -> dict[str, Any]:
    """Coarse motion extraction (paper §4.1, Eq. 4; official ``finetune_unet``) on one clip ``(F, 3, H, W)``.

    The clip's latents (VAE sample × scaling) and conditions are computed once (official
    ``cache_latents``). Each step: σ from the interpolated-cosine distribution, ``z_σ = z₀ + σ ε``,
    UNet on ``[c_in z_σ ; τ(c) + 0.02 ε']`` at ``c_noise(σ)`` with the CLIP embedding of the first frame
    and the training time ids, ``D`` from the v-prediction, loss ``mean(λ(σ) (D - z₀)²)``. AdamW on
    the LoRA parameters only. With ``kv_source`` (clip 1's temporal K/V by step) skip-interval attention
    reads the step whose bracket holds σ. Returns timing and the loss curve."""
    unet = models.unet
    if s.train_size:
        from ..io.video import resize_frames

        frames = resize_frames(frames, s.train_size[0], s.train_size[1])
    z0 = models.encode_latents(frames, sample=True, generator=generator)[None]  # (1, F, C, h, w)
    first = frames[:1].float()
    emb = models.encode_image(first)
    c_lat = models.encode_latents(first, sample=True, generator=generator, scaled=False)[:, None]
    tid = time_ids(s.train_fps, s.motion_bucket_id, s.noise_aug_strength, s.train_time_ids).to(models.device)
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=s.lora_lr, betas=(0.9, 0.999), weight_decay=s.lora_weight_decay, eps=1e-8)
    sigmas_table = karras_sigmas(s.num_steps)
    clock = Clock(0, s.num_steps)
    plan = MatchingPlan(clock, "train", kv_source=kv_source)
    losses: list[float] = []
    t0 = time.perf_counter()
    unet.train()
    if s.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    try:
        with matching(unet, plan):
            for step in range(s.lora_steps):
                u = torch.rand(1, generator=generator)
                sigma = float(training_sigmas(u))
                clock.step = step_for_sigma(sigma, sigmas_table)
                eps = torch.randn(z0.shape, generator=generator).to(z0)
                z = z0 + sigma * eps
                noisy = c_lat + s.noise_aug_strength * torch.randn(c_lat.shape, generator=generator).to(c_lat)
                v = models.velocity(unet_input(models, z, sigma, noisy), float(c_noise(sigma)), emb, tid).float()
                d = denoised(v, z, sigma)
                loss = (float(loss_weight(torch.tensor(sigma))) * (d - z0) ** 2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
                progress(stage, step + 1, s.lora_steps)
    finally:
        unet.eval()
        if s.gradient_checkpointing:
            unet.disable_gradient_checkpointing()
        for p in params:
            p.requires_grad_(False)
    return {"seconds": time.perf_counter() - t0, "loss_first": losses[:5], "loss_last": losses[-5:]}


# ============================================================================================ LoRA cache


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_lora_cache(folder: Path, state: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """``motion_lora.safetensors`` + ``motion_lora.json`` (the tensor file's sha256 last: it vouches for it)."""
    from safetensors.torch import save

    folder.mkdir(parents=True, exist_ok=True)
    data = save(state)
    atomic_write_bytes(folder / "motion_lora.safetensors", data)
    card = {**meta, "sha256": _digest(data), "size": len(data)}
    atomic_write_bytes(folder / "motion_lora.json", json.dumps(card, indent=2, default=str).encode())


def load_lora_cache(folder: Path) -> dict[str, Tensor] | None:
    """The cached LoRA, or None when absent or damaged (size, sha256 or format wrong)."""
    from safetensors.torch import load

    try:
        meta = json.loads((folder / "motion_lora.json").read_text())
        data = (folder / "motion_lora.safetensors").read_bytes()
        if len(data) != meta["size"] or _digest(data) != meta["sha256"]:
            return None
        return load(data)
    except Exception:  # noqa: BLE001  (any damage means: train again)
        return None


# ============================================================================================ the method


def load_first_frame(path: str, height: int, width: int) -> Tensor:
    """An edited first frame ``(3, H, W)`` in [-1, 1], resized (bilinear, antialiased) to the video's size."""
    from ..io.video import image_to_rgb8, open_image, resize_frames

    p = Path(path).expanduser()
    if not p.is_file():
        raise InputError(f"edited first frame not found: {p}; pass an image file (png/jpg) as --first-frame")
    rgb = image_to_rgb8(open_image(p, p.parent, "edited first frame"))
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1).float()[None] / 127.5 - 1
    return resize_frames(x, height, width)[0]


class I2VEdit:
    """I2VEdit on an :class:`SVDBundle`; settings from the ``i2vedit`` section of :class:`EditConfig`."""

    name = "i2vedit"
    needs_prompts = False

    def __init__(self, models: SVDBundle, cfg: EditConfig) -> None:
        self.models, self.cfg = models, cfg
        self.s: I2VEditSettings = cfg.settings_for("i2vedit")
        self.tuning_cache: Path | None = None
        """Set by the API (beside the inversion cache): motion LoRAs are cached in ``<tuning_cache>/i2vedit/<key>``."""
        self.inversion_steps = self.s.num_steps
        """Steps of the cached trajectory (the API checks cache entries against it)."""
        self._loras: dict[str, dict[str, Tensor]] = {}
        self._stores: dict[tuple[str, int], AttentionStore] = {}
        self._conds: dict[tuple[str, int], Condition] = {}
        for f in self.s.first_frames:  # before any heavy work
            if not Path(f).expanduser().is_file():
                raise InputError(f"edited first frame not found: {f}; pass an image file (png/jpg) as --first-frame")

    # ------------------------------------------------------------------ API hooks

    @staticmethod
    def load_models(cfg: EditConfig) -> SVDBundle:
        s: I2VEditSettings = cfg.settings_for("i2vedit")
        m = cfg.model
        if Path(s.model).name == "i2v" and not Path(s.model).exists():
            raise UserError(f"the bundled ShapeWorld image-to-video model is not trained yet ({s.model} is missing); "
                            "train it with 'python -m videodirector.world.train --model i2v', or use real SVD (--svd)")
        return load_svd(s.model, s.variant, m.device, m.dtype, m.local_files_only)

    def cache_settings(self) -> dict[str, Any]:
        return {"i2vedit": self.s.inversion_settings()}

    def source_video(self, inversion: Inversion) -> Tensor:
        """The source frames without the clips' duplicated overlap frames."""
        clips = inversion.meta["clips"]
        return join_clips([inversion.source_frames[o:o + n] for o, n in _offsets(clips)], self.s.overlap)

    # ------------------------------------------------------------------ stage 1: inversion + motion LoRA

    @property
    def output_fps(self) -> int:
        """The frame rate the edited videos are written at: the one the edit was conditioned on (official)."""
        return self.s.fps

    def stored_shapes(self, frames: Tensor) -> dict[str, list[int]]:
        """The shapes :meth:`invert` stores for ``frames``: the clips side by side, each shared frame repeated
        (what the inversion cache checks an entry against)."""
        n = sum(length for _, length in clip_ranges(frames.shape[0], self.s.chunk_size, self.s.overlap))
        return {"source_frames": [n, *frames.shape[1:]], "masks": [n, 1, *frames.shape[-2:]]}

    def invert(self, frames: Tensor, masks: Tensor, source_prompt: str = "",  # noqa: ARG002
               progress: Progress = no_progress) -> Inversion:
        """Per clip: SARP + EDM inversion with the base model (recording the source attention), then the
        motion LoRA. The inversion value holds the clips' trajectories side by side along the frame axis."""
        s, models = self.s, self.models
        h, w = frames.shape[-2:]
        f_lat = models.vae_scale_factor
        if h % (8 * f_lat) or w % (8 * f_lat):
            raise InputError(f"frames of {h}x{w} do not fit SVD's UNet: height and width must be multiples of "
                             f"{8 * f_lat}; use e.g. --height 576 --width 1024")
        clips = clip_ranges(frames.shape[0], s.chunk_size, s.overlap)
        t0 = time.perf_counter()
        trajs, sources = [], []
        key = self._frames_key(frames)
        kv_clip1: AttentionStore | None = None
        for k, (start, n) in enumerate(clips):
            clip = frames[start:start + n].float()
            traj, kv = self._invert_clip(clip, k, key, progress, kv_clip1)
            if k == 0 and s.skip_interval:
                kv_clip1 = kv
            trajs.append(torch.stack([t[0].permute(1, 0, 2, 3) for t in traj]))  # (T+1, C, F, h, w)
            sources.append(clip)
        inv_s = time.perf_counter() - t0
        latents = torch.cat(trajs, dim=2).cpu()
        src = torch.cat(sources).cpu()
        meta = {"method": "i2vedit", "source_prompt": source_prompt, "clips": [list(c) for c in clips],
                "timesteps": [float(t) for t in inversion_schedule(karras_sigmas(s.num_steps))[1]],
                "seed": self.cfg.seed, "frames_key": key, "timings": {"inversion": inv_s}}
        inversion = Inversion(latents, torch.ones(src.shape[0], 1, h, w, dtype=torch.bool), src, meta=meta)
        if s.reconstruct:
            inversion.reconstruction = self._reconstruction_latents(inversion).cpu()
        if s.motion_lora:
            t1 = time.perf_counter()
            self._motion_loras(inversion, progress)
            inversion.meta["timings"]["motion_lora"] = time.perf_counter() - t1
        return inversion

    def _frames_key(self, frames: Tensor) -> str:
        x = ((frames.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        return _digest(x.numpy().tobytes() + json.dumps(self.cache_settings(), sort_keys=True).encode())[:24]

    def _invert_clip(self, clip: Tensor, k: int, key: str, progress: Progress,
                     kv_clip1: AttentionStore | None) -> tuple[list[Tensor], AttentionStore | None]:
        """SARP + EDM inversion of clip k with the base model, recording the source attention."""
        s, models = self.s, self.models
        g = torch.Generator().manual_seed(self.cfg.seed + 1000 * k)
        x_in = sarp(clip, s.sarp_alpha, g) if s.sarp else clip
        cond = inversion_condition(models, x_in[0], s, g)
        z = models.encode_latents(x_in, sample=True, generator=g)[None]
        replay = s.store == "replay"  # then the edit records each step just in time
        store = None if replay else AttentionStore(s.store, s.store_dir)
        kv = AttentionStore(s.store, s.store_dir) if (k == 0 and s.skip_interval) else None
        plan = MatchingPlan(Clock(0, s.num_steps), "plain" if replay else "record", store=store, kv_record=kv,
                            kv_source=kv_clip1 if k > 0 else None)
        lora_enabled(models.unet, False)  # the base model inverts
        with matching(models.unet, plan):
            traj = edm_invert(models, z, cond, s.num_steps, progress, f"EDM inversion, clip {k + 1}", plan)
        old = self._stores.pop((key, k), None)
        if old is not None:
            old.close()
        if store is not None:
            self._stores[(key, k)] = store
        if kv is not None:
            self._stores[(key, -1)] = kv
        return traj, kv

    def _inversion_cond(self, inversion: Inversion, k: int) -> Condition:
        """Clip k's inversion condition, drawn again from its seeded generator (SARP, then the 0.02 pixel noise)."""
        memo = self._conds.get((inversion.meta["frames_key"], k))
        if memo is not None:
            return memo
        s = self.s
        o, n = _offsets(inversion.meta["clips"])[k]
        g = torch.Generator().manual_seed(self.cfg.seed + 1000 * k)
        clip = inversion.source_frames[o:o + n].float()
        x_in = sarp(clip, s.sarp_alpha, g) if s.sarp else clip
        cond = inversion_condition(self.models, x_in[0], s, g)
        self._conds[(inversion.meta["frames_key"], k)] = cond
        return cond

    def _record_forward(self, inversion: Inversion, k: int, i: int, plan: MatchingPlan) -> None:
        """The base model's forward of inversion step i of clip k (its cached trajectory latent, σ and
        condition), under ``plan``'s recording processors: what the inversion recorded at that step."""
        s, models = self.s, self.models
        levels, ts = inversion_schedule(karras_sigmas(s.num_steps))
        o, n = _offsets(inversion.meta["clips"])[k]
        x = inversion.latents[i, :, o:o + n].permute(1, 0, 2, 3)[None].to(models.device)
        cond = self._inversion_cond(inversion, k)
        plan.clock.step = edit_step_for_inversion_step(i, s.num_steps)
        with matching(models.unet, plan), torch.no_grad():
            models.velocity(unet_input(models, x, float(levels[i]), cond.latent[:, None].to(models.device)),
                            float(ts[i]), cond.embedding, cond.time_ids.to(models.device))

    def _ensure_stores(self, inversion: Inversion, progress: Progress) -> None:
        """After a cache hit the recorded attention is not in this process: replay the UNet over the cached
        trajectory (the same inputs as the inversion, no Euler steps needed)."""
        key = inversion.meta["frames_key"]
        clips = inversion.meta["clips"]
        if all((key, k) in self._stores for k in range(len(clips))):
            return
        s = self.s
        kv1 = None
        lora_enabled(self.models.unet, False)  # the base model inverted
        for k in range(len(clips)):
            store = AttentionStore(s.store, s.store_dir)
            kv = AttentionStore(s.store, s.store_dir) if (k == 0 and s.skip_interval) else None
            plan = MatchingPlan(Clock(0, s.num_steps), "record", store=store, kv_record=kv, kv_source=kv1)
            for i in range(s.num_steps):
                self._record_forward(inversion, k, i, plan)
                for st in (store, kv):
                    if st is not None:
                        st.finish_step(plan.clock.step)
                progress(f"attention replay, clip {k + 1}", i + 1, s.num_steps)
            self._stores[(key, k)] = store
            if kv is not None:
                self._stores[(key, -1)] = kv
                kv1 = kv

    def _replay_step(self, inversion: Inversion, k: int, j: int, store: AttentionStore) -> None:
        """``store: replay``: just before edit step j of clip k, record what the inversion saw at the matching
        step (entry n-1-j; with skip-interval, clip 1's keys/values first), holding one step at a time."""
        s, unet = self.s, self.models.unet
        i = edit_step_for_inversion_step(j, s.num_steps)
        store.steps.clear()
        lora_enabled(unet, False)
        kv1 = None
        if s.skip_interval and k > 0:
            kv1 = AttentionStore()
            self._record_forward(inversion, 0, i, MatchingPlan(Clock(0, s.num_steps), "plain", kv_record=kv1))
        self._record_forward(inversion, k, i, MatchingPlan(Clock(0, s.num_steps), "record", store=store,
                                                           kv_source=kv1))
        lora_enabled(unet, s.motion_lora, s.lora_scale)

    def _motion_loras(self, inversion: Inversion, progress: Progress) -> None:
        """One motion LoRA per clip, cached by clip content, settings and model (like the inversions)."""
        s = self.s
        key = inversion.meta["frames_key"]
        for k, (o, n) in enumerate(_offsets(inversion.meta["clips"])):
            lkey = self._lora_key(key, k)
            if lkey in self._loras:
                continue
            folder = self.tuning_cache / "i2vedit" / lkey if self.tuning_cache is not None else None
            state = load_lora_cache(folder) if folder is not None and folder.is_dir() else None
            if state is None:
                self._fresh_lora()
                g = torch.Generator().manual_seed(self.cfg.seed + 7 + 1000 * k)
                kv = self._clip1_kv_for_training(inversion, progress) if (k > 0 and s.skip_interval) else None
                info = train_motion_lora(self.models, inversion.source_frames[o:o + n], s, g, progress,
                                         f"motion LoRA, clip {k + 1}", kv_source=kv)
                state = lora_state(self.models.unet)
                if folder is not None:
                    save_lora_cache(folder, state, {"clip": k, "settings": asdict(s), "training": info})
            self._loras[lkey] = state

    def _clip1_kv_for_training(self, inversion: Inversion, progress: Progress) -> AttentionStore:
        """Clip 1's temporal keys/values by step, at the size the LoRAs train at (official: the first consistency
        store at the output size, or a second inversion of clip 1 at the training size when they differ)."""
        s, models = self.s, self.models
        key = inversion.meta["frames_key"]
        o, n = _offsets(inversion.meta["clips"])[0]
        h, w = inversion.source_frames.shape[-2:]
        at_output = not s.train_size or list(s.train_size) == [h, w]
        slot = -1 if at_output else -2
        if (key, slot) in self._stores:
            return self._stores[(key, slot)]
        kv = AttentionStore(s.store, s.store_dir)
        lora_enabled(models.unet, False)  # the base model inverts
        if at_output:  # replay clip 1's inversion steps, recording its temporal K/V
            plan = MatchingPlan(Clock(0, s.num_steps), "plain", kv_record=kv)
            for i in range(s.num_steps):
                self._record_forward(inversion, 0, i, plan)
                kv.finish_step(plan.clock.step)
        else:
            from ..io.video import resize_frames

            clip = resize_frames(inversion.source_frames[o:o + n].float(), s.train_size[0], s.train_size[1])
            g = torch.Generator().manual_seed(self.cfg.seed + 500)
            x_in = sarp(clip, s.sarp_alpha, g) if s.sarp else clip
            cond = inversion_condition(models, x_in[0], s, g)
            z = models.encode_latents(x_in, sample=True, generator=g)[None]
            plan = MatchingPlan(Clock(0, s.num_steps), "plain", kv_record=kv)
            with matching(models.unet, plan):
                edm_invert(models, z, cond, s.num_steps, progress, "EDM inversion of clip 1 at the training size", plan)
        lora_enabled(models.unet, True)
        self._stores[(key, slot)] = kv
        return kv

    def _lora_key(self, frames_key: str, k: int) -> str:
        s = self.s
        lora = {f: getattr(s, f) for f in ("lora_rank", "lora_steps", "lora_lr", "lora_weight_decay", "lora_dropout",
                                           "lora_init", "train_time_ids", "train_size", "train_fps")}
        return _digest(json.dumps({"frames": frames_key, "clip": k, "lora": lora, "seed": self.cfg.seed,
                                   "models": self.models.fingerprint()}, sort_keys=True).encode())[:24]

    def _fresh_lora(self) -> None:
        """A freshly initialised LoRA for the next clip (added on first use)."""
        add_motion_lora(self.models.unet, self.s)
        lora_enabled(self.models.unet, True)

    def _use_lora(self, inversion: Inversion, k: int, progress: Progress = no_progress) -> None:
        state = self._loras.get(self._lora_key(inversion.meta["frames_key"], k))
        if state is None:
            self._motion_loras(inversion, progress)
            state = self._loras[self._lora_key(inversion.meta["frames_key"], k)]
        if not motion_lora_layers(self.models.unet):
            add_motion_lora(self.models.unet, self.s)
        load_lora_state(self.models.unet, state)
        lora_enabled(self.models.unet, True, self.s.lora_scale)

    # ------------------------------------------------------------------ stage 2: appearance refinement

    def edit(self, inversion: Inversion, target: str = "", progress: Progress = no_progress) -> EditResult:
        """Edit every clip auto-regressively from the edited first frame at ``target`` (default: the first
        of ``i2vedit.first_frames``). Returns the joined video (one frame fewer per later clip)."""
        s = self.s
        path = target or (s.first_frames[0] if s.first_frames else "")
        if not path:
            raise InputError("no edited first frame; pass --first-frame IMAGE (the video's first frame, edited)")
        h, w = inversion.source_frames.shape[-2:]
        image = load_first_frame(path, h, w)
        index = s.first_frames.index(path) if path in s.first_frames else None
        return self.edit_from_image(inversion, image, progress, label=path, index=index)

    def edit_from_image(self, inversion: Inversion, image: Tensor, progress: Progress = no_progress,
                        label: str = "", index: int | None = None) -> EditResult:
        """Edit from an edited first frame ``(3, H, W)`` in [-1, 1]; ``index`` (its place in ``first_frames``)
        picks its own thresholds from ``per_first_frame``."""
        s, models = self.s, self.models
        own = s.per_first_frame[index] if index is not None and index < len(s.per_first_frame) else {}
        beta = tuple(own.get("temporal_step_thr", s.temporal_step_thr))
        mask_thr = tuple(own.get("mask_thr", s.mask_thr))
        t0 = time.perf_counter()
        replay = s.matching and s.store == "replay"
        if s.matching and not replay:
            self._ensure_stores(inversion, progress)
        key = inversion.meta["frames_key"]
        clips = inversion.meta["clips"]
        g = torch.Generator().manual_seed(self.cfg.seed)
        outs, latents = [], []
        kv_mode = "memory" if replay else s.store
        kv_edit = AttentionStore(kv_mode, s.store_dir) if s.skip_interval and len(clips) > 1 else None
        prev_latent: Tensor | None = None
        cond_image = image
        peak_store = 0
        try:
            for k, (o, n) in enumerate(_offsets(clips)):
                if s.motion_lora:
                    self._use_lora(inversion, k, progress)
                else:
                    lora_enabled(models.unet, False)
                cond = edit_condition(models, cond_image, s, g, latent=prev_latent)
                # z_T = x_n / √(σ_max² + 1), times init_noise_sigma = √(σ_max² + 1): the inversion's end x_n
                z = inversion.latents[-1, :, o:o + n].permute(1, 0, 2, 3)[None].to(models.device).float()
                store = AttentionStore() if replay else self._stores.get((key, k))
                plan = MatchingPlan(Clock(0, s.num_steps), "edit" if s.matching else "plain", store=store, cfg=True,
                                    spatial=s.spatial_matching, temporal=s.temporal_matching,
                                    mask_thr=mask_thr, mask_compare=s.mask_compare, beta=beta,
                                    kv_record=kv_edit if k == 0 else None, kv_source=kv_edit if k > 0 else None)
                with matching(models.unet, plan):
                    z0 = edm_sample(models, z, cond, s.num_steps,
                                    frame_guidance_scales(n, s.min_guidance_scale, s.max_guidance_scale), g,
                                    progress, f"edit, clip {k + 1}", plan, s.noise_aug_strength,
                                    before_step=(lambda j, k=k, st=store: self._replay_step(inversion, k, j, st))
                                    if replay else None)
                peak_store = max(peak_store, store.nbytes() if store is not None else 0)
                frames = models.decode_latents(z0)
                outs.append(frames.cpu())
                latents.append(z0[0].cpu())
                prev_latent, cond_image = z0[:, -1], frames[-1]
        finally:
            if kv_edit is not None:
                kv_edit.close()
        video = join_clips(outs, s.overlap)
        lat = join_clips(latents, s.overlap).permute(1, 0, 2, 3)[None]
        return EditResult(video, lat, label, {"edit": time.perf_counter() - t0},
                          {"clips": clips, "temporal_step_thr": list(beta), "mask_thr": list(mask_thr),
                           "store_bytes": sum(st.nbytes() for st in self._stores.values()),
                           "replay_step_bytes": peak_store if replay else 0})

    def _reconstruction_latents(self, inversion: Inversion) -> Tensor:
        """Unguided sampling from z_T with the source first frame's condition: what inversion gives back,
        ``(1, C, F, h, w)`` with the clips side by side as in ``inversion.latents``."""
        s, models = self.s, self.models
        outs = []
        g = torch.Generator().manual_seed(self.cfg.seed)  # unused by unguided sampling without latent noise
        for k, (o, n) in enumerate(_offsets(inversion.meta["clips"])):
            z = inversion.latents[-1, :, o:o + n].permute(1, 0, 2, 3)[None].to(models.device).float()
            outs.append(edm_sample(models, z, self._inversion_cond(inversion, k), s.num_steps, None, g)[0])
        return torch.cat(outs).permute(1, 0, 2, 3)[None]

    def reconstruct(self, inversion: Inversion) -> Tensor:
        """Frames ``(F, 3, H, W)``: the unguided sampling-back when computed (``i2vedit.reconstruct``), else the
        VAE round trip of the inversion's clean end."""
        side_by_side = inversion.reconstruction[0] if inversion.reconstruction is not None else inversion.latents[0]
        z = join_clips([side_by_side[:, o:o + n].permute(1, 0, 2, 3)
                        for o, n in _offsets(inversion.meta["clips"])], self.s.overlap)[None]
        return self.models.decode_latents(z.to(self.models.device))

    def close(self) -> None:
        for st in self._stores.values():
            st.close()
        self._stores.clear()


def _offsets(clips: list[list[int]] | list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Where each clip's frames lie in the side-by-side inversion: ``(offset, length)``."""
    out, o = [], 0
    for _, n in clips:
        out.append((o, n))
        o += n
    return out


def _make(models: SVDBundle, cfg: EditConfig) -> I2VEdit:
    if not isinstance(models, SVDBundle):
        raise UserError("i2vedit runs on Stable Video Diffusion; give its weights with --svd (a hub id or folder), "
                        "not SD 1.5 models")
    return I2VEdit(models, cfg)


register_official_format("i2vedit", is_official_i2vedit, from_official_i2vedit)
_make.needs_prompts = False  # type: ignore[attr-defined]


def _register(name: str, overrides: dict[str, Any] | None, doc: str) -> None:
    """Register a name, with Stable Video Diffusion as its models (the API loads them with ``load_models``)."""
    register(name, _make, overrides, doc, loader=I2VEdit.load_models,
             max_frames=MAX_INPUT_FRAMES)  # the video is cut into clips: more than SVD's 14 or AnimateDiff's 32


_register("i2vedit", None, "I2VEdit, full method (official-code defaults; needs --first-frame)")
_register("i2vedit-no-lora", {"i2vedit.motion_lora": False}, "ablation: no motion LoRA")
_register("i2vedit-no-sarp", {"i2vedit.sarp": False}, "ablation: no smooth-area random perturbation")
_register("i2vedit-no-matching", {"i2vedit.matching": False}, "ablation: no attention matching")
_register("i2vedit-no-spatial", {"i2vedit.spatial_matching": False}, "ablation: no spatial attention matching")
_register("i2vedit-no-temporal", {"i2vedit.temporal_matching": False},
          "ablation: no temporal attention selector")
for _preset, _beta in BETA_PRESETS.items():
    _register(f"i2vedit-beta-{_preset}", {"i2vedit.temporal_step_thr": list(_beta)},
              f"β preset {_preset}: temporal stages {_beta}")
_register("i2vedit-text", None, "bench: frame 0 edited from the target prompt by VideoDirector on one frame "
          "(--first-frame-prompt), then propagated")
_register("i2vedit-no-skip-interval", {"i2vedit.skip_interval": False},
          "long videos without skip-interval cross-attention")
_register("i2vedit-skip-interval", {"i2vedit.skip_interval": True},
          "long videos with skip-interval cross-attention to clip 1")
