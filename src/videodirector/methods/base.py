"""What every editing method shares: the :class:`Inversion` value, :class:`EditResult`, progress
reporting and the method registry used by the CLI and the benchmark."""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file
from torch import Tensor

from ..config import ANIMATEDIFF_MAX_FRAMES
from ..errors import CacheEntryError, ConfigError

Progress = Callable[[str, int, int], None]
"""``progress(stage, step, total)``: called after each step of each stage."""


def no_progress(stage: str, step: int, total: int) -> None:  # noqa: ARG001
    return None


@dataclass
class Inversion:
    """Everything stage 2 needs, as one serialisable value (safetensors + JSON).

    Attributes:
        latents: DDIM-inversion latents ``(T + 1, C, F, h, w)``; index 0 is the clean latent, index T is z*_T.
        masks: object masks ``(F, 1, H, W)`` bool, ellipse-augmented when configured.
        source_frames: the input ``(F, 3, H, W)`` in [-1, 1] (for side-by-side outputs and metrics).
        null_embeddings: per-step optimised null-text ``(T, 1 or F, 77, D)``, or None.
        guidance: per-step STDG ``(T, C, F, h, w)``, or None.
        reconstruction: end of the stage-1 trajectory ``(1, C, F, h, w)`` (what inversion alone gives back).
        meta: prompts, timesteps, settings, model fingerprint, iteration counts, timings.
    """

    latents: Tensor
    masks: Tensor
    source_frames: Tensor
    null_embeddings: Tensor | None = None
    guidance: Tensor | None = None
    reconstruction: Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_steps(self) -> int:
        return self.latents.shape[0] - 1

    TENSOR_FILE: ClassVar[str] = "inversion.safetensors"
    META_FILE: ClassVar[str] = "inversion.json"
    FILES: ClassVar[tuple[str, str]] = ("inversion.safetensors", "inversion.json")
    """The files of a cache entry (what ``atomic_folder(..., own_files=Inversion.FILES)`` may replace)."""
    INTEGRITY_KEY: ClassVar[str] = "_integrity"
    FORMAT: ClassVar[str] = "videodirector-inversion/1"

    def save(self, folder: str | Path) -> None:
        """Write ``inversion.safetensors`` and ``inversion.json`` (the meta, plus under ``_integrity`` the
        tensor file's size and sha256 and each tensor's shape and dtype), each atomically (temp + rename),
        the tensors first: the JSON, written last, vouches for them."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tensors = {"latents": self.latents, "masks": self.masks.to(torch.uint8), "source_frames": self.source_frames}
        for k in ("null_embeddings", "guidance", "reconstruction"):
            v = getattr(self, k)
            if v is not None:
                tensors[k] = v
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        target = folder / self.TENSOR_FILE
        tmp = folder / f".{self.TENSOR_FILE}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            save_file(tensors, str(tmp))
            size, digest = _file_digest(tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        record = {"format": self.FORMAT, "file": self.TENSOR_FILE, "size": size, "sha256": digest,
                  "tensors": {k: {"shape": list(v.shape), "dtype": _dtype_name(v.dtype)} for k, v in tensors.items()}}
        meta = {k: v for k, v in self.meta.items() if k != self.INTEGRITY_KEY}
        text = json.dumps({**meta, self.INTEGRITY_KEY: record}, indent=2, default=str) + "\n"
        tmp = folder / f".{self.META_FILE}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            tmp.write_text(text)
            os.replace(tmp, folder / self.META_FILE)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, folder: str | Path, device: torch.device | str = "cpu",
             expected: dict[str, Any] | None = None) -> "Inversion":
        """Read and verify a saved inversion; any problem raises :class:`CacheEntryError` (one line).

        Checks: both files exist and are regular files; the JSON parses and holds the integrity record;
        the tensor file has the recorded size and sha256; the tensors load with the recorded names,
        shapes and dtypes; the shapes agree (``latents (T+1, C, F, h, w)``, ``masks (F, 1, H, W)`` of 0/1,
        ``source_frames (F, 3, H, W)``, ``null_embeddings (T, 1|F, L, D)``, ``guidance (T, C, F, h, w)``,
        ``reconstruction (1, C, F, h, w)``, ``H/h = W/w``, ``len(meta["timesteps"]) = T``); every float
        is finite. ``expected`` maps meta keys to the values the caller needs (compared after a JSON
        round trip); two keys are checked against the tensors instead: ``num_steps`` (T) and ``shape``
        (``{tensor name: shape}``).
        """
        folder = Path(folder)

        def bad(problem: str) -> CacheEntryError:
            exc = CacheEntryError(f"inversion cache entry {folder} {problem}; compute it again with "
                                  "'videodirector invert --overwrite' (or pass --no-cache)")
            exc.folder = folder  # type: ignore[attr-defined]
            exc.problem = problem  # type: ignore[attr-defined]
            return exc

        if not folder.is_dir():
            raise bad("does not exist (or is not a folder)")
        for name in cls.FILES:
            try:
                st = os.stat(folder / name)
            except FileNotFoundError:
                raise bad(f"is incomplete: {name} is missing") from None
            except OSError as exc:
                raise bad(f"cannot be read: {name}: {exc.strerror or exc}") from None
            if not stat.S_ISREG(st.st_mode):
                raise bad(f"is damaged: {name} is not a regular file")
        try:
            doc = json.loads((folder / cls.META_FILE).read_text())
        except UnicodeDecodeError:
            raise bad(f"is damaged: {cls.META_FILE} is not text") from None
        except json.JSONDecodeError as exc:
            raise bad(f"is damaged: {cls.META_FILE} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except OSError as exc:
            raise bad(f"cannot be read: {cls.META_FILE}: {exc.strerror or exc}") from None
        if not isinstance(doc, dict):
            raise bad(f"is damaged: {cls.META_FILE} is not a JSON object")
        rec = doc.pop(cls.INTEGRITY_KEY, None)
        if not (isinstance(rec, dict) and isinstance(rec.get("size"), int) and isinstance(rec.get("sha256"), str)
                and isinstance(rec.get("tensors"), dict)):
            raise bad(f"has no integrity record in {cls.META_FILE} (written by an older version, or edited)")
        if rec.get("format") != cls.FORMAT:
            raise bad(f"has format {rec.get('format')!r}, this version reads {cls.FORMAT!r}")
        try:
            data = (folder / cls.TENSOR_FILE).read_bytes()
        except OSError as exc:
            raise bad(f"cannot be read: {cls.TENSOR_FILE}: {exc.strerror or exc}") from None
        if len(data) != rec["size"]:
            raise bad(f"is damaged: {cls.TENSOR_FILE} has {len(data):,} bytes but its record says {rec['size']:,} "
                      "(truncated or replaced)")
        if hashlib.sha256(data).hexdigest() != rec["sha256"]:
            raise bad(f"is damaged: {cls.TENSOR_FILE} does not match its recorded sha256 (changed after it was written)")
        try:
            t = load_safetensors_bytes(data)
        except Exception as exc:  # noqa: BLE001  (safetensors raises its own error types)
            raise bad(f"is damaged: {cls.TENSOR_FILE} cannot be read ({str(exc).splitlines()[0] if str(exc) else exc})") from None
        del data
        want = {k: (tuple(v.get("shape", ())), v.get("dtype")) for k, v in rec["tensors"].items() if isinstance(v, dict)}
        got = {k: (tuple(v.shape), _dtype_name(v.dtype)) for k, v in t.items()}
        if want != got:
            diff = sorted(set(want) ^ set(got)) or [k for k in got if want.get(k) != got[k]]
            raise bad(f"is damaged: its tensors differ from its record ({', '.join(diff)})")
        problem = _shape_problem(t, doc)
        if problem:
            raise bad(f"is inconsistent: {problem}")
        for k, v in t.items():
            if v.is_floating_point() and not torch.isfinite(v).all():
                raise bad(f"holds non-finite values (NaN or inf) in {k}")
        if expected:
            mismatch = _expected_problem(expected, doc, t)
            if mismatch:
                raise bad(f"was made for other inputs or settings: {mismatch}")
        t = {k: v.to(device) for k, v in t.items()}
        return cls(t["latents"], t["masks"].bool(), t["source_frames"], t.get("null_embeddings"), t.get("guidance"),
                   t.get("reconstruction"), doc)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _file_digest(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _shape_problem(t: dict[str, Tensor], meta: dict[str, Any]) -> str | None:
    """What is inconsistent between the tensors of an inversion (None when they agree)."""
    for k in ("latents", "masks", "source_frames"):
        if k not in t:
            return f"{k} is missing"
    unknown = sorted(set(t) - {"latents", "masks", "source_frames", "null_embeddings", "guidance", "reconstruction"})
    if unknown:
        return f"unknown tensor {unknown[0]}"
    lat, masks, src = t["latents"], t["masks"], t["source_frames"]
    if lat.ndim != 5 or lat.shape[0] < 1 or not lat.is_floating_point():
        return f"latents have shape {tuple(lat.shape)} ({lat.dtype}), not (T+1, C, F, h, w) floats with T >= 0"
    steps, c, f, h, w = lat.shape[0] - 1, *lat.shape[1:]
    if masks.ndim != 4 or masks.shape[:2] != (f, 1):
        return f"masks have shape {tuple(masks.shape)}, not ({f}, 1, H, W) for the latents' {f} frames"
    H, W = masks.shape[2:]
    if src.ndim != 4 or tuple(src.shape) != (f, 3, H, W) or not src.is_floating_point():
        return f"source_frames have shape {tuple(src.shape)}, not ({f}, 3, {H}, {W}) floats like the masks"
    if H % h or W % w or H // h != W // w:
        return f"frames {H}x{W} do not match latents {h}x{w} (one scale factor for both sides)"
    if masks.dtype not in (torch.uint8, torch.bool) or (masks.dtype == torch.uint8 and bool((masks > 1).any())):
        return "masks hold values other than 0 and 1"
    if "null_embeddings" in t:
        ne = t["null_embeddings"]
        if ne.ndim != 4 or ne.shape[0] != steps or ne.shape[1] not in (1, f):
            return f"null_embeddings have shape {tuple(ne.shape)}, not ({steps}, 1 or {f}, L, D)"
    if "guidance" in t and tuple(t["guidance"].shape) != (steps, c, f, h, w):
        return f"guidance has shape {tuple(t['guidance'].shape)}, not ({steps}, {c}, {f}, {h}, {w})"
    if "reconstruction" in t and tuple(t["reconstruction"].shape) != (1, c, f, h, w):
        return f"reconstruction has shape {tuple(t['reconstruction'].shape)}, not (1, {c}, {f}, {h}, {w})"
    ts = meta.get("timesteps")
    if isinstance(ts, list) and len(ts) != steps:
        return f"{len(ts)} timesteps in the meta for {steps} steps in the latents"
    return None


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _expected_problem(expected: dict[str, Any], meta: dict[str, Any], t: dict[str, Tensor]) -> str | None:
    for k, v in expected.items():
        if k == "num_steps":
            have: Any = t["latents"].shape[0] - 1
        elif k == "shape":
            for name, shape in (v or {}).items():
                got = list(t[name].shape) if name in t else None
                if got != list(shape):
                    return f"{name} has shape {got}, {list(shape)} expected"
            continue
        else:
            if k not in meta:
                return f"it does not record {k}"
            have = meta[k]
        want = json.loads(json.dumps(v, default=str))
        if have != want and not (isinstance(have, float) and isinstance(want, float) and math.isclose(have, want)):
            return f"{k} is {_short(have)}, {_short(want)} expected"
    return None


@dataclass
class EditResult:
    """An edited video: frames ``(F, 3, H, W)`` in [-1, 1], its latents, and what produced it."""

    frames: Tensor
    latents: Tensor
    target_prompt: str
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


class EditingMethod(Protocol):
    """Methods with an inversion stage implement both; others implement ``edit`` from the video. A method
    whose ``invert`` takes no DDIM steps (ASSD only encodes E(X)) says so with ``inversion_steps = 0``
    (else the cache expects ``inversion.num_steps``)."""

    name: str

    def invert(self, frames: Tensor, masks: Tensor, source_prompt: str, progress: Progress = no_progress) -> Inversion: ...

    def edit(self, inversion: Inversion, target_prompt: str, progress: Progress = no_progress) -> EditResult: ...


MethodFactory = Callable[..., EditingMethod]
METHODS: dict[str, tuple[MethodFactory, dict[str, Any], str]] = {}
MODEL_LOADERS: dict[str, Callable[[Any], Any]] = {}
"""Methods whose models are not the AnimateDiff bundle: name -> ``loader(cfg: EditConfig)`` (the API calls it
instead of ``models.loading.load_models(cfg.model)``)."""
MAX_FRAMES: dict[str, int] = {}
"""Frames a method takes, where it is not AnimateDiff's 32 (I2VEdit cuts videos into clips)."""


def register(name: str, factory: MethodFactory, overrides: dict[str, Any] | None = None, doc: str = "",
             loader: Callable[[Any], Any] | None = None, max_frames: int = ANIMATEDIFF_MAX_FRAMES) -> None:
    """Make a method (or a variant of one: the same factory with config overrides) available by name;
    ``loader(cfg)`` loads its models when they are not the AnimateDiff bundle."""
    METHODS[name] = (factory, dict(overrides or {}), doc)
    if loader is not None:
        MODEL_LOADERS[name] = loader
    if max_frames != ANIMATEDIFF_MAX_FRAMES:
        MAX_FRAMES[name] = max_frames


def check_frames(num_frames: int, method: str) -> None:
    """One line before any work when ``method`` cannot take ``num_frames`` frames."""
    limit = MAX_FRAMES.get(method, ANIMATEDIFF_MAX_FRAMES)
    if not 1 <= num_frames <= limit:
        raise ConfigError(f"input.num_frames={num_frames}: {method} takes 1 to {limit} frames; use --frames 16")


def method_names() -> list[str]:
    return list(METHODS)
