"""Writers for everything a person looks at: mp4, gif, side-by-side video, contact sheet, JSON.

Every output folder is written atomically: files go to a hidden sibling folder that is renamed
into place at the end, so a crash never leaves a half-written result, and an existing folder is
replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from ..errors import OutputExistsError


def to_uint8(frames: Tensor) -> np.ndarray:
    """``(F, 3, H, W)`` in [-1, 1] -> ``(F, H, W, 3)`` uint8 (rounded)."""
    x = ((frames.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).numpy()


@contextmanager
def atomic_folder(out: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``out`` when the block succeeds."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise OutputExistsError(f"output folder {out} already exists; pass --overwrite to replace it or choose --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    return str(o)


def write_video(path: str | Path, frames: np.ndarray, fps: int = 8) -> None:
    """Write ``(F, H, W, 3)`` uint8 as mp4 (H.264, crf 18 as the official code) or gif, atomically."""
    import imageio.v3 as iio

    path = Path(path)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex[:8]}{path.suffix}")
    if path.suffix == ".gif":
        iio.imwrite(tmp, frames, extension=".gif", duration=int(1000 / fps), loop=0)
    else:
        h, w = frames.shape[1:3]
        if h % 2 or w % 2:  # yuv420p needs even sizes
            frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        iio.imwrite(tmp, frames, plugin="pyav", codec="libx264", fps=fps,
                    out_pixel_format="yuv420p", extension=path.suffix)
    os.replace(tmp, path)


def mask_overlay(frames: np.ndarray, masks: Tensor, color: tuple[int, int, int] = (255, 0, 255),
                 alpha: float = 0.45) -> np.ndarray:
    """Tint the masked region of ``(F, H, W, 3)`` uint8 frames; ``masks`` is ``(F, 1, H, W)`` bool."""
    m = masks[:, 0].cpu().numpy()[..., None]
    tint = np.array(color, dtype=np.float32)
    out = frames.astype(np.float32)
    out = np.where(m, (1 - alpha) * out + alpha * tint, out)
    return out.round().astype(np.uint8)


def hstack_videos(videos: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Side-by-side ``(F, H, W_i, 3)`` videos with a white gap."""
    f, h = videos[0].shape[:2]
    sep = np.full((f, h, gap, 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for i, v in enumerate(videos):
        if i:
            parts.append(sep)
        parts.append(v)
    return np.concatenate(parts, axis=2)


def contact_sheet(rows: dict[str, np.ndarray], path: str | Path, max_frames: int = 8, label_width: int = 110) -> None:
    """A PNG grid: one labelled row per video, ``max_frames`` evenly spaced frames each."""
    first = next(iter(rows.values()))
    f, h, w = first.shape[:3]
    idx = np.linspace(0, f - 1, min(max_frames, f)).round().astype(int)
    scale = max(1, 96 // h)
    H, W = h * scale, w * scale
    sheet = Image.new("RGB", (label_width + len(idx) * (W + 2), len(rows) * (H + 2)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (name, vid) in enumerate(rows.items()):
        y = r * (H + 2)
        draw.text((4, y + H // 2 - 6), name[:18], fill="black")
        for c, i in enumerate(idx):
            tile = Image.fromarray(vid[i]).resize((W, H), Image.NEAREST)
            sheet.paste(tile, (label_width + c * (W + 2), y))
    buf = Path(path).with_name(f".tmp-{uuid.uuid4().hex[:8]}.png")
    sheet.save(buf)
    os.replace(buf, path)
