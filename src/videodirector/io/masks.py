"""Masks: per-frame PNG folders or mask videos -> ``(F, 1, H, W)`` bool, the ellipse mask, and the
latent keep-region of the mask blend.

How a mask image is read (:func:`mask_from_image`), as the official code (``png > 0``):

* An image **with transparency** (RGBA, LA, PA, or a palette/grey/RGB image with a transparent
  colour) **that has at least one fully transparent pixel**: the object is where ``alpha > 0``; the
  colour is ignored. This reads alpha-only masks (constant colour, shape in alpha) and cut-outs
  (the object opaque on a transparent background, whatever colour the background pixels hold).
* Any other image (no alpha channel, or an alpha channel with no fully transparent pixel): the
  object is where **any colour channel is non-zero**, at the image's own bit depth, so 0/1 masks,
  0/255 masks and 16-bit masks all read the same (palette images by their colours).

Mask **videos** (mp4, webm, mov, gif) are the exception: lossy compression leaves small non-zero
values everywhere, so a mask video's pixel is the object where its brightest channel is ``> 127``
(8-bit), the middle of the range.

After reading, :func:`load_masks` warns (once, one line) about frames whose mask is empty (the edit
region is empty there), and refuses masks that are empty in every frame used.

The ellipse mask (supplementary §III): for each frame, the moment-equivalent filled
ellipse of the first connected component in raster order (``regionprops(label(m))[0]``), with
integer centre and half-axis lengths, united with the mask itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .. import notices
from ..errors import InputError
from .video import IMAGE_EXTS, VIDEO_EXTS  # noqa: F401  (IMAGE_EXTS: re-exported, as before)
from .video import (VideoInfo, check_memory, image_sizes, list_frame_files, open_image, path_kind, read_video,
                    resize_frames, sample_indices, sniff)

MASK_FIX = "give a folder of per-frame PNGs or a mask video"
MASK_VIDEO_THRESHOLD = 127
"""A mask video's pixel is the object where its brightest channel exceeds this (8-bit)."""


def _alpha(im) -> np.ndarray | None:  # noqa: ANN001
    """The alpha channel of a PIL image as ``(H, W)`` uint8, or None when it has no transparency."""
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return np.asarray(im.getchannel("A"))
    if "transparency" in im.info and im.mode in ("P", "L", "RGB"):
        return np.asarray(im.convert("RGBA").getchannel("A"))
    return None


def mask_from_image(im) -> np.ndarray:  # noqa: ANN001
    """One mask image (PIL) -> ``(H, W)`` bool, by the rule in the module docstring."""
    alpha = _alpha(im)
    if alpha is not None and (alpha == 0).any():
        return alpha > 0
    mode = im.mode
    if mode == "1":
        return np.asarray(im).astype(bool)
    if mode.startswith("I") or mode == "F":  # 16-bit / 32-bit grey: any non-zero value
        a = np.asarray(im)
        return np.nan_to_num(a.astype(np.float64)) > 0 if a.dtype.kind == "f" else a > 0
    if mode in ("L", "LA", "La"):
        return np.asarray(im.getchannel(0) if mode != "L" else im) > 0
    return np.asarray(im.convert("RGB")).max(axis=-1) > 0


def _read_masks(path: str | Path, want) -> tuple[np.ndarray, list[str], VideoInfo]:  # noqa: ANN001
    """Masks chosen by ``want(total)`` (all when None), their labels (file names or ``frame k``), and
    what the masks hold (count, size)."""
    p = Path(path)
    if path_kind(p, "masks", MASK_FIX) == "dir":
        files = list_frame_files(p, "masks", MASK_FIX)
        h, w = image_sizes(files, p, "mask")
        idx = want(len(files))
        idx = list(range(len(files))) if idx is None else list(idx)
        check_memory(len(idx), h, w, p, bytes_per_pixel=1)
        out = np.empty((len(idx), h, w), bool)
        for j, i in enumerate(idx):
            out[j] = mask_from_image(open_image(files[i], p, "mask"))
        return out, [files[i].name for i in idx], VideoInfo(len(files), h, w, "frames")
    kind, desc = sniff(p)
    if kind == "image":
        raise InputError(f"masks {p} is {desc}, a single mask; {MASK_FIX} (one mask per video frame)")
    if kind in ("other", "text", "empty") or (kind == "unknown" and p.suffix.lower() not in VIDEO_EXTS):
        raise InputError(f"unsupported mask format {p.suffix!r} for {p} ({desc}); {MASK_FIX}")
    kept: list[int] = []

    def want_and_remember(n: int) -> Sequence[int] | None:
        idx = want(n)
        kept[:] = list(range(n)) if idx is None else list(idx)
        return idx

    arr, info = read_video(p, want_and_remember, "masks", MASK_FIX)
    return arr.max(axis=-1) > MASK_VIDEO_THRESHOLD, [f"frame {i}" for i in kept], info


def read_mask_frames(path: str | Path, num_frames: int | None = None) -> np.ndarray:
    """Masks of a folder of images or a mask video, ``(N, H, W)`` bool (the reading rule is in the
    module docstring). All masks by default; with ``num_frames``, only those of :func:`sample_indices`."""
    want = None if num_frames is None else (lambda n: sample_indices(n, num_frames))
    return _read_masks(path, want or (lambda n: None))[0]


def probe_masks(path: str | Path) -> VideoInfo:
    """Mask count and size (from file headers for a folder; a mask video is decoded once), no pixels kept."""
    return _read_masks(path, lambda n: [])[2]


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


def _name_some(labels: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(labels[:limit])
    return shown + (f" and {len(labels) - limit} more" if len(labels) > limit else "")


def load_masks(path: str | Path, num_frames: int, height: int, width: int, total_video_frames: int | None = None,
               resize_mode: str = "stretch", use_ellipse: bool = True, *,
               video_size: tuple[int, int] | None = None, allow_empty: bool = False) -> Tensor:
    """Masks matching :func:`~videodirector.io.video.load_video`: ``(F, 1, H, W)`` bool.

    The mask count must equal the video's frame count (or ``num_frames`` after sampling); with
    ``video_size`` = the source video's ``(height, width)``, the masks must have that size too.
    Only the masks used are decoded. A notice names the frames whose mask is empty (or vanishes when
    resized to ``height x width``); when every mask used is empty, :class:`InputError` (unless
    ``allow_empty``): the edit would change nothing.
    """

    def want(n: int) -> list[int] | None:
        if total_video_frames is not None and n not in (total_video_frames, num_frames):
            raise InputError(f"{n} masks in {path} but the video has {total_video_frames} frames; "
                             f"give one mask per video frame (or exactly {num_frames})")
        return None if n == num_frames else sample_indices(n, num_frames)

    m, labels, info = _read_masks(path, want)
    if video_size is not None and (info.height, info.width) != tuple(video_size):
        vh, vw = video_size
        raise InputError(f"mask size {info.height}x{info.width} differs from video size {vh}x{vw}; "
                         "give masks at the video's resolution")
    empty = [i for i in range(len(m)) if not m[i].any()]
    if use_ellipse:
        m = np.stack([ellipse_mask(f) for f in m])
    t = torch.from_numpy(m).float()[:, None]
    out = resize_frames(t, height, width, resize_mode, interp="nearest") > 0.5
    lost = [i for i in range(len(out)) if not out[i].any() and i not in empty]
    if len(empty) == len(out) and not allow_empty:
        raise InputError(f"all {len(out)} masks used from {path} are empty (no non-zero pixel, nor an opaque one "
                         "where the image has transparency), so the edit would change nothing; give masks where the "
                         "object is non-zero (white) or opaque, or leave out --masks to edit the whole frame")
    if len(empty) + len(lost) == len(out) and not allow_empty:
        raise InputError(f"the masks in {path} are too small to survive resizing to {width}x{height}: every one is "
                         "empty afterwards; give larger masks or a larger --height/--width")
    if empty:
        notices.warn(f"{len(empty)} of the {len(out)} masks used from {path} are empty "
                     f"({_name_some([labels[i] for i in empty])}): the edit region is empty in those frames; "
                     "mark the object there (non-zero or opaque pixels) if it should be edited")
    if lost:
        notices.warn(f"{len(lost)} of the {len(out)} masks used from {path} vanish when resized to {width}x{height} "
                     f"({_name_some([labels[i] for i in lost])}): the object is too small there, so the edit region "
                     "is empty in those frames")
    return out


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
