"""Wall time of ``videodirector demo`` (both edits, bundled ShapeWorld models) on this machine, for one method.
Targets on an idle 2-core CPU without GPU: VideoDirector 2 minutes (issue 16), Video-P2P 4 minutes (issue 17),
ASSD 3 minutes (issue 18), I2VEdit 5 minutes (issue 19).

    python benchmarks/demo_time.py                      # VideoDirector: demo_cpu.{json,md}
    python benchmarks/demo_time.py --method video-p2p   # demo_video-p2p_cpu.{json,md}
    python benchmarks/demo_time.py --method assd        # demo_assd_cpu.{json,md}
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import json
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write  # noqa: E402


TARGETS_S = {"videodirector": 120, "video-p2p": 240, "assd": 180, "i2vedit": 300}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", choices=sorted(TARGETS_S), default="videodirector")
    method = ap.parse_args().method
    with tempfile.TemporaryDirectory() as d:
        command = ["videodirector", "demo", "--method", method, "--device", "cpu"]
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "videodirector.cli", *command[1:], "--out", f"{d}/demo"], check=True)
        wall = time.perf_counter() - t0
        metrics = json.loads(Path(f"{d}/demo/metrics.json").read_text())
    target = TARGETS_S[method]
    data = {"machine": machine(), "command": " ".join(command), "method": method, "wall_s": wall,
            "target_s": target, "met": wall <= target, "metrics": metrics}
    write("demo_cpu" if method == "videodirector" else f"demo_{method}_cpu", data, table(data))
    print(json.dumps({k: v for k, v in data.items() if k != "metrics"}, indent=2))


def table(data: dict) -> list[tuple[str, str]]:
    """Rows of the markdown table. ``preserved_psnr`` is what each edit must keep: the background for the
    object edit, the object for the background edit (whose ``background_psnr`` is its edited region)."""
    keys = ("gt_psnr", "background_psnr", "preserved_psnr", "edit_accuracy", "trajectory_error_px", "reconstruction_psnr")
    rows = [("command", f"`{data['command']}`"), ("wall time (s)", f"{data['wall_s']:.1f}"), ("target", f"<= {data['target_s']} s")]
    for name, edit in data["metrics"]["edits"].items():
        rows += [(f"{name.replace('_', ' ')} {k}", f"{edit[k]:.3f}") for k in keys if k in edit]
    return rows


if __name__ == "__main__":
    main()
