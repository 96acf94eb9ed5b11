"""``videodirector metrics EDITED SOURCE``: score any pair of videos, e.g. results of other tools.

Pixel metrics always; CLIP text alignment and CLIP frame consistency when a CLIP model (hub id or
local folder, ``transformers`` ``CLIPModel`` layout) is given. PickScore is the CLIP text-alignment
score computed with ``yuvalkirstain/PickScore_v1`` (a ``CLIPModel``) as ``--clip-model``. Flow warp
error and motion smoothness (:mod:`.motion`) of the edited video when a flow model is given (``--flow``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError
from ..io.masks import load_masks
from ..io.video import load_video, read_frames
from .ground_truth import psnr, ssim, temporal_flicker


@torch.no_grad()
def clip_scores(frames: Tensor, prompt: str | None, model_id: str, local_files_only: bool = False) -> dict[str, float]:
    """``clip_text``: mean over frames of ``100 · max(cos(E_img, E_txt), 0)`` (CLIPScore);
    ``clip_consistency``: mean cosine similarity of consecutive frames' image embeddings."""
    from transformers import CLIPModel, CLIPProcessor

    try:
        model = CLIPModel.from_pretrained(model_id, local_files_only=local_files_only).eval()
        proc = CLIPProcessor.from_pretrained(model_id, local_files_only=local_files_only)
    except OSError as exc:
        raise InputError(f"cannot load CLIP model {model_id!r} ({str(exc).splitlines()[0][:120]}); "
                         "pass a local folder or download it first") from None
    images = [((f.permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).byte().numpy() for f in frames]
    pix = proc(images=images, return_tensors="pt")["pixel_values"]
    img = model.get_image_features(pixel_values=pix)
    img = img / img.norm(dim=-1, keepdim=True)
    out = {"clip_consistency": float((img[1:] * img[:-1]).sum(-1).mean())}
    if prompt:
        tok = proc(text=[prompt], return_tensors="pt", padding=True)
        txt = model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok.get("attention_mask"))
        txt = txt / txt.norm(dim=-1, keepdim=True)
        out["clip_text"] = float((100 * (img @ txt.T).clamp(min=0)).mean())
    return out


def score_pair(edited: str | Path, source: str | Path, masks: str | Path | None = None, prompt: str | None = None,
               clip_model: str | None = None, num_frames: int = 16, size: int = 512, flow: str | None = None,
               device: str = "cpu") -> dict[str, Any]:
    e = load_video(edited, num_frames, size, size)
    s = load_video(source, num_frames, size, size)
    out: dict[str, Any] = {"psnr": psnr(e, s), "ssim": ssim(e, s)}
    if masks is not None:
        m = load_masks(masks, num_frames, size, size, len(read_frames(source)), use_ellipse=False)
        out["masked_psnr"] = psnr(e, s, ~m)
        out["flicker"] = temporal_flicker(e, s, ~m)
    if clip_model:
        out.update(clip_scores(e, prompt, clip_model))
    if flow:
        from .motion import flow_interpolator, motion_smoothness, raft_flow, warp_error

        flow_fn = raft_flow(flow, device)
        out["warp_error"] = warp_error(e, flow_fn)
        out["motion_smoothness"] = motion_smoothness(e, flow_interpolator(flow_fn))
        out["source_warp_error"] = warp_error(s, flow_fn)
    return out
