"""GroupNorm of the motion modules: per frame (original AnimateDiff) or over all frames (diffusers).

The original AnimateDiff motion module, which the official VideoDirector code runs
(``TemporalTransformer3DModel.forward``, ``motion_module.py:139-150``), rearranges its input to
``(b f) c h w`` before its ``GroupNorm``: statistics per frame. diffusers' ``AnimateDiffTransformer3D``
(0.42) hands the same ``GroupNorm`` a ``(b, c, f, h, w)`` tensor: statistics pooled over all frames
(official code). Motion modules trained one way see other statistics the
other way.

The choice is made by module replacement, diffusers' extension point for sub-modules: each motion
transformer's ``norm`` becomes a :class:`FrameGroupNorm` (per frame) or a plain ``nn.GroupNorm``
(joint), sharing the same ``weight`` and ``bias`` parameters, so state-dict keys, saving and loading
do not change. ``model.motion_norm`` picks it (:func:`resolve_motion_norm`):

* ``per_frame``: the original module (and the official code);
* ``joint``: diffusers' module unchanged;
* ``auto``: by the weights. Original AnimateDiff motion modules (a hub id, an original ``.ckpt`` or
  ``.safetensors`` file) were trained per frame; a local adapter folder whose model card says
  otherwise (``"motion_norm"`` in the folder's ``config.json``, or in a ``training.json`` in the
  folder or beside it, as the bundled ShapeWorld models record ``joint``: they were trained with
  diffusers' ``UNetMotionModel``) gets what the card says; a folder without a card is per frame.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError

MotionNorm = Literal["per_frame", "joint"]
MOTION_NORMS = ("per_frame", "joint")
CARD_KEY = "motion_norm"
"""Key of a model card (``training.json``) or adapter ``config.json`` that says how the weights were trained."""


class FrameGroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` whose statistics are taken per frame, as the original AnimateDiff motion module.

    ``AnimateDiffTransformer3D.forward`` (diffusers 0.42) calls its ``norm`` on ``(B, C, F, H, W)``;
    here frames are folded into the batch, ``(B·F, C, H, W)``, normalised, and put back in the same
    layout. Mean and variance are thus over ``C/G × H × W`` of one frame instead of ``C/G × F × H × W``.
    A 4-D input ``(N, C, H, W)`` holds one frame per sample and is normalised as it is.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 4:
            return super().forward(x)
        if x.ndim != 5:
            raise ValueError(f"FrameGroupNorm expects (B, C, F, H, W) or (N, C, H, W), got shape {tuple(x.shape)}")
        b, c, f, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * f, c, h, w)
        out = F.group_norm(frames, self.num_groups, self.weight, self.bias, self.eps)
        return out.reshape(b, f, c, h, w).transpose(1, 2)


def motion_transformers(unet: nn.Module) -> list[nn.Module]:
    """The motion modules (``AnimateDiffTransformer3D``) of a ``UNetMotionModel``, in ``named_modules`` order."""
    from diffusers.models.unets.unet_motion_model import AnimateDiffTransformer3D

    return [m for m in unet.modules() if isinstance(m, AnimateDiffTransformer3D)]


def _swap(norm: nn.GroupNorm, cls: type[nn.GroupNorm]) -> nn.GroupNorm:
    """A ``cls`` with ``norm``'s settings that shares its ``weight`` and ``bias`` parameters."""
    if type(norm) is cls:
        return norm
    new = cls(norm.num_groups, norm.num_channels, eps=norm.eps, affine=norm.affine, device="meta")
    new.weight, new.bias = norm.weight, norm.bias
    new.train(norm.training)
    return new


def set_motion_norm(unet: nn.Module, mode: MotionNorm) -> int:
    """Give every motion module of ``unet`` a per-frame or a joint ``GroupNorm``; returns how many.

    Parameters are shared, not copied: state-dict keys and values, devices and dtypes stay as they
    were, and ``set_motion_norm(unet, "joint")`` restores diffusers' own module exactly.
    """
    if mode not in MOTION_NORMS:
        raise ValueError(f"motion norm must be one of {MOTION_NORMS}, got {mode!r}")
    cls = FrameGroupNorm if mode == "per_frame" else nn.GroupNorm
    modules = motion_transformers(unet)
    if not modules:
        raise ValueError("the UNet has no AnimateDiff motion modules (AnimateDiffTransformer3D) to set a norm on")
    for m in modules:
        m.norm = _swap(m.norm, cls)
    return len(modules)


def motion_norm_of(unet: nn.Module) -> MotionNorm:
    """Which norm the motion modules of ``unet`` use now."""
    kinds = {"per_frame" if isinstance(m.norm, FrameGroupNorm) else "joint" for m in motion_transformers(unet)}
    if len(kinds) != 1:
        raise ValueError(f"the motion modules mix norms: {sorted(kinds)}")
    return kinds.pop()  # type: ignore[return-value]


def _card_value(path: Path) -> str | None:
    """``"motion_norm"`` of a JSON card, None when the file or the key is absent."""
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text()).get(CARD_KEY)
    except (json.JSONDecodeError, AttributeError, OSError):
        return None
    if value is not None and value not in MOTION_NORMS:
        raise UserError(f"{path} says {CARD_KEY}={value!r}; use one of {', '.join(MOTION_NORMS)} "
                        "or set model.motion_norm explicitly")
    return value


def resolve_motion_norm(mode: str, motion_adapter: str) -> MotionNorm:
    """``model.motion_norm`` with ``auto`` resolved for the adapter ``motion_adapter`` (see module doc).

    For a local adapter folder the first card found wins: the folder's ``config.json``, then
    ``training.json`` in the folder, then ``training.json`` beside it (the ShapeWorld layout,
    ``weights/motion_adapter`` next to ``weights/training.json``).
    """
    if mode in MOTION_NORMS:
        return mode  # type: ignore[return-value]
    if mode != "auto":
        raise UserError(f"model.motion_norm={mode!r}: use per_frame, joint or auto")
    folder = Path(motion_adapter).expanduser()
    if folder.is_dir():
        for card in (folder / "config.json", folder / "training.json", folder.parent / "training.json"):
            value = _card_value(card)
            if value is not None:
                return value  # type: ignore[return-value]
    return "per_frame"  # original AnimateDiff weights (hub id, .ckpt/.safetensors) or a folder without a card


def install_motion_norm(unet: nn.Module, mode: str, motion_adapter: str) -> MotionNorm:
    """Resolve ``mode`` for ``motion_adapter`` and set it on ``unet``; returns the norm chosen
    (``load_models`` records it in ``ModelBundle.sources``, so it enters the inversion-cache fingerprint)."""
    chosen = resolve_motion_norm(mode, motion_adapter)
    set_motion_norm(unet, chosen)
    return chosen

