"""Helpers for benchmark scripts: machine description, the GPU's slowdown counters, result names, JSON + markdown
output, and memory measurement (a peak meter and a per-stage tracker for a VideoDirector run)."""

from __future__ import annotations

import json
import math
import os
import platform
import re
import resource
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

RESULTS = Path(__file__).parent / "results"
GB = 2**30


def machine() -> dict[str, Any]:
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(), "torch": torch.__version__}
    for lib in ("diffusers", "transformers"):
        try:
            info[lib] = __import__(lib).__version__
        except ImportError:
            pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / GB, 1)
        info["cuda"] = torch.version.cuda
    return info


SLOWDOWN_REASONS = {"SW Power Capping": "sw_power_cap", "SW Thermal Slowdown": "sw_thermal",
                    "HW Thermal Slowdown": "hw_thermal", "HW Power Braking": "hw_power_brake", "Sync Boost": "sync_boost"}
"""The counters of ``nvidia-smi -q -d PERFORMANCE`` ("Clocks Event Reasons Counters"), by the key this module reports."""


def parse_slowdown_counters(text: str) -> dict[str, float]:
    """Seconds per slowdown reason from ``nvidia-smi -q -d PERFORMANCE`` output (counters in microseconds since the
    driver loaded), keyed as :data:`SLOWDOWN_REASONS`; reasons the driver does not count are left out."""
    found = {}
    for label, key in SLOWDOWN_REASONS.items():  # "Active" / "Not Active" lines of the same labels are not counters
        m = re.search(rf"^\s*{re.escape(label)}\s*:\s*([\d,]+)\s*(?:us|µs)\s*$", text, flags=re.MULTILINE)
        if m:
            found[key] = int(m.group(1).replace(",", "")) / 1e6
    return found


def slowdown_counters() -> dict[str, float] | None:
    """:func:`parse_slowdown_counters` of the GPU torch uses as ``cuda:0`` (by UUID), or None without CUDA, without
    ``nvidia-smi`` or when it fails."""
    if not torch.cuda.is_available() or shutil.which("nvidia-smi") is None:
        return None
    uuid = getattr(torch.cuda.get_device_properties(0), "uuid", None)
    which = ["-i", f"GPU-{uuid}"] if uuid is not None else []
    try:
        text = subprocess.run(["nvidia-smi", "-q", "-d", "PERFORMANCE", *which], capture_output=True, text=True,
                              timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_slowdown_counters(text) or None


class SlowdownWatch:
    """How long the GPU ran slowed down (power cap, thermal, ...) since the watch started, per reason: a timing
    taken while the card was power-capped measures the card's state as much as the code.
    :meth:`since` is None where the counters cannot be read (CPU, no ``nvidia-smi``)."""

    def __init__(self) -> None:
        self.start = slowdown_counters()

    def since(self) -> dict[str, float] | None:
        now = slowdown_counters() if self.start is not None else None
        if now is None:
            return None
        return {k: round(v - self.start.get(k, 0.0), 3) for k, v in now.items()}


NEVER_STOP_EARLY = {"inversion.early_stop_epsilon": -1.0, "inversion.early_stop_slope": 0.0}
"""Config overrides that keep every null-text step at its full iteration count (the timed worst case)."""


def timed_config(steps: int, inner: int, frames: int, size: int) -> Any:
    """The default ``EditConfig`` at ``steps`` DDIM steps, ``inner`` null-text iterations a step (never stopping
    early) and ``frames`` x ``size``^2 input: what the timing benchmarks run."""
    from videodirector.config import EditConfig, apply_overrides

    return apply_overrides(EditConfig(), {"inversion.num_steps": steps, "inversion.null_inner_steps": inner,
                                          **NEVER_STOP_EARLY, "input.height": size, "input.width": size,
                                          "input.num_frames": frames})


def synthetic_clip(frames: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random frames ``(F, 3, size, size)`` in [-1, 1] and a centred square object mask
    ``(F, 1, size, size)`` covering the middle half of each side: the inputs of the timing benchmarks."""
    g = torch.Generator().manual_seed(0)
    video = torch.rand(frames, 3, size, size, generator=g) * 2 - 1
    masks = torch.zeros(frames, 1, size, size, dtype=torch.bool)
    masks[:, :, size // 4: 3 * size // 4, size // 4: 3 * size // 4] = True
    return video, masks


_VENDOR_WORDS = {"nvidia", "geforce", "tesla", "quadro", "amd", "radeon", "instinct", "graphics"}


def gpu_slug(info: dict[str, Any]) -> str:
    """A short lower-case name for the GPU in ``info`` ("NVIDIA H200" -> ``h200``, "NVIDIA H100 80GB HBM3" ->
    ``h100``, "NVIDIA GeForce RTX 4090" -> ``rtx4090``), or ``cpu`` without one."""
    name = info.get("gpu", "")
    if not name:
        return "cpu"
    words = [w for w in re.split(r"[\s_]+", name.lower()) if w and w not in _VENDOR_WORDS]
    for i, w in enumerate(words):
        if any(c.isdigit() for c in w):
            w = re.split(r"-", w)[0] if re.match(r"^[a-z]+\d+", w) else w
            prefix = words[i - 1] if i > 0 and words[i - 1].isalpha() else ""
            return re.sub(r"[^a-z0-9]", "", prefix + w) or "gpu"
    return re.sub(r"[^a-z0-9]", "", "".join(words)) or "gpu"


def result_name(prefix: str, info: dict[str, Any], device: torch.device, frames: int, size: int) -> str:
    """``<prefix>_<gpu>`` (``speed_h100``, ``speed_h200``) at the full size (16 x 512) on a GPU,
    ``<prefix>_<gpu>_<frames>x<size>`` at another size, and ``<prefix>_<device>_<frames>x<size>`` on the CPU."""
    if device.type == "cuda" and info.get("gpu"):
        return f"{prefix}_{gpu_slug(info)}" + ("" if (frames, size) == (16, 512) else f"_{frames}x{size}")
    return f"{prefix}_{device.type}_{frames}x{size}"


def fmt(v: Any) -> Any:
    """A table cell: floats to 2 decimals (3 significant digits below 0.1), the rest as is."""
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.3g}" if 0 < abs(v) < 0.1 else f"{v:.2f}"
    return v


def write(name: str, data: dict[str, Any], table: list[tuple[str, Any]], out: Path | None = None) -> Path:
    """``<out>/<name>.json`` (all of ``data``) and ``<out>/<name>.md`` (``table``); ``out`` defaults to
    ``benchmarks/results``."""
    out = Path(out) if out is not None else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    lines = [f"# {name}", "", f"machine: {data.get('machine')}", "", "| measure | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in table]
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    return out / f"{name}.json"


# ---------------------------------------------------------------------------------------------- memory


class MemoryMeter:
    """Peak memory since the last :meth:`reset`, in bytes.

    On CUDA: ``torch.cuda.max_memory_allocated`` / ``reset_peak_memory_stats`` (tensor memory of the caching
    allocator, exact, no synchronisation needed: the allocator counts on the host). On the CPU: the process's
    resident set size sampled by a background thread every ``interval`` seconds (whole process: weights, Python,
    libraries; a sampled peak can miss spikes shorter than the interval)."""

    def __init__(self, device: torch.device, interval: float = 0.002) -> None:
        self.cuda = device.type == "cuda"
        self.kind = ("cuda max_memory_allocated (tensors, caching allocator)" if self.cuda
                     else f"cpu: process resident set size, sampled every {interval * 1e3:.0f} ms")
        self._max = 0
        self._max_reserved = 0
        self._stop = threading.Event()
        self._thread = None
        if not self.cuda:
            self._max = rss_bytes()
            self._thread = threading.Thread(target=self._sample, args=(interval,), daemon=True)
            self._thread.start()

    def _sample(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._max = max(self._max, rss_bytes())

    def current(self) -> int:
        return torch.cuda.memory_allocated() if self.cuda else rss_bytes()

    def peak(self) -> int:
        if self.cuda:
            return torch.cuda.max_memory_allocated()
        self._max = max(self._max, rss_bytes())
        return self._max

    def peak_reserved(self) -> int:
        """CUDA: the most the caching allocator held (``max_memory_reserved``: tensors, cached blocks, CUDA-graph
        pools) since :meth:`restart_reserved`, across the per-stage resets in between; 0 on the CPU."""
        if not self.cuda:
            return 0
        return max(self._max_reserved, torch.cuda.max_memory_reserved())

    def restart_reserved(self) -> None:
        self._max_reserved = 0
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()

    def reset(self) -> None:
        if self.cuda:
            self._max_reserved = self.peak_reserved()
            torch.cuda.reset_peak_memory_stats()
        else:
            self._max = rss_bytes()

    def close(self) -> None:
        self._stop.set()


def rss_bytes() -> int:
    """Resident set size of this process now (Linux ``/proc``), else its high-water mark (``getrusage``)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return max_rss_bytes()


def max_rss_bytes() -> int:
    """The process's resident-set high-water mark since it started (``ru_maxrss``: KiB on Linux)."""
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if platform.system() == "Darwin" else r * 1024


class StageTracker:
    """Peak memory per named stage, with stages nested (a null-text iteration inside the pivotal stage inside
    the whole run) and the meter's peak counter reset at every stage boundary.

    At each boundary the peak since the previous boundary is credited to every stage open during that interval,
    except to a stage that excludes the innermost open one (``edit`` excludes ``decode``, so that the edit stage's
    peak is the denoising loop's), and then the counter is reset. A stage entered several times (one STDG gradient
    per step) reports its largest peak over all entries, and ``start_gb`` the most memory held when it began."""

    def __init__(self, meter: MemoryMeter) -> None:
        self.meter = meter
        self.peaks: dict[str, int] = {}
        self.starts: dict[str, int] = {}
        self.calls: dict[str, int] = {}
        self._open: list[tuple[str, frozenset[str]]] = []

    def _fold(self) -> None:
        peak = self.meter.peak()
        names = [n for n, _ in self._open]
        for k, (name, excludes) in enumerate(self._open):
            if excludes.intersection(names[k + 1:]):
                continue
            self.peaks[name] = max(self.peaks.get(name, 0), peak)

    @contextmanager
    def stage(self, name: str, excludes: tuple[str, ...] = ()) -> Iterator[None]:
        self._fold()
        self.meter.reset()
        self.starts[name] = max(self.starts.get(name, 0), self.meter.current())
        self.calls[name] = self.calls.get(name, 0) + 1
        self._open.append((name, frozenset(excludes)))
        try:
            yield
        finally:
            self._fold()
            self._open.pop()
            self.meter.reset()

    def split(self, name: str) -> None:
        """Credit the peak since the last boundary to ``name`` (and to the open stages), then reset: for stages
        marked from a callback rather than entered as a context."""
        peak = self.meter.peak()
        self._fold()
        self.peaks[name] = max(self.peaks.get(name, 0), peak)
        self.calls[name] = self.calls.get(name, 0) + 1
        self.meter.reset()

    def peak_gb(self) -> dict[str, float]:
        return {k: v / GB for k, v in self.peaks.items()}

    def start_gb(self) -> dict[str, float]:
        return {k: v / GB for k, v in self.starts.items()}


STAGES = ("encode", "ddim_inversion", "stdg_gradient", "null_text_iteration", "pivotal", "edit", "decode")
"""The stages :func:`track_videodirector` reports, in run order (plus ``total``, when the caller opens it)."""


@contextmanager
def track_videodirector(models: Any, tracker: StageTracker) -> Iterator[list[str]]:
    """Within the context, every ``VideoDirector`` run on ``models`` reports its stages to ``tracker``.

    The stages are found by wrapping, for the duration of the context only, what ``methods/videodirector.py``
    calls: ``models.encode_video`` (encode), ``ddim_invert`` (DDIM inversion), ``stdg_guidance`` (one STDG
    gradient, with its reference forward), ``null_text_step`` (one step's null-text optimisation: its iterations
    are alike, so its peak is one iteration's, forward + backward to the embedding, above what is held),
    ``VideoDirector._pivotal_tuning`` (the whole pivotal stage), ``VideoDirector.edit`` without its decode (edit)
    and ``models.decode_latents`` (decode). Nothing in ``src`` changes; a name that is not there any more is
    skipped, and the context yields the list of skipped stages."""
    import videodirector.methods.videodirector as vdm

    def wrap(fn: Any, name: str, excludes: tuple[str, ...] = ()) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with tracker.stage(name, excludes):
                return fn(*args, **kwargs)
        wrapped.__wrapped__ = fn  # type: ignore[attr-defined]
        return wrapped

    targets = [(vdm, "ddim_invert", "ddim_inversion", ()), (vdm, "stdg_guidance", "stdg_gradient", ()),
               (vdm, "null_text_step", "null_text_iteration", ()),
               (vdm.VideoDirector, "_pivotal_tuning", "pivotal", ()), (vdm.VideoDirector, "edit", "edit", ("decode",)),
               (models, "encode_video", "encode", ()), (models, "decode_latents", "decode", ())]
    undo: list[tuple[Any, str, Any, bool]] = []
    missing = []
    try:
        for owner, attr, name, excludes in targets:
            if not hasattr(owner, attr):
                missing.append(name)
                continue
            own = attr in vars(owner)  # set on the object itself (class attribute, module global), not inherited
            original = vars(owner)[attr] if own else getattr(owner, attr)
            setattr(owner, attr, wrap(getattr(owner, attr), name, excludes))
            undo.append((owner, attr, original, own))
        yield missing
    finally:
        for owner, attr, original, own in reversed(undo):
            if own:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)
