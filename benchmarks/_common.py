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


def write(name: str, data: dict[str, Any], table: list[tuple[str, Any]]) -> Path:
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    lines = [f"# {name}", "", f"machine: {data.get('machine')}", "", "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in table]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    return out / f"{name}.json"
