"""The ShapeWorld bench for ASSD and its Fig. 5 ladder at a CPU-affordable iteration count, paired with the stored
``videodirector`` results of the same cases.

``videodirector bench`` runs every method at its defaults (ASSD: the paper's 200 iterations, about 10 minutes
per case and rung on a 2-core CPU). This runs :func:`videodirector.bench.runner.run_bench` with
``assd.iterations`` set, in N shard workers (cases interleaved by kind), and then gathers the cases that every
method finished (``stored_only``) into the usual summary, paired comparison and report. Copy the stored
``cases/videodirector`` of a full run into ``<results>/shapeworld-v2/cases/`` first to compare against it.

    python benchmarks/assd_bench.py --iterations 30 --workers 2 --minutes 20 --results benchmarks/results/assd-cpu
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
    ap.add_argument("--results", type=Path, default=Path("benchmarks/results/assd-cpu"))
    ap.add_argument("--suite", default="shapeworld-v2")
    ap.add_argument("--shard", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--gather", action="store_true", help="only gather the stored cases")
    a = ap.parse_args()
    import torch

    from videodirector.bench.runner import run_bench

    over = {"assd.iterations": a.iterations}
    if a.shard:
        i, n = (int(x) for x in a.shard.split("/"))
        run_bench(a.suite, LADDER, "cpu", results=a.results, shard=(i, n), overrides=over, steps=25, inner_steps=10)
        return
    if not a.gather:
        procs = [subprocess.Popen([sys.executable, __file__, "--iterations", str(a.iterations), "--results", str(a.results),
                                   "--suite", a.suite, "--shard", f"{i}/{a.workers}"]) for i in range(a.workers)]
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


if __name__ == "__main__":
    main()
