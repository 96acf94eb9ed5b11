"""Shared fixtures: tiny random AnimateDiff-architecture models in the SD 1.5 layout, saved with
``save_pretrained`` and loaded through the real loader (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from videodirector.config import EditConfig, ModelConfig, apply_overrides
from videodirector.models.factory import save_tiny_random
from videodirector.models.loading import load_models

SHARED = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def tiny_paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return save_tiny_random(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def tiny_models(tiny_paths):  # noqa: ANN001, ANN201
    base, adapter = tiny_paths
    torch.manual_seed(0)
    return load_models(ModelConfig(base=str(base), motion_adapter=str(adapter), local_files_only=True, device="cpu"))


@pytest.fixture()
def tiny_cfg(tiny_paths) -> EditConfig:  # noqa: ANN001
    base, adapter = tiny_paths
    return apply_overrides(EditConfig(), {
        "model.base": str(base), "model.motion_adapter": str(adapter), "model.device": "cpu",
        "model.local_files_only": True, "input.height": 64, "input.width": 64, "inversion.num_steps": 5,
        "inversion.null_inner_steps": 2,
    })


def toy_inputs(frames: int = 16, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth moving blob and its mask."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    vids, masks = [], []
    base = torch.rand(3, 1, 1, generator=g) * 2 - 1
    for f in range(frames):
        cx = 16 + f * 2
        d = ((xs - cx) ** 2 + (ys - 32) ** 2).sqrt()
        m = d < 10
        img = base.expand(3, size, size).clone() * 0.5
        img[0][m] = 0.9
        vids.append(img)
        masks.append(m[None])
    return torch.stack(vids), torch.stack(masks)
