"""Masks: per-frame PNG folders or mask videos -> ``(F, 1, H, W)`` bool, the ellipse mask, and the
latent keep-region of the mask blend.

The ellipse mask (supplementary §III; spec §5): for each frame, the moment-equivalent filled
ellipse of the first connected component in raster order (``regionprops(label(m))[0]``), with
integer centre and half-axis lengths, united with the mask itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from .video import IMAGE_EXTS, VIDEO_EXTS, read_frames, resize_frames, sample_indices


def read_mask_frames(path: str | Path) -> np.ndarray:
    """All masks of a folder of images or a mask video, ``(N, H, W)`` bool (any non-zero = object)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"masks not found: {p} (give a folder of per-frame PNGs or a mask video)")
    if p.is_file() and p.suffix.lower() not in VIDEO_EXTS:
        raise InputError(f"unsupported mask format {p.suffix!r}; use a folder of PNGs or a mask video")
    if p.is_dir() and not any(q.suffix.lower() in IMAGE_EXTS for q in p.iterdir()):
        raise InputError(f"no mask images (png/jpg) in folder {p}")
    arr = read_frames(p)
    return arr.max(axis=-1) > 127


def ellipse_mask(mask: np.ndarray) -> np.ndarray:
    """One frame ``(H, W)`` bool -> mask united with the ellipse of its first component."""
    from skimage.draw import ellipse
    from skimage.measure import label, regionprops

    regions = regionprops(label(mask.astype(np.uint8)))
    if not regions:
        return mask.copy()
    r = regions[0]
    cy, cx = r.centroid
    rr, cc = ellipse(int(cy), int(cx), int(r.axis_major_length / 2), int(r.axis_minor_length / 2),
                     shape=mask.shape, rotation=r.orientation)
    out = mask.copy()
    out[rr, cc] = True
    return out


def load_masks(path: str | Path, num_frames: int, height: int, width: int, total_video_frames: int | None = None,
               resize_mode: str = "stretch", use_ellipse: bool = True) -> Tensor:
    """Masks matching :func:`~videodirector.io.video.load_video`: ``(F, 1, H, W)`` bool.

    The mask count must equal the video's frame count (or ``num_frames`` after sampling).
    """
    m = read_mask_frames(path)
    n = len(m)
    if total_video_frames is not None and n not in (total_video_frames, num_frames):
        raise InputError(f"{n} masks in {path} but the video has {total_video_frames} frames; "
                         f"give one mask per video frame (or exactly {num_frames})")
    if n != num_frames:
        m = m[sample_indices(n, num_frames)]
    if use_ellipse:
        m = np.stack([ellipse_mask(f) for f in m])
    t = torch.from_numpy(m).float()[:, None]
    return resize_frames(t, height, width, resize_mode, interp="nearest") > 0.5


def check_masks_match(masks: Tensor, frames: Tensor) -> None:
    """One-line error when mask count or size differs from the frames."""
    if masks.shape[0] != frames.shape[0]:
        raise InputError(f"{masks.shape[0]} masks for {frames.shape[0]} frames; give one mask per frame")
    if masks.shape[-2:] != frames.shape[-2:]:
        raise InputError(f"mask size {tuple(masks.shape[-2:])} differs from frame size {tuple(frames.shape[-2:])}; "
                         "resize the masks to the video")


def latent_keep_region(masks: Tensor, latent_hw: tuple[int, int], edit_target: str = "object",
                       dilation: int = 1) -> Tensor:
    """Where the mask blend keeps the source: ``(F, 1, H, W)`` bool object masks -> ``(1, 1, F, h, w)``
    float, 1 = keep the reconstruction latent, 0 = the edit may change it.

    A latent pixel belongs to the object when any image pixel under it does (area resize > 0). For an
    object edit the object is grown by ``dilation`` latent pixels (room for a new outline) and the
    rest is kept; for a background edit the object itself is kept."""
    obj = F.adaptive_max_pool2d(masks.float(), latent_hw)  # (F, 1, h, w): any object pixel under the latent
    if edit_target == "object":
        if dilation > 0:
            obj = F.max_pool2d(obj, 2 * dilation + 1, stride=1, padding=dilation)
        keep = 1.0 - obj
    else:
        keep = obj
    return keep.permute(1, 0, 2, 3).unsqueeze(0)
