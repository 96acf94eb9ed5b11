"""Small AnimateDiff-architecture models in the SD 1.5 block layout, saved like real checkpoints.

The layout matches SD 1.5 exactly: 4 down blocks (3 with cross-attention) and 4 up blocks
(3 with cross-attention), ``layers_per_block=2``, no motion mid block (AnimateDiff v3). So the
16 spatial self-attention layers, ``up_blocks.1``/``up_blocks.2`` and the official layer
indices exist as in the real model; only widths differ. Used by the tests (random weights)
and by ShapeWorld (trained weights).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .loading import ANIMATEDIFF_SCHEDULER
from .tokenizer import build_clip_tokenizer


@dataclass
class ArchSpec:
    """Widths of a small SD 1.5-layout model."""

    unet_channels: tuple[int, int, int, int] = (32, 64, 64, 64)
    attention_heads: int | tuple[int, ...] = 8  # SD 1.5's attention_head_dim=8 means 8 heads per block
    norm_groups: int = 32
    text_dim: int = 32
    text_layers: int = 2
    text_heads: int = 4
    vae_channels: tuple[int, ...] = (32, 32, 32, 32)
    vae_groups: int = 32
    latent_channels: int = 4
    motion_heads: int | tuple[int, ...] = 8
    sample_size: int = 8
    words: list[str] = field(default_factory=list)


def _seq(v: int | tuple[int, ...]) -> int | list[int]:
    return list(v) if isinstance(v, tuple) else v


def unet2d_config(a: ArchSpec) -> dict:
    return dict(
        sample_size=a.sample_size, in_channels=a.latent_channels, out_channels=a.latent_channels, layers_per_block=2,
        block_out_channels=list(a.unet_channels),
        down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        cross_attention_dim=a.text_dim, attention_head_dim=_seq(a.attention_heads), norm_num_groups=a.norm_groups,
    )


def adapter_config(a: ArchSpec) -> dict:
    return dict(
        block_out_channels=list(a.unet_channels), motion_layers_per_block=2, motion_num_attention_heads=_seq(a.motion_heads),
        motion_norm_num_groups=a.norm_groups, motion_max_seq_length=32, use_motion_mid_block=False,
    )


def vae_config(a: ArchSpec) -> dict:
    n = len(a.vae_channels)
    return dict(
        in_channels=3, out_channels=3, latent_channels=a.latent_channels, block_out_channels=list(a.vae_channels),
        down_block_types=["DownEncoderBlock2D"] * n, up_block_types=["UpDecoderBlock2D"] * n, layers_per_block=1,
        norm_num_groups=a.vae_groups, sample_size=a.sample_size * 2 ** (n - 1), scaling_factor=0.18215,
    )


def text_config(a: ArchSpec, vocab_size: int) -> dict:
    return dict(
        vocab_size=vocab_size, hidden_size=a.text_dim, intermediate_size=a.text_dim * 4, num_hidden_layers=a.text_layers,
        num_attention_heads=a.text_heads, max_position_embeddings=77, projection_dim=a.text_dim,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=vocab_size - 1,
    )


def build_models(a: ArchSpec, seed: int = 0):  # noqa: ANN201
    """Random-weight ``(unet2d, adapter, vae, text_encoder)`` for ``a``, seeded per component."""
    from diffusers import AutoencoderKL, MotionAdapter, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet2d = UNet2DConditionModel(**unet2d_config(a))
    torch.manual_seed(seed + 1)
    adapter = MotionAdapter(**adapter_config(a))
    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(**vae_config(a))
    torch.manual_seed(seed + 3)
    text = CLIPTextModel(CLIPTextConfig(**text_config(a, vocab_size=_vocab_size(a))))
    return unet2d, adapter, vae, text


def _vocab_size(a: ArchSpec) -> int:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        vocab = json.loads((build_clip_tokenizer(a.words, d) / "vocab.json").read_text())
    return len(vocab)


def save_checkpoint(folder: str | Path, unet2d, adapter, vae, text_encoder, words: list[str]) -> tuple[Path, Path]:  # noqa: ANN001
    """Save in the layout of a real AnimateDiff setup: ``folder/sd`` (SD 1.5 diffusers folder) and
    ``folder/motion_adapter``. Returns ``(base, motion_adapter)`` paths for :class:`ModelConfig`."""
    folder = Path(folder)
    base, adapter_dir = folder / "sd", folder / "motion_adapter"
    unet2d.save_pretrained(base / "unet")
    vae.save_pretrained(base / "vae")
    text_encoder.save_pretrained(base / "text_encoder")
    build_clip_tokenizer(words, base / "tokenizer")
    (base / "scheduler").mkdir(parents=True, exist_ok=True)
    (base / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "DDIMScheduler", **ANIMATEDIFF_SCHEDULER}, indent=2))
    (base / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"],
    }, indent=2))
    adapter.save_pretrained(adapter_dir)
    return base, adapter_dir


TEST_WORDS = ("a red green blue yellow circle square triangle moving left right up down on the background "
              "brown bear tiger walking rocky terrain next to stone wall striped checker teal orange").split()


def save_tiny_random(folder: str | Path, seed: int = 0, arch: ArchSpec | None = None) -> tuple[Path, Path]:
    """Tiny random AnimateDiff-architecture model for tests, saved with ``save_pretrained``."""
    a = arch or ArchSpec(words=list(TEST_WORDS))
    if not a.words:
        a.words = list(TEST_WORDS)
    return save_checkpoint(folder, *build_models(a, seed), words=a.words)


def unet3d_config(a: ArchSpec) -> dict:
    """A ModelScope-layout ``UNet3DConditionModel`` (CrossAttnDownBlock3D x3 + DownBlock3D, UpBlock3D +
    CrossAttnUpBlock3D x3, ``layers_per_block=2``) at ``a``'s widths."""
    return dict(
        sample_size=a.sample_size, in_channels=a.latent_channels, out_channels=a.latent_channels, layers_per_block=2,
        block_out_channels=list(a.unet_channels),
        down_block_types=["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
        up_block_types=["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3,
        cross_attention_dim=a.text_dim, attention_head_dim=a.attention_heads if isinstance(a.attention_heads, int) else 8,
        norm_num_groups=a.norm_groups,
    )


def save_tiny_modelscope(folder: str | Path, seed: int = 0, arch: ArchSpec | None = None,
                         scheduler: dict | None = None) -> Path:
    """Tiny random ModelScope-architecture text-to-video model (``TextToVideoSDPipeline`` layout: unet/ vae/
    text_encoder/ tokenizer/ scheduler/), saved with ``save_pretrained``; returns the folder. ``scheduler``:
    the DDIM config (default: the AnimateDiff one of the tiny SD folders, so both share one schedule)."""
    from diffusers import UNet3DConditionModel

    a = arch or ArchSpec(words=list(TEST_WORDS))
    if not a.words:
        a.words = list(TEST_WORDS)
    folder = Path(folder)
    _, _, vae, text = build_models(a, seed)
    torch.manual_seed(seed + 4)
    unet = UNet3DConditionModel(**unet3d_config(a))
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    text.save_pretrained(folder / "text_encoder")
    build_clip_tokenizer(a.words, folder / "tokenizer")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "DDIMScheduler", **(scheduler or ANIMATEDIFF_SCHEDULER)}, indent=2))
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "TextToVideoSDPipeline", "unet": ["diffusers", "UNet3DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"], "scheduler": ["diffusers", "DDIMScheduler"],
    }, indent=2))
    return folder
