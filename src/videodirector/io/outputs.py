"""Writers for everything a person looks at: mp4, gif, side-by-side video, contact sheet, JSON.

Every output folder is written atomically: files go to a hidden sibling folder
(``.NAME.tmp-PID-XXXXXXXX``, with an owner record of pid, host and start time) that is renamed into
place at the end, so a crash never leaves a half-written result. Each finished folder holds a
manifest, ``.videodirector-output.json`` (tool, version, time, and every file written with its
size). Nothing the user had is lost:

* an existing folder is replaced only with ``overwrite=True``, and only when it holds nothing but
  the files its manifest lists (a folder without a manifest, or with any other file, is refused,
  naming one such file);
* ``--out`` may not be an existing file, a path under a file, a symbolic link, a mount point, the
  current folder or a folder that contains it, a folder that is or contains an input, or a folder
  inside an input folder; its parent must be writable. :func:`check_output_location` checks all of
  this without creating anything, so the CLI calls it before any heavy work;
* hidden temporary folders left by a killed run are removed by the next run (only those whose owner
  process is gone, on this host); a previous output that a killed run had moved aside is put back.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import stat
import time
import uuid
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from .. import notices
from ..errors import OutputExistsError, OutputLocationError

MANIFEST = ".videodirector-output.json"
"""The manifest of every output folder: what the tool wrote there."""
OWNER = ".videodirector-tmp.json"
"""The owner record of a temporary folder: pid, host and start time of the run writing it."""
TOOL = "videodirector"
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-(?P<tag>[0-9a-f]{8})$")


def to_uint8(frames: Tensor) -> np.ndarray:
    """``(F, 3, H, W)`` in [-1, 1] -> ``(F, H, W, 3)`` uint8 (rounded)."""
    x = ((frames.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).numpy()


# ----------------------------------------------------------------------------- ownership
def _read_manifest(folder: Path) -> dict[str, int] | None:
    """``{relative path: size}`` from a folder's manifest, or None when it has no valid one."""
    try:
        st = os.lstat(folder / MANIFEST)
        if not stat.S_ISREG(st.st_mode):
            return None
        doc = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("tool") != TOOL or not isinstance(doc.get("files"), list):
        return None
    files: dict[str, int] = {}
    for entry in doc["files"]:
        if isinstance(entry, dict) and isinstance(entry.get("path"), str):
            files[entry["path"]] = int(entry.get("size", -1))
    return files


def foreign_file(folder: str | Path, own_files: Collection[str] = ()) -> str | None:
    """The first file (relative path) in ``folder`` that the tool did not write, or None.

    The tool's own files are those its manifest lists (and the manifest itself), plus ``own_files``
    (names at the top level that the caller knows to be its own, e.g. the two files of an inversion
    cache entry). Links and special files always count as foreign; empty folders do not."""
    folder = Path(folder)
    listed = _read_manifest(folder) or {}
    own = set(own_files)
    for root, dirs, files in os.walk(folder):
        rel_root = Path(root).relative_to(folder)
        for d in dirs:
            if os.path.islink(os.path.join(root, d)):
                return (rel_root / d).as_posix()
        for f in sorted(files):
            rel = (rel_root / f).as_posix()
            if rel == MANIFEST or rel in own or (rel in listed and not os.path.islink(os.path.join(root, f))):
                continue
            return rel
    return None


def _nearest_existing(path: Path) -> Path:
    for anc in (path, *path.parents):
        if os.path.lexists(anc):
            return anc
    return Path(path.anchor or "/")


def _writable(folder: str | Path) -> bool:
    """Whether this process may create entries in ``folder``."""
    return os.access(folder, os.W_OK | os.X_OK)


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_output_location(out: str | Path, overwrite: bool = False, *, own_files: Collection[str] = (),
                          inputs: Iterable[str | Path | None] = (), flag: str = "--out") -> None:
    """Refuse (one line) an output folder that cannot be written or whose writing would lose files the
    tool did not write. Creates nothing; the CLI calls it before any heavy work, and :func:`atomic_folder`
    calls it again. Raises :class:`OutputExistsError` for an existing folder without ``overwrite`` and
    :class:`OutputLocationError` for the rest. ``inputs`` are the input paths (video, masks, config):
    the output may neither be nor contain one, nor lie inside an input folder. ``own_files``: see
    :func:`foreign_file`. ``flag`` names the option in messages (``--out``, ``--cache-dir``)."""
    out = Path(out)
    try:
        absolute = Path(os.path.abspath(out))
        real = Path(os.path.realpath(out))
        cwd = Path(os.path.realpath(os.getcwd()))
    except (OSError, ValueError) as exc:
        raise OutputLocationError(f"{flag} {out} is not a usable path ({exc}); choose another {flag}") from None
    if _is_within(cwd, real):
        raise OutputLocationError(f"{flag} {out} is the current folder or contains it, and the tool would replace it; "
                                  f"choose a new folder, e.g. {flag} {out / 'result'}")
    for inp in inputs:
        if not inp:
            continue
        ri = Path(os.path.realpath(inp))
        if _is_within(ri, real):
            raise OutputLocationError(f"{flag} {out} is or contains the input {inp}; choose a folder apart from the "
                                      "inputs")
        if os.path.isdir(ri) and _is_within(real, ri):
            raise OutputLocationError(f"{flag} {out} is inside the input folder {inp}, and inputs are never written "
                                      f"to; choose a folder outside it")
    try:
        st = os.lstat(out)
    except FileNotFoundError:
        st = None
    except NotADirectoryError:
        st = None  # a path under a file: found below
    except OSError as exc:
        raise OutputLocationError(f"cannot use {flag} {out}: {exc.strerror or exc}; choose another {flag}") from None
    if st is None:
        anc = _nearest_existing(absolute.parent)
        if not os.path.isdir(anc):
            raise OutputLocationError(f"{flag} {out} is under {anc}, which is a file, not a folder; "
                                      f"choose another {flag}")
        if not _writable(anc):
            raise OutputLocationError(f"cannot create {flag} {out}: {anc} is not writable (permission denied); "
                                      f"choose another {flag}")
        return
    if stat.S_ISLNK(st.st_mode):
        raise OutputLocationError(f"{flag} {out} is a symbolic link (to {real}); give the folder itself or choose "
                                  f"another {flag}")
    if not stat.S_ISDIR(st.st_mode):
        raise OutputLocationError(f"{flag} {out} is an existing file, not a folder; choose another {flag} (the tool "
                                  "writes a folder of results)")
    if os.path.ismount(out):
        raise OutputLocationError(f"{flag} {out} is a mount point; choose a folder inside it")
    if not _writable(absolute.parent):
        raise OutputLocationError(f"cannot replace {flag} {out}: {absolute.parent} is not writable (permission "
                                  f"denied); choose another {flag}")
    foreign = foreign_file(out, own_files)
    if not overwrite:
        if foreign is None:
            raise OutputExistsError(f"output folder {out} already exists; pass --overwrite to replace it or choose "
                                    f"another {flag}")
        raise OutputExistsError(f"output folder {out} already exists and holds {foreign!r}, which videodirector did "
                                f"not write; choose another {flag} (--overwrite replaces only videodirector's own "
                                "outputs)")
    if foreign is not None:
        raise OutputLocationError(f"{flag} {out} holds {foreign!r}, which videodirector did not write, so --overwrite "
                                  f"will not replace it; choose another {flag} or move that file away")


# ----------------------------------------------------------------------------- temporary folders
def _write_owner(folder: Path, target: str) -> None:
    record = {"tool": TOOL, "pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
              "target": target}
    (folder / OWNER).write_text(json.dumps(record) + "\n")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: another user's live process; anything else: assume alive
        return True
    return True


def clean_stale_temp(parent: str | Path, name: str | None = None) -> list[Path]:
    """Remove the hidden temporary folders (``.NAME.tmp-PID-XXXXXXXX``, ``.NAME.old-PID-XXXXXXXX``)
    that killed runs left in ``parent`` (for output ``name`` only, when given); returns what it removed.

    A folder is touched only when it is recognisably the tool's (its name has that form and it holds
    an owner record naming that pid, or a manifest) and its owner process no longer exists on this
    host; an empty ``.tmp`` folder of a dead pid (killed before its owner record) is removed too. A
    ``.old`` folder (a previous output moved aside just before the new one took its place) is put back
    as ``NAME`` when ``NAME`` is missing, instead of being removed."""
    parent = Path(parent)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return removed
    host = socket.gethostname()
    for e in entries:
        m = _TEMP_RE.match(e.name)
        if not m or (name is not None and m["name"] != name) or not e.is_dir(follow_symlinks=False):
            continue
        folder = Path(e.path)
        pid = int(m["pid"])
        owner = None
        try:
            owner = json.loads((folder / OWNER).read_text())
        except (OSError, ValueError):
            pass
        if isinstance(owner, dict) and owner.get("tool") == TOOL:
            if owner.get("pid") != pid or owner.get("host") not in (None, host):
                continue
        elif _read_manifest(folder) is None:
            # not recognisably ours, unless empty (killed between creating it and writing its owner record):
            # removing an empty folder loses nothing
            if not _pid_alive(pid) and m["kind"] == "tmp":
                try:
                    folder.rmdir()
                    removed.append(folder)
                except OSError:
                    pass
            continue
        if _pid_alive(pid):
            continue
        target = parent / m["name"]
        if m["kind"] == "old" and not os.path.lexists(target):
            try:
                os.replace(folder, target)
                (target / OWNER).unlink(missing_ok=True)
                notices.warn(f"put back {target}: an interrupted run had moved it aside to replace it")
                continue
            except OSError:
                pass
        shutil.rmtree(folder, ignore_errors=True)
        if not os.path.lexists(folder):
            removed.append(folder)
    if removed:
        notices.warn(f"removed {len(removed)} temporary folder(s) of interrupted runs in {parent}")
    return removed


def _write_manifest(folder: Path) -> None:
    from .. import __version__

    files = []
    for root, _dirs, names in os.walk(folder):
        for n in sorted(names):
            f = Path(root) / n
            rel = f.relative_to(folder).as_posix()
            if rel in (MANIFEST, OWNER):
                continue
            files.append({"path": rel, "size": os.lstat(f).st_size})
    doc = {"tool": TOOL, "version": __version__, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
           "note": "written by videodirector; --overwrite replaces this folder only while it holds just these files",
           "files": sorted(files, key=lambda x: x["path"])}
    atomic_write_bytes(folder / MANIFEST, (json.dumps(doc, indent=2) + "\n").encode())


@contextmanager
def atomic_folder(out: str | Path, overwrite: bool = False, *, own_files: Collection[str] = (),
                  inputs: Iterable[str | Path | None] = (), flag: str = "--out") -> Iterator[Path]:
    """Yield a temporary folder that becomes ``out`` when the block succeeds.

    Checks ``out`` with :func:`check_output_location` first (same keyword arguments), removes what
    killed runs left next to it (:func:`clean_stale_temp`), and at the end writes the manifest and
    renames the folder into place. If ``out`` changed during the run so that replacing it would now
    lose files, the finished results are kept next to it as ``NAME.new-XXXXXXXX`` and the error says so;
    a folder of the tool's own that appeared meanwhile (another run) is replaced."""
    out = Path(out)
    inputs = list(inputs)
    check_output_location(out, overwrite, own_files=own_files, inputs=inputs, flag=flag)
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputLocationError(f"cannot create {parent}: {exc.strerror or exc}; choose another {flag}") from None
    clean_stale_temp(parent, out.name)
    tmp = parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        _write_owner(tmp, out.name)
        yield tmp
        _write_manifest(tmp)  # before the owner record goes: a killed run's folder is always recognisable
        (tmp / OWNER).unlink()
        _commit(tmp, out, own_files, inputs, flag)
    except BaseException:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _commit(tmp: Path, out: Path, own_files: Collection[str], inputs: list, flag: str) -> None:
    try:  # the folder may have changed during the run: only the tool's own output may be replaced
        check_output_location(out, True, own_files=own_files, inputs=inputs, flag=flag)
    except (OutputExistsError, OutputLocationError) as exc:
        keep = out.parent / f"{out.name}.new-{uuid.uuid4().hex[:8]}"
        os.replace(tmp, keep)
        raise type(exc)(f"{exc}; the finished results are in {keep}") from None
    old = None
    if os.path.lexists(out):
        old = out.parent / f".{out.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def staged_entries(dest: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder inside the folder ``dest`` (created if missing); when the block succeeds,
    each entry written there replaces the entry of the same name in ``dest`` (two renames in one folder: the
    old entry aside, the new one into place; the old one is put back if the second fails), and every other
    entry of ``dest`` stays. On failure the staging folder goes and ``dest`` keeps its entries. For exports
    into a folder that holds more than the export (the package's ``weights/`` holds both bundled models)."""
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise OutputLocationError(f"{dest} is a file; export into a folder")
    dest.mkdir(parents=True, exist_ok=True)
    staged = dest / f".staged-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staged.mkdir()
    try:
        yield staged
        for entry in sorted(staged.iterdir()):
            target, old = dest / entry.name, dest / f".{entry.name}.old-{uuid.uuid4().hex[:8]}"
            had = os.path.lexists(target)
            if had:
                os.replace(target, old)
            try:
                os.replace(entry, target)
            except BaseException:
                if had:
                    os.replace(old, target)
                raise
            if had:
                shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    finally:
        shutil.rmtree(staged, ignore_errors=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary sibling renamed into place (removed on failure)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    return str(o)


def write_video(path: str | Path, frames: np.ndarray, fps: float = 8, *, crf: int = 18) -> None:
    """Write ``(F, H, W, 3)`` uint8 as mp4 (H.264, yuv420p, ``crf`` 18 as the official code, index at the
    front) or gif, atomically. Odd sizes are padded by one edge pixel (yuv420p needs even sizes).
    ``fps`` must be positive (ValueError otherwise)."""
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or 0 in frames.shape:
        raise ValueError(f"frames must be a non-empty (F, H, W, 3) uint8 array, got {frames.shape} {frames.dtype}")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        if path.suffix.lower() == ".gif":
            import imageio.v3 as iio

            iio.imwrite(tmp, frames, extension=".gif", duration=int(1000 / fps), loop=0)
        else:
            _write_h264(tmp, frames, fps, crf)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_h264(path: Path, frames: np.ndarray, fps: float, crf: int) -> None:
    from fractions import Fraction

    import av

    h, w = frames.shape[1:3]
    if h % 2 or w % 2:  # yuv420p needs even sizes
        frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        h, w = frames.shape[1:3]
    rate = Fraction(fps).limit_denominator(65535)
    options = {"movflags": "+faststart"} if path.suffix.lower() in (".mp4", ".mov", ".m4v") else {}
    with av.open(str(path), mode="w", options=options) as c:
        s = c.add_stream("libx264", rate=rate, options={"crf": str(crf)})
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.time_base = 1 / rate
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            vf.pts = i
            vf.time_base = 1 / rate
            for pkt in s.encode(vf):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


def mask_overlay(frames: np.ndarray, masks: Tensor, color: tuple[int, int, int] = (255, 0, 255),
                 alpha: float = 0.45) -> np.ndarray:
    """Tint the masked region of ``(F, H, W, 3)`` uint8 frames; ``masks`` is ``(F, 1, H, W)`` bool."""
    m = masks[:, 0].cpu().numpy()[..., None]
    tint = np.array(color, dtype=np.float32)
    out = frames.astype(np.float32)
    out = np.where(m, (1 - alpha) * out + alpha * tint, out)
    return out.round().astype(np.uint8)


def _font(size: int = 12) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit(draw: ImageDraw.ImageDraw, text: str, width: float, font: ImageFont.ImageFont) -> str:
    """``text``, shortened with an ellipsis when wider than ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…" if text else ""


def _text_height(font: ImageFont.ImageFont) -> int:
    box = font.getbbox("Ag")
    return int(box[3] - min(box[1], 0))


def hstack_videos(videos: list[np.ndarray], gap: int = 4, labels: list[str] | None = None) -> np.ndarray:
    """Side-by-side ``(F, H, W_i, 3)`` videos with a white gap; with ``labels``, a white caption band
    above the videos names each column (centred over it, shortened with "…" when too wide). The band's
    height is even, so even-sized videos stay even (yuv420p)."""
    if not videos:
        raise ValueError("no videos to put side by side")
    f, h = videos[0].shape[:2]
    for v in videos[1:]:
        if v.shape[:2] != (f, h):
            raise ValueError(f"videos differ in frame count or height: {videos[0].shape[:3]} and {v.shape[:3]}")
    if labels is not None and len(labels) != len(videos):
        raise ValueError(f"{len(labels)} labels for {len(videos)} videos")
    sep = np.full((f, h, gap, 3), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for i, v in enumerate(videos):
        if i:
            parts.append(sep)
        parts.append(v)
    body = np.concatenate(parts, axis=2)
    if not labels:
        return body
    font = _font(max(10, min(16, h // 12)))
    band_h = _text_height(font) + 6
    band_h += band_h % 2
    band = Image.new("RGB", (body.shape[2], band_h), "white")
    draw = ImageDraw.Draw(band)
    x = 0
    for v, label in zip(videos, labels):
        w = v.shape[1]
        text = _fit(draw, str(label), w - 2, font)
        tw = draw.textlength(text, font=font)
        draw.text((x + (w - tw) / 2, 3), text, fill="black", font=font)
        x += w + gap
    top = np.broadcast_to(np.asarray(band)[None], (f, band_h, body.shape[2], 3))
    return np.concatenate([top, body], axis=1)


def contact_sheet(rows: dict[str, np.ndarray], path: str | Path, max_frames: int = 8, label_width: int = 110) -> None:
    """A PNG grid: one labelled row per video, ``max_frames`` evenly spaced frames each, and a header
    naming each column's frame. Labels are written whole (wrapped onto more lines when long; the label
    column widens up to 360 pixels); only a label that still does not fit is shortened with "…"."""
    first = next(iter(rows.values()))
    f, h, w = first.shape[:3]
    idx = np.linspace(0, f - 1, min(max_frames, f)).round().astype(int)
    scale = max(1, 96 // h)
    H, W = h * scale, w * scale
    font = _font(13)
    small = _font(11)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = _text_height(font) + 2
    widest = max((measure.textlength(str(n), font=font) for n in rows), default=0)
    lw = int(min(max(label_width, widest + 12), 360))
    head = _text_height(small) + 6
    sheet = Image.new("RGB", (lw + len(idx) * (W + 2), head + len(rows) * (H + 2)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, i in enumerate(idx):
        text = _fit(draw, f"frame {i}", W, small)
        draw.text((lw + c * (W + 2) + (W - draw.textlength(text, font=small)) / 2, 2), text, fill="black", font=small)
    for r, (name, vid) in enumerate(rows.items()):
        y = head + r * (H + 2)
        lines = _wrap(measure, str(name), lw - 8, font, max(1, H // line_h))
        y0 = y + (H - len(lines) * line_h) / 2
        for k, line in enumerate(lines):
            draw.text((4, y0 + k * line_h), line, fill="black", font=font)
        for c, i in enumerate(idx):
            tile = Image.fromarray(vid[min(i, len(vid) - 1)]).resize((W, H), Image.NEAREST)
            sheet.paste(tile, (lw + c * (W + 2), y))
    buf = Path(path).with_name(f".{Path(path).name}.tmp-{uuid.uuid4().hex[:8]}.png")
    try:
        sheet.save(buf)
        os.replace(buf, path)
    finally:
        buf.unlink(missing_ok=True)


def _wrap(draw: ImageDraw.ImageDraw, text: str, width: float, font: ImageFont.ImageFont, max_lines: int) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` (at most ``max_lines``, the last shortened)."""
    lines: list[str] = []
    current = ""
    for word in text.split(" "):
        trial = f"{current} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not current:
            current = trial
        else:
            lines.append(current)
            current = word
    lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1] + " " + "…"
    return [_fit(draw, line, width, font) for line in lines]
