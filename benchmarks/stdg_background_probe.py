"""What the background-edit STDG coefficients cost the reconstruction (issue 4 follow-up).

For background edits the paper swaps the appearance coefficients: ``[η_f, η_b, ζ_f, ζ_b] = [0.5, 0.5,
0.5, 0]`` (``bench.runner.BACKGROUND_COEFFICIENTS``), so the appearance term guards the object's keys.
In the H100 run of ``shapeworld-v2`` the full method's reconstruction of background and texture cases
was 28 dB against 39 dB without STDG. This script inverts chosen suite cases on the bundled model
(CPU, 64 x 64, as the bench) with the swapped coefficients, with the appearance term off
(``[0.5, 0.5, 0, 0]``) and without STDG, and reports the reconstruction PSNR of each.

    python benchmarks/stdg_background_probe.py [--cases 24-background,31-background --steps 25 --inner 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine, write  # noqa: E402

from videodirector.api import Editor, bundled_model_config  # noqa: E402
from videodirector.bench.runner import (BACKGROUND_COEFFICIENTS, BACKGROUND_COEFFICIENTS_BY_METHOD,  # noqa: E402
                                       shapeworld_suite)
from videodirector.config import EditConfig, apply_overrides  # noqa: E402
from videodirector.world.evaluate import reconstruction_psnr  # noqa: E402
from videodirector.world.scene import render  # noqa: E402

VARIANTS = {"swapped (paper)": {"stdg.coefficients": BACKGROUND_COEFFICIENTS},
            "appearance off": {"stdg.coefficients": BACKGROUND_COEFFICIENTS_BY_METHOD["vd-bg-no-appearance"]},
            "no STDG": {"stdg.enabled": False}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="24-background,31-background")
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--inner", type=int, default=10)
    args = p.parse_args()
    torch.manual_seed(0)
    cases = {c.id: c for c in shapeworld_suite("shapeworld-v2")}
    base = apply_overrides(EditConfig(), {**bundled_model_config("cpu"), "input.height": 64, "input.width": 64,
                                          "inversion.num_steps": args.steps, "inversion.null_inner_steps": args.inner,
                                          "control.edit_target": "background"})
    models, rows, results = None, [], []
    for cid in args.cases.split(","):
        case = cases[cid]
        frames, masks = (x[0] for x in render(case.source))
        for name, over in VARIANTS.items():
            editor = Editor(apply_overrides(base, over), method="videodirector", models=models)
            models = editor.models
            t0 = time.perf_counter()
            inv = editor.invert(frames, masks, case.source.caption(), use_cache=False)
            psnr = reconstruction_psnr(editor, inv, frames)
            results.append({"case": cid, "variant": name, **over, "reconstruction_psnr": psnr,
                            "seconds": time.perf_counter() - t0})
            rows.append((f"{cid}, {name}", f"{psnr:.2f} dB"))
            print(results[-1], flush=True)
    write("stdg_background_probe_cpu", {"machine": machine(), "steps": args.steps, "null_inner_steps": args.inner,
                                        "results": results}, rows)


if __name__ == "__main__":
    main()
