"""``videodirector metrics EDITED SOURCE``: score any pair of videos, e.g. results of other tools.

Pixel metrics always; masked LPIPS (paper Table 1, "m.L") with ``--lpips alex|vgg``; CLIP text
alignment and CLIP frame consistency when a CLIP model (hub id or local folder, ``transformers``
``CLIPModel`` layout) is given. PickScore is the CLIP text-alignment
score computed with ``yuvalkirstain/PickScore_v1`` (a ``CLIPModel``) as ``--clip-model``. Flow warp
error and motion smoothness (:mod:`.motion`) of the edited video when a flow model is given (``--flow``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError
from ..io.masks import load_masks
from ..io.video import load_video, load_video_with_info
from .ground_truth import psnr, ssim, temporal_flicker


def load_clip(model_id: str, local_files_only: bool = False):  # noqa: ANN201
    """``(CLIPModel, CLIPProcessor)`` from a folder or hub id; one line when it cannot be had (no network and
    not in the local cache, a folder without the model, a damaged file)."""
    from transformers import CLIPModel, CLIPProcessor

    from ..models.loading import hub_reachable, in_hub_cache, is_hub_id

    fetch = f"run 'hf download {model_id} --local-dir DIR' on a machine with internet and pass DIR as --clip-model"
    if Path(model_id).expanduser().exists():
        model_id = str(Path(model_id).expanduser())
    elif not is_hub_id(model_id):
        raise InputError(f"CLIP model {model_id!r} is neither a folder nor a hub id; pass a CLIP folder "
                         "(transformers CLIPModel layout) or a hub id such as openai/clip-vit-large-patch14")
    elif not local_files_only and not in_hub_cache(model_id, ["config.json"]) and not hub_reachable():
        raise InputError(f"no CLIP model available offline: {model_id} is not in the local cache and the model hub "
                         f"cannot be reached; {fetch}")
    try:
        model = CLIPModel.from_pretrained(model_id, local_files_only=local_files_only).eval()
        proc = CLIPProcessor.from_pretrained(model_id, local_files_only=local_files_only)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"cannot load CLIP model {model_id!r} ({(str(exc).splitlines() or [''])[0][:120]}); "
                         f"{fetch}") from None
    return model, proc


@torch.no_grad()
def clip_scores(frames: Tensor, prompt: str | None, model_id: str, local_files_only: bool = False) -> dict[str, float]:
    """``clip_text``: mean over frames of ``100 · max(cos(E_img, E_txt), 0)`` (CLIPScore);
    ``clip_consistency``: mean cosine similarity of consecutive frames' image embeddings.
    The ASSD paper's Table 1 metrics: ``clip_text_alignment``, the mean over frames of ``cos(E_img, E_txt)``
    with the target prompt, and ``clip_frame_consistency``, the mean cosine similarity over all pairs of
    distinct frames (the paper does not say which pairs; Tune-A-Video's protocol uses all pairs)."""
    model, proc = load_clip(model_id, local_files_only)
    images = [((f.permute(1, 2, 0).clamp(-1, 1) + 1) * 127.5).byte().numpy() for f in frames]
    pix = proc(images=images, return_tensors="pt")["pixel_values"]
    img = model.get_image_features(pixel_values=pix)
    img = getattr(img, "pooler_output", img)  # transformers 5 returns a model output
    img = img / img.norm(dim=-1, keepdim=True)
    out = {"clip_consistency": float((img[1:] * img[:-1]).sum(-1).mean())}
    n = img.shape[0]
    if n > 1:
        sims = img @ img.T
        out["clip_frame_consistency"] = float((sims.sum() - sims.diagonal().sum()) / (n * (n - 1)))
    if prompt:
        tok = proc(text=[prompt], return_tensors="pt", padding=True)
        txt = model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok.get("attention_mask"))
        txt = getattr(txt, "pooler_output", txt)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        out["clip_text"] = float((100 * (img @ txt.T).clamp(min=0)).mean())
        out["clip_text_alignment"] = float((img @ txt.T).mean())
    return out


SpatialDistance = Callable[[Tensor, Tensor], Tensor]
"""``(x, y) -> (N, 1, H, W)`` per-pixel perceptual distance of image batches in [-1, 1] (``lpips.LPIPS(spatial=True)``)."""


@torch.no_grad()
def masked_lpips(edited: Tensor, source: Tensor, keep: Tensor | None, distance: SpatialDistance,
                 batch: int = 8) -> float:
    """Masked LPIPS: ``Σ_f Σ_p K_f(p) D_f(p) / Σ_f Σ_p K_f(p)``, the per-pixel LPIPS map ``D`` (Zhang et al.
    2018, Eq. 1 without the spatial average) averaged over the pixels ``K`` that the edit must keep (the
    background, outside the object masks). ``keep=None`` gives plain LPIPS averaged over frames.
    ``edited``/``source``: ``(F, 3, H, W)`` in [-1, 1]; ``keep``: ``(F, 1, H, W)`` bool."""
    maps = torch.cat([distance(edited[i:i + batch], source[i:i + batch]).float().cpu()
                      for i in range(0, edited.shape[0], batch)])
    if maps.shape[-2:] != edited.shape[-2:]:
        raise ValueError(f"the LPIPS map is {tuple(maps.shape[-2:])}, not per pixel; build LPIPS with spatial=True")
    if keep is None:
        return float(maps.mean())
    w = keep.float()
    if w.sum() == 0:
        raise InputError("the masks cover every pixel, so there is no background for masked LPIPS; check the masks")
    return float((maps * w).sum() / w.sum())


def load_lpips(net: str = "alex", device: str = "cpu") -> SpatialDistance:
    """``lpips.LPIPS(net=net, spatial=True)`` (linear heads v0.1, shipped in the ``lpips`` package). Its
    AlexNet/VGG backbone comes from torchvision's cache: pre-populate ``TORCH_HOME`` to run offline."""
    try:
        import lpips
    except Exception as exc:  # noqa: BLE001 - lpips imports torchvision, which can fail to load its ops
        raise InputError(f"masked LPIPS needs the lpips package and a torchvision matching your torch "
                         f"({type(exc).__name__}); pip install 'videodirector[metrics]'") from None
    if net not in ("alex", "vgg", "squeeze"):
        raise InputError(f"unknown LPIPS network {net!r}; use alex, vgg or squeeze")
    try:
        model = lpips.LPIPS(net=net, spatial=True, verbose=False).eval().to(device)
    except OSError as exc:
        raise InputError(f"cannot load the {net} backbone for LPIPS ({str(exc).splitlines()[0][:100]}); "
                         "download it once or set TORCH_HOME to a folder that has it") from None
    return lambda x, y: model(x.to(device), y.to(device))


def score_pair(edited: str | Path, source: str | Path, masks: str | Path | None = None, prompt: str | None = None,
               clip_model: str | None = None, num_frames: int = 16, size: int = 512, flow: str | None = None,
               device: str = "cpu", lpips_net: str | None = None) -> dict[str, Any]:
    e = load_video(edited, num_frames, size, size)
    s, s_info = load_video_with_info(source, num_frames, size, size, notice=False)
    out: dict[str, Any] = {"psnr": psnr(e, s), "ssim": ssim(e, s)}
    m = None
    if masks is not None:
        m = load_masks(masks, num_frames, size, size, s_info.num_frames, use_ellipse=False,
                       video_size=(s_info.height, s_info.width))
        out["masked_psnr"] = psnr(e, s, ~m)
        out["flicker"] = temporal_flicker(e, s, ~m)
    if lpips_net:
        key = "masked_lpips" if m is not None else "lpips"
        out[key] = masked_lpips(e, s, None if m is None else ~m, load_lpips(lpips_net, device))
    if clip_model:
        out.update(clip_scores(e, prompt, clip_model))
    if flow:
        from .motion import flow_interpolator, motion_smoothness, raft_flow, warp_error

        flow_fn = raft_flow(flow, device)
        out["warp_error"] = warp_error(e, flow_fn)
        out["motion_smoothness"] = motion_smoothness(e, flow_interpolator(flow_fn))
        out["source_warp_error"] = warp_error(s, flow_fn)
    return out
