"""Wall time of ``videodirector demo`` (both edits, bundled ShapeWorld models) on this machine.
Target (issue 3): within 3 minutes on a 2-core CPU without GPU.

    python benchmarks/demo_time.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import json
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "videodirector.cli", "demo", "--out", f"{d}/demo", "--device", "cpu"],
                       check=True)
        wall = time.perf_counter() - t0
        metrics = json.loads(Path(f"{d}/demo/metrics.json").read_text())
    data = {"machine": machine(), "wall_s": wall, "target_s": 180, "met": wall <= 180, "metrics": metrics}
    write("demo_cpu", data, table(data))
    print(json.dumps({k: v for k, v in data.items() if k != "metrics"}, indent=2))


def table(data: dict) -> list[tuple[str, str]]:
    """Rows of the markdown table. ``preserved_psnr`` is what each edit must keep: the background for the
    object edit, the object for the background edit (whose ``background_psnr`` is its edited region)."""
    keys = ("gt_psnr", "background_psnr", "preserved_psnr", "edit_accuracy", "trajectory_error_px", "reconstruction_psnr")
    rows = [("wall time (s)", f"{data['wall_s']:.1f}"), ("target", "<= 180 s")]
    for name, edit in data["metrics"]["edits"].items():
        rows += [(f"{name.replace('_', ' ')} {k}", f"{edit[k]:.3f}") for k in keys]
    return rows


if __name__ == "__main__":
    main()
