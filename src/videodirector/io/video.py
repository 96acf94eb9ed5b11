"""Reading videos: files (mp4, webm, mov, gif) or folders of frames -> ``(F, 3, H, W)`` in [-1, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError

VIDEO_EXTS = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def read_frames(path: str | Path) -> np.ndarray:
    """All frames of a video file or a folder of images, ``(N, H, W, 3)`` uint8."""
    import imageio.v3 as iio

    p = Path(path)
    if not p.exists():
        raise InputError(f"video not found: {p} (give a video file or a folder of frames)")
    if p.is_dir():
        files = sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise InputError(f"no image frames (png/jpg) in folder {p}")
        try:
            frames = [np.asarray(iio.imread(q)) for q in files]
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"cannot read frames in {p}: {exc}") from None
        sizes = {f.shape[:2] for f in frames}
        if len(sizes) > 1:
            raise InputError(f"frames in {p} have different sizes {sorted(sizes)}; give frames of one size")
        frames = [_to_rgb(f) for f in frames]
        return np.stack(frames)
    if p.suffix.lower() not in VIDEO_EXTS:
        raise InputError(f"unsupported video format {p.suffix!r} for {p}; use mp4, webm, mov, gif or a folder of frames")
    try:
        if p.suffix.lower() == ".gif":
            arr = iio.imread(p, index=None)
        else:
            arr = iio.imread(p, plugin="pyav")
    except Exception as exc:  # noqa: BLE001
        raise InputError(f"cannot read video {p}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__} "
                         "(is it a valid video file?)") from None
    arr = np.asarray(arr)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.shape[0] == 0:
        raise InputError(f"video {p} has no frames")
    return np.stack([_to_rgb(f) for f in arr])


def _to_rgb(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=-1)
    return frame[..., :3].astype(np.uint8)


def sample_indices(total: int, num_frames: int) -> list[int]:
    """Evenly spaced frame indices, as the official ``range(0, n, n // F)[:F]``."""
    if total < num_frames:
        raise InputError(f"the video has {total} frames but {num_frames} were asked for; use --frames {total} or fewer")
    step = total // num_frames
    return list(range(0, total, step))[:num_frames]


def resize_frames(frames: Tensor, height: int, width: int, mode: str = "stretch", interp: str = "bilinear") -> Tensor:
    """Resize ``(F, C, H, W)`` to ``(F, C, height, width)``; ``crop`` centre-crops to the aspect first."""
    if mode == "crop":
        h, w = frames.shape[-2:]
        target = width / height
        if w / h > target:
            nw = int(round(h * target))
            x0 = (w - nw) // 2
            frames = frames[..., :, x0 : x0 + nw]
        else:
            nh = int(round(w / target))
            y0 = (h - nh) // 2
            frames = frames[..., y0 : y0 + nh, :]
    if frames.shape[-2:] == (height, width):
        return frames
    if interp == "nearest":
        return F.interpolate(frames, size=(height, width), mode="nearest")
    return F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=True)


def load_video(path: str | Path, num_frames: int = 16, height: int = 512, width: int = 512,
               resize_mode: str = "stretch") -> Tensor:
    """Read, sample ``num_frames`` and resize: ``(F, 3, H, W)`` float in [-1, 1]."""
    if height % 8 or width % 8:
        raise InputError(f"height and width must be multiples of 8, got {height}x{width}")
    arr = read_frames(path)
    idx = sample_indices(len(arr), num_frames)
    x = torch.from_numpy(arr[idx]).permute(0, 3, 1, 2).float()
    x = resize_frames(x, height, width, resize_mode)
    return x / 127.5 - 1.0
