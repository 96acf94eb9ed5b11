"""Helpers for benchmark scripts: machine description and JSON + markdown output."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch


def machine() -> dict[str, Any]:
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__}
    for lib in ("diffusers", "transformers"):
        try:
            info[lib] = __import__(lib).__version__
        except ImportError:
            pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


NEVER_STOP_EARLY = {"inversion.early_stop_epsilon": -1.0, "inversion.early_stop_slope": 0.0}
"""Config overrides that keep every null-text step at its full iteration count (the timed worst case)."""


def synthetic_clip(frames: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random frames ``(F, 3, size, size)`` in [-1, 1] and a centred square object mask
    ``(F, 1, size, size)`` covering the middle half of each side: the inputs of the timing benchmarks."""
    g = torch.Generator().manual_seed(0)
    video = torch.rand(frames, 3, size, size, generator=g) * 2 - 1
    masks = torch.zeros(frames, 1, size, size, dtype=torch.bool)
    masks[:, :, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = True
    return video, masks


def result_name(prefix: str, info: dict[str, Any], device: torch.device, frames: int, size: int) -> str:
    """``<prefix>_h100`` on an H100, else ``<prefix>_<device>_<frames>x<size>``."""
    return f"{prefix}_h100" if "H100" in info.get("gpu", "") else f"{prefix}_{device.type}_{frames}x{size}"


def write(name: str, data: dict[str, Any], table: list[tuple[str, Any]]) -> Path:
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    lines = [f"# {name}", "", f"machine: {data.get('machine')}", "", "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in table]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    return out / f"{name}.json"
