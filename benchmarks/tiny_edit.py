"""Time of a complete tiny-model VideoDirector edit (16 frames, 64 x 64, 10 steps, up to 10 null-text
iterations per step) on this machine's CPU. Target (issue 2): under 60 s on the 2-core CI machine.

    python benchmarks/tiny_edit.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, synthetic_clip, write  # noqa: E402

from videodirector.api import Editor  # noqa: E402
from videodirector.config import EditConfig, apply_overrides  # noqa: E402
from videodirector.models.factory import save_tiny_random  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        base, adapter = save_tiny_random(d)
        cfg = apply_overrides(EditConfig(), {
            "model.base": str(base), "model.motion_adapter": str(adapter), "model.device": "cpu",
            "input.height": 64, "input.width": 64, "inversion.num_steps": 10, "inversion.null_inner_steps": 10})
        t0 = time.perf_counter()
        ed = Editor(cfg)
        t_load = time.perf_counter() - t0
        frames, masks = synthetic_clip(16, 64)
        t0 = time.perf_counter()
        inv = ed.invert(frames, masks, "a red circle moving right", use_cache=False)
        t_inv = time.perf_counter() - t0
        t0 = time.perf_counter()
        ed.edit(inv, "a blue square moving right")
        t_edit = time.perf_counter() - t0
    total = t_inv + t_edit
    data = {"machine": machine(), "load_s": t_load, "invert_s": t_inv, "edit_s": t_edit, "total_s": total,
            "mean_null_inner_iterations": inv.meta["mean_inner_iterations"], "target_s": 60, "met": total < 60}
    write("tiny_edit_cpu", data, [("invert (s)", f"{t_inv:.1f}"), ("edit (s)", f"{t_edit:.1f}"),
                                  ("total (s)", f"{total:.1f}"), ("target", "< 60 s"),
                                  ("mean null-text iterations", f"{inv.meta['mean_inner_iterations']:.1f}")])
    print(data)


if __name__ == "__main__":
    main()
