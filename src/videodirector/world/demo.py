"""``videodirector demo``: a real VideoDirector edit of a ShapeWorld clip on the bundled models, offline.

Two edits of one clip ("a red circle moving right on a teal striped background"): an object edit
(red circle -> yellow square) and a background edit (teal -> orange, with the swapped background
STDG coefficients). Each writes the normal outputs plus the ground truth; ``metrics.json`` holds
the ground-truth scores (top level: the object edit).

The demo trades steps for time so it finishes in about three minutes on a 2-core CPU: 15 DDIM steps
and at most 3 null-text iterations per step instead of 50 and 10 (see docs/getting-started.md).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from ..api import BUNDLED_GUIDANCE_SCALE, BUNDLED_WEIGHTS, Editor, bundled_model_config
from ..config import EditConfig, apply_overrides
from ..io.outputs import atomic_folder, to_uint8, write_json
from ..methods.base import Progress, no_progress
from .evaluate import reconstruction_psnr, score_edit
from .scene import render, sample_clip

DEMO_SEED = 7
DEMO_EDITS: list[tuple[str, dict[str, str], dict[str, Any]]] = [
    ("object_edit", {"colour": "yellow", "shape": "square"}, {}),
    ("background_edit", {"background": "orange"},
     {"control.edit_target": "background", "stdg.coefficients": [0.5, 0.5, 0.5, 0.0]}),
]


def demo_spec():  # noqa: ANN201
    return sample_clip(DEMO_SEED, shape="circle", colour="red", motion="right", background="teal", texture="striped",
                       distractor_prob=0.0)


def demo_config(device: str = "auto", steps: int = 15, inner_steps: int = 3) -> EditConfig:
    spec = demo_spec()
    return apply_overrides(EditConfig(), {
        **bundled_model_config(device),
        "input.height": spec.size, "input.width": spec.size, "input.num_frames": spec.frames,
        "inversion.num_steps": steps, "inversion.null_inner_steps": inner_steps,
        "inversion.guidance_scale": BUNDLED_GUIDANCE_SCALE, "prompts.source": spec.caption(),
        **DEMO_VIDEO_P2P, **DEMO_I2VEDIT,
    })


DEMO_VIDEO_P2P = {"video_p2p.tune_steps": 60, "video_p2p.guidance_scale": BUNDLED_GUIDANCE_SCALE + 1.0,
                  "video_p2p.cross_mode": "replace", "video_p2p.auto_blend_words": True}
"""Video-P2P in the demo (read by that method only): 60 tuning steps instead of 500 (on a 2-core CPU a step
takes about 0.5 s), the bundled models' guidance (``s = w + 1``: Video-P2P writes CFG as
``ε_u + s (ε_c - ε_u)``), replace mode and the local blend on the swapped word (both demo edits are word swaps)."""


DEMO_I2VEDIT = {"i2vedit.model": str(BUNDLED_WEIGHTS / "i2v"), "i2vedit.chunk_size": 16,
                "i2vedit.lora_steps": 50}
"""I2VEdit in the demo (read by that method only): the bundled image-to-video model, the 16-frame clip as one
clip, 50 motion-LoRA steps instead of 250 (193 s for both edits on a 2-core CPU, the LoRA trained once)."""


DEMO_ASSD_ITERATIONS = 20
"""ASSD's SGD iterations in the demo (the paper's 200 take about 10 minutes on a 2-core CPU)."""


def run_demo(out: str | Path, device: str = "auto", steps: int = 15, inner_steps: int = 3, overwrite: bool = False,
             progress: Progress = no_progress, use_cache: bool = False, method: str = "videodirector",
             overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The two demo edits with ``method`` (any registered name), ``overrides`` applied to its config.

    Without ``use_cache`` the user's cache is not touched, but the two edits still share what their stage 1
    has in common (same clip and settings: I2VEdit's inversion and motion LoRA, Video-P2P's tuned UNet)
    through a scratch cache that is removed afterwards."""
    spec = demo_spec()
    frames, masks = (x[0] for x in render(spec))
    base = apply_overrides(demo_config(device, steps, inner_steps), overrides or {})
    editor = None
    metrics: dict[str, Any] = {"edits": {}}
    with atomic_folder(out, overwrite) as tmp, tempfile.TemporaryDirectory(prefix="videodirector-demo-") as scratch:
        cache_dir = None if use_cache else Path(scratch) / "inversions"
        for name, change, overrides in DEMO_EDITS:
            cfg = apply_overrides(base, overrides)
            if editor is None:
                editor = Editor(cfg, method=method, cache_dir=cache_dir)
            else:  # same weights, other settings
                editor = Editor(cfg, method=method, models=editor.models, cache_dir=cache_dir)
            target = spec.edited(**change)
            inv = editor.invert(frames, masks, spec.caption(), progress=lambda s, i, n, nm=name: progress(f"{nm}: {s}", i, n),
                                use_cache=True)
            step = lambda s, i, n, nm=name: progress(f"{nm}: {s}", i, n)  # noqa: E731
            if getattr(editor.method, "needs_prompts", True):
                res = editor.edit(inv, target.caption(), progress=step)
            else:  # I2VEdit propagates the target's exact first frame (an edit made with any image tool)
                res = editor.method.edit_from_image(inv, render(target)[0][0][0], progress=step)
            gt = render(target)[0][0]
            scores = score_edit(res.frames, spec, target)
            recon = editor.method.reconstruct(inv).cpu()
            scores["reconstruction_psnr"] = reconstruction_psnr(editor, inv, frames, recon)
            scores["target_prompt"] = target.caption()
            scores["timings_s"] = {**inv.meta["timings"], **res.timings}
            scores["mean_null_inner_iterations"] = inv.meta.get("mean_inner_iterations")
            editor.save(res, inv, tmp / name, extra={"rows": {"ground truth": to_uint8(gt),
                                                               "reconstruction": to_uint8(recon)},
                                                      "ground_truth_metrics": scores})
            metrics["edits"][name] = scores
        first = metrics["edits"][DEMO_EDITS[0][0]]
        for k in ("gt_psnr", "background_psnr", "edit_accuracy", "trajectory_error_px"):
            metrics[k] = first[k]
        metrics["source_prompt"] = spec.caption()
        metrics["method"] = method
        metrics["settings"] = {"steps": steps, "null_inner_steps": inner_steps,
                               "device": str(editor.models.device) if editor else device,
                               "threads": torch.get_num_threads()}
        write_json(tmp / "metrics.json", metrics)
    return metrics
