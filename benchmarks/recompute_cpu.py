"""The demo's wall time on this CPU with and without ``model.recompute_feedforward``, runs alternating in one process.

The recomputation saves GPU memory at full size (``benchmarks/results/speed_videodirector_h200_eager_ff_*``); on the
CPU, with the small bundled models, it only adds one matrix multiply per feed-forward backward. This measures what
that costs the demo (both edits of ``videodirector demo``, bundled ShapeWorld models), and checks the edits agree.

    python benchmarks/recompute_cpu.py            # recompute_cpu.{json,md}, about 6 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write  # noqa: E402

from videodirector.world.demo import run_demo  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="pairs of runs (on, off), alternating")
    ap.add_argument("--method", default="videodirector")
    args = ap.parse_args()
    times: dict[str, list[float]] = {"on": [], "off": []}
    metrics: dict[str, dict] = {}
    for _ in range(args.rounds):
        for mode in ("on", "off"):
            with tempfile.TemporaryDirectory() as d:
                t0 = time.perf_counter()
                metrics[mode] = run_demo(Path(d) / "demo", "cpu", method=args.method,
                                         overrides={"model.recompute_feedforward": mode == "on"})
                times[mode].append(time.perf_counter() - t0)
            print(f"recompute {mode}: {times[mode][-1]:.1f} s", flush=True)
    edits = metrics["on"]["edits"]
    same = {name: {k: (edits[name][k], metrics["off"]["edits"][name][k])
                   for k in ("gt_psnr", "edit_accuracy", "reconstruction_psnr")} for name in edits}
    data = {"machine": machine(), "method": args.method, "rounds": args.rounds,
            "wall_s_on": times["on"], "wall_s_off": times["off"],
            "mean_on_s": sum(times["on"]) / len(times["on"]), "mean_off_s": sum(times["off"]) / len(times["off"]),
            "metrics_on_off": same}
    data["cost"] = data["mean_on_s"] / data["mean_off_s"] - 1
    rows = [("demo wall time, recompute on (s)", ", ".join(f"{t:.1f}" for t in times["on"])),
            ("demo wall time, recompute off (s)", ", ".join(f"{t:.1f}" for t in times["off"])),
            ("mean on / off (s)", f"{data['mean_on_s']:.1f} / {data['mean_off_s']:.1f}"),
            ("cost of the recomputation", f"{100 * data['cost']:+.1f} %")]
    rows += [(f"{name} {k} (on, off)", f"{a:.3f}, {b:.3f}") for name, d in same.items() for k, (a, b) in d.items()]
    write("recompute_cpu", data, rows)


if __name__ == "__main__":
    main()
