"""Where the colour swaps' trajectory offsets come from (issue 20): one method on chosen ShapeWorld cases, once
per setting variant, scored against the ground truth (nothing stored in the bench's folders).

The bench's full method drew the object of ``05-colour`` 10.2 px and of ``03-colour`` 6.8 px off its place (H200, bf16).
This runs the same cases at the bench's settings (25 DDIM steps, 10 null-text iterations, w = 3) in float32 with:

- ``baseline``: the method as the bench runs it;
- ``tau_s=0.7`` / ``tau_s=1.0``: SA-I (the source's self-attention keys and values) on 70 % / all of the edit steps
  instead of the official 40 % (``control.self_replace_steps``);
- ``tau_c=1.0``: cross-attention control on all steps instead of 80 % (``control.cross_replace_steps``);
- ``null_text=none``: no null-text optimisation (plain DDIM inversion; the edit's unconditional branch is the negative
  prompt's), everything else the full method's. It tests whether the edit's unconditional branch, which null-text
  optimisation fits to the source, is what draws colour swaps' objects too large (``object_area_ratio``, and
  ``outline_psnr``: the background within 2 px of the objects, where that spill lands);
- any one setting as ``section.key=value``, e.g. ``control.mask_blend_start=1.0``;

    python benchmarks/trajectory_probe.py                                  # CPU, about 25 minutes
    python benchmarks/trajectory_probe.py --method vd-fast-direct          # exact inversion, a few minutes
    python benchmarks/trajectory_probe.py --variants ""                    # only the metric's ceiling, seconds
    python benchmarks/trajectory_probe.py --cases 01-colour,02-colour,05-colour --variants baseline,null_text=none \
        --name enlargement_probe                                           # CPU, about 25 minutes
    python benchmarks/trajectory_probe.py --cases 13-shape,17-shape,19-shape,20-shape,21-shape --variants baseline \
        --method vd-mask-blend,vd-mask-blend-dilated --name dilation_probe  # CPU, about 25 minutes

Every run also scores the ground truth through the VAE (encode, decode) on the same cases (``ceiling``): what the
metric gives a perfect latent editor there.

Several methods (``--method a,b``) run on each case after one another, sharing the case's inversion where they invert
alike. Writes ``benchmarks/results/trajectory_probe_<method>_<device>.{json,md}`` (``--name``: ``<name>_<method>_<device>``;
several methods: joined by ``+``).
"""

from __future__ import annotations

import argparse
import sys
import time
from itertools import product
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write  # noqa: E402

VARIANTS = {"baseline": {}, "tau_s=0.7": {"control.self_replace_steps": 0.7},
            "tau_s=1.0": {"control.self_replace_steps": 1.0}, "tau_c=1.0": {"control.cross_replace_steps": 1.0},
            "null_text=none": {"inversion.null_text": "none"}}
KEYS = ("trajectory_error_px", "gt_psnr", "background_psnr", "edit_accuracy", "reconstruction_psnr", "object_area_ratio",
        "outline_psnr")


def variant_overrides(variant: str) -> dict[str, object]:
    """A named variant, or any one setting written ``section.key=value`` (``control.mask_blend_start=1.0``)."""
    if variant in VARIANTS:
        return VARIANTS[variant]
    key, sep, value = variant.partition("=")
    if not sep or "." not in key:
        raise SystemExit(f"--variants: {variant!r} is neither one of {', '.join(VARIANTS)} nor a setting key=value")
    return {key: yaml.safe_load(value)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="05-colour,03-colour")
    ap.add_argument("--method", default="videodirector", help="a bench method, or several separated by commas")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--name", default="trajectory_probe", help="first part of the result files' name")
    args = ap.parse_args()
    variants = {v: variant_overrides(v) for v in args.variants.split(",") if v}  # checked before any model loads
    if args.threads:
        torch.set_num_threads(args.threads)
    from videodirector.api import bundled_model_config
    from videodirector.bench.runner import BUNDLED_GUIDANCE_SCALE, run_case, shapeworld_suite
    from videodirector.config import EditConfig, apply_overrides
    from videodirector.metrics.ground_truth import background_error_by_distance
    from videodirector.models.loading import load_models
    from videodirector.world.evaluate import object_area_ratio, score_edit
    from videodirector.world.scene import render

    def shape_scores(frames: torch.Tensor, case) -> dict[str, float]:  # noqa: ANN001
        """The edited object's area over the target's, and the background within 2 px of either object."""
        (src, src_m), tgt_m = (x[0] for x in render(case.source)), render(case.target)[1][0]
        outline = background_error_by_distance(frames, src, src_m | tgt_m)[0]["psnr"]
        return {"object_area_ratio": object_area_ratio(frames, case.source, case.target), "outline_psnr": outline}

    base = apply_overrides(EditConfig(), {
        **bundled_model_config(args.device), "model.dtype": args.dtype, "input.height": 64, "input.width": 64,
        "inversion.num_steps": 25, "inversion.null_inner_steps": 10, "inversion.guidance_scale": BUNDLED_GUIDANCE_SCALE})
    models = load_models(base.model)
    cases = {c.id: c for c in shapeworld_suite("shapeworld-v2")}
    methods = args.method.split(",")
    shared: dict = {}  # one inversion per case for the variants and methods that change only the edit
    rows: dict[str, dict[str, dict[str, float]]] = {}
    for cid in args.cases.split(","):
        with torch.no_grad():  # the ground truth through the VAE, scored as an edit (bench.runner.ceiling_scores)
            through_vae = models.decode_latents(models.encode_video(render(cases[cid].target)[0][0], sample=False))
        through_vae = through_vae.float().cpu()
        ceiling = {**score_edit(through_vae, cases[cid].source, cases[cid].target), **shape_scores(through_vae, cases[cid])}
        rows[cid] = {"ceiling": {k: float(ceiling[k]) for k in KEYS if k in ceiling}}
        print(cid, "ceiling", {k: round(v, 2) for k, v in rows[cid]["ceiling"].items()}, flush=True)
        for variant, method in product(variants, methods):
            name = variant if len(methods) == 1 else f"{method}: {variant}"
            t = time.time()
            scores, edited = run_case(models, apply_overrides(base, variants[variant]), method, cases[cid], shared)
            scores.update(shape_scores(torch.from_numpy(edited).permute(0, 3, 1, 2).float() / 127.5 - 1, cases[cid]))
            rows[cid][name] = {k: float(scores[k]) for k in KEYS}
            print(cid, name, {k: round(v, 2) for k, v in rows[cid][name].items()}, f"{time.time() - t:.0f} s", flush=True)
    table = [(f"{cid} {name} {k}", f"{v:.2f}") for cid, by in rows.items() for name, r in by.items() for k, v in r.items()]
    data = {"machine": machine(), "method": ",".join(methods), "device": args.device, "dtype": args.dtype,
            "settings": "25 DDIM steps, 10 null-text iterations, w = 3, 64 x 64, 16 frames", "variants": variants,
            "results": rows}
    name = "+".join(methods) if args.variants else "ceiling"
    write(f"{args.name}_{name}_{args.device.split(':')[0]}", data, table, args.out)


if __name__ == "__main__":
    main()
