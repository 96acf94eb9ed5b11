"""Typed configuration: dataclasses, our YAML format, and the official VideoDirector YAML.

Every field is read by the code. Unknown keys and wrong types raise :class:`ConfigError`
naming the key. Constants inherited from the official implementation are fields with
their origin in the docstring (the official implementation).

Two formats load through :func:`load_config`:

* ours: nested sections ``model``, ``input``, ``prompts``, ``inversion``, ``stdg``,
  ``control``, ``output`` and a top-level ``seed``;
* the official repo's editing YAML (``bear_editing_config.yaml`` and friends), detected by
  its keys and mapped by :func:`from_official` (every key it uses is mapped or, for the
  five keys the official code never reads, accepted and documented as unused).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import ConfigError

DEFAULT_SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"
DEFAULT_MOTION_ADAPTER = "guoyww/animatediff-motion-adapter-v1-5-3"


@dataclass
class ModelConfig:
    """Which weights to load and where to run them."""

    base: str = DEFAULT_SD15
    """SD 1.5 in diffusers layout: a hub id or a local folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/)."""
    motion_adapter: str = DEFAULT_MOTION_ADAPTER
    """AnimateDiff motion adapter: a hub id, a diffusers folder, or an original ``.ckpt``/``.safetensors`` file."""
    single_file: str | None = None
    """Optional community SD 1.5 checkpoint (e.g. RealisticVision ``.safetensors``); ``base`` supplies its config."""
    official_model_config: str | None = None
    """The official repo's ``model_config.yaml`` path; recorded only: its AnimateDiff v3 layout is what the adapter config gives."""
    motion_norm: Literal["auto", "per_frame", "joint"] = "auto"
    """GroupNorm of the motion modules (``models.motion_norm``): ``per_frame`` as the original AnimateDiff
    module and the official code (``(b f) c h w``), ``joint`` over all frames as diffusers'
    ``AnimateDiffTransformer3D``; ``auto`` by the weights: original AnimateDiff adapters (hub id, ``.ckpt``)
    per frame, a local adapter folder as its model card says (``"motion_norm"`` in ``training.json``
    beside it; the bundled ShapeWorld models: joint), per frame without a card."""
    local_files_only: bool = False
    """Never touch the network (also set by ``HF_HUB_OFFLINE=1``)."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu``, ``cuda`` or ``cuda:N``."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """``auto`` is bfloat16 on CUDA (as the official code) and float32 on CPU."""
    compile: bool = False
    """``torch.compile`` the UNet's resnet, feed-forward and motion-module blocks (``models.compile``;
    one-time compile cost, cached on disk by PyTorch)."""
    gradient_checkpointing: bool = False
    """Trade time for memory in the null-text backward (helps on 24 GB cards)."""
    recompute_feedforward: bool | Literal["auto"] = "auto"
    """Keep only the input of each GEGLU feed-forward for the backward and recompute its projection there
    (``models.feedforward``): stage 1's peak drops by the GEGLU activations (most of 8.4 GB at 16 × 512²)
    for one more matmul per feed-forward. ``auto``: on CUDA, off on the CPU (where memory is rarely the limit
    and the demo took 14 % longer with it). Forwards without gradients are unchanged."""
    attention_backend: Literal["default", "cudnn", "flash", "efficient"] = "default"
    """Which ``scaled_dot_product_attention`` kernel PyTorch tries first (CUDA; ``default``: PyTorch's order).
    Outputs agree within kernel rounding; ``benchmarks/edit_profile.py`` measures them."""
    channels_last: bool = False
    """Keep the UNet's convolution weights in channels-last memory format (CUDA speed option)."""
    threads: int | None = None
    """CPU threads for torch (``torch.set_num_threads``); None keeps torch's default (one per core). On a
    busy or small machine 1 avoids oversubscription: under load a UNet forward took 5.6 s with 2 threads
    against 0.53 s with 1."""


@dataclass
class InputConfig:
    """The source video and its masks."""

    video: str | None = None
    """mp4/webm/gif/mov file or a folder of frames."""
    masks: str | None = None
    """Folder of per-frame PNGs (sorted by name) or a mask video; white = object."""
    num_frames: int = 16
    """Frames sampled evenly (official: ``range(0, n, n // F)[:F]``)."""
    height: int = 512
    width: int = 512
    resize_mode: Literal["stretch", "crop"] = "stretch"
    """``stretch`` resizes without cropping (official); ``crop`` centre-crops to the aspect first."""
    ellipse_mask: bool = True
    """Union each mask with the moment-equivalent ellipse of its first component (supplementary §III)."""


@dataclass
class PromptConfig:
    """Prompts and prompt-to-prompt word settings."""

    source: str = ""
    """Describes the input video (official ``inversion_prompt``)."""
    target: str = ""
    """The edited description (official ``new_prompt``); may be given per edit instead."""
    negative: str = ""
    """Negative prompt; its embedding initialises the null-text (official behaviour)."""
    equalizer_words: list[str] = field(default_factory=list)
    """Words of the target prompt whose cross-attention is reweighted (official ``p2p_eq_params_words``)."""
    equalizer_values: list[float] = field(default_factory=list)
    blend_words_source: list[str] = field(default_factory=list)
    """Local blend: words of the source prompt (empty: no local blend, the official default)."""
    blend_words_target: list[str] = field(default_factory=list)
    blend_threshold: float = 0.3
    """Local-blend mask threshold on the normalised cross-attention map (prompt-to-prompt default)."""
    blend_start: float = 0.2
    """Fraction of the edit steps before the local blend acts: it blends from step ``int(T * blend_start)``
    on (prompt-to-prompt's ``LocalBlend(start_blend=0.2)``); the maps are accumulated from step 0."""


@dataclass
class InversionConfig:
    """Stage 1: DDIM inversion and (multi-frame) null-text optimisation."""

    num_steps: int = 50
    guidance_scale: float = 7.5
    """``w`` of paper Eq. 10: ``eps = eps_c + w (eps_c - eps_u)`` (8.5 in diffusers' convention)."""
    null_text: Literal["multi_frame", "shared", "none"] = "multi_frame"
    """``multi_frame`` (F x 77 x D, the paper), ``shared`` (1 x 77 x D, vanilla null-text) or ``none``."""
    null_inner_steps: int = 10
    null_lr: float = 1e-2
    null_lr_decay: float = 0.5
    """Learning rate at step i is ``null_lr * (1 - null_lr_decay * i / num_steps)`` (official: 1e-2 (1 - i/100))."""
    early_stop_epsilon: float = 1e-5
    early_stop_slope: float = 2e-5
    """Inner loop stops when loss < epsilon + slope * i (official hard-coded 2e-5)."""
    reference_cost: bool = False
    """Benchmark only: keep the official cost structure (four separate STDG gradients each with its own
    reference forward, unfrozen UNet parameters, cache clearing every inner iteration). Same results."""
    cuda_graph: bool = False
    """Capture one null-text iteration and one STDG gradient as CUDA graphs, in one shared memory pool, and
    replay them for every step of the pivotal stage (``diffusion.static_graph``); with ``null_text: none``
    nothing is captured. Faster on a GPU; same results up to rounding; runs eagerly (with a notice) if the capture
    fails. On the CPU the same static-tensor code runs uncaptured."""
    fast: Literal["none", "negative_prompt", "direct"] = "none"
    """Beyond the paper: ``negative_prompt`` (NPI: null = source embedding, no optimisation) or
    ``direct`` (PnP-Inversion style: store the per-step latent offset instead of optimising)."""


@dataclass
class STDGConfig:
    """Spatial-temporal decoupled guidance (paper Eqs. 2-4)."""

    enabled: bool = True
    coefficients: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.0, 0.5])
    """``[eta_f, eta_b, zeta_f, zeta_b]``: temporal fg/bg, appearance fg/bg (Eq. 4). Swap for background edits."""
    temporal_block_weights: dict[str, float] = field(
        default_factory=lambda: {"up_blocks.1": 20000.0, "up_blocks.2": 10000.0}
    )
    """Per-block weights of the temporal loss; every motion-module attention in a block gets its block's weight."""
    appearance_block_weights: dict[str, float] = field(
        default_factory=lambda: {"up_blocks.1": 20000.0, "up_blocks.2": 10000.0}
    )
    top_k: int = 1
    """Key frames kept per (pixel, head, query frame) in the temporal map (official hard-coded 1)."""
    appearance_loss: Literal["mean_key", "per_token"] = "mean_key"
    """``mean_key``: MSE of mask-pooled mean keys per frame (official code); ``per_token``: paper Eq. 3."""
    appearance_layers: Literal["spatial", "temporal"] = "spatial"
    """Whose keys the appearance term (Eq. 3) compares: ``spatial`` self-attention ``attn1`` keys (official
    ``app_guidance.block_type: spatial``, every shipped config) or the motion modules' ``temporal``
    attention keys (official ``block_type: temp``, ``get_temp_attn_key``), in the blocks of
    ``appearance_block_weights``, each key laid out per frame ``(F, h·w, C)`` before mask pooling."""
    guidance_scale: float = 1.0
    """Scale of G in the direction term (official ``grad_guidance_scale``)."""
    threshold: float | None = None
    """Optional clamp of G to ``[-threshold, threshold]``, in both the fast and the reference-cost path. Not
    mapped from official YAMLs: their ``grad_guidance_threshold`` is never applied by the official code."""


@dataclass
class ControlConfig:
    """Stage 2: attention control (paper Eqs. 6-7)."""

    self_replace_steps: float | list[float] = 0.4
    """tau_s: SA-I on steps ``[0, int(T tau_s))``, SA-II after. A window ``[start, end]`` (fractions, as the
    official ``MutualSelfAttention_p2p`` and prompt-to-prompt accept): SA-I on ``[int(T start), int(T end))``,
    SA-II from ``int(T end)`` on."""
    cross_replace_steps: float | list[float] = 0.8
    """tau_c: cross-attention control on steps ``[0, int((T + 1) tau_c))`` (prompt-to-prompt's alpha table);
    a window ``[start, end]``: on ``[int((T + 1) start), int((T + 1) end))`` (``update_alpha_time_word``)."""
    sa1: bool = True
    sa2: bool = True
    cross: bool = True
    mutual_layers: list[int] = field(default_factory=lambda: [7, 16])
    """Spatial self-attention layers (call order, 0-15) where SA-II acts (official ``MutualSelfAttn_layers``)."""
    mutual_end_step: int | None = None
    """SA-II ends before this step (official ``MutualSelfAttn_steps[1]``; None = all steps)."""
    cross_layers: list[int] = field(default_factory=lambda: [0, 16])
    """Cross-attention layers (call order) under prompt-to-prompt control."""
    cross_mode: Literal["refine", "replace"] = "refine"
    sa1_max_tokens: int | None = None
    """SA-I acts on layers with at most this many query tokens; None = a quarter of the latent
    (the official 32 x 32 gate at 64 x 64 latents)."""
    edit_target: Literal["object", "background"] = "object"
    """What the edit changes. ``background``: SA-II lets edit queries read the source *object* instead of the
    source background (the mask is inverted for SA-II); pair it with the swapped STDG coefficients
    ``[eta_b, eta_f, zeta_b, zeta_f]`` (paper §4: "when editing the background, these values were swapped")."""
    mask_blend: bool = False
    """Beyond the paper: keep what the masks say must stay (the background of an object edit, the object
    of a background edit) exactly as the source. Two steps: prompt-to-prompt's local blend with the given
    masks instead of attention maps (after each edit step from ``mask_blend_start`` on,
    ``z <- z + K (z_rec - z)``, ``K`` = 1 where kept, from ``io.masks.latent_keep_region``), then the
    source's own pixels where kept, ``x <- x + K_px (x_src - x)`` with ``K`` upsampled bilinearly (a soft
    edge of one latent pixel), as an inpainting overlay does: a decoded background is not the source's own
    pixels (the VAE round trip loses some of it, and the decoder carries part of an edited cell's change into
    the cells around it). A background edit takes the second step only: its few kept object cells, decoded
    with a new background around them, pull that background's colour back towards the source's. Needs masks."""
    mask_blend_dilation: int = 1
    """Latent pixels by which an object edit's region grows beyond the mask (room for a new outline)."""
    mask_blend_renoise: bool = False
    """With the mask blend: start the edited region from fresh Gaussian noise instead of the inverted z_T."""
    mask_blend_start: float = 0.2
    """Fraction of the edit steps left free before the blend starts (prompt-to-prompt's ``start_blend``)."""
    edit_timesteps: Literal["official", "same"] = "official"
    """``official``: stage 2 uses diffusers' leading spacing (981..1) with stage-1 quantities indexed by step;
    ``same``: stage 2 walks the stage-1 timesteps (Algorithm I)."""


@dataclass
class OutputConfig:
    out: str = "out"
    fps: int = 8
    overwrite: bool = False


METHOD_SETTINGS: dict[str, type] = {}
"""Settings sections of the methods: section name (``video_p2p``) -> that method's settings dataclass.

Each method keeps its own settings dataclass beside its algorithm (``methods/<name>.py``) and registers
it here with :func:`register_settings` when imported; this module never imports the methods. A
registered section is a top-level key of our YAML format and of dotted overrides
(``video_p2p.tune_steps: 300``), with the same type checks as the built-in sections."""


OFFICIAL_FORMATS: dict[str, tuple[Any, Any]] = {}
"""Other official YAML formats (another method's repository): name -> ``(detect(data) -> bool,
mapper(data, yaml_folder) -> EditConfig)``, registered by the method module with :func:`register_official_format`."""


def register_official_format(name: str, detect: Any, mapper: Any) -> None:
    """Make :func:`load_config` read a method's official YAML (detected by ``detect``, mapped by ``mapper``)."""
    OFFICIAL_FORMATS[name] = (detect, mapper)


def register_settings(section: str, cls: type) -> None:
    """Make ``section`` a config section parsed into the dataclass ``cls`` (called by a method module)."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"settings of section {section!r} must be a dataclass")
    METHOD_SETTINGS[section] = cls


@dataclass
class EditConfig:
    """One complete editing job: the shared sections, plus the settings sections of the methods that
    have their own (:data:`METHOD_SETTINGS`), read with :meth:`settings_for`."""

    model: ModelConfig = field(default_factory=ModelConfig)
    input: InputConfig = field(default_factory=InputConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    inversion: InversionConfig = field(default_factory=InversionConfig)
    stdg: STDGConfig = field(default_factory=STDGConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    seed: int = 42
    method: str | None = None
    """The method the config was written for (official Video-P2P YAMLs say ``video-p2p``); the CLI runs it
    when ``--method`` is not given. None: VideoDirector."""
    method_settings: dict[str, Any] = field(default_factory=dict)
    """Section name -> settings dataclass, for the sections the config set; see :meth:`settings_for`."""

    def settings_for(self, section: str) -> Any:
        """The settings of a method's section: as configured, or that dataclass's defaults."""
        if section in self.method_settings:
            return self.method_settings[section]
        if section not in METHOD_SETTINGS:
            raise ConfigError(f"no settings section {section!r}; known sections: {', '.join(METHOD_SETTINGS) or 'none'}")
        return METHOD_SETTINGS[section]()

    def to_dict(self) -> dict[str, Any]:
        """Nested plain data, the methods' sections at the top level as in the YAML format."""
        data = dataclasses.asdict(self)
        data.update(data.pop("method_settings"))
        return data


# --------------------------------------------------------------------------- parsing


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are expected."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"config key '{key}' has the wrong type: got {value!r}, expected {_type_name(tp)}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}' must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return {_coerce(k, args[0], key): _coerce(v, args[1], f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config section '{key}' must be a mapping, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise :class:`ConfigError`.
    For :class:`EditConfig`, the top-level keys naming a registered method section are parsed into
    that method's settings dataclass."""
    names = [f.name for f in dataclasses.fields(cls)]
    if cls is EditConfig:
        data = dict(data)
        names = [n for n in names if n != "method_settings"] + list(METHOD_SETTINGS)
        sections = {k: from_dict(METHOD_SETTINGS[k], _mapping(data.pop(k), k), prefix=f"{k}.")
                    for k in list(data) if k in METHOD_SETTINGS}
        data.pop("method_settings", None)
        cfg = _from_fields(cls, data, names, prefix)
        cfg.method_settings = sections
        return cfg
    return _from_fields(cls, data, names, prefix)


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"config section '{key}' must be a mapping, got {value!r}")
    return value


def _from_fields(cls: type, data: dict[str, Any], names: list[str], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'; valid keys here are: {', '.join(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    return cls(**kwargs)


def apply_overrides(cfg: EditConfig, overrides: dict[str, Any]) -> EditConfig:
    """Set dotted keys (``"inversion.num_steps": 10``) with the same checks as the YAML loader."""
    data = cfg.to_dict()
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = dotted.split(".")
        if parents and parents[0] in METHOD_SETTINGS and parents[0] not in data:
            data[parents[0]] = dataclasses.asdict(METHOD_SETTINGS[parents[0]]())
        for p in parents:
            if p not in node or not isinstance(node[p], dict):
                raise ConfigError(f"unknown config key '{dotted}'")
            node = node[p]
        if leaf not in node:
            raise ConfigError(f"unknown config key '{dotted}'")
        node[leaf] = value
    return from_dict(EditConfig, data)


def parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (``--set``) to overrides with YAML values, each checked now against
    :class:`EditConfig` (unknown keys, wrong types); the methods' sections must be registered already
    (import ``videodirector.methods.catalog``)."""
    out: dict[str, Any] = {}
    for kv in pairs:
        key, sep, value = kv.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {kv!r} is not KEY=VALUE; write e.g. --set assd.iterations=30")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--set {kv!r}: the value is not valid YAML; quote it, e.g. --set 'key=\"text\"'") from None
    apply_overrides(EditConfig(), out)
    return out


# --------------------------------------------------------------------------- official format

OFFICIAL_KEYS_UNUSED = {
    # Read by nothing in the official code; accepted so official YAMLs load unchanged.
    "function_type": "MotionClone leftover, read by nothing",
    "cross_attn_mask_tr_app": "MotionClone compute_cross_attn_mask threshold, never called",
    "cross_attn_mask_tr_example": "MotionClone compute_cross_attn_mask threshold, never called",
    "grad_guidance_threshold": "the clamp exists only in the unused calculate_STDG, which overwrites it with None "
                               "(official code); the masked STDG path never applies it, so stdg.threshold stays unset",
}
OFFICIAL_SIGNATURE = {"inversion_prompt", "new_prompt", "STDG_guide"}


def is_official(data: dict[str, Any]) -> bool:
    return bool(OFFICIAL_SIGNATURE & set(data))


def _block_weights(section: dict[str, Any], key: str) -> dict[str, float]:
    blocks = section.get("blocks", [])
    weights = section.get("weight_each", [])
    if len(blocks) != len(weights):
        raise ConfigError(f"config key '{key}': {len(blocks)} blocks but {len(weights)} weight_each values")
    return {str(b): float(w) for b, w in zip(blocks, weights)}


def resolve_official_path(p: str | None, base_dir: Path | None) -> str | None:
    """An official YAML's path: as given when absolute or found from the working directory (where the
    official script runs), else in ``base_dir`` when found there, else as given (the error will name it)."""
    if p is None or p == "":
        return None
    q = Path(p).expanduser()
    if q.is_absolute() or q.exists() or base_dir is None:
        return str(q)
    return str(base_dir / q) if (base_dir / q).exists() else str(q)


def from_official(data: dict[str, Any], base_dir: Path | None = None) -> EditConfig:
    """Map an official VideoDirector editing YAML onto :class:`EditConfig`, as the official script reads it.

    Paths resolve as the official script resolves them, against the working directory (it is run
    from the repository root: ``python run_videodirector.py --config editing_config_yaml/x.yaml``);
    a path that does not exist there is looked up in ``base_dir`` (the YAML's folder) next. The
    official layout keeps masks in ``<video dir>/sam2_mask/<video name>/``; that folder is used when
    it exists, else ``<video dir>/masks``. The keys ``seed``, ``H``, ``W`` and ``L`` that the official
    script reads (defaults 42, 512, 512, 16) map to ``seed``, ``input.height``, ``input.width`` and
    ``input.num_frames``.
    """
    d = dict(data)
    known = {
        "dreambooth_path", "motion_module", "model_config", "app_guidance", "temp_guidance", "cfg_scale",
        "early_stop_epsilon", "grad_guidance_scale", "grad_guidance_threshold", "negative_prompt",
        "inversion_prompt", "new_prompt", "null_inner_steps", "num_inference_step", "using_ellipse_mask",
        "multiframe_NT", "MutualSelfAttn_layers", "MutualSelfAttn_steps", "p2p_blend_word_base",
        "p2p_blend_word_new", "p2p_cross_is_replace_controller", "p2p_cross_replace_layers",
        "p2p_cross_replace_steps", "p2p_eq_params_words", "p2p_eq_params_values", "p2p_self_replace_steps",
        "STDG_guide", "video_path", "seed", "H", "W", "L", *OFFICIAL_KEYS_UNUSED,
    }
    unknown = [k for k in d if k not in known]
    if unknown:
        raise ConfigError(f"unknown key '{unknown[0]}' in official VideoDirector config; known keys: {', '.join(sorted(known))}")

    def path(p: str | None) -> str | None:
        return resolve_official_path(p, base_dir)

    app = d.get("app_guidance", {}) or {}
    # official get_spatial_attn1_key (spatial, every shipped config) or get_temp_attn_key (temp)
    app_layers = {"spatial": "spatial", "temp": "temporal"}.get(app.get("block_type", "spatial"))
    if app_layers is None:
        raise ConfigError(f"config key 'app_guidance.block_type' must be 'spatial' or 'temp', "
                          f"got {app.get('block_type')!r}")
    extra_app = set(app) - {"block_type", "blocks", "weight_each", "cross_attn_blocks", "cross_attn_mask_tr_app", "cross_attn_mask_tr_example"}
    if extra_app:
        raise ConfigError(f"unknown key 'app_guidance.{sorted(extra_app)[0]}' in official VideoDirector config")
    temp = d.get("temp_guidance", {}) or {}
    video = path(d.get("video_path"))
    masks = None
    if video is not None:
        vp = Path(video)
        for cand in (vp.parent / "sam2_mask" / vp.stem, vp.parent / "masks"):
            if cand.is_dir():
                masks = str(cand)
                break
        if masks is None:
            masks = str(vp.parent / "sam2_mask" / vp.stem)

    if d.get("p2p_blend_word_base") is not None or d.get("p2p_blend_word_new") is not None:
        # official: LocalBlend is built but controller.step_callback is never called in editing_pipe
        from .notices import warn

        warn("the official config names local-blend words (p2p_blend_word_base/new), but the official code never "
             "applies the blend, so neither does this run; set prompts.blend_words_source/target to blend")
    mutual_steps = d.get("MutualSelfAttn_steps", [0, d.get("num_inference_step", 50)])
    out: dict[str, Any] = {
        "seed": d.get("seed", 42),
        "model": {
            "single_file": path(d.get("dreambooth_path")),
            "motion_adapter": path(d.get("motion_module")) or DEFAULT_MOTION_ADAPTER,
            "official_model_config": path(d.get("model_config")),
        },
        "input": {"video": video, "masks": masks, "ellipse_mask": d.get("using_ellipse_mask", True),
                  "height": d.get("H", 512), "width": d.get("W", 512), "num_frames": d.get("L", 16)},
        "prompts": {
            "source": d.get("inversion_prompt", ""),
            "target": d.get("new_prompt", ""),
            "negative": d.get("negative_prompt", "") or "",
            "equalizer_words": [str(w) for w in d.get("p2p_eq_params_words", []) or []],
            "equalizer_values": d.get("p2p_eq_params_values", []) or [],
        },
        "inversion": {
            "num_steps": d.get("num_inference_step", 50),
            "guidance_scale": d.get("cfg_scale", 7.5),
            "null_text": "multi_frame" if d.get("multiframe_NT", True) else "shared",
            "null_inner_steps": d.get("null_inner_steps", 10),
            "early_stop_epsilon": d.get("early_stop_epsilon", 1e-5),
        },
        "stdg": {
            "coefficients": d.get("STDG_guide", [0.5, 0.5, 0.0, 0.5]),
            "temporal_block_weights": _block_weights(temp, "temp_guidance"),
            "appearance_block_weights": _block_weights(app, "app_guidance"),
            "appearance_layers": app_layers,
            "guidance_scale": d.get("grad_guidance_scale", 1.0),
        },
        "control": {
            "self_replace_steps": d.get("p2p_self_replace_steps", 0.4),
            "cross_replace_steps": d.get("p2p_cross_replace_steps", 0.8),
            "mutual_layers": d.get("MutualSelfAttn_layers", [7, 16]),
            # Official: MutualSelfAttn_steps[0] is overwritten by int(T tau_s); only [1] is read.
            "mutual_end_step": mutual_steps[1],
            "cross_layers": d.get("p2p_cross_replace_layers", [0, 16]),
            "cross_mode": "replace" if d.get("p2p_cross_is_replace_controller") else "refine",
        },
    }
    if not out["stdg"]["temporal_block_weights"]:
        del out["stdg"]["temporal_block_weights"]
    if not out["stdg"]["appearance_block_weights"]:
        del out["stdg"]["appearance_block_weights"]
    return from_dict(EditConfig, out)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None, check: bool = True) -> EditConfig:
    """Load our YAML format or an official VideoDirector YAML, then apply dotted overrides; ``check=False``
    leaves :func:`validate` to the caller (the CLI validates once a method's own settings are applied too)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p} (give the path to a YAML file)")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping of keys, not {type(data).__name__}")
    other = next((mapper for detect, mapper in OFFICIAL_FORMATS.values() if detect(data)), None)
    if other is not None:
        cfg = other(data, p.parent)
    elif is_official(data):
        cfg = from_official(data, base_dir=p.parent)
    else:
        cfg = from_dict(EditConfig, data)
        # Relative paths in our format are relative to the YAML file.
        for attr in ("video", "masks"):
            v = getattr(cfg.input, attr)
            if v is not None and not Path(v).is_absolute():
                setattr(cfg.input, attr, str(p.parent / v))
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    if check:
        validate(cfg)
    return cfg


MAX_FRAME_SIDE = 2048
"""Largest frame side accepted: SD 1.5 at 2048² already needs 64× the memory of 512²."""
MAX_SEED = 2**63 - 1
ANIMATEDIFF_MAX_FRAMES = 32
"""AnimateDiff's motion modules have positional encodings for 32 frames; the other text-to-video methods keep
the same limit."""
MAX_INPUT_FRAMES = 1024
"""The most frames any method takes (I2VEdit, in clips); each method's own limit is ``methods.base.check_frames``."""
_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_BLOCK = re.compile(r"^(down_blocks\.\d+|up_blocks\.\d+|mid_block)$")


def _number(key: str, value: float | int | None, low: float, high: float, fix: str = "") -> None:
    """``value`` must be a finite number in ``[low, high]``."""
    if value is None:
        return
    if not math.isfinite(value) or not low <= value <= high:
        hint = f"; {fix}" if fix else ""
        raise ConfigError(f"{key}={value!r} is out of range: use a finite number from {low:g} to {high:g}{hint}")


def _step_window(key: str, value: float | list[float]) -> None:
    """A fraction of the steps, or a window ``[start, end]`` of fractions with ``start <= end``."""
    if not isinstance(value, list):
        _number(key, value, 0.0, 1.0)
        return
    if len(value) != 2 or not value[0] <= value[1]:
        raise ConfigError(f"{key}={value!r}: give one fraction or a window [start, end] with start <= end")
    for v in value:
        _number(key, v, 0.0, 1.0)


def validate(cfg: EditConfig) -> None:
    """Every setting in range, before any work starts: non-finite, negative or absurd numbers would
    otherwise yield a black or meaningless video (one line naming the setting and its range). A method's
    settings section is checked by its own ``validate()`` method, when it has one."""
    for settings in cfg.method_settings.values():
        if hasattr(settings, "validate"):
            settings.validate()
    i = cfg.input
    if i.height % 8 or i.width % 8 or not (64 <= i.height <= MAX_FRAME_SIDE and 64 <= i.width <= MAX_FRAME_SIDE):
        raise ConfigError(f"input.height and input.width must be multiples of 8 from 64 to {MAX_FRAME_SIDE}, "
                          f"got {i.height}x{i.width}; use e.g. --height 512 --width 512")
    if not 1 <= i.num_frames <= MAX_INPUT_FRAMES:  # each method's own limit: methods.base.check_frames
        raise ConfigError(f"input.num_frames={i.num_frames}: use 1 to {MAX_INPUT_FRAMES} frames "
                          f"(1 to {ANIMATEDIFF_MAX_FRAMES} frames with AnimateDiff's methods)")
    if not 0 <= cfg.seed <= MAX_SEED:
        raise ConfigError(f"seed={cfg.seed} is out of range: use an integer from 0 to 2**63-1 (default 42)")
    m = cfg.model
    if not _DEVICE.match(m.device):
        raise ConfigError(f"model.device={m.device!r} is not a device this tool runs on: use auto, cpu, cuda or cuda:N")
    if m.threads is not None and not 1 <= m.threads <= 1024:
        raise ConfigError(f"model.threads={m.threads}: use a number of CPU threads from 1 to 1024 (--threads 1 on a busy machine)")
    if m.dtype == "float16" and _runs_on_cpu(m.device):
        raise ConfigError("--dtype float16 does not work on the CPU (the edit comes out black); "
                          "use --dtype float32 (the CPU default) or run on a GPU")
    p = cfg.prompts
    if len(p.equalizer_words) != len(p.equalizer_values):
        raise ConfigError(
            f"prompts.equalizer_words has {len(p.equalizer_words)} words but "
            f"prompts.equalizer_values has {len(p.equalizer_values)} values; give one value per word"
        )
    for k, v in enumerate(p.equalizer_values):
        _number(f"prompts.equalizer_values[{k}] (--edit-weight)", v, 0.0, 20.0, "the official configs use 1 to 5")
    _number("prompts.blend_threshold", p.blend_threshold, 0.0, 1.0)
    inv = cfg.inversion
    if not 1 <= inv.num_steps <= 1000:
        raise ConfigError(f"inversion.num_steps={inv.num_steps}: use 1 to 1000 DDIM steps (--steps 50 is faithful)")
    _number("inversion.guidance_scale", inv.guidance_scale, 0.0, 50.0, "the official value is 7.5")
    if not 0 <= inv.null_inner_steps <= 1000:
        raise ConfigError(f"inversion.null_inner_steps={inv.null_inner_steps}: use 0 to 1000 null-text iterations "
                          "per step (--inner-steps 10 is faithful)")
    _number("inversion.null_lr", inv.null_lr, 1e-8, 1.0, "the official value is 0.01")
    _number("inversion.null_lr_decay", inv.null_lr_decay, 0.0, 1.0)
    _number("inversion.early_stop_epsilon", inv.early_stop_epsilon, 0.0, 1.0)
    _number("inversion.early_stop_slope", inv.early_stop_slope, 0.0, 1.0)
    st = cfg.stdg
    if len(st.coefficients) != 4:
        raise ConfigError("stdg.coefficients must be 4 numbers [eta_f, eta_b, zeta_f, zeta_b]")
    for k, v in enumerate(st.coefficients):
        _number(f"stdg.coefficients[{k}] (--stdg)", v, 0.0, 100.0, "the official values are 0 to 0.5")
    for key in ("temporal_block_weights", "appearance_block_weights"):
        for block, w in getattr(st, key).items():
            if not _BLOCK.match(block):
                raise ConfigError(f"stdg.{key}: {block!r} is not a UNet block name; use up_blocks.N, down_blocks.N "
                                  "or mid_block (official: up_blocks.1, up_blocks.2)")
            _number(f"stdg.{key}.{block}", w, 0.0, 1e9)
    if not 1 <= st.top_k <= i.num_frames:
        raise ConfigError(f"stdg.top_k={st.top_k}: keep 1 to {i.num_frames} key frames (the frame count); "
                          "the official value is 1")
    _number("stdg.guidance_scale", st.guidance_scale, 0.0, 1000.0, "the official value is 1")
    if st.threshold is not None:
        _number("stdg.threshold", st.threshold, 1e-12, 1e12)
    c = cfg.control
    for key, flag in (("self_replace_steps", "--tau-s"), ("cross_replace_steps", "--tau-c")):
        _step_window(f"control.{key} ({flag})", getattr(c, key))
    if c.mask_blend_renoise and not c.mask_blend:
        raise ConfigError("control.mask_blend_renoise needs control.mask_blend: add --mask-blend or drop --renoise")
    if not 0 <= c.mask_blend_dilation <= 64:
        raise ConfigError(f"control.mask_blend_dilation={c.mask_blend_dilation}: use 0 to 64 latent pixels")
    _number("control.mask_blend_start", c.mask_blend_start, 0.0, 1.0)
    for key in ("mutual_layers", "cross_layers"):
        v = getattr(c, key)
        if len(v) != 2 or not 0 <= v[0] <= v[1] <= 16:
            raise ConfigError(f"control.{key} must be [start, end) with 0 <= start <= end <= 16 (the UNet's 16 "
                              f"attention layers), got {v}")
    if c.mutual_end_step is not None and not 0 <= c.mutual_end_step <= inv.num_steps:
        raise ConfigError(f"control.mutual_end_step={c.mutual_end_step}: use a step from 0 to inversion.num_steps "
                          f"({inv.num_steps})")
    if c.sa1_max_tokens is not None and c.sa1_max_tokens < 1:
        raise ConfigError("control.sa1_max_tokens must be at least 1 (or null for a quarter of the latent)")
    if not 1 <= cfg.output.fps <= 240:
        raise ConfigError(f"output.fps={cfg.output.fps}: use 1 to 240 frames per second (default 8)")
    _number("prompts.blend_start", p.blend_start, 0.0, 1.0, "prompt-to-prompt's value is 0.2")


def _runs_on_cpu(device: str) -> bool:
    if device == "cpu":
        return True
    if device != "auto":
        return False
    import torch

    return not torch.cuda.is_available()
