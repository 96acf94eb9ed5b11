"""Is ``inversion.cuda_graph`` the same computation as the eager null-text iteration, on a GPU?

The full-size bf16 run (``speed.py --cuda-graph-too``) can only say how far the graphed edit lands from the
eager one, and in bf16 the null-text optimisation amplifies any rounding (Adam normalises its first steps), so
that difference has no yardstick there. This check runs one whole edit (inversion with null-text and STDG, then
the edit) on the bundled ShapeWorld models and the demo's clip, eagerly and graphed, in float64, float32 and
bf16, and compares every final latent with the float64 eager one (trained weights: the random test models'
trajectories run off to latents in the thousands, where every dtype diverges):

* ``graph_vs_eager``: the graphed run against the eager run of the same dtype;
* ``eager_vs_f64``: the eager run against float64 eager, the rounding yardstick of that dtype;
* a correct capture keeps ``graph_vs_eager`` within the order of ``eager_vs_f64`` (in float64 at rounding
  level); a stale static input or a leftover Adam state moves it by far more.

Every dtype runs as a :func:`~videodirector.models.loading.precision_twin` of the float32 bundle, so all draw the
same posterior sample and differ in arithmetic precision only.

Usage (on a CUDA machine; on the CPU nothing is captured, and the "graph" run is the same static-tensor code
uncaptured)::

    python benchmarks/cuda_graph_check.py [--steps 15 --inner 3] [--out DIR]

Writes ``cuda_graph_check_<gpu>.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import NEVER_STOP_EARLY, RESULTS, gpu_slug, machine, write  # noqa: E402

from videodirector import notices  # noqa: E402
from videodirector.config import apply_overrides  # noqa: E402
from videodirector.methods.videodirector import VideoDirector  # noqa: E402
from videodirector.models.loading import load_models, precision_twin  # noqa: E402
from videodirector.world.demo import DEMO_EDITS, demo_config, demo_spec  # noqa: E402
from videodirector.world.scene import render  # noqa: E402

DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=15, help="DDIM steps (the demo's 15)")
    p.add_argument("--inner", type=int, default=3, help="null-text iterations per step (the demo's 3)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    info = machine()
    cfg = apply_overrides(demo_config(device.type, args.steps, args.inner), NEVER_STOP_EARLY)
    spec = demo_spec()
    video, mask = render(spec)
    frames, masks = video[0], mask[0]
    target = spec.edited(**DEMO_EDITS[0][1]).caption()
    said: list[str] = []
    notices.set_sink(said.append)
    latents: dict[str, torch.Tensor] = {}
    data: dict = {"machine": info, "clip": spec.caption(), "target": target, "steps": args.steps,
                  "null_inner_steps": args.inner, "models": "bundled ShapeWorld",
                  "captured": device.type == "cuda", "seconds": {}}
    models32 = load_models(apply_overrides(cfg, {"model.dtype": "float32"}).model)
    for name, dtype in DTYPES.items():
        models = models32 if dtype == torch.float32 else precision_twin(models32, dtype)
        for graphed in (False, True):
            notices.reset()
            key = f"{name}_{'graph' if graphed else 'eager'}"
            vd = VideoDirector(models, apply_overrides(cfg, {"inversion.cuda_graph": graphed}))
            t0 = time.perf_counter()
            inv = vd.invert(frames.to(models.device, dtype), masks.to(models.device), spec.caption())
            res = vd.edit(inv, target)
            data["seconds"][key] = round(time.perf_counter() - t0, 3)
            latents[key] = res.latents.double().cpu()
            print(f"{key}: {data['seconds'][key]} s", flush=True)
        del models
    data["notices"] = said
    ref = latents["float64_eager"]

    def gap(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
        d = (a - b).abs()
        return {"max": float(d.max()), "mean": float(d.mean())}

    rows = []
    for name in DTYPES:
        g, e = latents[f"{name}_graph"], latents[f"{name}_eager"]
        data[name] = {"graph_vs_eager": gap(g, e), "eager_vs_f64": gap(e, ref), "graph_vs_f64": gap(g, ref)}
        for what, v in data[name].items():
            rows.append((f"{name} {what} (max / mean)", f"{v['max']:.3g} / {v['mean']:.3g}"))
    rows += [("captured", data["captured"]), ("notices", said or "none")]
    rows += [(f"seconds {k}", v) for k, v in data["seconds"].items()]
    name = f"cuda_graph_check_{gpu_slug(info) if device.type == 'cuda' else 'cpu'}"
    path = write(name, data, rows, args.out)
    print(f"\n{path}\n" + "\n".join(f"  {k:<40} {v}" for k, v in rows), flush=True)


if __name__ == "__main__":
    main()
