"""Score an edit of a ShapeWorld clip against its exact ground truth.

``edit_accuracy`` is the fraction of frames in which, among renderings of the same clip that differ
only in the edited attribute(s), the ground-truth target is the nearest to the edited frame (inside
the region the edit should change). It is rule-based and needs no learned classifier.

A shape edit is read from the object's own outline (``world.read.classify``: best IoU of the four
shape templates at the object's centroid and area, per frame): an edited triangle drawn a pixel or two
off the ground truth's is still a triangle, though by pixel distance it can be nearer a circle at the
ground truth's place. A texture edit has no pixel-exact answer: nothing in the source fixes the phase or period of the new
stripes or checks, so for texture each candidate value is rendered at ``TEXTURE_PHASES`` phases x
``TEXTURE_PERIODS`` periods and counts by its nearest variant (``gt_psnr`` still compares with the one
ground truth).
"""

from __future__ import annotations

from dataclasses import replace
from itertools import product

import torch.nn.functional as F
from torch import Tensor

from ..metrics.ground_truth import closest_candidate, object_pixels, psnr, ssim, temporal_flicker, trajectory_error
from .scene import BACKGROUND_COLOURS, OBJECT_COLOURS, SHAPES, TEXTURES, ClipSpec, render

ATTRIBUTE_VALUES = {"colour": list(OBJECT_COLOURS), "shape": list(SHAPES), "background": list(BACKGROUND_COLOURS),
                    "texture": list(TEXTURES)}


TEXTURE_PHASES = 8
TEXTURE_PERIODS = (12.0, 14.0, 16.0, 18.0)  # pixels of a 64-pixel frame: the range that ``sample_clip`` draws from


def edit_candidates(target: ClipSpec, changed: list[str]) -> dict[str, Tensor]:
    """Renderings of ``target`` for every combination of values of the changed attributes, named
    ``"value/value"``; with ``texture`` changed, also every phase and period, named ``"value/value#k"``."""
    out = {}
    for values in product(*(ATTRIBUTE_VALUES[a] for a in changed)):
        spec = target.edited(**dict(zip(changed, values)))
        name = "/".join(values)
        if "texture" not in changed:
            out[name] = render(spec)[0][0]
            continue
        scale = spec.size / 64
        variants = [replace(spec, texture_phase=k / TEXTURE_PHASES, texture_period=p * scale)
                    for k in range(TEXTURE_PHASES) for p in TEXTURE_PERIODS]
        for k, v in enumerate(render(variants)[0]):
            out[f"{name}#{k}"] = v
    return out


def changed_attributes(source: ClipSpec, target: ClipSpec) -> list[str]:
    """The attributes an edit changes, in ``ATTRIBUTE_VALUES`` order."""
    return [a for a in ATTRIBUTE_VALUES if getattr(source, a) != getattr(target, a)]


def edit_accuracy(edited: Tensor, source: ClipSpec, target: ClipSpec, frames: list[int] | None = None,
                  union: Tensor | None = None) -> float:
    """Fraction of frames that show the target's values: for shape, the outline classified per frame;
    for the other attributes, the nearest candidate (``edit_candidates``) inside the region the edit
    changes (the union of the object masks for colour, the rest for background/texture).
    ``frames``: which frames of the clip ``edited`` holds (default: all). ``union``: the source and
    target object masks of the whole clip, OR-ed (rendered here when not given)."""
    from .read import classify

    changed = changed_attributes(source, target)
    ok = [True] * len(edited)
    if "shape" in changed:  # the object's own outline, wherever the edit put it
        ok = [classify(edited[i:i + 1], target.background)["shape"] == target.shape for i in range(len(edited))]
    others = [a for a in changed if a != "shape"]
    if others:
        if union is None:
            union = render(source)[1][0] | render(target)[1][0]
        region = union if any(a in ("colour", "shape") for a in changed) else ~union
        cands = edit_candidates(target, others)
        if frames is not None:
            region, cands = region[frames], {k: v[frames] for k, v in cands.items()}
        want = "/".join(getattr(target, a) for a in others)
        picks = [p.split("#")[0] for p in closest_candidate(edited, cands, region)]
        ok = [o and p == want for o, p in zip(ok, picks)]
    return sum(ok) / len(ok)


def score_edit(edited: Tensor, source: ClipSpec, target: ClipSpec) -> dict[str, float]:
    """Ground-truth metrics of one edit. ``edited``: ``(F, 3, H, W)`` in [-1, 1]."""
    src_v, src_m = (x[0] for x in render(source))
    tgt_v, tgt_m = (x[0] for x in render(target))
    object_edit = any(a in ("colour", "shape") for a in changed_attributes(source, target))
    union = src_m | tgt_m
    bg_region = ~union if object_edit else union  # what must stay: the background, or the object
    return {
        "gt_psnr": psnr(edited, tgt_v),
        "gt_ssim": ssim(edited, tgt_v),
        "background_psnr": psnr(edited, src_v, ~union),  # outside both masks, vs the source
        "preserved_psnr": psnr(edited, src_v, bg_region),  # what the edit must keep (object for background edits)
        "edit_accuracy": edit_accuracy(edited, source, target, union=union),
        "trajectory_error_px": trajectory_error(edited, OBJECT_COLOURS[target.colour], _background_only(target), tgt_m),
        "flicker": temporal_flicker(edited, tgt_v, ~union),
    }


def _background_only(spec: ClipSpec) -> Tensor:
    """The target's background with the object painted over by background (for object segmentation)."""
    far = spec.__class__(**{**spec.to_dict(), "x0": -1000.0, "y0": -1000.0})
    return render(far)[0][0]


AREA_WINDOW_PX = 8
"""How far from either object an edit's object pixels are still counted by :func:`object_area_ratio`."""


def object_area_ratio(edited: Tensor, source: ClipSpec, target: ClipSpec, frames: list[int] | None = None) -> float:
    """The edited object's area over the target's: pixels nearer the target colour than the target's background,
    within ``AREA_WINDOW_PX`` of the source's or the target's object, over the target object's pixels. Over 1: the
    object is drawn too large (its colour spills past the outline). ``frames``: the frames ``edited`` holds. NaN when
    the target's object is in none of them."""
    src_m, tgt_m = render(source)[1][0], render(target)[1][0]
    background = _background_only(target)
    if frames is not None:
        src_m, tgt_m, background = src_m[frames], tgt_m[frames], background[frames]
    near = F.max_pool2d((src_m | tgt_m).float(), 2 * AREA_WINDOW_PX + 1, stride=1, padding=AREA_WINDOW_PX) > 0
    found = object_pixels(edited, OBJECT_COLOURS[target.colour], background) & near
    return float(found.sum() / tgt_m.sum()) if tgt_m.any() else float("nan")  # no target object in these frames


def reconstruction_psnr(editor, inversion, frames: Tensor, recon: Tensor | None = None) -> float:  # noqa: ANN001
    """PSNR of what inversion alone gives back (``recon``, computed if not given) against the VAE
    reconstruction of the source."""
    recon = editor.method.reconstruct(inversion).cpu() if recon is None else recon
    vae_rec = editor.models.decode_latents(editor.models.encode_video(frames, sample=False)).cpu()
    return psnr(recon, vae_rec)
