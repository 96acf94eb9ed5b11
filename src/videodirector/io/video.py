"""Reading videos: files (mp4, webm, mov, gif) or folders of frames -> ``(F, 3, H, W)`` in [-1, 1].

Inputs are checked before anything is opened: only a regular file or a folder is read (a named
pipe, a device or a socket is refused, so nothing can block), the file's first bytes say what it
really is (a PNG renamed ``.mp4`` is named as a PNG), and an MP4/MOV or Matroska/WebM file that
ends before its own structure says it should is refused as truncated.

Videos are decoded with PyAV one frame at a time; only the frames that will be used are kept, and
the memory they need is estimated before any is decoded (:func:`memory_budget_bytes`). The frame
count decoded is compared with the count the container states: fewer frames means the file is
truncated or damaged, which is an error (never black frames).

Frames are converted to 8-bit RGB: 16-bit images are scaled (``round(v / 257)``, so a value keeps
its high byte, rounded), float images in [0, 1] are scaled by 255, and the colour of grey+alpha,
RGBA and palette images is taken (alpha is ignored; masks read alpha, see
:mod:`videodirector.io.masks`).
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .. import notices
from ..errors import InputError

VIDEO_EXTS = {".mp4", ".webm", ".mov", ".mkv", ".avi", ".gif"}
IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}

VIDEO_FIX = "give a video file (mp4, webm, mov, gif) or a folder of frames"


class VideoInfo(NamedTuple):
    """What a video holds, without its pixels: frame count and frame size."""

    num_frames: int
    height: int
    width: int
    kind: str
    """``"frames"`` (a folder of images), ``"gif"`` or ``"video"`` (decoded by PyAV)."""


# ----------------------------------------------------------------------------- paths and file types
_SPECIAL = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def path_kind(path: str | Path, what: str = "video", fix: str = VIDEO_FIX) -> str:
    """``"dir"`` or ``"file"`` for ``path``; anything else (missing, a pipe, a device, a socket,
    unreadable) raises :class:`InputError`. Uses ``os.stat`` only: nothing is opened."""
    p = Path(path)
    try:
        st = os.stat(p)
    except (FileNotFoundError, NotADirectoryError):
        raise InputError(f"{what} not found: {p} ({fix})") from None
    except PermissionError:
        raise InputError(f"cannot open {what} {p}: permission denied; {fix}") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise InputError(f"cannot open {what} {p}: {reason}; {fix}") from None
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return "file"
    kind = next((name for test, name in _SPECIAL if test(st.st_mode)), "not a regular file")
    raise InputError(f"{what} {p} is {kind}, not a regular file; {fix}")


def _natural_key(name: str) -> list[object]:
    return [(0, int(part)) if part.isdigit() else (1, part.lower()) for part in re.split(r"(\d+)", name)]


def list_frame_files(folder: str | Path, what: str = "frames", fix: str = "give a folder of png/jpg frames") -> list[Path]:
    """The image files of ``folder`` in frame order.

    Files whose names start with ``.`` are skipped (hidden files, macOS ``._`` copies). Names are
    ordered by their numbers (``frame_2.png`` before ``frame_10.png``), which equals the plain
    name order whenever the numbers are zero-padded; when the two differ, a notice says so.
    Every file must be a regular file (or a link to one)."""
    p = Path(folder)
    try:
        names = [e.name for e in os.scandir(p)
                 if not e.name.startswith(".") and Path(e.name).suffix.lower() in IMAGE_EXTS]
    except PermissionError:
        raise InputError(f"cannot list {what} folder {p}: permission denied") from None
    except OSError as exc:
        raise InputError(f"cannot list {what} folder {p}: {exc.strerror or exc}") from None
    if not names:
        raise InputError(f"no image {what} (png/jpg) in folder {p}; {fix}")
    for n in names:
        path_kind(p / n, f"{what[:-1] if what.endswith('s') else what} file", fix)
    ordered = sorted(names, key=lambda n: (_natural_key(n), n))
    if ordered != sorted(names):
        first = next(i for i, (a, b) in enumerate(zip(ordered, sorted(names))) if a != b)
        notices.warn(f"the {what} in {p} are numbered without zero padding; reading them in numeric order "
                     f"({ordered[first]} before {sorted(names)[first]})")
    return [p / n for n in ordered]


def sniff(path: str | Path) -> tuple[str, str]:
    """What a file really is, from its first bytes: ``(kind, description)`` with ``kind`` one of
    ``"video"``, ``"gif"``, ``"image"``, ``"empty"``, ``"text"``, ``"other"`` or ``"unknown"``."""
    p = Path(path)
    with open(p, "rb") as fh:
        head = fh.read(512)
    size = os.stat(p).st_size
    if not head:
        return "empty", "an empty file (0 bytes)"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "a PNG image"
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "a JPEG image"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif", "a GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "a WebP image"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video", "an AVI video"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "other", "a WAV audio file"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image", "a TIFF image"
    if head[:2] == b"BM" and len(head) >= 14 and int.from_bytes(head[2:6], "little") == size:
        return "image", "a BMP image"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"avif", b"avis"):
            return "image", "a HEIC/AVIF image"
        if brand == b"qt  ":
            return "video", "a QuickTime (mov) video"
        return "video", "an MP4 video"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"):
        return "video", "a QuickTime (mov) video"
    if head[:4] == b"\x1a\x45\xdf\xa3":
        return "video", "a Matroska/WebM video"
    if head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"):
        return "video", "an MPEG video"
    if head[:1] == b"G" and len(head) > 188 and head[188:189] == b"G":
        return "video", "an MPEG transport stream"
    if head[:4] == b"OggS":
        return "video", "an Ogg file"
    if head[:3] == b"FLV":
        return "video", "an FLV video"
    if head[:4] == b"%PDF":
        return "other", "a PDF document"
    if head[:4] == b"PK\x03\x04":
        return "other", "a zip archive"
    if head[:2] == b"\x1f\x8b":
        return "other", "a gzip archive"
    if head[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n":
        return "image", "a JPEG 2000 image"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and all(c.isprintable() or c in "\r\n\t" for c in text):
        return "text", "a text file"
    return "unknown", "an unknown file type"


def _read_uint(fh, n: int) -> int | None:  # noqa: ANN001
    b = fh.read(n)
    return int.from_bytes(b, "big") if len(b) == n else None


def _mp4_structure(p: Path) -> tuple[str | None, bool]:
    """MP4/MOV top-level boxes: ``(problem, has_index)``; ``problem`` says where the file ends early."""
    size = os.stat(p).st_size
    names: list[bytes] = []
    problem = None
    with open(p, "rb") as fh:
        pos = 0
        while pos < size:
            fh.seek(pos)
            n = _read_uint(fh, 4)
            kind = fh.read(4)
            header = 8
            if n == 1:
                n = _read_uint(fh, 8)
                header = 16
            elif n == 0:  # the last box runs to the end of the file
                n = size - pos
            if n is None or len(kind) < 4:
                problem = f"it ends inside a box header at byte {pos:,}"
                break
            if n < header:
                problem = f"box {kind!r} at byte {pos:,} has an impossible size {n}"
                break
            names.append(kind)
            if pos + n > size:
                problem = (f"its '{kind.decode('latin-1')}' box runs to byte {pos + n:,} but the file ends at "
                           f"byte {size:,}")
                break
            pos += n
    return problem, b"moov" in names


def _read_vint(fh) -> tuple[int, int] | None:  # noqa: ANN001
    """An EBML variable-size integer: ``(value, length)``; None at end of file."""
    b = fh.read(1)
    if not b:
        return None
    first = b[0]
    length = 1
    mask = 0x80
    while length <= 8 and not first & mask:
        length += 1
        mask >>= 1
    if length > 8:
        return -1, 1
    rest = fh.read(length - 1)
    if len(rest) < length - 1:
        return None
    value = first & (mask - 1)
    for c in rest:
        value = (value << 8) | c
    unknown = value == (1 << (7 * length)) - 1
    return (-1 if unknown else value), length


def _matroska_structure(p: Path) -> str | None:
    """Matroska/WebM: where the file ends before its Segment (when the Segment's size is stated)."""
    size = os.stat(p).st_size
    with open(p, "rb") as fh:
        pos = 0
        for _ in range(4):  # EBML header, then the Segment (other top-level elements are rare)
            fh.seek(pos)
            ident = fh.read(4)
            if len(ident) < 4:
                return None
            vint = _read_vint(fh)
            if vint is None:
                return "it ends inside an element header"
            n, _ = vint
            if n < 0:  # unknown size (live recording): nothing to check
                return None
            end = fh.tell() + n
            if end > size:
                return f"its data runs to byte {end:,} but the file ends at byte {size:,}"
            if ident == b"\x18\x53\x80\x67":  # Segment
                return None
            pos = end
    return None


# ----------------------------------------------------------------------------- memory
def memory_budget_bytes() -> int:
    """What one read may hold in memory: half of the memory available now (``MemAvailable`` in
    ``/proc/meminfo``, else the physical memory from ``os.sysconf``), at least 256 MiB."""
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 8 << 30
    return max(avail // 2, 256 << 20)


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def check_memory(num: int, height: int, width: int, source: str | Path, bytes_per_pixel: int = 3) -> None:
    """Refuse (one line) to hold ``num`` frames of ``height x width`` when it exceeds the budget."""
    need = num * height * width * bytes_per_pixel
    budget = memory_budget_bytes()
    if need > budget:
        raise InputError(f"reading {num} frames of {width}x{height} from {source} needs about {_gb(need)} of memory, "
                         f"more than the {_gb(budget)} this run may use (half of what is free); use fewer --frames "
                         "or downscale the video first (e.g. to 512 pixels wide)")


def _check_size(height: int, width: int, source: str | Path) -> None:
    if height <= 0 or width <= 0:
        raise InputError(f"{source} has frames of size {width}x{height} (no pixels); {VIDEO_FIX}")


# ----------------------------------------------------------------------------- pixels
def image_to_rgb8(im) -> np.ndarray:  # noqa: ANN001
    """A PIL image -> ``(H, W, 3)`` uint8: 16-bit scaled by 1/257 (rounded), float in [0, 1] scaled
    by 255 (other floats clipped to [0, 255]), colour of grey+alpha/RGBA/palette images (no alpha)."""
    mode = im.mode
    if mode.startswith("I"):  # I, I;16, I;16B, I;16L, I;16N: 16-bit (or 32-bit int) grey
        a = np.asarray(im).astype(np.float64)
        a = np.clip(a, 0, 65535) / 257.0
        g = np.rint(a).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=-1)
    if mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        if a.size and a.max() <= 1.0:
            a = a * 255.0
        g = np.rint(np.clip(a, 0, 255)).astype(np.uint8)
        return np.repeat(g[..., None], 3, axis=-1)
    return np.asarray(im.convert("RGB"))


def _frame_to_rgb8(frame: np.ndarray) -> np.ndarray:
    """An array frame (from a decoder) -> ``(H, W, 3)`` uint8, scaling 16-bit and float data."""
    if frame.dtype == np.uint16 or frame.dtype == np.int32:
        frame = np.rint(np.clip(frame.astype(np.float64), 0, 65535) / 257.0).astype(np.uint8)
    elif frame.dtype.kind == "f":
        f = np.nan_to_num(frame.astype(np.float64))
        frame = np.rint(np.clip(f * 255.0 if f.size and f.max() <= 1.0 else f, 0, 255)).astype(np.uint8)
    if frame.ndim == 2:
        frame = np.repeat(frame[..., None], 3, axis=-1)
    if frame.shape[-1] == 2:  # grey + alpha: the grey
        frame = np.repeat(frame[..., :1], 3, axis=-1)
    if frame.shape[-1] == 1:
        frame = np.repeat(frame, 3, axis=-1)
    return frame[..., :3].astype(np.uint8)


def _to_rgb(frame: np.ndarray) -> np.ndarray:  # kept for callers of the old helper
    return _frame_to_rgb8(frame)


# ----------------------------------------------------------------------------- decoders
Want = Callable[[int], Sequence[int] | None]
"""``want(total)``: the frame indices to keep once the frame count is known (None: all)."""


def open_image(path: Path, folder: Path, what: str = "frame"):  # noqa: ANN201
    """Open and fully decode one image file (first frame of an animated one), with one-line errors."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
            im.load()
        return im
    except UnidentifiedImageError:
        kind, desc = sniff(path)
        raise InputError(f"cannot read {what}s in {folder}: {path.name} is {desc}, not an image; "
                         f"remove it or re-export the {what}s") from None
    except Image.DecompressionBombError:
        raise InputError(f"cannot read {what}s in {folder}: {path.name} is too large to decode safely; "
                         f"downscale the {what}s") from None
    except (OSError, SyntaxError, ValueError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read {what}s in {folder}: {path.name} is truncated or damaged ({msg}); "
                         f"re-export the {what}s") from None


def image_sizes(files: Sequence[Path], folder: Path, what: str = "frame") -> tuple[int, int]:
    """The common ``(height, width)`` of image files, from their headers (no pixels decoded)."""
    from PIL import Image, UnidentifiedImageError

    sizes: dict[tuple[int, int], str] = {}
    for q in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(q) as im:
                    w, h = im.size
        except UnidentifiedImageError:
            kind, desc = sniff(q)
            raise InputError(f"cannot read {what}s in {folder}: {q.name} is {desc}, not an image; "
                             f"remove it or re-export the {what}s") from None
        except Image.DecompressionBombError:
            raise InputError(f"cannot read {what}s in {folder}: {q.name} is too large to decode safely; "
                             f"downscale the {what}s") from None
        except (OSError, SyntaxError, ValueError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"cannot read {what}s in {folder}: {q.name} is damaged ({msg}); "
                             f"re-export the {what}s") from None
        sizes.setdefault((h, w), q.name)
    if len(sizes) > 1:
        raise InputError(f"{what}s in {folder} have different sizes {sorted(sizes)}; give {what}s of one size")
    (h, w), name = next(iter(sizes.items()))
    _check_size(h, w, folder / name)
    return h, w


def _read_folder(p: Path, want: Want, budget_bpp: int = 3) -> tuple[np.ndarray, VideoInfo]:
    files = list_frame_files(p)
    h, w = image_sizes(files, p)
    idx = want(len(files))
    idx = list(range(len(files))) if idx is None else list(idx)
    check_memory(len(idx), h, w, p, budget_bpp)
    out = np.empty((len(idx), h, w, 3), np.uint8)
    for j, i in enumerate(idx):
        im = open_image(files[i], p)
        if im.size != (w, h):
            raise InputError(f"frames in {p} have different sizes; give frames of one size")
        out[j] = image_to_rgb8(im)
    return out, VideoInfo(len(files), h, w, "frames")


def _read_gif(p: Path, want: Want) -> tuple[np.ndarray, VideoInfo]:
    from PIL import Image, ImageSequence

    try:
        with Image.open(p) as im:
            w, h = im.size
            _check_size(h, w, p)
            total = getattr(im, "n_frames", 1)
            idx = want(total)
            keep = list(range(total)) if idx is None else list(idx)
            check_memory(len(keep), h, w, p)
            pos = {i: j for j, i in enumerate(keep)}
            out = np.empty((len(keep), h, w, 3), np.uint8)
            count = 0
            last = max(keep) if keep else -1
            for i, fr in enumerate(ImageSequence.Iterator(im)):
                if i in pos:
                    out[pos[i]] = np.asarray(fr.convert("RGB"))
                count += 1
                if i >= last and idx is not None:
                    break
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001  (Pillow raises many types for damaged files)
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{p} is truncated or damaged ({msg}); re-export the video") from None
    if idx is None and count != total:
        raise InputError(f"{p} is truncated or damaged: decoded {count} of {total} frames; re-export the video")
    return out, VideoInfo(total, h, w, "gif")


def _av_error(exc: BaseException) -> str:
    msg = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(msg).splitlines()[0]


def _av_count_packets(p: Path) -> int:
    import av

    with av.open(str(p)) as c:
        s = c.streams.video[0]
        return sum(1 for pkt in c.demux(s) if pkt.size)


def _av_decode(p: Path, keep: set[int] | None) -> tuple[dict[int, np.ndarray], int, int, int, int, int, str | None]:
    """Decode every frame, keeping those in ``keep`` (all when None):
    ``(kept, frames, packets, stated, h, w, error)``; ``error`` is the decoder's message when it stopped early."""
    import av

    kept: dict[int, np.ndarray] = {}
    with av.open(str(p)) as c:
        if not c.streams.video:
            raise InputError(f"{p} has no video stream (audio only?); {VIDEO_FIX}")
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        stated = int(s.frames or 0)
        h, w = int(s.codec_context.height), int(s.codec_context.width)
        _check_size(h, w, p)
        count = packets = 0
        error = None
        try:
            for pkt in c.demux(s):
                if pkt.size:
                    packets += 1
                    if pkt.is_corrupt and error is None:
                        error = f"packet {packets - 1} is corrupt"
                for frame in pkt.decode():
                    if keep is None or count in keep:
                        arr = frame.to_ndarray(format="rgb24")
                        if arr.shape[:2] != (h, w):
                            raise InputError(f"{p} changes frame size at frame {count} ({w}x{h} to "
                                             f"{arr.shape[1]}x{arr.shape[0]}); re-export it at one size")
                        kept[count] = arr
                    count += 1
        except InputError:
            raise
        except (av.FFmpegError, ValueError, OSError) as exc:
            error = _av_error(exc)
    return kept, count, packets, stated, h, w, error


def _read_av(p: Path, desc: str, want: Want, structure: str | None = None) -> tuple[np.ndarray, VideoInfo]:
    """Decode with PyAV. ``structure`` is where the container says the file ends early (if it does)."""
    import av

    redo = "re-export (or re-download) the video"
    try:
        with av.open(str(p)) as c:
            if not c.streams.video:
                raise InputError(f"{p} has no video stream (audio only?); {VIDEO_FIX}")
            s = c.streams.video[0]
            stated = int(s.frames or 0)
            h, w = int(s.codec_context.height), int(s.codec_context.width)
    except InputError:
        raise
    except (av.FFmpegError, ValueError, OSError) as exc:
        why = f"{structure}, so it is truncated" if structure else (
            f"it looks like {desc} but is damaged" if desc != "an unknown file type" else "is it a valid video file?")
        raise InputError(f"cannot read video {p}: {_av_error(exc)} ({why}); {redo}") from None
    _check_size(h, w, p)
    total = stated if stated > 0 else _av_count_packets(p)
    idx = want(total)
    check_memory(total if idx is None else len(idx), h, w, p)
    for attempt in range(2):
        keep = None if idx is None else set(idx)
        kept, count, packets, stated, h, w, error = _av_decode(p, keep)
        # missing packets or a decoder error: truncated or damaged. (All packets there but fewer frames
        # than stated is an edit list dropping frames, as in a trimmed file: the frames decoded count.)
        if error or (stated and packets < stated):
            what = f"truncated ({structure})" if structure else "truncated or damaged"
            of = f" of {stated}" if stated else ""
            why = f" ({error})" if error and not structure else ""
            raise InputError(f"{p} is {what}: decoded {count}{of} frames{why}; {redo}")
        if count == 0:
            raise InputError(f"video {p} has no frames; {VIDEO_FIX}")
        if idx is None or count == total:
            break
        if attempt:
            raise InputError(f"{p} decodes to a different number of frames each time ({total}, then {count}); "
                             f"{redo}")
        total = count  # the stated (or packet) count was off: sample again from the true count
        idx = want(total)
        check_memory(total if idx is None else len(idx), h, w, p)
    if structure:
        if not stated or count < stated:  # nothing says how many frames are missing: the file is cut short
            raise InputError(f"{p} is truncated ({structure}): only {count} frames could be decoded; {redo}")
        notices.warn(f"{p} looks truncated ({structure}), yet all {count} frames it lists decode; reading it anyway")
    order = sorted(kept) if idx is None else list(idx)
    out = np.empty((len(order), h, w, 3), np.uint8)
    for j, i in enumerate(order):
        out[j] = kept[i]
    return out, VideoInfo(count, h, w, "video")


def read_video(path: str | Path, want: Want | None = None, what: str = "video",
               fix: str = VIDEO_FIX) -> tuple[np.ndarray, VideoInfo]:
    """Frames chosen by ``want(total)`` (all when None) as ``(N, H, W, 3)`` uint8, and what the video holds."""
    want = want or (lambda n: None)
    p = Path(path)
    if path_kind(p, what, fix) == "dir":
        return _read_folder(p, want)
    kind, desc = sniff(p)
    if kind in ("image", "other", "text", "empty"):
        raise InputError(f"cannot read {what} {p}: it is {desc}, not a video; {fix}")
    if kind == "unknown" and p.suffix.lower() not in VIDEO_EXTS:
        raise InputError(f"unsupported {what} format {p.suffix!r} for {p}; use mp4, webm, mov, gif or a folder of frames")
    if kind == "gif":
        return _read_gif(p, want)
    structure = None
    if desc in ("an MP4 video", "a QuickTime (mov) video"):
        structure, has_index = _mp4_structure(p)
        if not has_index:
            why = f"{structure}, so " if structure else ""
            raise InputError(f"{p} is truncated: {why}it has no index ('moov' box), as when a recording or download "
                             "is not finished; re-export (or re-download) the video")
    elif desc == "a Matroska/WebM video":
        structure = _matroska_structure(p)
    return _read_av(p, desc, want, structure)


def read_frames(path: str | Path, num_frames: int | None = None) -> np.ndarray:
    """Frames of a video file or a folder of images, ``(N, H, W, 3)`` uint8.

    All frames by default; with ``num_frames``, only the ``num_frames`` of :func:`sample_indices`
    are decoded and kept (the memory check counts only those)."""
    want = None if num_frames is None else (lambda n: sample_indices(n, num_frames))
    return read_video(path, want)[0]


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count and size of a video or folder of frames, keeping no pixels in memory (a video
    file is decoded once to count its frames exactly and to find truncation)."""
    return read_video(path, lambda n: [])[1]


# ----------------------------------------------------------------------------- sampling and resizing
def sample_indices(total: int, num_frames: int) -> list[int]:
    """Evenly spaced frame indices, as the official ``range(0, n, n // F)[:F]``."""
    if num_frames < 1:
        raise InputError(f"{num_frames} frames were asked for; use --frames 1 or more")
    if total < num_frames:
        raise InputError(f"the video has {total} frames but {num_frames} were asked for; use --frames {total} or fewer")
    step = total // num_frames
    return list(range(0, total, step))[:num_frames]


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def sampling_notice(total: int, num_frames: int, max_frames: int = 32) -> str | None:
    """The one-line notice for using ``num_frames`` of ``total`` frames (None when all are used)."""
    if total <= num_frames:
        return None
    idx = sample_indices(total, num_frames)
    step = total // num_frames
    left = total - 1 - idx[-1]
    if step == 1:
        which = f"frames {idx[0]}-{idx[-1]}, the first {num_frames} in a row"
    else:
        which = f"every {_ordinal(step)} frame, {idx[0]} to {idx[-1]}"
    tail = f"; the last {left} are left out" if left else ""
    if total <= max_frames:
        fix = f"pass --frames {total} to edit all of them"
    else:
        fix = (f"at most {max_frames} frames can be edited, so trim the video to the part you want "
               f"(or pass --frames up to {max_frames} to spread them wider)")
    return f"the video has {total} frames; editing {num_frames} of them ({which}{tail}): {fix}"


def resize_frames(frames: Tensor, height: int, width: int, mode: str = "stretch", interp: str = "bilinear") -> Tensor:
    """Resize ``(F, C, H, W)`` to ``(F, C, height, width)``; ``crop`` centre-crops to the aspect first."""
    if mode == "crop":
        h, w = frames.shape[-2:]
        target = width / height
        if w / h > target:
            nw = int(round(h * target))
            x0 = (w - nw) // 2
            frames = frames[..., :, x0 : x0 + nw]
        else:
            nh = int(round(w / target))
            y0 = (h - nh) // 2
            frames = frames[..., y0 : y0 + nh, :]
    if frames.shape[-2:] == (height, width):
        return frames
    if interp == "nearest":
        return F.interpolate(frames, size=(height, width), mode="nearest")
    return F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=True)


def load_video_with_info(path: str | Path, num_frames: int = 16, height: int = 512, width: int = 512,
                         resize_mode: str = "stretch", notice: bool = True) -> tuple[Tensor, VideoInfo]:
    """:func:`load_video` and the :class:`VideoInfo` of the source (its frame count and size), from one
    decode. With ``notice``, says once which frames are used when the video has more than ``num_frames``."""
    if height % 8 or width % 8:
        raise InputError(f"height and width must be multiples of 8, got {height}x{width}")
    if height <= 0 or width <= 0:
        raise InputError(f"height and width must be positive, got {height}x{width}")
    arr, info = read_video(path, lambda n: sample_indices(n, num_frames))
    if notice:
        msg = sampling_notice(info.num_frames, num_frames)
        if msg:
            notices.warn(msg)
    out = torch.empty(len(arr), 3, height, width)
    for j in range(len(arr)):  # one frame at a time: the float copy never holds the whole video
        x = torch.from_numpy(arr[j]).permute(2, 0, 1)[None].float()
        out[j] = resize_frames(x, height, width, resize_mode)[0]
    return out / 127.5 - 1.0, info


def load_video(path: str | Path, num_frames: int = 16, height: int = 512, width: int = 512,
               resize_mode: str = "stretch") -> Tensor:
    """Read, sample ``num_frames`` and resize: ``(F, 3, H, W)`` float in [-1, 1]."""
    return load_video_with_info(path, num_frames, height, width, resize_mode)[0]
