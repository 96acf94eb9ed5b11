"""Where does ``inversion.cuda_graph``'s reserved memory go? The pivotal stage at full size, eager, then graphed.

``speed.py --cuda-graph-too`` found the graphed edit's allocated peak at the eager one's (14.8 GB) but 24 GB
reserved from the card. This probe runs the pivotal stage (a few steps; the memory does not depend on their number)
on the random full-size models of ``speed.py``, first eagerly, then with ``inversion.cuda_graph``, and reads the
caching allocator around the capture:

* ``<variant>_warmup_peak_reserved_gb``: the most reserved while the graphs warm up eagerly (read as the first
  capture begins);
* ``<variant>_capture_<k>_{begin,end}_{reserved,allocated}_gb``: the allocator when capture ``k`` begins (after
  ``torch.cuda.graph`` empties the cache) and when it ends: what the warm-ups left, and the pool's growth per graph;
* ``<variant>_peak_reserved_gb`` / ``eager_peak_reserved_gb``: the most reserved over each whole inversion.

``--without-gc-too`` first runs the graphed inversion without the garbage collection that
:func:`~videodirector.diffusion.static_graph.capture_together` does before capturing (variant
``graph_without_gc``), then with it (``graph``).

Usage (CUDA; ``PYTORCH_CUDA_ALLOC_CONF`` is recorded, so run it once per allocator setting)::

    python benchmarks/graph_memory_probe.py [--steps 3 --inner 2] [--without-gc-too] [--name NAME] [--out DIR]

Writes ``graph_memory_probe_<gpu>.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import GB, gpu_slug, machine, synthetic_clip, timed_config, write  # noqa: E402
from speed import SOURCE_PROMPT, random_bundle  # noqa: E402

from videodirector import notices  # noqa: E402
from videodirector.config import apply_overrides  # noqa: E402
from videodirector.diffusion import static_graph  # noqa: E402
from videodirector.methods.videodirector import VideoDirector  # noqa: E402


def _gb(n: int) -> float:
    return round(n / GB, 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--inner", type=int, default=2)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--without-gc-too", action="store_true",
                   help="first a graphed run without capture_together's garbage collection (the code before it)")
    p.add_argument("--name", default=None)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("graph_memory_probe.py needs a CUDA GPU")
    device = torch.device("cuda")
    models = random_bundle(device, torch.bfloat16)
    frames, masks = synthetic_clip(args.frames, args.size)
    cfg = timed_config(args.steps, args.inner, args.frames, args.size)
    data: dict = {"machine": machine(), "alloc_conf": os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
                  "frames": args.frames, "size": args.size, "steps": args.steps, "inner": args.inner,
                  "dtype": "bfloat16", "compiled": False}

    def inversion_peak(graphed: bool) -> float:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        VideoDirector(models, apply_overrides(cfg, {"inversion.cuda_graph": graphed})).invert(frames, masks, SOURCE_PROMPT)
        torch.cuda.synchronize()
        return _gb(torch.cuda.max_memory_reserved())

    data["eager_peak_reserved_gb"] = inversion_peak(False)

    events: list[tuple[str, float, float, float]] = []  # (event, reserved, allocated, peak reserved so far)
    original_begin, original_end = torch.cuda.CUDAGraph.capture_begin, torch.cuda.CUDAGraph.capture_end

    def mark(what: str) -> None:
        events.append((what, _gb(torch.cuda.memory_reserved()), _gb(torch.cuda.memory_allocated()),
                       _gb(torch.cuda.max_memory_reserved())))

    def begin(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        mark("begin")
        return original_begin(self, *a, **k)

    def end(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        out = original_end(self, *a, **k)
        torch.cuda.synchronize()
        mark("end")
        return out

    said: list[str] = []
    notices.set_sink(said.append)
    torch.cuda.CUDAGraph.capture_begin, torch.cuda.CUDAGraph.capture_end = begin, end
    real_gc = static_graph.gc
    for variant in ("graph_without_gc", "graph") if args.without_gc_too else ("graph",):
        events.clear()
        static_graph.gc = SimpleNamespace(collect=lambda: 0) if variant == "graph_without_gc" else real_gc
        data[f"{variant}_peak_reserved_gb"] = inversion_peak(True)
        data[f"{variant}_captured"] = bool(events)
        begins = [e for e in events if e[0] == "begin"]
        if begins:
            data[f"{variant}_warmup_peak_reserved_gb"] = begins[0][3]
        for k, e in enumerate(events):
            data[f"{variant}_capture_{k // 2 + 1}_{e[0]}_reserved_gb"] = e[1]
            data[f"{variant}_capture_{k // 2 + 1}_{e[0]}_allocated_gb"] = e[2]
    static_graph.gc = real_gc
    torch.cuda.CUDAGraph.capture_begin, torch.cuda.CUDAGraph.capture_end = original_begin, original_end
    data["notices"] = said or "none"
    name = args.name or f"graph_memory_probe_{gpu_slug(data['machine'])}"
    table = [(k, v) for k, v in data.items() if k != "machine"]
    print(write(name, data, table, args.out))
    for k, v in table:
        print(f"  {k:40s} {v}")


if __name__ == "__main__":
    main()
