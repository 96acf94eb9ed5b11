"""Shared fixtures: tiny random AnimateDiff-architecture models in the SD 1.5 layout, saved with
``save_pretrained`` and loaded through the real loader (no network).

Also the rounding yardstick of the ``numerics`` tests. Two float32 computations of the same quantity
(another batch layout, another kernel, another code path) agree only up to rounding, and how much
rounding depends on the CPU, its vector width, the thread count and the kernels picked per batch size.
So those tests do not compare against fixed tolerances: they measure, at run time and on the CPU at
hand, how far the float32 result lies from the same computation in float64 (:func:`float64_twin`,
:func:`assert_within_rounding`), and allow a stated multiple of that. The random models amplify rounding
enormously over a multi-step edit or inversion (1e4-fold per edit step), so comparisons are made per step
on the same inputs wherever a trajectory would only measure that amplification.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from videodirector.config import EditConfig, ModelConfig, apply_overrides
from videodirector.models.factory import save_tiny_random
from videodirector.models.loading import load_models, precision_twin

SHARED = Path(__file__).resolve().parents[2] / "shared"
EPS32 = torch.finfo(torch.float32).eps
EPS64 = torch.finfo(torch.float64).eps


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "numerics: compares two float computations (batch layouts, kernels, code paths) within a "
        "rounding yardstick measured at run time; CI runs these with OMP_NUM_THREADS=1 as well")


def float64_twin(models):  # noqa: ANN001, ANN201
    """``models`` in float64 (:func:`~videodirector.models.loading.precision_twin`): ``|x32 - x64|`` is the float32
    rounding of a computation ``x``, the yardstick of the numerics tests."""
    return precision_twin(models, torch.float64)


def _size(x: torch.Tensor, norm: bool) -> float:
    x = x.detach().double()
    return float(x.norm() if norm else x.abs().max())


def assert_within_rounding(got: torch.Tensor, want: torch.Tensor, x32: torch.Tensor, x64: torch.Tensor, k: float,
                           norm: bool = False, what: str = "", eps: float = EPS32) -> tuple[float, float]:
    """``|got - want| <= k · yardstick``, the yardstick being ``|x32 - x64|``: the float32 rounding of a
    computation ``x`` (one of the two compared, or the same computation on the same inputs) measured
    against float64, floored at one ulp (``eps``) of ``x64``. Any pair of computations of one quantity that
    differ by rounding only can serve as ``x32``, ``x64`` (with ``eps=EPS64`` for a float64 pair). Sizes are
    max-abs, or L2 norms with ``norm`` (steadier over long trajectories). Returns ``(gap, yardstick)``."""
    gap = _size(got - want, norm)
    yard = max(_size(x32.double() - x64, norm), eps * _size(x64, norm))
    assert gap <= k * yard, f"{what}: |got - want| = {gap:.3g} exceeds {k} x the rounding yardstick {yard:.3g}"
    return gap, yard


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
