"""Video-P2P's ablations paired with the full method on the cases that all of them finished, from a stored bench run.

``videodirector bench --stored-only`` pairs every method with ``videodirector``; the paper's questions (shared vs per-frame
null-text, decoupled guidance, local blend, tuning) are about each ablation against ``video-p2p`` itself. This reads the
per-case results under ``<results>/<suite>/cases/`` and writes ``paired_vs_video-p2p.{json,md}`` beside them (Δ = ablation
− video-p2p, mean ± standard error; **bold**: beyond two standard errors).

    python benchmarks/vp2p_ablations.py --results benchmarks/results/video-p2p-reduced
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from videodirector.bench.runner import METRICS, paired_comparison

ABLATIONS = ["video-p2p-fast", "vp2p-untuned", "vp2p-per-frame-null", "vp2p-no-decoupled", "vp2p-no-local-blend"]
SHOWN = ("gt_psnr", "preserved_psnr", "edit_accuracy", "trajectory_error_px", "reconstruction_psnr", "flicker")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/video-p2p-reduced"))
    ap.add_argument("--suite", default="shapeworld-v2")
    a = ap.parse_args()
    root = a.results / a.suite
    per_case = {}
    for m in ["video-p2p", *ABLATIONS]:
        folder = root / "cases" / m
        per_case[m] = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
    common = set.intersection(*({r["case"] for r in recs} for recs in per_case.values()))
    per_case = {m: [r for r in recs if r["case"] in common] for m, recs in per_case.items()}
    cmp = paired_comparison(per_case, reference="video-p2p", metrics=METRICS)
    (root / "paired_vs_video-p2p.json").write_text(json.dumps({"cases": sorted(common), **cmp}, indent=2) + "\n")
    mean = {k: sum(r[k] for r in per_case["video-p2p"]) / len(common) for k in SHOWN}
    lines = [f"# Video-P2P's ablations against video-p2p ({len(common)} cases)", "",
             "| method | " + " | ".join(SHOWN) + " |", "|---|" + "---|" * len(SHOWN),
             "| video-p2p (mean) | " + " | ".join(f"{mean[k]:.2f}" for k in SHOWN) + " |"]
    for m in ABLATIONS:
        cells = []
        for k in SHOWN:
            v = cmp[m].get(k)
            cell = "n/a" if v is None else f"{v['mean_diff']:+.2f} ± {v['se']:.2f}"
            cells.append(f"**{cell}**" if v and (v["better"] or v["worse"]) else cell)
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    (root / "paired_vs_video-p2p.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
