"""Model loading: SD 1.5 + AnimateDiff motion adapter -> one :class:`ModelBundle`.

One code path for real and bundled models:

* SD 1.5 from a hub id or a diffusers folder (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``);
* optionally a community single-file checkpoint (``.safetensors``/``.ckpt``, e.g. RealisticVision),
  whose config comes from ``base`` (keep a local copy for offline use);
* the motion adapter from a hub id, a diffusers folder or an original ``.ckpt``.

Anything saved with ``save_pretrained`` in that layout loads here: the tiny test models and the
bundled ShapeWorld models do. The noise schedule is AnimateDiff's (linear betas 0.00085-0.012,
``steps_offset=1``, ``clip_sample=False``), as in the official code (spec §1.1).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..config import ModelConfig
from ..diffusion.ddim import NoiseSchedule
from ..errors import UserError, WeightsNotFoundError
from .compile import compile_blocks

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
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for but no CUDA GPU is visible; use --device cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype {dtype!r}; use one of auto, float32, bfloat16, float16")
    return _DTYPES[dtype]


@dataclass
class ModelBundle:
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

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

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


def _download_hint(name: str, ident: str) -> str:
    if Path(ident).suffix in {".ckpt", ".safetensors", ".pt", ".pth", ".bin"}:
        return f"put the file at {ident} or pass another path"
    return f"run 'hf download {ident} --local-dir DIR' on a machine with internet, then pass DIR as --{name}"


def _load(what: str, flag: str, ident: str, fn, *args, **kwargs):  # noqa: ANN001, ANN202
    try:
        return fn(*args, **kwargs)
    except (OSError, ValueError, EnvironmentError) as exc:
        if isinstance(exc, ValueError) and "not found" not in str(exc).lower() and "no file" not in str(exc).lower():
            raise
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise WeightsNotFoundError(
            f"cannot load {what} from {ident!r} ({first}); {_download_hint(flag, ident)}"
        ) from None


def load_models(cfg: ModelConfig) -> ModelBundle:
    """Load SD 1.5, the motion adapter and (optionally) a single-file checkpoint into one bundle."""
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel, UNetMotionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    offline = _offline(cfg)
    kw = {"local_files_only": offline}
    base = cfg.base
    if Path(base).expanduser().exists():
        base = str(Path(base).expanduser())
    elif base.startswith((".", "/", "~")) or base.count("/") != 1:
        raise WeightsNotFoundError(f"SD 1.5 weights not found at {cfg.base!r}; pass a diffusers folder or a hub id "
                                   f"such as stable-diffusion-v1-5/stable-diffusion-v1-5 as --base")
    tokenizer = _load("the tokenizer", "base", base, CLIPTokenizer.from_pretrained, base, subfolder="tokenizer", **kw)
    if cfg.single_file:
        sf = Path(cfg.single_file).expanduser()
        if not sf.is_file():
            raise WeightsNotFoundError(f"single-file checkpoint not found: {sf}; download it (e.g. from civitai) and pass its path as --single-file")
        from diffusers import StableDiffusionPipeline

        pipe = _load("the single-file checkpoint", "single-file", str(sf), StableDiffusionPipeline.from_single_file,
                     str(sf), config=base, safety_checker=None, **kw)
        unet2d, vae, text_encoder = pipe.unet, pipe.vae, pipe.text_encoder
    else:
        unet2d = _load("the SD 1.5 UNet", "base", base, UNet2DConditionModel.from_pretrained, base, subfolder="unet", **kw)
        vae = _load("the VAE", "base", base, AutoencoderKL.from_pretrained, base, subfolder="vae", **kw)
        text_encoder = _load("the text encoder", "base", base, CLIPTextModel.from_pretrained, base,
                             subfolder="text_encoder", **kw)
    adapter_id = cfg.motion_adapter
    ap = Path(adapter_id).expanduser()
    if ap.is_file():
        adapter = _load("the motion adapter", "motion-adapter", str(ap), MotionAdapter.from_single_file, str(ap), **kw)
    elif ap.exists():
        adapter = _load("the motion adapter", "motion-adapter", str(ap), MotionAdapter.from_pretrained, str(ap), **kw)
    elif ap.suffix in {".ckpt", ".safetensors", ".pt", ".pth"}:
        raise WeightsNotFoundError(f"motion adapter checkpoint not found: {ap}; {_download_hint('motion-adapter', str(ap))}")
    else:
        adapter = _load("the motion adapter", "motion-adapter", adapter_id, MotionAdapter.from_pretrained, adapter_id, **kw)
    unet = UNetMotionModel.from_unet2d(unet2d, adapter)
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
    sources = {"base": base, "motion_adapter": adapter_id}
    if cfg.single_file:
        sources["single_file"] = cfg.single_file
    return ModelBundle(unet, vae, text_encoder, tokenizer, NoiseSchedule.from_scheduler_config(ANIMATEDIFF_SCHEDULER),
                       device, dtype, sources, cfg.attention_backend)
