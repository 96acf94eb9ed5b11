"""Model loading: SD 1.5 + AnimateDiff motion adapter -> one :class:`ModelBundle`.

One code path for real and bundled models:

* SD 1.5 from a hub id or a diffusers folder (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``);
* optionally a community single-file checkpoint (``.safetensors``/``.ckpt``, e.g. RealisticVision),
  whose config comes from ``base`` (keep a local copy for offline use);
* the motion adapter from a hub id, a diffusers folder or an original ``.ckpt``.

Anything saved with ``save_pretrained`` in that layout loads here: the tiny test models and the
bundled ShapeWorld models do. The noise schedule is AnimateDiff's (linear betas 0.00085-0.012,
``steps_offset=1``, ``clip_sample=False``), as in the official code (official code).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path
from urllib.parse import urlsplit

import torch
from torch import Tensor

from ..config import DEFAULT_SD15, ModelConfig
from ..diffusion.ddim import NoiseSchedule
from ..errors import UserError, WeightsNotFoundError
from .compile import compile_blocks
from .feedforward import set_recompute_feedforward

ANIMATEDIFF_SCHEDULER = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "linear",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": True,
    "prediction_type": "epsilon",
}

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when present, else the CPU; a CUDA device that is not there is a one-line error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for but no CUDA GPU is visible; use --device cpu")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise UserError(f"device {device!r} asked for but only {torch.cuda.device_count()} CUDA GPU(s) are visible; "
                        "use --device cuda:0")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; use one of auto, float32, bfloat16, float16")
    return _DTYPES[dtype]


class _VAELatents:
    """The latent space of a bundle's ``vae``: its downsampling factor and its scaling factor."""

    vae: torch.nn.Module

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)


@dataclass
class ModelBundle(_VAELatents):
    """UNet (SD 1.5 + motion modules), VAE, text encoder, tokenizer and noise schedule."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    schedule: NoiseSchedule
    device: torch.device
    dtype: torch.dtype
    sources: dict[str, str] = field(default_factory=dict)
    attention_backend: str = "default"
    """``ModelConfig.attention_backend``: the SDPA kernel tried first during UNet forwards."""

    def fingerprint(self) -> str:
        """Identifies the weights for the inversion cache (sources plus the size and mtime of local files)."""
        h = hashlib.sha256()
        for k in sorted(self.sources):
            v = self.sources[k]
            h.update(f"{k}={v};".encode())
            p = Path(v)
            if p.exists():
                files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
                for q in files:
                    st = q.stat()
                    h.update(f"{q.name}:{st.st_size}:{int(st.st_mtime)};".encode())
        h.update(str(self.dtype).encode())
        return h.hexdigest()[:16]

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> Tensor:
        """CLIP last hidden states ``(n, 77, D)``, padded to max length without attention mask (SD 1.5)."""
        tok = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        out = self.text_encoder(tok.input_ids.to(self.device))[0]
        return out.to(self.dtype)

    @torch.no_grad()
    def encode_video(self, frames: Tensor, generator: torch.Generator | None = None, sample: bool = True) -> Tensor:
        """Frames ``(F, 3, H, W)`` in [-1, 1] -> latents ``(1, C, F, h, w)``.

        ``sample=True`` draws from the posterior with ``generator`` (official); False takes the mean.
        """
        x = frames.to(self.device, self.dtype)
        dist = self.vae.encode(x).latent_dist
        z = dist.sample(generator=generator) if sample else dist.mean
        z = z * self.scaling_factor
        return z.permute(1, 0, 2, 3).unsqueeze(0)

    @torch.no_grad()
    def decode_latents(self, latents: Tensor, chunk: int = 4) -> Tensor:
        """Latents ``(1, C, F, h, w)`` -> frames ``(F, 3, H, W)`` in [-1, 1], decoded ``chunk`` frames at a time."""
        z = latents[0].permute(1, 0, 2, 3) / self.scaling_factor
        out = [self.vae.decode(z[i : i + chunk].to(self.dtype)).sample for i in range(0, z.shape[0], chunk)]
        return torch.cat(out).float().clamp(-1, 1)

    def eps(self, z: Tensor, t: int, emb: Tensor) -> Tensor:
        """``ε_θ(z, emb, t)`` for latents ``(B, C, F, h, w)`` and per-frame embeddings ``(B·F, 77, D)``.

        ``t`` goes in as a tensor: a Python int would be a constant to ``torch.compile``, which would then
        compile the UNet once per timestep."""
        with sdpa_priority(self.attention_backend):
            return self.unet(z.to(self.dtype), torch.as_tensor(t), encoder_hidden_states=emb.to(self.dtype)).sample


SDPA_FIRST = {"cudnn": "CUDNN_ATTENTION", "flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION"}


def precision_twin(models: ModelBundle, dtype: torch.dtype) -> ModelBundle:
    """``models`` with the UNet and the VAE copied to ``dtype`` (the text encoder stays; its output is cast), and an
    ``encode_video`` that returns ``models``' own posterior sample, cast: both bundles then draw the same sample
    (``randn`` draws other numbers in another dtype) and differ in arithmetic precision only. ``|x_a - x_b|`` is
    then the rounding of a computation ``x``: the yardstick of the numerics tests and of
    ``benchmarks/cuda_graph_check.py``."""
    twin = dataclasses.replace(models, unet=copy.deepcopy(models.unet).to(dtype),
                               vae=copy.deepcopy(models.vae).to(dtype), dtype=dtype)
    twin.encode_video = lambda frames, generator=None, sample=True: models.encode_video(frames, generator, sample).to(dtype)
    return twin


def sdpa_priority(first: str):  # noqa: ANN201
    """Context in which ``scaled_dot_product_attention`` tries the ``first`` kernel before the others
    (``default``: PyTorch's own order, no context)."""
    if first == "default":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    rest = [b for b in (*SDPA_FIRST.values(), "MATH") if b != SDPA_FIRST[first]]
    order = [getattr(SDPBackend, b) for b in (SDPA_FIRST[first], *rest)]
    try:
        return sdpa_kernel(order, set_priority=True)
    except TypeError:  # PyTorch < 2.6 cannot reorder: every kernel stays allowed, in PyTorch's order
        return sdpa_kernel(order)


def _offline(cfg: ModelConfig) -> bool:
    return cfg.local_files_only or os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")


WEIGHT_SUFFIXES = {".ckpt", ".safetensors", ".pt", ".pth", ".bin"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
SD15_SUBFOLDERS = {"unet": "config.json", "vae": "config.json", "text_encoder": "config.json",
                   "tokenizer": "vocab.json"}


def is_hub_id(ident: str) -> bool:
    """``owner/name`` that is not a local path (a local path is tried first wherever both could be meant)."""
    return bool(_HUB_ID.match(ident)) and not Path(ident).expanduser().exists()


def hub_endpoint() -> str:
    """The model hub's address, as ``huggingface_hub`` will use it (``HF_ENDPOINT`` overrides it)."""
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT", "").rstrip("/") or constants.ENDPOINT


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the hub (or to the HTTPS proxy, when one is set) opens within ``timeout``
    seconds. Without it, ``from_pretrained`` retries for minutes before failing."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlsplit(proxy if proxy else hub_endpoint())
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "", port), timeout=timeout):
            return True
    except OSError:
        return False


def in_hub_cache(repo_id: str, files: list[str]) -> bool:
    """Every file of ``files`` is in the local Hugging Face cache for ``repo_id``."""
    from huggingface_hub import try_to_load_from_cache

    return all(isinstance(try_to_load_from_cache(repo_id, f), str) for f in files)


def check_local_sd15(folder: Path, flag: str = "base", needs_weights: bool = True) -> None:
    """One line naming what is wrong with a local SD 1.5 diffusers folder: a file instead of a folder, an
    empty folder, a missing component config, or a component without weights."""
    fetch = f"download it with 'hf download {DEFAULT_SD15} --local-dir {folder}'"
    if folder.is_file():
        if folder.suffix in WEIGHT_SUFFIXES:
            raise WeightsNotFoundError(f"--{flag} {folder} is a single checkpoint file; --{flag} takes a diffusers "
                                       "folder or a hub id: pass the file as --single-file FILE instead")
        raise WeightsNotFoundError(f"--{flag} {folder} is a file; give a diffusers SD 1.5 folder (unet/ vae/ "
                                   "text_encoder/ tokenizer/) or a hub id")
    if not any(folder.iterdir()):
        raise WeightsNotFoundError(f"the folder {folder} given as --{flag} is empty; {fetch}")
    for sub, marker in SD15_SUBFOLDERS.items():
        if not (folder / sub / marker).is_file():
            raise WeightsNotFoundError(f"{folder} is not a diffusers SD 1.5 folder: {sub}/{marker} is missing; {fetch}")
        if needs_weights and sub != "tokenizer" and not any(
                q.suffix in {".safetensors", ".bin"} for q in (folder / sub).iterdir()):
            raise WeightsNotFoundError(f"{folder / sub} has a config but no weights (.safetensors); {fetch}")


def _download_hint(name: str, ident: str) -> str:
    if Path(ident).suffix in WEIGHT_SUFFIXES:
        return f"put the file at {ident} or pass another path"
    if not is_hub_id(ident):
        return f"check the folder {ident} or download the weights again"
    return f"run 'hf download {ident} --local-dir DIR' on a machine with internet, then pass DIR as --{name}"


def _load(what: str, flag: str, ident: str, fn, *args, **kwargs):  # noqa: ANN001, ANN202
    """Call a ``from_pretrained``-like ``fn``; a missing or unreadable file becomes one line naming it."""
    try:
        return fn(*args, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError, EnvironmentError) as exc:
        text = str(exc).strip()
        first = text.splitlines()[0][:160] if text else type(exc).__name__
        missing = isinstance(exc, OSError) or "not found" in text.lower() or "no file" in text.lower()
        if not missing and not _corrupt(exc):
            raise
        problem = "cannot find" if missing and not _corrupt(exc) else "cannot read (corrupt or truncated file?)"
        raise WeightsNotFoundError(f"{problem} {what} in {ident!r} ({first}); {_download_hint(flag, ident)}") from None


def _corrupt(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(k in text for k in ("safetensor", "header", "deserializ", "unpickl", "corrupt", "invalid load key",
                                   "incomplete", "eof", "size mismatch", "zip"))


def check_weights_reachable(cfg: ModelConfig) -> None:
    """Fail in seconds, not minutes, when weights named by hub id cannot be had: no network and not in the
    local cache. With no network but a cached copy, the cached copy is used (a one-line notice)."""
    if _offline(cfg):
        return
    ids = []
    if is_hub_id(cfg.base):
        ids.append(("base", cfg.base, ["unet/config.json", "vae/config.json", "text_encoder/config.json",
                                       "tokenizer/vocab.json"]))
    if is_hub_id(cfg.motion_adapter):
        ids.append(("motion-adapter", cfg.motion_adapter, ["config.json"]))
    if not ids or hub_reachable():
        return
    for flag, ident, files in ids:
        if not in_hub_cache(ident, files):
            raise WeightsNotFoundError(
                f"cannot reach the model hub ({hub_endpoint()}) to download {ident} (--{flag}), and it is not in the "
                f"local cache; connect to the internet, or run 'hf download {ident} --local-dir DIR' elsewhere and pass "
                "DIR, or try the bundled ShapeWorld models with --bundled")
    from ..notices import warn

    warn("no network: using the cached copies of " + ", ".join(i for _, i, _ in ids) + " (offline)")
    cfg.local_files_only = True


def resolve_sd15_base(cfg: ModelConfig, what: str = "SD 1.5 weights", otherwise: str = "") -> str:
    """``cfg.base`` checked: a local SD 1.5 folder (expanded, its layout checked) or a hub id; else one line
    naming ``what`` is missing, ending with ``otherwise`` (another way out)."""
    base = cfg.base
    if Path(base).expanduser().exists():
        base = str(Path(base).expanduser())
        check_local_sd15(Path(base), needs_weights=not cfg.single_file)
    elif not is_hub_id(base):
        raise WeightsNotFoundError(f"{what} not found at {cfg.base!r}; pass a diffusers folder or a hub id "
                                   f"such as {DEFAULT_SD15} as --base{otherwise}")
    return base


def load_sd15_parts(cfg: ModelConfig, base: str, offline: bool) -> tuple[Any, Any, Any, Any]:
    """SD 1.5's tokenizer, 2D UNet, VAE and text encoder from ``base``, or from ``cfg.single_file`` (a
    community checkpoint in one file, configured by ``base``), as loaded: the callers inflate the UNet."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    kw = {"local_files_only": offline}
    tokenizer = _load("the tokenizer", "base", base, CLIPTokenizer.from_pretrained, base, subfolder="tokenizer", **kw)
    if cfg.single_file:
        sf = Path(cfg.single_file).expanduser()
        if not sf.is_file():
            raise WeightsNotFoundError(f"single-file checkpoint not found: {sf}; download it (e.g. from civitai) and pass its path as --single-file")
        from diffusers import StableDiffusionPipeline

        pipe = _load("the single-file checkpoint", "single-file", str(sf), StableDiffusionPipeline.from_single_file,
                     str(sf), config=base, safety_checker=None, **kw)
        return tokenizer, pipe.unet, pipe.vae, pipe.text_encoder
    unet2d = _load("the SD 1.5 UNet", "base", base, UNet2DConditionModel.from_pretrained, base, subfolder="unet", **kw)
    vae = _load("the VAE", "base", base, AutoencoderKL.from_pretrained, base, subfolder="vae", **kw)
    text_encoder = _load("the text encoder", "base", base, CLIPTextModel.from_pretrained, base, subfolder="text_encoder", **kw)
    return tokenizer, unet2d, vae, text_encoder


def load_models(cfg: ModelConfig) -> ModelBundle:
    """Load SD 1.5, the motion adapter and (optionally) a single-file checkpoint into one bundle."""
    from diffusers import MotionAdapter, UNetMotionModel

    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    base = resolve_sd15_base(cfg)
    ap = Path(cfg.motion_adapter).expanduser()
    if ap.is_dir() and not (ap / "config.json").is_file():
        raise WeightsNotFoundError(f"{ap} is not a diffusers motion adapter folder (config.json is missing); give the "
                                   "folder, a hub id or the original v3_sd15_mm.ckpt as --motion-adapter")
    check_weights_reachable(cfg)
    offline = _offline(cfg)
    kw = {"local_files_only": offline}
    tokenizer, unet2d, vae, text_encoder = load_sd15_parts(cfg, base, offline)
    adapter_id = cfg.motion_adapter
    if ap.is_file():
        adapter = _load("the motion adapter", "motion-adapter", str(ap), MotionAdapter.from_single_file, str(ap), **kw)
    elif ap.exists():
        adapter = _load("the motion adapter", "motion-adapter", str(ap), MotionAdapter.from_pretrained, str(ap), **kw)
    elif ap.suffix in WEIGHT_SUFFIXES:
        raise WeightsNotFoundError(f"motion adapter checkpoint not found: {ap}; {_download_hint('motion-adapter', str(ap))}")
    elif not is_hub_id(adapter_id):
        raise WeightsNotFoundError(f"motion adapter not found at {adapter_id!r}; pass a diffusers folder, the original "
                                   f"v3_sd15_mm.ckpt or a hub id such as guoyww/animatediff-motion-adapter-v1-5-3")
    else:
        adapter = _load("the motion adapter", "motion-adapter", adapter_id, MotionAdapter.from_pretrained, adapter_id, **kw)
    unet = UNetMotionModel.from_unet2d(unet2d, adapter)
    from .motion_norm import install_motion_norm  # per-frame or joint motion-module GroupNorm (model.motion_norm)
    motion_norm = install_motion_norm(unet, cfg.motion_norm, adapter_id)
    recompute = cfg.recompute_feedforward if isinstance(cfg.recompute_feedforward, bool) else device.type == "cuda"
    set_recompute_feedforward(unet, recompute)  # GEGLU backward from its input (models.feedforward)
    for m in (unet, vae, text_encoder):
        m.requires_grad_(False)
        m.eval()
        m.to(device=device, dtype=dtype)
    if cfg.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        unet.train()  # diffusers checkpoints only in training mode; no dropout in these blocks
    if cfg.channels_last:
        unet.to(memory_format=torch.channels_last)
    if cfg.compile:
        compile_blocks(unet)
    sources = {"base": base, "motion_adapter": adapter_id, "motion_norm": motion_norm}
    if cfg.single_file:
        sources["single_file"] = cfg.single_file
    return ModelBundle(unet, vae, text_encoder, tokenizer, NoiseSchedule.from_scheduler_config(ANIMATEDIFF_SCHEDULER),
                       device, dtype, sources, cfg.attention_backend)


# --------------------------------------------------------------------------- score-distillation guidance models
DEFAULT_MODELSCOPE = "ali-vilab/text-to-video-ms-1.7b"
MODELSCOPE_SUBFOLDERS = {"unet": "config.json", "vae": "config.json", "text_encoder": "config.json",
                         "tokenizer": "vocab.json", "scheduler": "scheduler_config.json"}


def _scheduler_config(ident: str, offline: bool, flag: str) -> dict:
    """A diffusers scheduler config (``scheduler/scheduler_config.json``) of a folder or hub id."""
    from diffusers import DDIMScheduler

    local = Path(ident) / "scheduler" / "scheduler_config.json"
    if local.is_file():
        import json

        return json.loads(local.read_text())
    return dict(_load("the scheduler config", flag, ident, DDIMScheduler.load_config, ident, subfolder="scheduler",
                      local_files_only=offline))


def load_modelscope(ident: str, cfg: ModelConfig) -> ModelBundle:
    """A ModelScope-layout text-to-video model (``TextToVideoSDPipeline`` folder or hub id:
    ``UNet3DConditionModel``, its VAE, its OpenCLIP text tower in ``CLIPTextModel`` format, tokenizer and
    DDIM scheduler), e.g. ``ali-vilab/text-to-video-ms-1.7b`` or ``cerspense/zeroscope_v2_576w``, as a
    :class:`ModelBundle` whose noise schedule is the model's own."""
    from diffusers import AutoencoderKL, UNet3DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    fetch = f"download it with 'hf download {DEFAULT_MODELSCOPE} --local-dir DIR' and pass DIR as --t2v-model"
    path = Path(ident).expanduser()
    if path.exists():
        ident = str(path)
        if not path.is_dir():
            raise WeightsNotFoundError(f"--t2v-model {path} is a file; give a ModelScope/Zeroscope diffusers folder "
                                       "(unet/ vae/ text_encoder/ tokenizer/ scheduler/) or a hub id")
        for sub, marker in MODELSCOPE_SUBFOLDERS.items():
            if not (path / sub / marker).is_file():
                raise WeightsNotFoundError(f"{path} is not a ModelScope/Zeroscope diffusers folder: {sub}/{marker} is "
                                           f"missing; {fetch}")
    elif not is_hub_id(ident):
        raise WeightsNotFoundError(f"text-to-video weights not found at {ident!r}; pass a ModelScope/Zeroscope "
                                   f"diffusers folder or a hub id such as {DEFAULT_MODELSCOPE} as --t2v-model")
    offline = _offline(cfg)
    if not offline and is_hub_id(ident) and not hub_reachable() and not in_hub_cache(ident, ["unet/config.json"]):
        raise WeightsNotFoundError(f"cannot reach the model hub ({hub_endpoint()}) to download {ident} (--t2v-model), "
                                   f"and it is not in the local cache; {fetch}")
    kw = {"local_files_only": offline}
    unet = _load("the text-to-video UNet", "t2v-model", ident, UNet3DConditionModel.from_pretrained, ident,
                 subfolder="unet", **kw)
    vae = _load("the VAE", "t2v-model", ident, AutoencoderKL.from_pretrained, ident, subfolder="vae", **kw)
    text_encoder = _load("the text encoder", "t2v-model", ident, CLIPTextModel.from_pretrained, ident,
                         subfolder="text_encoder", **kw)
    tokenizer = _load("the tokenizer", "t2v-model", ident, CLIPTokenizer.from_pretrained, ident, subfolder="tokenizer", **kw)
    schedule = NoiseSchedule.from_scheduler_config(_scheduler_config(ident, offline, "t2v-model"))
    for m in (unet, vae, text_encoder):
        m.requires_grad_(False)
        m.eval()  # TemporalConvLayer has dropout 0.1
        m.to(device=device, dtype=dtype)
    return ModelBundle(unet, vae, text_encoder, tokenizer, schedule, device, dtype, {"t2v_model": ident},
                       cfg.attention_backend)


@dataclass
class ImageGuidance:
    """Stable Diffusion 1.5 as a per-frame image model: UNet, text encoder, tokenizer and noise schedule."""

    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    schedule: NoiseSchedule
    latent_channels: int
    scaling_factor: float
    source: str

    @torch.no_grad()
    def encode_prompt(self, prompts: list[str]) -> Tensor:
        """CLIP-L last hidden states ``(n, 77, 768)`` (SD 1.5's text conditioning)."""
        tok = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt")
        return self.text_encoder(tok.input_ids.to(self.unet.device))[0].to(self.unet.dtype)


def load_image_guidance(cfg: ModelConfig, video: ModelBundle) -> ImageGuidance:
    """SD 1.5 from ``cfg.base`` (folder or hub id) on ``video``'s device and dtype. When ``video`` was loaded
    from the same ``base`` (AnimateDiff), its text encoder and tokenizer are shared and only the image UNet
    is loaded: the 2-D UNet that the motion model was built from."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    base = resolve_sd15_base(cfg, "SD 1.5 weights for the image guidance", ", or use --no-sd-guidance")
    offline = _offline(cfg)
    kw = {"local_files_only": offline}
    if cfg.single_file:  # the community checkpoint's UNet and text encoder, as the video model's (AnimateDiff) are
        tokenizer, unet, _, text_encoder = load_sd15_parts(cfg, base, offline)
    else:
        unet = _load("the SD 1.5 UNet", "base", base, UNet2DConditionModel.from_pretrained, base, subfolder="unet", **kw)
    same_weights = video.sources.get("base") == base and video.sources.get("single_file") == (cfg.single_file or None)
    if same_weights:
        text_encoder, tokenizer, vae_config = video.text_encoder, video.tokenizer, video.vae.config
    else:
        if not cfg.single_file:
            text_encoder = _load("the SD 1.5 text encoder", "base", base, CLIPTextModel.from_pretrained, base,
                                 subfolder="text_encoder", **kw)
            tokenizer = _load("the SD 1.5 tokenizer", "base", base, CLIPTokenizer.from_pretrained, base,
                              subfolder="tokenizer", **kw)
        vae_config = _load("the SD 1.5 VAE config", "base", base, AutoencoderKL.load_config, base, subfolder="vae", **kw)
        vae_config = dict(vae_config)
    get = (lambda k, d=None: vae_config.get(k, d)) if isinstance(vae_config, dict) else (
        lambda k, d=None: getattr(vae_config, k, d))
    schedule = NoiseSchedule.from_scheduler_config(_scheduler_config(base, offline, "base"))
    for m in (unet, text_encoder):
        m.requires_grad_(False)
        m.eval()
        m.to(device=video.device, dtype=video.dtype)
    return ImageGuidance(unet, text_encoder, tokenizer, schedule, int(get("latent_channels", 4)),
                         float(get("scaling_factor", 0.18215)), base)


def check_shared_latent_space(video: ModelBundle, image: ImageGuidance) -> None:
    """Both guidance models must read one latent: same latent channels (VAE and both UNets) and the same VAE
    scaling factor (one line naming the mismatch). The video model's VAE encodes and decodes."""
    v_ch, i_ch = int(video.vae.config.latent_channels), image.latent_channels
    u_ch = (int(video.unet.config.in_channels), int(image.unet.config.in_channels))
    if len({v_ch, i_ch, *u_ch}) != 1:
        raise UserError(f"the text-to-video model ({v_ch} latent channels, UNet {u_ch[0]}) and SD 1.5 ({i_ch} latent "
                        f"channels, UNet {u_ch[1]}) do not share one latent space; use an SD 1.5 --base with the same "
                        "VAE, or --no-sd-guidance")
    if abs(video.scaling_factor - image.scaling_factor) > 1e-6:
        raise UserError(f"the text-to-video VAE scales latents by {video.scaling_factor:g} but SD 1.5's by "
                        f"{image.scaling_factor:g}: not one latent space; use --no-sd-guidance or a matching --base")


# ------------------------------------------------------------------------------------ Stable Video Diffusion

SVD_HUB_IDS = ("stabilityai/stable-video-diffusion-img2vid", "stabilityai/stable-video-diffusion-img2vid-xt")
"""The 14-frame model (I2VEdit's base) and the 25-frame ``-xt``; any diffusers folder in their layout loads too."""
SVD_SCHEDULER = {
    "num_train_timesteps": 1000, "prediction_type": "v_prediction", "use_karras_sigmas": True,
    "sigma_min": 0.002, "sigma_max": 700.0, "timestep_type": "continuous", "timestep_spacing": "leading",
    "interpolation_type": "linear", "steps_offset": 1, "beta_schedule": "scaled_linear", "beta_start": 0.00085,
    "beta_end": 0.012,
}
"""SVD's ``EulerDiscreteScheduler`` settings as the official I2VEdit code runs them (v-prediction, Karras σ in
[0.002, 700], continuous timesteps ``0.25 ln σ``). ``diffusion.edm`` holds the same maths as pure functions."""
SVD_SUBFOLDERS = {"unet": "config.json", "vae": "config.json", "image_encoder": "config.json",
                  "feature_extractor": "preprocessor_config.json", "scheduler": "scheduler_config.json"}


@dataclass
class SVDBundle(_VAELatents):
    """Stable Video Diffusion: spatio-temporal UNet, temporal-decoder VAE, CLIP image encoder and its
    processor, and the Euler scheduler's settings. Latents are ``(B, F, C, h, w)`` as SVD's UNet takes them."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    image_encoder: torch.nn.Module
    feature_extractor: object
    scheduler_config: dict
    device: torch.device
    dtype: torch.dtype
    sources: dict[str, str] = field(default_factory=dict)
    kind: str = "svd"

    fingerprint = ModelBundle.fingerprint

    @torch.no_grad()
    def encode_image(self, images: Tensor) -> Tensor:
        """CLIP image embeddings ``(N, 1, D)`` of images ``(N, 3, H, W)`` in [-1, 1]: resized with
        antialiasing to the encoder's input size in [-1, 1] (as SVD's pipeline), then CLIP-normalised."""
        from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import (
            _resize_with_antialiasing,
        )

        size = int(self.image_encoder.config.image_size)
        x = _resize_with_antialiasing(images.float(), (size, size))
        x = ((x + 1) / 2).clamp(0, 1)
        mean = torch.tensor(self.feature_extractor.image_mean).view(1, 3, 1, 1)
        std = torch.tensor(self.feature_extractor.image_std).view(1, 3, 1, 1)
        x = ((x - mean.to(x)) / std.to(x)).to(self.device, self.dtype)
        return self.image_encoder(x).image_embeds.unsqueeze(1)

    @torch.no_grad()
    def encode_latents(self, images: Tensor, sample: bool = False, generator: torch.Generator | None = None,
                       scaled: bool = True, chunk: int = 8) -> Tensor:
        """VAE latents ``(N, C, h, w)`` of images ``(N, 3, H, W)`` in [-1, 1]: the posterior mode (SVD's
        conditioning, unscaled) or a sample; times ``scaling_factor`` when ``scaled``."""
        out = []
        for i in range(0, images.shape[0], chunk):
            dist = self.vae.encode(images[i:i + chunk].to(self.device, self.dtype)).latent_dist
            out.append(dist.sample(generator=generator) if sample else dist.mode())
        z = torch.cat(out).float()
        return z * self.scaling_factor if scaled else z

    @torch.no_grad()
    def encode_video(self, frames: Tensor, generator: torch.Generator | None = None, sample: bool = True) -> Tensor:
        """Frames ``(F, 3, H, W)`` in [-1, 1] -> scaled latents ``(1, F, C, h, w)`` (SVD's layout), the counterpart
        of :meth:`decode_latents` (``ModelBundle.encode_video``'s signature)."""
        return self.encode_latents(frames, sample=sample, generator=generator)[None]

    @torch.no_grad()
    def decode_latents(self, latents: Tensor, chunk: int = 8) -> Tensor:
        """Scaled latents ``(1, F, C, h, w)`` -> frames ``(F, 3, H, W)`` in [-1, 1] (``decode_chunk_size`` 8)."""
        z = latents[0] / self.scaling_factor
        out = [self.vae.decode(z[i:i + chunk].to(self.dtype), num_frames=len(z[i:i + chunk])).sample
               for i in range(0, z.shape[0], chunk)]
        return torch.cat(out).float().clamp(-1, 1)

    def velocity(self, x_in: Tensor, timestep: Tensor | float, embeddings: Tensor, time_ids: Tensor) -> Tensor:
        """The UNet's v-prediction for ``x_in (B, F, 8, h, w)`` (preconditioned latent ⊕ conditioning latent)
        at the continuous timestep ``c_noise(σ)``, CLIP embeddings ``(B, 1, D)`` and ``added_time_ids (B, 3)``."""
        t = torch.as_tensor(timestep, dtype=torch.float32, device=self.device).reshape(())
        return self.unet(x_in.to(self.dtype), t, encoder_hidden_states=embeddings.to(self.dtype),
                         added_time_ids=time_ids.to(self.dtype)).sample


def check_local_svd(folder: Path, flag: str = "svd", variant: str | None = None) -> None:
    """One line naming what is wrong with a local SVD diffusers folder: a file, an empty folder, a missing
    component config, or a component without weights (of the requested ``variant``)."""
    fetch = (f"download it with 'hf download {SVD_HUB_IDS[0]} --local-dir {folder}' (or the -xt model); the "
             "folder needs unet/, vae/, image_encoder/, feature_extractor/ and scheduler/")
    if folder.is_file():
        raise WeightsNotFoundError(f"--{flag} {folder} is a file; give a diffusers Stable Video Diffusion folder or "
                                   f"a hub id such as {SVD_HUB_IDS[0]}")
    if not any(folder.iterdir()):
        raise WeightsNotFoundError(f"the folder {folder} given as --{flag} is empty; {fetch}")
    for sub, marker in SVD_SUBFOLDERS.items():
        if not (folder / sub / marker).is_file():
            raise WeightsNotFoundError(f"{folder} is not a Stable Video Diffusion folder: {sub}/{marker} is missing; "
                                       f"{fetch}")
        if sub in ("unet", "vae", "image_encoder"):
            weights = [q.name for q in (folder / sub).iterdir() if q.suffix in {".safetensors", ".bin"}]
            if variant:
                weights = [w for w in weights if f".{variant}." in w]
            if not weights:
                what = f"no {variant} weights (*.{variant}.safetensors)" if variant else "no weights (.safetensors)"
                fix = "; drop --svd-variant to load the full-precision files" if variant else f"; {fetch}"
                raise WeightsNotFoundError(f"{folder / sub} has a config but {what}{fix}")


def load_svd(ident: str = SVD_HUB_IDS[0], variant: str | None = None, device: str = "auto", dtype: str = "auto",
             local_files_only: bool = False, flag: str = "svd") -> SVDBundle:
    """Load Stable Video Diffusion from a hub id or a diffusers folder (optionally the ``fp16`` variant):
    ``UNetSpatioTemporalConditionModel``, ``AutoencoderKLTemporalDecoder``, ``CLIPVisionModelWithProjection``,
    ``CLIPImageProcessor``; the scheduler's settings are the official ones (:data:`SVD_SCHEDULER`)."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if variant not in (None, "fp16", "bf16"):
        raise UserError(f"unknown weights variant {variant!r}; use fp16 (SVD's half-precision files) or leave it out")
    path = Path(ident).expanduser()
    if path.exists():
        ident = str(path)
        check_local_svd(path, flag, variant)
    elif not is_hub_id(ident):
        raise WeightsNotFoundError(f"Stable Video Diffusion weights not found at {ident!r}; pass a diffusers folder or "
                                   f"a hub id such as {SVD_HUB_IDS[0]} as --{flag}")
    elif not local_files_only and not _offline_env() and not hub_reachable():
        if not in_hub_cache(ident, ["unet/config.json", "vae/config.json", "image_encoder/config.json"]):
            raise WeightsNotFoundError(
                f"cannot reach the model hub ({hub_endpoint()}) to download {ident} (--{flag}), and it is not in the "
                f"local cache; run 'hf download {ident} --local-dir DIR' elsewhere and pass DIR as --{flag}")
        local_files_only = True
    kw: dict = {"local_files_only": local_files_only or _offline_env()}
    wkw = dict(kw, variant=variant) if variant else kw
    unet = _load("the SVD UNet (unet/)", flag, ident, UNetSpatioTemporalConditionModel.from_pretrained, ident,
                 subfolder="unet", **wkw)
    vae = _load("the SVD VAE (vae/)", flag, ident, AutoencoderKLTemporalDecoder.from_pretrained, ident,
                subfolder="vae", **wkw)
    image_encoder = _load("the CLIP image encoder (image_encoder/)", flag, ident,
                          CLIPVisionModelWithProjection.from_pretrained, ident, subfolder="image_encoder", **wkw)
    feature_extractor = _load("the CLIP image processor (feature_extractor/)", flag, ident,
                              CLIPImageProcessor.from_pretrained, ident, subfolder="feature_extractor", **kw)
    for m in (unet, vae, image_encoder):
        m.requires_grad_(False)
        m.eval()
        m.to(device=dev, dtype=dt)
    sources = {"svd": ident, **({"svd_variant": variant} if variant else {})}  # fingerprint: no empty paths
    return SVDBundle(unet, vae, image_encoder, feature_extractor, dict(SVD_SCHEDULER), dev, dt, sources)


def _offline_env() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
