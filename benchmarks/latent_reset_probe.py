"""Does putting the source's latents back where an edit must keep the source bring its pixels back? (issue 20)

For each ShapeWorld case the full method edits at the bench's settings (25 DDIM steps, 10 null-text iterations,
w = 3, float32); its final latents are then decoded twice and scored against the ground truth:

- ``edit``: as the method gives them;
- ``source latents kept``: with the source's ``z_0`` (the end of the inversion trajectory) in the latent cells
  the edit must keep, with no room around the object (``io.masks.latent_keep_region``, dilation 0): the
  background of an object edit, the object of a background edit. This is the mask blend's latent step alone,
  applied once at the end.

On an object edit (``02-colour``) it asks whether the lost background lives in the background's own cells; on a
background edit (``24-background``) whether a few kept object cells hold the new background, which the decoder
mixes over the whole frame.

    python benchmarks/latent_reset_probe.py                          # CPU, about 7 minutes

Writes ``benchmarks/results/latent_reset_probe_<device>.{json,md}`` (``--name`` for the first part).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write  # noqa: E402

KEYS = ("edit_accuracy", "gt_psnr", "background_psnr", "preserved_psnr", "trajectory_error_px")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="02-colour,24-background")
    ap.add_argument("--steps", type=int, default=25, help="DDIM steps (the bench's 25)")
    ap.add_argument("--inner-steps", type=int, default=10, help="null-text iterations per step (the bench's 10)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--name", default="latent_reset_probe", help="first part of the result files' name")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from videodirector.api import Editor, bundled_model_config
    from videodirector.bench.runner import BUNDLED_GUIDANCE_SCALE, case_overrides, select_cases
    from videodirector.config import EditConfig, apply_overrides
    from videodirector.io.masks import latent_keep_region
    from videodirector.world.evaluate import score_edit
    from videodirector.world.scene import render

    cases = select_cases("shapeworld-v2", case_ids=args.cases.split(","))  # an unknown id: one line, before loading
    base = apply_overrides(EditConfig(), {
        **bundled_model_config(args.device), "model.dtype": args.dtype, "input.height": 64, "input.width": 64,
        "inversion.num_steps": args.steps, "inversion.null_inner_steps": args.inner_steps, "inversion.guidance_scale": BUNDLED_GUIDANCE_SCALE})
    models, rows = None, {}
    for case in cases:
        t = time.time()
        editor = Editor(base, method="videodirector", models=models, overrides=case_overrides("videodirector", case))
        models = editor.models
        frames, masks = (x[0] for x in render(case.source))
        inv = editor.invert(frames, masks, case.source.caption(), use_cache=False)
        res = editor.edit(inv, case.target.caption())
        z0 = inv.latents[0][None].to(res.latents)
        keep = latent_keep_region(masks, tuple(z0.shape[-2:]), editor.cfg.control.edit_target, 0).to(res.latents)
        with torch.no_grad():
            kept = models.decode_latents(torch.lerp(res.latents, z0, keep).to(models.device)).float().cpu()
        rows[case.id] = {"edit_target": editor.cfg.control.edit_target, "latent_hw": list(z0.shape[-2:]),
                         "kept_latent_fraction": float(keep.mean())}
        for name, video in (("edit", res.frames.float()), ("source latents kept", kept)):
            scores = score_edit(video, case.source, case.target)
            rows[case.id][name] = {k: float(scores[k]) for k in KEYS}
            print(case.id, name, {k: round(v, 2) for k, v in rows[case.id][name].items()}, flush=True)
        print(case.id, f"{time.time() - t:.0f} s", flush=True)
    table = [(f"{cid} {name} {k}", f"{v:.2f}") for cid, by in rows.items() for name, r in by.items()
             if isinstance(r, dict) for k, v in r.items()]
    table += [(f"{cid} kept latent fraction ({by['edit_target']} edit)", f"{by['kept_latent_fraction']:.3f}")
              for cid, by in rows.items()]
    data = {"machine": machine(), "device": args.device, "dtype": args.dtype, "method": "videodirector",
            "settings": f"{args.steps} DDIM steps, {args.inner_steps} null-text iterations, w = 3, 64 x 64, 16 frames; "
                                 "keep region with no dilation",
            "results": rows}
    write(f"{args.name}_{args.device.split(':')[0]}", data, table, args.out)


if __name__ == "__main__":
    main()
