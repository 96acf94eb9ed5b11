"""Re-score ``edit_accuracy`` of a stored bench run from its qualitative strips.

    python benchmarks/rescore_strips.py [--results benchmarks/results/shapeworld-v1] [--kinds texture]

A strip (``strips/<case>.png``, lossless) holds frames 0, 4, 8 and 12 of the source, the ground
truth and each method, in the row order of the report. When a metric's rule changes after a run
(here: texture edits counted whatever the phase and period of the new pattern, see
``world.evaluate``), this re-scores the stored frames with the current rule, without re-running
anything. The source and ground-truth rows are checked against fresh renderings first, so a strip
read in the wrong layout is an error, not a wrong number.

Writes ``benchmarks/results/rescore_<suite>.{json,md}``: per method and kind, the stored 16-frame
accuracy and the current rule on the 4 strip frames.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from _common import machine, write
from videodirector.bench.runner import Case, shapeworld_suite
from videodirector.world.evaluate import edit_accuracy
from videodirector.world.scene import render

STRIP_FRAMES = [0, 4, 8, 12]


def strip_rows(png: Path, size: int = 64) -> list[torch.Tensor]:
    """The strip's rows as ``(4, 3, size, size)`` tensors in [-1, 1]."""
    img = np.asarray(Image.open(png).convert("RGB"))
    rows = []
    for r in range(img.shape[0] // size):
        row = img[r * size:(r + 1) * size]
        frames = np.stack([row[:, k * size:(k + 1) * size] for k in range(row.shape[1] // size)])
        rows.append(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1)
    return rows


def checked_rows(png: Path, case: Case, methods: int) -> list[torch.Tensor]:
    """The strip's rows, after checking that it has one per method and that its first two rows are this case's
    source and ground truth (a strip read in the wrong layout is an error, not a wrong number)."""
    rows = strip_rows(png)
    if len(rows) != 2 + methods:
        raise SystemExit(f"{png}: {len(rows)} rows, expected source, ground truth and {methods} methods")
    for row, spec in zip(rows[:2], (case.source, case.target)):
        want = render(spec)[0][0][STRIP_FRAMES]
        if (row - want).abs().max() > 2 / 127.5:  # uint8 rounding
            raise SystemExit(f"{png}: the first rows are not this case's source and ground truth")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", type=Path, default=Path(__file__).parent / "results" / "shapeworld-v1")
    p.add_argument("--kinds", default="colour,shape,background,texture")
    args = p.parse_args()
    suite = args.results.name
    kinds = set(args.kinds.split(","))
    summary = json.loads((args.results / "summary.json").read_text())
    methods = list(summary)
    cases = {c.id: c for c in shapeworld_suite(suite)}
    per: dict[str, dict[str, list[tuple[float, float]]]] = {m: {} for m in methods}
    for png in sorted((args.results / "strips").glob("*.png")):
        case = cases[png.stem]
        if case.kind not in kinds:
            continue
        rows = checked_rows(png, case, len(methods))
        for m, frames in zip(methods, rows[2:]):
            stored = json.loads((args.results / "cases" / m / f"{case.id}.json").read_text())["edit_accuracy"]
            now = edit_accuracy(frames, case.source, case.target, STRIP_FRAMES)
            per[m].setdefault(case.kind, []).append((stored, now))
    result = {"results": str(args.results.relative_to(Path(__file__).parent.parent))
              if args.results.is_relative_to(Path(__file__).parent.parent) else args.results.name,
              "frames": STRIP_FRAMES, "machine": machine(),
              "edit_accuracy": {m: {k: {"cases": len(v), "stored_16_frames": sum(a for a, _ in v) / len(v),
                                        "current_rule_4_frames": sum(b for _, b in v) / len(v)}
                                    for k, v in by_kind.items()} for m, by_kind in per.items()}}
    table = [(f"{m} {k} ({v['cases']} cases)",
              f"stored {v['stored_16_frames']:.2f} -> current rule {v['current_rule_4_frames']:.2f}")
             for m, by_kind in result["edit_accuracy"].items() for k, v in by_kind.items()]
    write(f"rescore_{suite}", result, table)
    for row in table:
        print(*row)


if __name__ == "__main__":
    main()
