"""Where an object edit loses its background: the background error by distance to the object, from a stored bench run.

    python benchmarks/background_rings.py --results benchmarks/results/shapeworld-v2 [--kinds colour,shape] [--ceiling]

``background_psnr`` of a colour or shape edit compares the edit with the source outside the union of the source's and
the target's object. This script splits that region into rings by the distance to the union (0-2, 2-4, 4-8, 8-16 and
more than 16 pixels, ``metrics.ground_truth.background_error_by_distance``) and reports, per method and kind of edit,
each ring's PSNR and its share of the background's squared error. It also measures the edited object's area against
the target's (``world.evaluate.object_area_ratio``), so an object drawn too large shows as a ratio over 1.

It reads the strips of the stored run (frames 0, 4, 8 and 12 of every method, lossless; checked against fresh
renderings as in ``rescore_strips.py``), so nothing is re-run. The ground truth is scored too: its own soft outline
lies just outside the binary masks, so even a perfect edit loses some background there. ``--ceiling`` adds three
rows from the bundled VAE on the CPU: the source through it (the round trip's own loss of the background), the
target through it (the latent ceiling, which bounds every method that edits latents), and the latent composite (the
source's latents with the target's in every latent cell that either object touches: what the decoder alone spreads
from edited cells into the background).

Writes ``benchmarks/results/background_rings_<suite>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn.functional as F

from _common import machine, write
from rescore_strips import STRIP_FRAMES, checked_rows
from videodirector.bench.runner import Case, shapeworld_suite
from videodirector.metrics.ground_truth import background_error_by_distance, psnr
from videodirector.world.evaluate import object_area_ratio
from videodirector.world.scene import render


def case_rows(frames: torch.Tensor, case: Case) -> dict:
    """One case's background PSNR, its rings and the object's area, on the strip frames."""
    src_v, src_m = (x[0][STRIP_FRAMES] for x in render(case.source))
    union = src_m | render(case.target)[1][0][STRIP_FRAMES]
    return {"background_psnr": psnr(frames, src_v, ~union), "rings": background_error_by_distance(frames, src_v, union),
            "object_area_ratio": object_area_ratio(frames, case.source, case.target, STRIP_FRAMES)}


@torch.no_grad()
def ceilings(models, source: torch.Tensor, target: torch.Tensor, case: Case) -> dict[str, torch.Tensor]:  # noqa: ANN001
    """The source through the VAE (encode, decode: the round trip's own loss), the target (``latent ceiling``),
    and the source's latents with the target's in every latent
    cell that the union of both objects touches (``latent composite``): the best a method can do that changes only
    the objects' cells, and so what the decoder alone spreads from the edited cells into the background."""
    z_src, z_tgt = (models.encode_video(v, sample=False) for v in (source, target))
    union = (render(case.source)[1][0][STRIP_FRAMES] | render(case.target)[1][0][STRIP_FRAMES]).float()
    cells = (F.adaptive_max_pool2d(union, z_src.shape[-2:]) > 0).permute(1, 0, 2, 3)[None]  # (1, 1, F, h, w)
    return {"source through the VAE": models.decode_latents(z_src).float(),
            "latent ceiling": models.decode_latents(z_tgt).float(),
            "latent composite": models.decode_latents(torch.where(cells, z_tgt, z_src)).float()}


def summarise(recs: list[dict]) -> dict:
    rings = [r["ring_px"] for r in recs[0]["rings"]]
    area = [r["object_area_ratio"] for r in recs]
    background = [r["background_psnr"] for r in recs]
    spread = len(recs) > 2 and len(set(area)) > 1 and len(set(background)) > 1
    return {"cases": len(recs),
            "background_psnr": statistics.mean(background),
            "object_area_ratio": _finite_mean(area),
            # over the cases: does the background fall as the object grows? (Pearson's r; None below 3 cases)
            "area_background_correlation": statistics.correlation(area, background) if spread else None,
            "rings": {name: {k: _finite_mean(r["rings"][i][k] for r in recs) for k in ("fraction", "psnr", "error_share")}
                      for i, name in enumerate(rings)}}


def _finite_mean(values: Iterable[float]) -> float:
    """The mean over the cases where the value exists: a ring can be empty (a large object leaves no pixel 16 px away),
    and an error-free case has no error shares. A ring's mean may therefore cover fewer cases than ``cases``."""
    kept = [v for v in values if math.isfinite(v)]
    return statistics.mean(kept) if kept else float("nan")


def paired_area(per: dict[str, dict[str, list[dict]]], reference: str,
                methods: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Per method of the run (``methods``; not the ground truth or the VAE rows) and kind, the object area ratio minus
    ``reference``'s on the same cases: mean, standard error, and in how many cases it is larger."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for m, by_kind in per.items():
        if m == reference or m not in methods:
            continue
        for k, recs in by_kind.items():
            ref = {r["case"]: r["object_area_ratio"] for r in per[reference].get(k, [])}
            diffs = [r["object_area_ratio"] - ref[r["case"]] for r in recs if r["case"] in ref]
            if len(diffs) < 2:
                continue
            out.setdefault(m, {})[k] = {"cases": len(diffs), "mean": statistics.mean(diffs),
                                        "se": statistics.stdev(diffs) / len(diffs) ** 0.5,
                                        "larger": sum(d > 0 for d in diffs)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "shapeworld-v2")
    p.add_argument("--kinds", default="colour,shape")
    p.add_argument("--ceiling", action="store_true",
                   help="add the source and the target through the bundled VAE, and the latent composite (CPU, a minute)")
    p.add_argument("--reference", default="videodirector", help="the method the others' object areas are paired with")
    p.add_argument("--out", type=Path, default=None, help="folder for the JSON and markdown (default benchmarks/results)")
    args = p.parse_args()
    suite = args.results.name
    kinds = args.kinds.split(",")
    methods = list(json.loads((args.results / "summary.json").read_text()))
    cases = {c.id: c for c in shapeworld_suite(suite)}
    models = None
    if args.ceiling:
        from videodirector.api import bundled_model_config
        from videodirector.config import EditConfig, apply_overrides
        from videodirector.models.loading import load_models

        models = load_models(apply_overrides(EditConfig(), bundled_model_config(device="cpu")).model)
    per: dict[str, dict[str, list[dict]]] = {}
    for png in sorted((args.results / "strips").glob("*.png")):
        case = cases[png.stem]
        if case.kind not in kinds:
            continue
        rows = checked_rows(png, case, len(methods))
        named = {"ground truth": rows[1], **dict(zip(methods, rows[2:]))}
        if models is not None:
            named.update(ceilings(models, rows[0], rows[1], case))
        for m, frames in named.items():
            per.setdefault(m, {}).setdefault(case.kind, []).append({"case": case.id, **case_rows(frames, case)})
    summary = {m: {k: summarise(v) for k, v in by_kind.items()} for m, by_kind in per.items()}
    paired = paired_area(per, args.reference, methods) if args.reference in per else {}
    repo, where = Path(__file__).resolve().parent.parent, args.results.resolve()
    result = {"results": str(where.relative_to(repo)) if where.is_relative_to(repo) else suite, "frames": STRIP_FRAMES,
              "kinds": kinds, "machine": machine(), "summary": summary,
              "object_area_against": {"reference": args.reference, "methods": paired}, "per_case": per}
    table = []
    for m, by_kind in summary.items():
        for k, s in by_kind.items():
            rings = ", ".join(f"{name} px {r['psnr']:.1f} dB ({100 * r['error_share']:.0f} %)"
                              for name, r in s["rings"].items())
            table.append((f"{m}, {k} ({s['cases']} cases)", f"background {s['background_psnr']:.1f} dB; by distance: "
                          f"{rings}; object area {s['object_area_ratio']:.2f}x the target's"
                          + (f" (r = {s['area_background_correlation']:.2f} with the background over the cases)"
                             if s["area_background_correlation"] is not None else "")))
    for m, by_kind in paired.items():
        for k, d in by_kind.items():
            table.append((f"object area, {m} minus {args.reference}, {k}",
                          f"{d['mean']:+.2f} ± {d['se']:.2f} (SE), larger in {d['larger']} of {d['cases']} cases"))
    write(f"background_rings_{suite}", result, table, args.out)
    for row in table:
        print(*row)


if __name__ == "__main__":
    main()
