"""The Text-to-Set (T2S) model of Video-P2P: an SD 1.5 image UNet inflated to take a set of frames.

Built from any ``UNet2DConditionModel`` with diffusers' extension points only:

* frames are folded into the batch (``(b f)``) for the convolutions, norms and spatial layers, so the
  image weights act per frame unchanged (the official ``InflatedConv3d`` is SD's conv on that view);
* frame attention (paper Eqs. 6-7): each ``attn1`` gets a :class:`FrameAttnProcessor` whose queries come
  from frame ``i`` and keys/values from frame 0 (Video-P2P), or from ``[frame 0, frame i-1]``
  (Tune-A-Video's sparse-causal attention, ``frame_attention="sparse_causal"``);
* a new temporal self-attention ``attn_temp`` with its pre-norm ``norm_temp`` in every
  ``BasicTransformerBlock``, registered as submodules of the block (so ``state_dict``,
  ``save_pretrained`` and ``from_pretrained`` carry them under the official names) and run after the
  block's feed-forward by a forward hook the model registers on the block (PyTorch's extension point;
  no ``forward`` is replaced): ``h <- h + attn_temp(norm_temp(h))`` over the frames of each pixel.
  Its output projection starts at zero weight with PyTorch's default bias (official initialisation),
  so before tuning the branch adds only a constant bias vector.

The number of frames reaches the processors and hooks through ``cross_attention_kwargs["num_frames"]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin, UNet2DConditionModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.attention_processor import Attention
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from torch import Tensor, nn

from ..attention.processors import ControlProcessor

if TYPE_CHECKING:
    from ..config import ModelConfig
    from .loading import ModelBundle

FrameAttention = Literal["first", "sparse_causal"]


def frame_keys(x: Tensor, num_frames: int, mode: FrameAttention) -> Tensor:
    """Keys or values ``(B·F, heads, N, d)`` each frame attends to: frame 0's (``first``, paper Eq. 6) or
    frame 0's and the previous frame's concatenated along the tokens (``sparse_causal``; frame 0 reads itself
    twice, as Tune-A-Video)."""
    bf, h, n, d = x.shape
    v = x.view(bf // num_frames, num_frames, h, n, d)
    first = v[:, :1].expand(-1, num_frames, -1, -1, -1)
    if mode == "first":
        return first.reshape(bf, h, n, d)
    previous = v[:, [0, *range(num_frames - 1)]]
    return torch.cat([first, previous], dim=3).reshape(bf, h, 2 * n, d)


class T2SProcessor(ControlProcessor):
    """Plain attention that accepts the ``num_frames`` the T2S model passes to every attention layer
    (keeps the value for :meth:`attend`)."""

    num_frames: int = 1

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,  # noqa: ANN001
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, num_frames: int = 1,
                 **kwargs: Any) -> Tensor:
        self.num_frames = num_frames
        return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class FrameAttnProcessor(T2SProcessor):
    """Frame attention (paper Eqs. 6-7): ``softmax(W_Q v_i (W_K v_0)ᵀ / sqrt(d)) W_V v_0`` per frame ``i``."""

    def __init__(self, layer: Any = None, mode: FrameAttention = "first") -> None:
        super().__init__(layer)
        self.mode = mode

    def attend(self, attn, query: Tensor, key: Tensor, value: Tensor) -> Tensor:  # noqa: ANN001
        f = self.num_frames
        return F.scaled_dot_product_attention(query, frame_keys(key, f, self.mode), frame_keys(value, f, self.mode))


def temporal_residual(block: BasicTransformerBlock, hidden_states: Tensor, num_frames: int) -> Tensor:
    """``h + attn_temp(norm_temp(h))`` with tokens regrouped ``(b f) d c -> (b d) f c``: every spatial
    location attends over the frames (official ``attn_temp``, no positional encoding)."""
    bf, d, c = hidden_states.shape
    b = bf // num_frames
    h = hidden_states.view(b, num_frames, d, c).transpose(1, 2).reshape(b * d, num_frames, c)
    h = block.attn_temp(block.norm_temp(h)) + h
    return h.view(b, d, num_frames, c).transpose(1, 2).reshape(bf, d, c)


def _after_block(block: BasicTransformerBlock, args: tuple, kwargs: dict, output: Tensor) -> Tensor:
    """Forward hook of each transformer block: the temporal attention after its feed-forward. The frame
    count comes in ``cross_attention_kwargs`` (a keyword argument, or the 6th positional one under
    diffusers' gradient checkpointing)."""
    cak = kwargs.get("cross_attention_kwargs")
    if cak is None and len(args) > 5:
        cak = args[5]
    num_frames = int((cak or {}).get("num_frames", 1))
    return temporal_residual(block, output, num_frames)


class T2SUNet(ModelMixin, ConfigMixin):
    """An SD 1.5 ``UNet2DConditionModel`` (``self.unet``, weights unchanged) inflated to a set of frames.

    Inputs are latents ``(B, C, F, h, w)`` and text embeddings per clip ``(B, 77, D)`` or per frame
    ``(B·F, 77, D)``; the output is ``ε`` of the latents' shape. Attention processors are named as in the
    2D UNet (``down_blocks.1.attentions.0.transformer_blocks.0.attn_temp``).
    """

    config_name = "config.json"
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(self, unet_config: dict[str, Any] | None = None, frame_attention: FrameAttention = "first") -> None:
        super().__init__()
        if frame_attention not in ("first", "sparse_causal"):
            raise ValueError(f"frame_attention must be 'first' or 'sparse_causal', got {frame_attention!r}")
        self.unet = UNet2DConditionModel.from_config(dict(unet_config or {}))
        for block in self.transformer_blocks():
            dim, heads = block.norm1.normalized_shape[0], block.attn1.heads
            block.norm_temp = nn.LayerNorm(dim)
            block.attn_temp = Attention(query_dim=dim, heads=heads, dim_head=dim // heads, bias=False)
            nn.init.zeros_(block.attn_temp.to_out[0].weight)  # official: zero weight, default bias
            block.register_forward_hook(_after_block, with_kwargs=True)
        self.set_frame_attention(frame_attention)

    @classmethod
    def from_unet2d(cls, unet2d: UNet2DConditionModel, frame_attention: FrameAttention = "first") -> "T2SUNet":
        """Inflate an image UNet: its weights are copied unchanged; ``attn_temp``/``norm_temp`` keep their fresh
        initialisation (official ``from_pretrained_2d``: every ``_temp.`` key)."""
        model = cls(unet_config={k: v for k, v in unet2d.config.items() if not k.startswith("_")},
                    frame_attention=frame_attention)
        missing, unexpected = model.unet.load_state_dict(unet2d.state_dict(), strict=False)
        if unexpected or any("_temp." not in k for k in missing):
            raise ValueError(f"the image UNet does not match its inflation (missing {missing[:3]}, unexpected "
                             f"{unexpected[:3]})")
        if unet2d.dtype != torch.float32:
            model.to(dtype=unet2d.dtype)
        return model.to(device=unet2d.device)

    def transformer_blocks(self) -> list[BasicTransformerBlock]:
        return [m for m in self.unet.modules() if isinstance(m, BasicTransformerBlock)]

    def set_frame_attention(self, mode: FrameAttention) -> None:
        """Install the model's own processors: frame attention on ``attn1``, plain attention elsewhere."""
        procs = {k: FrameAttnProcessor(None, mode) if k.endswith("attn1.processor") else T2SProcessor(None)
                 for k in self.unet.attn_processors}
        self.unet.set_attn_processor(procs)
        self.register_to_config(frame_attention=mode)

    # the block and attention-processor interface of the 2D UNet, so the project's processors install as on any UNet
    @property
    def down_blocks(self) -> nn.ModuleList:
        return self.unet.down_blocks

    @property
    def up_blocks(self) -> nn.ModuleList:
        return self.unet.up_blocks

    # the attention-processor interface of the 2D UNet, so the project's processors install as on any UNet
    @property
    def attn_processors(self) -> dict[str, Any]:
        return self.unet.attn_processors

    def set_attn_processor(self, processor: Any) -> None:
        self.unet.set_attn_processor(processor)

    def forward(self, sample: Tensor, timestep: Tensor | int, encoder_hidden_states: Tensor,
                cross_attention_kwargs: dict[str, Any] | None = None, return_dict: bool = True) -> Any:
        if sample.ndim != 5:
            raise ValueError(f"T2SUNet takes latents (B, C, F, h, w), got shape {tuple(sample.shape)}")
        b, c, f, h, w = sample.shape
        x = sample.transpose(1, 2).reshape(b * f, c, h, w)
        if encoder_hidden_states.shape[0] == b and f > 1:
            encoder_hidden_states = encoder_hidden_states.repeat_interleave(f, dim=0)
        elif encoder_hidden_states.shape[0] != b * f:
            raise ValueError(f"text embeddings for {encoder_hidden_states.shape[0]} rows, expected {b} or {b * f}")
        kw = {**(cross_attention_kwargs or {}), "num_frames": f}
        out = self.unet(x, timestep, encoder_hidden_states=encoder_hidden_states, cross_attention_kwargs=kw).sample
        out = out.view(b, f, c, h, w).transpose(1, 2)
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)


def base_scheduler_config(base: str, local_files_only: bool) -> dict[str, Any]:
    """The noise-schedule config of an SD 1.5 folder or hub id (``scheduler/scheduler_config.json``)."""
    import json
    from pathlib import Path

    local = Path(base) / "scheduler" / "scheduler_config.json"
    if local.is_file():
        return json.loads(local.read_text())
    from diffusers import DDIMScheduler

    from .loading import _load

    return dict(_load("the scheduler config", "base", base, DDIMScheduler.load_config, base, subfolder="scheduler",
                      local_files_only=local_files_only))


def load_t2s_models(cfg: "ModelConfig", frame_attention: FrameAttention = "first") -> "ModelBundle":
    """SD 1.5 (folder, hub id or ``single_file`` checkpoint, through :mod:`.loading`'s checks) with its UNet
    inflated to the T2S model; no motion adapter.

    The UNet's weights stay float32 whatever ``cfg.dtype`` says: stage-1 tuning needs float32 master weights
    (the official code tunes fp32 weights under fp16 autocast), and a bfloat16 run autocasts instead
    (``methods.video_p2p``). The noise schedule is the base's betas with ``set_alpha_to_one=False`` and
    ``steps_offset=1``, as the official code's ``DDIMScheduler`` (SD 1.5: scaled-linear betas)."""
    from ..diffusion.ddim import NoiseSchedule
    from .loading import ModelBundle, _offline, check_weights_reachable, load_sd15_parts, resolve_device, resolve_dtype
    from .loading import resolve_sd15_base

    device = resolve_device(cfg.device)
    resolve_dtype(cfg.dtype, device)  # a bad dtype is a one-line error here
    base = resolve_sd15_base(cfg)
    check_weights_reachable(cfg)
    offline = _offline(cfg)
    tokenizer, unet2d, vae, text_encoder = load_sd15_parts(cfg, base, offline)
    unet = T2SUNet.from_unet2d(unet2d, frame_attention)
    del unet2d
    for m in (unet, vae, text_encoder):
        m.requires_grad_(False)
        m.eval()
        if m.dtype != torch.float32:  # a half-precision single file
            m.to(dtype=torch.float32)
        m.to(device=device)
    schedule = NoiseSchedule.from_scheduler_config({**base_scheduler_config(base, offline),
                                                    "set_alpha_to_one": False})
    sources = {"base": base, "t2s": f"inflated, frame attention {frame_attention}"}
    if cfg.single_file:
        sources["single_file"] = cfg.single_file
    return ModelBundle(unet, vae, text_encoder, tokenizer, schedule, device, torch.float32, sources,
                       cfg.attention_backend)
