"""The ShapeWorld bench for ASSD and its Fig. 5 ladder at a CPU-affordable iteration count, paired with the stored
``videodirector`` results of the same cases.

``videodirector bench`` runs every method at its defaults (ASSD: the paper's 200 iterations, about 10 minutes
per case and rung on a 2-core CPU). This runs :func:`videodirector.bench.runner.run_bench` with
``assd.iterations`` set, in N shard workers (cases interleaved by kind), and then gathers the cases that every
method finished (``stored_only``) into the usual summary, paired comparison and report. Copy the stored
``cases/videodirector`` of a full run into ``<results>/shapeworld-v2/cases/`` first to compare against it.

    python benchmarks/assd_bench.py --iterations 30 --workers 2 --minutes 20 --results benchmarks/results/assd-30it

On a GPU, run the rungs with ``videodirector bench --device cuda --workers N --set assd.iterations=30 --methods
assd-video-dds,assd-sliding,assd-fusion,assd --results DIR`` and then ``--gather`` here for the ladder report.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

LADDER = ["assd-video-dds", "assd-sliding", "assd-fusion", "assd"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--minutes", type=float, default=20.0, help="stop the workers after this long, then gather")
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/assd-30it"))
    ap.add_argument("--suite", default="shapeworld-v2")
    ap.add_argument("--shard", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--gather", action="store_true", help="only gather the stored cases")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for every rung, e.g. assd.fusion_weight=0.8 (repeatable; YAML values)")
    a = ap.parse_args()
    import torch

    from videodirector.bench.runner import run_bench
    from videodirector.config import parse_settings

    over = {"assd.iterations": a.iterations, **parse_settings(a.set)}
    if a.shard:
        i, n = (int(x) for x in a.shard.split("/"))
        run_bench(a.suite, LADDER, "cpu", results=a.results, shard=(i, n), overrides=over, steps=25, inner_steps=10)
        return
    if not a.gather:
        procs = [subprocess.Popen([sys.executable, __file__, "--iterations", str(a.iterations), "--results", str(a.results),
                                   "--suite", a.suite, "--shard", f"{i}/{a.workers}",
                                   *(x for kv in a.set for x in ("--set", kv))]) for i in range(a.workers)]
        deadline = time.monotonic() + 60 * a.minutes
        while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
            time.sleep(5)
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait()
    torch.set_num_threads(2)
    methods = (["videodirector"] if (a.results / a.suite / "cases" / "videodirector").is_dir() else []) + LADDER
    summary = run_bench(a.suite, methods, "cpu", results=a.results, stored_only=True, overrides=over, steps=25,
                        inner_steps=10)
    for m, s in summary.items():
        print(m, {k: round(v["mean"], 3) for k, v in s.items() if isinstance(v, dict)})
    ladder_report(a.results / a.suite)


def ladder_report(root: Path) -> None:
    """Each rung against the previous one (and the full method against ``videodirector``), paired over the same
    cases with the bench's 2-SE rule: ``ladder.json`` and ``ladder.md``."""
    import json

    from videodirector.bench.runner import METRICS as ALL_METRICS, paired_comparison

    METRICS = tuple(k for k in ALL_METRICS if k != "reconstruction_psnr")  # ASSD has no inversion: D(E(X)) is exact

    per_case = {m: json.loads((root / f"{m}.json").read_text())["cases"] for m in ["videodirector", *LADDER]
                if (root / f"{m}.json").is_file()}
    pairs = list(zip(LADDER, LADDER[1:])) + [("videodirector", m) for m in LADDER if "videodirector" in per_case]
    out, lines = {}, ["# ASSD ladder: each rung against the previous one", "",
                      "Paired over the same cases; Δ = rung − previous (lower is better for trajectory_error_px and flicker); "
                      "*better*/*worse*: the mean paired difference beyond two standard errors.", "",
                      "| rung | against | n | better on | worse on |", "|---|---|---|---|---|"]
    for ref, m in pairs:
        if ref not in per_case or m not in per_case:
            continue
        cmp = paired_comparison({ref: per_case[ref], m: per_case[m]}, reference=ref, metrics=METRICS)[m]
        out[f"{m} vs {ref}"] = cmp
        fmt = lambda k, v: f"{k} {v['mean_diff']:+.3f} ± {v['se']:.3f}"  # noqa: E731
        better = [fmt(k, v) for k, v in cmp.items() if v["better"]]
        worse = [fmt(k, v) for k, v in cmp.items() if v["worse"]]
        n = max((v["n"] for v in cmp.values()), default=0)
        lines.append(f"| {m} | {ref} | {n} | {'; '.join(better) or '—'} | {'; '.join(worse) or '—'} |")
    (root / "ladder.json").write_text(json.dumps(out, indent=2) + "\n")
    (root / "ladder.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
