"""What every editing method shares: the :class:`Inversion` value, :class:`EditResult`, progress
reporting and the method registry used by the CLI and the benchmark."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from ..errors import InputError

Progress = Callable[[str, int, int], None]
"""``progress(stage, step, total)``: called after each step of each stage."""


def no_progress(stage: str, step: int, total: int) -> None:  # noqa: ARG001
    return None


@dataclass
class Inversion:
    """Everything stage 2 needs, as one serialisable value (safetensors + JSON).

    Attributes:
        latents: DDIM-inversion latents ``(T + 1, C, F, h, w)``; index 0 is the clean latent, index T is z*_T.
        masks: object masks ``(F, 1, H, W)`` bool, ellipse-augmented when configured.
        source_frames: the input ``(F, 3, H, W)`` in [-1, 1] (for side-by-side outputs and metrics).
        null_embeddings: per-step optimised null-text ``(T, 1 or F, 77, D)``, or None.
        guidance: per-step STDG ``(T, C, F, h, w)``, or None.
        reconstruction: end of the stage-1 trajectory ``(1, C, F, h, w)`` (what inversion alone gives back).
        meta: prompts, timesteps, settings, model fingerprint, iteration counts, timings.
    """

    latents: Tensor
    masks: Tensor
    source_frames: Tensor
    null_embeddings: Tensor | None = None
    guidance: Tensor | None = None
    reconstruction: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return self.latents.shape[0] - 1

    def save(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"latents": self.latents, "masks": self.masks.to(torch.uint8), "source_frames": self.source_frames}
        for k in ("null_embeddings", "guidance", "reconstruction"):
            v = getattr(self, k)
            if v is not None:
                tensors[k] = v
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(folder / "inversion.safetensors"))
        (folder / "inversion.json").write_text(json.dumps(self.meta, indent=2, default=str))

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str = "cpu") -> "Inversion":
        folder = Path(folder)
        f = folder / "inversion.safetensors"
        if not f.is_file():
            raise InputError(f"no inversion in {folder}; run 'videodirector invert' first")
        t = load_file(str(f), device=str(device))
        meta = json.loads((folder / "inversion.json").read_text())
        return cls(t["latents"], t["masks"].bool(), t["source_frames"], t.get("null_embeddings"), t.get("guidance"),
                   t.get("reconstruction"), meta)


@dataclass
class EditResult:
    """An edited video: frames ``(F, 3, H, W)`` in [-1, 1], its latents, and what produced it."""

    frames: Tensor
    latents: Tensor
    target_prompt: str
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class EditingMethod(Protocol):
    """Methods with an inversion stage implement both; others implement ``edit`` from the video."""

    name: str

    def invert(self, frames: Tensor, masks: Tensor, source_prompt: str, progress: Progress = no_progress) -> Inversion: ...

    def edit(self, inversion: Inversion, target_prompt: str, progress: Progress = no_progress) -> EditResult: ...


MethodFactory = Callable[..., EditingMethod]
METHODS: dict[str, tuple[MethodFactory, dict[str, Any], str]] = {}


def register(name: str, factory: MethodFactory, overrides: dict[str, Any] | None = None, doc: str = "") -> None:
    """Make a method (or a variant of one: the same factory with config overrides) available by name."""
    METHODS[name] = (factory, dict(overrides or {}), doc)


def method_names() -> list[str]:
    return list(METHODS)
