"""Small Stable-Video-Diffusion-architecture models, saved in exactly SVD's folder layout.

The layout matches ``stabilityai/stable-video-diffusion-img2vid``: three cross-attention down blocks and
three cross-attention up blocks of ``layers_per_block=2`` around one mid block, so the 16 spatial and 16
temporal transformer blocks, their names (``down_blocks.2.attentions.1.temporal_transformer_blocks.0``)
and I2VEdit's official layer indices exist as in the real model; only widths differ. The folder holds
``unet/``, ``vae/``, ``image_encoder/``, ``feature_extractor/``, ``scheduler/`` and ``model_index.json``
and loads through :func:`videodirector.models.loading.load_svd`. Used by the tests (random weights) and
by the ShapeWorld image-to-video training (``world.train --model i2v``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .loading import SVD_SCHEDULER


@dataclass
class SVDArch:
    """Widths of a small SVD-layout model (the real one: (320, 640, 1280, 1280), heads (5, 10, 20, 20))."""

    unet_channels: tuple[int, int, int, int] = (32, 32, 64, 64)
    attention_heads: tuple[int, int, int, int] = (1, 1, 2, 2)
    time_id_dim: int = 16
    """``addition_time_embed_dim`` (SVD: 256); the add-embedding input is 3 times it (fps, motion, noise aug)."""
    embed_dim: int = 32
    """CLIP image-embedding width = the UNet's cross-attention width (SVD: 1024)."""
    vision_width: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    image_size: int = 32
    """CLIP encoder input side (SVD: 224)."""
    vae_channels: tuple[int, ...] = (32, 32)
    vae_layers: int = 1
    latent_channels: int = 4
    sample_size: int = 8
    num_frames: int = 14


def unet_config(a: SVDArch) -> dict:
    return dict(
        sample_size=a.sample_size, in_channels=2 * a.latent_channels, out_channels=a.latent_channels,
        down_block_types=["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"],
        up_block_types=["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 3,
        block_out_channels=list(a.unet_channels), addition_time_embed_dim=a.time_id_dim,
        projection_class_embeddings_input_dim=3 * a.time_id_dim, layers_per_block=2,
        cross_attention_dim=a.embed_dim, transformer_layers_per_block=1, num_attention_heads=list(a.attention_heads),
        num_frames=a.num_frames,
    )


def vae_config(a: SVDArch) -> dict:
    n = len(a.vae_channels)
    return dict(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * n,
                block_out_channels=list(a.vae_channels), layers_per_block=a.vae_layers,
                latent_channels=a.latent_channels, sample_size=a.sample_size * 2 ** (n - 1), scaling_factor=0.18215)


def vision_config(a: SVDArch) -> dict:
    return dict(hidden_size=a.vision_width, intermediate_size=4 * a.vision_width, num_hidden_layers=a.vision_layers,
                num_attention_heads=a.vision_heads, image_size=a.image_size, patch_size=max(1, a.image_size // 4),
                projection_dim=a.embed_dim)


def processor_config(a: SVDArch) -> dict:
    """CLIP's normalisation (SVD's ``feature_extractor``) at the encoder's input size."""
    return dict(crop_size={"height": a.image_size, "width": a.image_size}, size={"shortest_edge": a.image_size},
                do_center_crop=True, do_normalize=True, do_resize=True, do_rescale=True, do_convert_rgb=True,
                image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.26862954, 0.26130258, 0.27577711],
                resample=3, rescale_factor=1 / 255)


def build_svd_models(a: SVDArch, seed: int = 0):  # noqa: ANN201
    """Random-weight ``(unet, vae, image_encoder, feature_extractor)`` for ``a``, seeded per component."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    unet = UNetSpatioTemporalConditionModel(**unet_config(a))
    torch.manual_seed(seed + 1)
    vae = AutoencoderKLTemporalDecoder(**vae_config(a))
    torch.manual_seed(seed + 2)
    image_encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**vision_config(a)))
    return unet, vae, image_encoder, CLIPImageProcessor(**processor_config(a))


def save_svd_checkpoint(folder: str | Path, unet, vae, image_encoder, feature_extractor,  # noqa: ANN001
                        variant: str | None = None, max_shard_size: str | None = None) -> Path:
    """Save in SVD's diffusers layout (what ``StableVideoDiffusionPipeline.save_pretrained`` writes)."""
    folder = Path(folder)
    kw = {"variant": variant} if variant else {}
    if max_shard_size:
        kw["max_shard_size"] = max_shard_size
    unet.save_pretrained(folder / "unet", **kw)
    vae.save_pretrained(folder / "vae", **kw)
    image_encoder.save_pretrained(folder / "image_encoder", **kw)
    feature_extractor.save_pretrained(folder / "feature_extractor")
    (folder / "scheduler").mkdir(parents=True, exist_ok=True)
    (folder / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "EulerDiscreteScheduler", **SVD_SCHEDULER}, indent=2))
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableVideoDiffusionPipeline", "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
        "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "feature_extractor": ["transformers", "CLIPImageProcessor"], "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    }, indent=2))
    return folder


def save_tiny_svd(folder: str | Path, seed: int = 0, arch: SVDArch | None = None, variant: str | None = None) -> Path:
    """Tiny random SVD-architecture model for tests, saved with ``save_pretrained`` in SVD's layout."""
    return save_svd_checkpoint(folder, *build_svd_models(arch or SVDArch(), seed), variant=variant)
