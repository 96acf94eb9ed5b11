"""I2VEdit on long ShapeWorld videos: drift per clip with and without skip-interval attention (issue 19).

Each case is a ``shapeworld-v2`` case rendered at ``--frames`` (48) frames. I2VEdit edits it auto-regressively
in clips of ``--chunk`` (16) frames with a one-frame overlap (48 frames: clips 0-15, 15-30, 30-45, 45-47),
once as ``i2vedit-no-skip-interval`` and once as ``i2vedit-skip-interval`` (later clips also attend to clip
1's temporal keys and values, Eq. 3). The user's edited first frame is the exact ground-truth frame 0.

For each clip it reports, against the ground-truth edited video: the object's colour accuracy and shape
accuracy over the clip's frames (``world.read.classify`` per frame) and the clip's PSNR. Drift is the
last full clip against the first. Writes ``i2vedit_long.json`` and ``i2vedit_long.md`` in ``--out``.

    python benchmarks/i2vedit_long.py --cases 4                       # bundled model, CPU: ~1 h
    python benchmarks/i2vedit_long.py --model DIR --device cuda --out DIR
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine  # noqa: E402

from videodirector.api import BUNDLED_WEIGHTS, Editor, bundled_model_config  # noqa: E402
from videodirector.bench.runner import case_overrides, shapeworld_suite  # noqa: E402
from videodirector.config import EditConfig, apply_overrides  # noqa: E402
from videodirector.methods.i2vedit import clip_ranges  # noqa: E402
from videodirector.metrics.ground_truth import psnr  # noqa: E402
from videodirector.world.read import frame_hits  # noqa: E402
from videodirector.io.outputs import write_json  # noqa: E402
from videodirector.world.scene import render  # noqa: E402

METHODS = ("i2vedit-no-skip-interval", "i2vedit-skip-interval")
CASE_IDS = ("00-colour", "12-shape", "01-colour", "13-shape", "02-colour", "14-shape")
"""Object edits only: colour and shape are what drift would lose."""


def joined_ranges(frames: int, chunk: int) -> list[tuple[int, int]]:
    """Each clip's frames in the joined video (later clips lose their first, overlapping, frame)."""
    out = []
    for k, (start, length) in enumerate(clip_ranges(frames, chunk)):
        out.append((start, start + length) if k == 0 else (start + 1, start + length))
    return out


def per_clip_scores(edited: torch.Tensor, target_video: torch.Tensor, target, ranges) -> list[dict[str, float]]:  # noqa: ANN001
    rows = []
    for a, b in ranges:
        hits = frame_hits(edited[a:b], target)
        rows.append({"frames": [a, b - 1], "colour_acc": hits["colour"] / (b - a), "shape_acc": hits["shape"] / (b - a),
                     "psnr": psnr(edited[a:b], target_video[a:b])})
    return rows


def run_cases(base: EditConfig, cases: list, ranges: list[tuple[int, int]], frames: int) -> dict[str, list[dict]]:  # noqa: ANN001
    """Each case at ``frames`` frames, edited by both methods from one inversion; per-clip scores by method."""
    models, results, t0 = None, {m: [] for m in METHODS}, time.time()
    for case in cases:
        src = dataclasses.replace(case.source, frames=frames)
        tgt = src.edited(**case.change)
        video, masks = (x[0] for x in render(src))
        target_video = render(tgt)[0][0]
        inv = None
        for method in METHODS:
            editor = Editor(base, method=method, models=models, overrides=case_overrides(method, case))
            models = editor.models
            if inv is None:  # skip-interval changes only the edit (clip 1's keys/values are read there)
                inv = editor.invert(video, masks, src.caption(), use_cache=False)
            res = editor.method.edit_from_image(inv, target_video[0])
            clips = per_clip_scores(res.frames.cpu(), target_video, tgt, ranges)
            results[method].append({"case": case.id, "clips": clips})
            print(f"[{time.time() - t0:.0f}s] {case.id} {method}: "
                  + " | ".join(f"c{k} col {c['colour_acc']:.2f} shp {c['shape_acc']:.2f} {c['psnr']:.1f} dB"
                               for k, c in enumerate(clips)), flush=True)
    return results


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="image-to-video weights (default: the bundled ShapeWorld model)")
    p.add_argument("--cases", type=int, default=4, help=f"how many of {', '.join(CASE_IDS)}")
    p.add_argument("--case-ids", default="", help="comma-separated case ids instead (one process per case runs "
                   "them side by side; then --gather)")
    p.add_argument("--gather", type=Path, nargs="*", default=None,
                   help="run nothing: merge the i2vedit_long.json files in these folders into --out")
    p.add_argument("--frames", type=int, default=48)
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--lora-steps", type=int, default=None, help="motion LoRA steps (default: the official 250)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "i2vedit-long")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    suite = {c.id: c for c in shapeworld_suite()}
    if args.gather is not None:
        parts = [json.loads((d / "i2vedit_long.json").read_text()) for d in args.gather]
        frames, chunk, lora_steps = parts[0]["frames"], parts[0]["chunk"], parts[0]["lora_steps"]
        ranges = [tuple(r) for r in parts[0]["clips"]]
        cases = [suite[c] for part in parts for c in part["cases"]]
        results = {m: [r for part in parts for r in part["per_case"][m]] for m in METHODS}
        seconds = sum(part["seconds"] for part in parts)
    else:
        ids = [i for i in args.case_ids.split(",") if i] or list(CASE_IDS[: args.cases])
        if unknown := [i for i in ids if i not in suite]:
            p.error(f"unknown case id(s) {unknown}; the suite's ids look like 00-colour")
        over = {**bundled_model_config(args.device), "input.height": 64, "input.width": 64,
                "input.num_frames": args.frames, "i2vedit.chunk_size": args.chunk,
                "i2vedit.model": str(args.model or BUNDLED_WEIGHTS / "i2v")}
        if args.lora_steps is not None:
            over["i2vedit.lora_steps"] = args.lora_steps
        base = apply_overrides(EditConfig(), over)
        frames, chunk, lora_steps = args.frames, args.chunk, base.settings_for("i2vedit").lora_steps
        ranges, cases, t0 = joined_ranges(frames, chunk), [suite[i] for i in ids], time.time()
        results = run_cases(base, cases, ranges, frames)
        seconds = time.time() - t0
    summary = {method: [{key: statistics.fmean(r["clips"][k][key] for r in rows)
                         for key in ("colour_acc", "shape_acc", "psnr")} | {"frames": ranges[k]}
                        for k in range(len(ranges))]
               for method, rows in results.items()}
    data = {"frames": frames, "chunk": chunk, "cases": [c.id for c in cases], "clips": ranges, "lora_steps": lora_steps,
            "summary": summary, "per_case": results, "seconds": seconds, "machine": machine()}
    lines = [f"I2VEdit on {frames}-frame ShapeWorld videos, clips of {chunk} with one frame of overlap, "
             f"{len(cases)} cases ({', '.join(c.id for c in cases)}); mean over cases.", "",
             "| method | clip | frames | colour acc | shape acc | PSNR (dB) |", "|---|---|---|---|---|---|"]
    for method, per_clip in summary.items():
        for k, c in enumerate(per_clip):
            lines.append(f"| {method} | {k + 1} | {c['frames'][0]}-{c['frames'][1] - 1} | {c['colour_acc']:.3f} | "
                         f"{c['shape_acc']:.3f} | {c['psnr']:.2f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "i2vedit_long.json", data)
    (args.out / "i2vedit_long.md").write_text("\n".join(lines) + "\n")
    return data


if __name__ == "__main__":
    main()
