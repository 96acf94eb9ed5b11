"""Attention layers of a ``UNetMotionModel``, a processor base class and the install context.

Attention control is done only through diffusers attention processors: one processor
instance per selected layer, installed with ``set_attn_processor`` and restored in
``finally``. Processors read the denoising step from a shared :class:`Clock` that the loop
sets once per step, so extra UNet forwards (STDG, null-text) cannot shift a schedule.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

LayerKind = Literal["self", "cross", "temporal"]

_BLOCK_RE = re.compile(r"^(down_blocks\.(\d+)|mid_block|up_blocks\.(\d+))\.(attentions|motion_modules)\.(\d+)\.")


@dataclass(frozen=True)
class AttentionLayer:
    """One attention module, named by its path in the UNet (``up_blocks.1.attentions.0.transformer_blocks.0.attn1``)."""

    name: str
    kind: LayerKind
    block: str  # "down_blocks.0", "mid_block", "up_blocks.2"
    index: int  # call order among layers of the same kind (spatial self: 0..15 in SD 1.5)

    @property
    def processor_key(self) -> str:
        return f"{self.name}.processor"


def call_order_key(name: str) -> tuple[int, int, int, int, int]:
    """Sort key that puts attention layers in the order a forward calls them
    (per block: resnet, ``attentions.j``, ``motion_modules.j``, for each j)."""
    m = _BLOCK_RE.match(name)
    if m is None:
        return (9, 0, 0, 0, 0)
    section = 0 if m.group(1).startswith("down") else 1 if m.group(1) == "mid_block" else 2
    block = int(m.group(2) or m.group(3) or 0)
    module = 0 if m.group(4) == "attentions" else 1
    return (section, block, int(m.group(5)), module, 0 if name.endswith("attn1") else 2 if name.endswith("attn_temp") else 1)


def attention_layers(unet: torch.nn.Module) -> list[AttentionLayer]:
    """All attention layers in call order, with their kind and per-kind index."""
    names = [k[: -len(".processor")] for k in unet.attn_processors]
    names.sort(key=call_order_key)
    counters: dict[str, int] = {"self": 0, "cross": 0, "temporal": 0}
    layers = []
    for n in names:
        m = _BLOCK_RE.match(n)
        block = m.group(1) if m else n.split(".")[0]
        if ".motion_modules." in n or n.endswith("attn_temp"):  # attn_temp: the T2S model's (models.t2s)
            kind: LayerKind = "temporal"
        elif n.endswith("attn1"):
            kind = "self"
        else:
            kind = "cross"
        layers.append(AttentionLayer(n, kind, block, counters[kind]))
        counters[kind] += 1
    return layers


def select_layers(unet: torch.nn.Module, kind: LayerKind, blocks: list[str] | None = None) -> list[AttentionLayer]:
    """Layers of ``kind`` inside the named blocks (all blocks when None). An empty selection is an error."""
    chosen = [l for l in attention_layers(unet) if l.kind == kind and (blocks is None or l.block in blocks)]
    if not chosen:
        raise ValueError(f"no {kind} attention layers in blocks {blocks}; the UNet has blocks "
                         f"{sorted({l.block for l in attention_layers(unet)})}")
    return chosen


@dataclass
class Clock:
    """The denoising step, written once per step by the loop and read by every processor."""

    step: int = 0
    num_steps: int = 1


class StopForward(Exception):
    """Raised by a recording processor once the last requested feature is recorded (early exit)."""


def split_heads(x: Tensor, heads: int) -> Tensor:
    """``(B, N, heads * d) -> (B, heads, N, d)``."""
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """``(B, heads, N, d) -> (B, N, heads * d)``."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def opaque_to_compiler(attend):  # noqa: ANN001, ANN201
    """Decorator for ``attend`` methods that read per-step Python state (the clock, the batch layout, the schedule).

    Compiled blocks (``model.compile``) call such a method as it is instead of tracing it: the compiled code ends
    before it and resumes after it, so the state never enters the compiled code's guards (traced, it would
    recompile every layer at every step and phase)."""
    return torch.compiler.disable(attend)


class ControlProcessor:
    """Diffusers' ``AttnProcessor2_0`` with the attention itself in :meth:`attend`.

    Subclasses override ``attend(attn, q, k, v)`` (tensors ``(B, heads, N, d)``) and keep the
    stock projections, norms and output path, so an inactive processor equals the default one.
    """

    def __init__(self, layer: AttentionLayer) -> None:
        self.layer = layer

    def attend(self, attn, query: Tensor, key: Tensor, value: Tensor) -> Tensor:  # noqa: ANN001
        return F.scaled_dot_product_attention(query, key, value)

    def project(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None):  # noqa: ANN001
        """Stock q/k/v projections; returns the pre-head-split ``(query, key, value)``."""
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        return query, attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states)

    def __call__(self, attn, hidden_states: Tensor, encoder_hidden_states: Tensor | None = None,  # noqa: ANN001
                 attention_mask: Tensor | None = None, temb: Tensor | None = None, num_frames: int | None = None,
                 **kwargs) -> Tensor:
        """``num_frames``: passed by the T2S model (``models.t2s``) to every attention layer; unused here."""
        if attention_mask is not None:
            raise NotImplementedError("videodirector processors do not take an attention_mask")
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        query, key, value = self.project(attn, hidden_states, encoder_hidden_states)
        query, key, value = (split_heads(x, attn.heads) for x in (query, key, value))
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)
        out = merge_heads(self.attend(attn, query, key, value)).to(query.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor


@contextmanager
def installed(unet: torch.nn.Module, processors: Mapping[str, object]) -> Iterator[None]:
    """Install ``{layer name: processor}`` on ``unet`` and restore the originals on exit."""
    original = dict(unet.attn_processors)
    unknown = [n for n in processors if f"{n}.processor" not in original]
    if unknown:
        raise ValueError(f"unknown attention layer {unknown[0]!r}")
    full = dict(original)
    for name, proc in processors.items():
        full[f"{name}.processor"] = proc
    unet.set_attn_processor(dict(full))
    try:
        yield
    finally:
        unet.set_attn_processor(dict(original))


@dataclass
class Branches:
    """Stage-2 batch layout, named once: ``[edit-uncond, edit-cond, recon-uncond, recon-cond]``.

    Each attention call sees the batch axis as ``(branch, frame)`` for spatial layers. Steps that
    read nothing from the recon-uncond branch (before SA-II, without direct inversion) leave it out:
    ``WITHOUT_RECON_UNCOND``.
    """

    NAMES = ("edit_uncond", "edit_cond", "recon_uncond", "recon_cond")
    WITHOUT_RECON_UNCOND = ("edit_uncond", "edit_cond", "recon_cond")
    parts: dict[str, Tensor] = field(default_factory=dict)

    @classmethod
    def split(cls, x: Tensor, names: tuple[str, ...] = NAMES) -> "Branches":
        return cls(dict(zip(names, x.chunk(len(names), dim=0))))

    def join(self) -> Tensor:
        return torch.cat(list(self.parts.values()), dim=0)

    def __getitem__(self, name: str) -> Tensor:
        return self.parts[name]
