"""Malformed and hostile inputs, output locations and cache entries: each gives one clear error (or
is handled) and nothing the user had is lost. Every file here is built in ``tmp_path``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from videodirector import notices
from videodirector.errors import CacheEntryError, InputError, OutputExistsError, OutputLocationError
from videodirector.io import video as video_mod
from videodirector.io.masks import load_masks, read_mask_frames
from videodirector.io.outputs import (MANIFEST, OWNER, atomic_folder, check_output_location, clean_stale_temp,
                                      contact_sheet, hstack_videos, staged_entries, write_video)
from videodirector.io.video import load_video, probe_video, read_frames, sample_indices, sampling_notice
from videodirector.methods.base import Inversion


@pytest.fixture(autouse=True)
def captured_notices():
    """Collect notices instead of printing them; each test starts with none said."""
    said: list[str] = []
    notices.reset()
    notices.set_sink(said.append)
    yield said
    notices.set_sink(None)
    notices.reset()


def frames_u8(n: int = 16, h: int = 32, w: int = 48, seed: int = 0) -> np.ndarray:
    """A smooth moving square on a gradient (compresses well, so decoding is close to the source)."""
    ys, xs = np.mgrid[0:h, 0:w]
    out = np.empty((n, h, w, 3), np.uint8)
    for i in range(n):
        img = np.stack([xs * 255 // w, ys * 255 // h, np.full_like(xs, 90)], -1)
        img[8:20, 2 + 2 * i: 14 + 2 * i] = (230, 40, 40)
        out[i] = img
    return out


def in_thread(fn, timeout: float = 20.0):
    """Run ``fn``; fail (instead of hanging the suite) if it blocks."""
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "blocked (a FIFO was opened?)"
    return box


# ============================================================================ videos
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_video_mask_and_frame_are_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "v.mp4")
    box = in_thread(lambda: read_frames(tmp_path / "v.mp4"))
    assert isinstance(box.get("error"), InputError) and "named pipe (FIFO)" in str(box["error"])
    box = in_thread(lambda: read_mask_frames(tmp_path / "v.mp4"))
    assert isinstance(box.get("error"), InputError) and "named pipe" in str(box["error"])
    d = tmp_path / "frames"
    d.mkdir()
    Image.fromarray(frames_u8(1)[0]).save(d / "0000.png")
    os.mkfifo(d / "0001.png")
    box = in_thread(lambda: read_frames(d))
    assert isinstance(box.get("error"), InputError) and "0001.png" in str(box["error"])


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_character_device_is_refused():
    box = in_thread(lambda: read_frames("/dev/zero"))
    assert isinstance(box.get("error"), InputError) and "character device" in str(box["error"])


def test_truncated_mp4_is_refused_not_padded_with_black(tmp_path):
    write_video(tmp_path / "v.mp4", frames_u8(16))
    assert read_frames(tmp_path / "v.mp4").shape == (16, 32, 48, 3)
    data = (tmp_path / "v.mp4").read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as exc:
        read_frames(tmp_path / "half.mp4")
    msg = str(exc.value)
    assert "truncated" in msg and "of 16 frames" in msg and "re-export" in msg and "half.mp4" in msg
    with pytest.raises(InputError, match="truncated"):
        load_video(tmp_path / "half.mp4", 8, 32, 48)
    (tmp_path / "head.mp4").write_bytes(data[:20])  # cut inside the first box: no index at all
    with pytest.raises(InputError, match="truncated.*no index"):
        read_frames(tmp_path / "head.mp4")


def test_truncated_mp4_with_index_at_the_end_is_refused(tmp_path):
    with av.open(str(tmp_path / "late.mp4"), "w") as c:  # index ('moov') written last, as many recorders do
        s = c.add_stream("libx264", rate=8)
        s.width, s.height, s.pix_fmt = 48, 32, "yuv420p"
        for f in frames_u8(16):
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    data = (tmp_path / "late.mp4").read_bytes()
    assert data.find(b"moov") > data.find(b"mdat")
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.mp4 is truncated.*no index"):
        read_frames(tmp_path / "cut.mp4")


def test_truncated_webm_is_refused(tmp_path):
    with av.open(str(tmp_path / "v.webm"), "w") as c:
        s = c.add_stream("libvpx-vp9", rate=8)
        s.width, s.height, s.pix_fmt = 48, 32, "yuv420p"
        for f in frames_u8(16):
            for pkt in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    assert read_frames(tmp_path / "v.webm").shape[0] == 16
    data = (tmp_path / "v.webm").read_bytes()
    (tmp_path / "cut.webm").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated"):
        read_frames(tmp_path / "cut.webm")


@pytest.mark.parametrize("content, expected", [
    ("png", "is a PNG image, not a video"),
    ("jpg", "is a JPEG image, not a video"),
    ("empty", "is an empty file (0 bytes), not a video"),
    ("text", "cannot read video"),
])
def test_non_video_named_mp4_is_named_for_what_it_is(tmp_path, content, expected):
    p = tmp_path / "clip.mp4"
    if content in ("png", "jpg"):
        Image.fromarray(frames_u8(1)[0]).save(tmp_path / f"x.{content}")
        p.write_bytes((tmp_path / f"x.{content}").read_bytes())
    elif content == "text":
        p.write_text("not a video")
    else:
        p.write_bytes(b"")
    with pytest.raises(InputError) as exc:
        read_frames(p)
    assert expected in str(exc.value) and "clip.mp4" in str(exc.value) and "\n" not in str(exc.value)


def _pyav_reference(path: Path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(c.streams.video[0])])


def _pil_gif_reference(path: Path) -> np.ndarray:
    from PIL import ImageSequence

    with Image.open(path) as im:
        return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])


def test_own_mp4_and_gif_read_exactly_and_sampling_keeps_the_same_frames(tmp_path):
    src = frames_u8(20)
    write_video(tmp_path / "v.mp4", src)
    write_video(tmp_path / "v.gif", src)
    mp4 = read_frames(tmp_path / "v.mp4")
    gif = read_frames(tmp_path / "v.gif")
    assert np.array_equal(mp4, _pyav_reference(tmp_path / "v.mp4"))
    assert np.array_equal(gif, _pil_gif_reference(tmp_path / "v.gif"))
    assert np.abs(mp4.astype(int) - src).mean() < 3 and np.abs(gif.astype(int) - src).mean() < 3
    idx = sample_indices(20, 16)
    assert np.array_equal(read_frames(tmp_path / "v.mp4", 16), mp4[idx])
    assert np.array_equal(read_frames(tmp_path / "v.gif", 16), gif[idx])
    assert probe_video(tmp_path / "v.mp4")[:3] == (20, 32, 48)
    x = load_video(tmp_path / "v.mp4", 16, 64, 64)
    ref = torch.nn.functional.interpolate(torch.from_numpy(mp4[idx]).permute(0, 3, 1, 2).float(), size=(64, 64),
                                          mode="bilinear", align_corners=True) / 127.5 - 1
    assert torch.equal(x, ref)


def test_gif_with_transparency_reads(tmp_path):
    ims = [Image.fromarray(f).convert("P", palette=Image.ADAPTIVE) for f in frames_u8(6)]
    ims[0].save(tmp_path / "t.gif", save_all=True, append_images=ims[1:], transparency=0, disposal=2, duration=100)
    assert read_frames(tmp_path / "t.gif").shape == (6, 32, 48, 3)


def test_16_bit_and_alpha_frames_are_converted_not_truncated(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    v16 = 0xA05F  # high byte 160, low byte 95: truncation would give 95
    Image.fromarray(np.full((16, 16), v16, np.uint16)).save(d / "0.png")
    assert Image.open(d / "0.png").mode.startswith("I;16")
    la = np.zeros((16, 16, 2), np.uint8)
    la[..., 0] = 200  # grey 200, fully transparent: the colour counts, not alpha
    Image.fromarray(la, "LA").save(d / "1.png")
    rgba = np.zeros((16, 16, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    Image.fromarray(rgba, "RGBA").save(d / "2.png")
    pal = Image.new("P", (16, 16), 1)
    pal.putpalette([0, 0, 0, 50, 100, 150] + [0] * 762)
    pal.save(d / "3.png", transparency=1)
    out = read_frames(d)
    assert out.dtype == np.uint8 and out.shape == (4, 16, 16, 3)
    assert (out[0] == round(v16 / 257)).all() and round(v16 / 257) == 160
    assert (out[1] == 200).all()
    assert (out[2] == (10, 20, 30)).all()
    assert (out[3] == (50, 100, 150)).all()


def test_frames_are_read_in_numeric_order(tmp_path, captured_notices):
    d = tmp_path / "frames"
    d.mkdir()
    for i in (1, 2, 10):
        Image.fromarray(np.full((8, 8, 3), i * 20, np.uint8)).save(d / f"f{i}.png")
    (d / ".hidden.png").write_bytes(b"junk")  # hidden files are skipped
    out = read_frames(d)
    assert [int(f[0, 0, 0]) for f in out] == [20, 40, 200]
    assert any("numeric order" in m for m in captured_notices)


def test_memory_budget_is_checked_before_decoding_and_counts_only_sampled_frames(tmp_path, monkeypatch):
    write_video(tmp_path / "v.mp4", frames_u8(16))
    one = 32 * 48 * 3
    monkeypatch.setattr(video_mod, "memory_budget_bytes", lambda: 4 * one)
    with pytest.raises(InputError, match=r"reading 16 frames of 48x32 .* needs about .*fewer --frames"):
        read_frames(tmp_path / "v.mp4")
    assert read_frames(tmp_path / "v.mp4", 4).shape == (4, 32, 48, 3)  # only the sampled frames are held
    d = tmp_path / "frames"
    d.mkdir()
    for i, f in enumerate(frames_u8(8)):
        Image.fromarray(f).save(d / f"{i:02d}.png")
    with pytest.raises(InputError, match="reading 8 frames"):
        read_frames(d)
    assert read_frames(d, 4).shape[0] == 4


def test_zero_size_video_is_refused(tmp_path):
    # a GIF whose logical screen and only image are 0 x 0 pixels
    gif = (b"GIF89a" + (0).to_bytes(2, "little") * 2 + b"\x80\x00\x00" + b"\x00" * 6
           + b"\x2c" + b"\x00" * 8 + b"\x00" + b"\x02\x02\x44\x01\x00" + b"\x3b")
    (tmp_path / "zero.gif").write_bytes(gif)
    with pytest.raises(InputError, match="zero.gif"):
        read_frames(tmp_path / "zero.gif")


def test_sampling_notice_says_which_frames_are_used(tmp_path, captured_notices):
    assert sampling_notice(16, 16) is None
    assert sampling_notice(20, 16) == ("the video has 20 frames; editing 16 of them (frames 0-15, the first 16 in a "
                                       "row; the last 4 are left out): pass --frames 20 to edit all of them")
    msg = sampling_notice(100, 16)
    assert "every 6th frame, 0 to 90" in msg and "trim the video" in msg
    write_video(tmp_path / "v.mp4", frames_u8(20))
    load_video(tmp_path / "v.mp4", 16, 32, 48)
    load_video(tmp_path / "v.mp4", 16, 32, 48)
    assert captured_notices == [sampling_notice(20, 16)]  # said once
    captured_notices.clear()
    load_video(tmp_path / "v.mp4", 20, 32, 48)
    assert captured_notices == []


# ============================================================================ masks
def _circle(h: int = 32, w: int = 32, cx: int = 12) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return (xs - cx) ** 2 + (ys - 16) ** 2 < 36


def _mask_dir(tmp_path: Path, name: str, images: list[Image.Image]) -> Path:
    d = tmp_path / name
    d.mkdir()
    for i, im in enumerate(images):
        im.save(d / f"{i:04d}.png")
    return d


def test_masks_saved_as_0_and_1_are_read(tmp_path):
    m = _circle()
    d = _mask_dir(tmp_path, "m01", [Image.fromarray(m.astype(np.uint8))] * 4)
    assert np.array_equal(read_mask_frames(d)[0], m)


def test_alpha_masks_and_cut_outs_use_alpha(tmp_path):
    m = _circle()
    only_alpha = np.zeros((32, 32, 4), np.uint8)  # black everywhere, the shape in alpha
    only_alpha[..., 3] = m * 255
    cut_out = np.full((32, 32, 4), 255, np.uint8)  # white transparent background, dark opaque object
    cut_out[..., 3] = m * 255
    cut_out[m, :3] = (0, 0, 0)
    la = np.zeros((32, 32, 2), np.uint8)
    la[..., 1] = m * 255
    for name, arr, mode in (("a", only_alpha, "RGBA"), ("c", cut_out, "RGBA"), ("la", la, "LA")):
        d = _mask_dir(tmp_path, name, [Image.fromarray(arr, mode)] * 3)
        assert np.array_equal(read_mask_frames(d)[0], m), name
    opaque = np.zeros((32, 32, 4), np.uint8)  # alpha all 255: the colour is the mask
    opaque[..., 3] = 255
    opaque[m, :3] = 255
    d = _mask_dir(tmp_path, "opaque", [Image.fromarray(opaque, "RGBA")] * 3)
    assert np.array_equal(read_mask_frames(d)[0], m)
    pal = Image.fromarray(m.astype(np.uint8), "P")
    pal.putpalette([255, 255, 255, 255, 255, 255] + [0] * 762)  # both colours white: only transparency tells
    d = tmp_path / "pal"
    d.mkdir()
    for i in range(3):
        pal.save(d / f"{i}.png", transparency=0)
    assert np.array_equal(read_mask_frames(d)[0], m)


@pytest.mark.parametrize("value", [1, 65535])
def test_16_bit_masks_are_read(tmp_path, value):
    m = _circle()
    d = _mask_dir(tmp_path, "m16", [Image.fromarray((m * value).astype(np.uint16))] * 3)
    assert Image.open(d / "0000.png").mode.startswith("I;16")
    assert np.array_equal(read_mask_frames(d)[0], m)


def test_mask_video_uses_a_mid_threshold(tmp_path):
    m = _circle(32, 48)
    write_video(tmp_path / "m.mp4", np.repeat((m * 255).astype(np.uint8)[None, ..., None], 8, 0).repeat(3, -1))
    got = read_mask_frames(tmp_path / "m.mp4")
    assert got.shape == (8, 32, 48) and (got != m).mean() < 0.02 and not got[0, 0, 40]


def test_empty_masks_are_named_and_all_empty_is_an_error(tmp_path, captured_notices):
    m = _circle(64, 64)
    imgs = [Image.fromarray((m * 255 if i not in (2, 5) else m * 0).astype(np.uint8)) for i in range(8)]
    d = _mask_dir(tmp_path, "some", imgs)
    out = load_masks(d, 8, 64, 64, total_video_frames=8, use_ellipse=False)
    assert not out[2].any() and not out[5].any() and out[0].any()
    assert len(captured_notices) == 1
    assert "2 of the 8 masks" in captured_notices[0] and "0002.png, 0005.png" in captured_notices[0]
    assert "edit region is empty" in captured_notices[0]
    d = _mask_dir(tmp_path, "none", [Image.fromarray(np.zeros((64, 64), np.uint8))] * 8)
    with pytest.raises(InputError, match="all 8 masks used .* are empty.*leave out --masks"):
        load_masks(d, 8, 64, 64, total_video_frames=8)
    assert load_masks(d, 8, 64, 64, total_video_frames=8, allow_empty=True).sum() == 0


def test_mask_count_and_size_errors_keep_their_wording(tmp_path):
    d = _mask_dir(tmp_path, "m3", [Image.fromarray((_circle() * 255).astype(np.uint8))] * 3)
    with pytest.raises(InputError, match="3 masks in .* but the video has 16 frames"):
        load_masks(d, 16, 32, 32, total_video_frames=16)
    d = _mask_dir(tmp_path, "m16", [Image.fromarray((_circle() * 255).astype(np.uint8))] * 16)
    with pytest.raises(InputError, match="mask size 32x32 differs from video size 64x64"):
        load_masks(d, 16, 32, 32, total_video_frames=16, video_size=(64, 64))


# ============================================================================ outputs
def _write_output(out: Path, files: dict[str, str], overwrite: bool = False, **kw) -> None:
    with atomic_folder(out, overwrite, **kw) as tmp:
        for name, text in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text)


def test_output_folder_has_a_manifest_of_what_was_written(tmp_path):
    _write_output(tmp_path / "out", {"a.txt": "hello", "sub/b.txt": "xy"})
    doc = json.loads((tmp_path / "out" / MANIFEST).read_text())
    assert doc["tool"] == "videodirector" and doc["version"]
    assert doc["files"] == [{"path": "a.txt", "size": 5}, {"path": "sub/b.txt", "size": 2}]
    assert not (tmp_path / "out" / OWNER).exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left


def test_overwrite_replaces_own_output_only(tmp_path):
    out = tmp_path / "out"
    _write_output(out, {"edited.mp4": "old", "stale.txt": "old"})
    with pytest.raises(OutputExistsError, match="--overwrite"):
        _write_output(out, {"edited.mp4": "new"})
    _write_output(out, {"edited.mp4": "new"}, overwrite=True)
    assert (out / "edited.mp4").read_text() == "new" and not (out / "stale.txt").exists()
    (out / "notes.txt").write_text("mine")  # the user adds a file: the folder is no longer only ours
    with pytest.raises(OutputLocationError, match="'notes.txt'.*choose another --out"):
        _write_output(out, {"edited.mp4": "newer"}, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "edited.mp4").read_text() == "new"


def test_overwrite_never_deletes_a_folder_the_tool_did_not_write(tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "video.mp4").write_bytes(b"precious")
    (inputs / "masks").mkdir()
    (inputs / "masks" / "0000.png").write_bytes(b"precious too")
    with pytest.raises(OutputLocationError, match="which videodirector did not write"):
        check_output_location(inputs, overwrite=True)
    with pytest.raises(OutputLocationError):
        _write_output(inputs, {"edited.mp4": "x"}, overwrite=True)
    assert (inputs / "video.mp4").read_bytes() == b"precious"
    assert (inputs / "masks" / "0000.png").read_bytes() == b"precious too"
    with pytest.raises(OutputExistsError, match="did not write"):
        check_output_location(inputs, overwrite=False)


def test_output_path_that_is_a_file_or_under_a_file_is_refused(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("keep")
    with pytest.raises(OutputLocationError, match="existing file"):
        check_output_location(f, overwrite=True)
    with pytest.raises(OutputLocationError, match="existing file"):
        _write_output(f, {"a": "b"}, overwrite=True)
    assert f.read_text() == "keep"
    with pytest.raises(OutputLocationError, match="which is a file"):
        check_output_location(f / "out", overwrite=True)
    with pytest.raises(OutputLocationError, match="which is a file"):
        check_output_location(f / "deeper" / "out")


def test_current_folder_and_its_parents_are_refused(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    (work / "data.txt").write_text("keep")
    monkeypatch.chdir(work)
    for out in (".", "..", str(work), str(tmp_path)):
        with pytest.raises(OutputLocationError, match="current folder"):
            check_output_location(out, overwrite=True)
        with pytest.raises(OutputLocationError, match="current folder"):
            _write_output(Path(out), {"x": "y"}, overwrite=True)
    assert (work / "data.txt").read_text() == "keep" and sorted(os.listdir(work)) == ["data.txt"]
    check_output_location("result")  # a new subfolder is fine
    assert sorted(os.listdir(work)) == ["data.txt"]  # and the check created nothing


def test_output_inside_or_around_an_input_is_refused(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    with pytest.raises(OutputLocationError, match="inside the input folder"):
        check_output_location(frames / "edit", inputs=[frames])
    with pytest.raises(OutputLocationError, match="is or contains the input"):
        check_output_location(tmp_path, overwrite=True, inputs=[frames])


def test_unwritable_parent_is_refused(tmp_path, monkeypatch):
    from videodirector.io import outputs

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if os.geteuid() == 0:  # root may write anywhere: make the permission check see what a user would
        real = outputs._writable
        monkeypatch.setattr(outputs, "_writable", lambda p: Path(p) != ro and real(p))
    try:
        with pytest.raises(OutputLocationError, match="ro is not writable"):
            check_output_location(ro / "out")
        with pytest.raises(OutputLocationError, match="not writable"):
            check_output_location(ro / "deeper" / "out")
    finally:
        ro.chmod(0o755)
    assert list(ro.iterdir()) == []


def test_folder_changed_during_the_run_keeps_both(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(OutputLocationError, match="finished results are in"):
        with atomic_folder(out) as tmp:
            (tmp / "edited.mp4").write_text("result")
            out.mkdir()
            (out / "theirs.txt").write_text("theirs")  # someone else wrote there meanwhile
    assert (out / "theirs.txt").read_text() == "theirs"
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("out.new-")]
    assert len(kept) == 1 and (kept[0] / "edited.mp4").read_text() == "result"


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _fake_temp(parent: Path, name: str, pid: int, kind: str = "tmp", owner: bool = True) -> Path:
    d = parent / f".{name}.{kind}-{pid}-{os.urandom(4).hex()}"
    d.mkdir()
    (d / "partial.mp4").write_bytes(b"half")
    if owner:
        import socket

        (d / OWNER).write_text(json.dumps({"tool": "videodirector", "pid": pid, "host": socket.gethostname()}))
    return d


def test_stale_temp_folders_of_dead_runs_are_removed(tmp_path):
    dead = _fake_temp(tmp_path, "out", _dead_pid())
    live = _fake_temp(tmp_path, "out", os.getpid())
    stranger = _fake_temp(tmp_path, "out", _dead_pid(), owner=False)  # not recognisably ours
    other_name = _fake_temp(tmp_path, "other", _dead_pid())
    _write_output(tmp_path / "out", {"a.txt": "x"})
    assert not dead.exists() and live.exists() and stranger.exists() and other_name.exists()
    assert clean_stale_temp(tmp_path) == [other_name] and live.exists() and stranger.exists()
    empty = tmp_path / f".out.tmp-{_dead_pid()}-0123abcd"  # killed before its owner record: nothing to lose
    empty.mkdir()
    empty_live = tmp_path / f".out.tmp-{os.getpid()}-0123abce"
    empty_live.mkdir()
    assert clean_stale_temp(tmp_path, "out") == [empty] and empty_live.exists() and stranger.exists()


def test_previous_output_moved_aside_by_a_killed_run_is_put_back(tmp_path):
    _write_output(tmp_path / "out", {"a.txt": "previous"})
    old = tmp_path / f".out.old-{_dead_pid()}-abcdef12"
    os.replace(tmp_path / "out", old)  # killed between moving the old output aside and renaming the new one
    clean_stale_temp(tmp_path)
    assert (tmp_path / "out" / "a.txt").read_text() == "previous" and not old.exists()


def test_sigkilled_run_leaves_a_temp_folder_that_the_next_run_removes(tmp_path):
    code = (f"import os, signal; from videodirector.io.outputs import atomic_folder\n"
            f"with atomic_folder({str(tmp_path / 'out')!r}) as t:\n"
            f"    (t / 'partial.mp4').write_bytes(b'x')\n"
            f"    os.kill(os.getpid(), signal.SIGKILL)\n")
    r = subprocess.run([sys.executable, "-c", code], timeout=120)
    assert r.returncode == -signal.SIGKILL
    left = [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp-")]
    assert len(left) == 1 and (left[0] / OWNER).exists()
    _write_output(tmp_path / "out", {"a.txt": "x"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_write_video_refuses_bad_fps_and_applies_crf_18(tmp_path):
    for fps in (0, -5, float("nan")):
        with pytest.raises(ValueError, match="fps must be a positive number"):
            write_video(tmp_path / "v.mp4", frames_u8(4), fps)
    write_video(tmp_path / "v.mp4", frames_u8(4), 8)
    assert b"crf=18.0" in (tmp_path / "v.mp4").read_bytes()  # x264's settings string in the stream
    write_video(tmp_path / "v.mp4", frames_u8(4), 8, crf=30)
    assert b"crf=30.0" in (tmp_path / "v.mp4").read_bytes()
    with av.open(str(tmp_path / "v.mp4")) as c:
        assert c.streams.video[0].frames == 4 and c.streams.video[0].average_rate == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.mp4"]  # no temporary file left


def test_side_by_side_has_a_caption_band_with_each_label(tmp_path):
    a = np.full((4, 64, 64, 3), 128, np.uint8)
    plain = hstack_videos([a, a, a])
    labelled = hstack_videos([a, a, a], labels=["source", "edited", "mask"])
    band = labelled.shape[1] - plain.shape[1]
    assert plain.shape == (4, 64, 200, 3) and band > 0 and labelled.shape[1] % 2 == 0
    assert np.array_equal(labelled[:, band:], plain)
    for x0 in (0, 68, 136):  # dark text above each column, white elsewhere in the band
        assert (labelled[0, :band, x0: x0 + 64] < 100).any()
    assert (labelled[0, :band, 64:68] == 255).all()
    with pytest.raises(ValueError):
        hstack_videos([a, a], labels=["only one"])


def test_contact_sheet_widens_for_long_labels(tmp_path):
    v = np.full((4, 32, 32, 3), 100, np.uint8)
    contact_sheet({"source": v}, tmp_path / "short.png")
    contact_sheet({"reconstruction (null-text)": v}, tmp_path / "long.png")
    assert Image.open(tmp_path / "long.png").width > Image.open(tmp_path / "short.png").width


# ============================================================================ inversion cache
def _inversion(T: int = 3, Fr: int = 4) -> Inversion:
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(Fr, 1, 32, 32, dtype=torch.bool)
    masks[:, :, 8:20, 8:20] = True
    return Inversion(torch.randn(T + 1, 4, Fr, 4, 4, generator=g), masks, torch.rand(Fr, 3, 32, 32, generator=g) * 2 - 1,
                     torch.randn(T, 1, 77, 8, generator=g), torch.randn(T, 4, Fr, 4, 4, generator=g),
                     torch.randn(1, 4, Fr, 4, 4, generator=g),
                     {"source_prompt": "a cat", "timesteps": [999, 666, 333][:T], "settings": {"seed": 0}})


def test_intact_cache_entry_loads_bit_identically(tmp_path):
    inv = _inversion()
    inv.save(tmp_path / "e")
    back = Inversion.load(tmp_path / "e", expected={"source_prompt": "a cat", "num_steps": 3,
                                                    "shape": {"source_frames": [4, 3, 32, 32], "masks": [4, 1, 32, 32]}})
    for k in ("latents", "masks", "source_frames", "null_embeddings", "guidance", "reconstruction"):
        assert torch.equal(getattr(back, k), getattr(inv, k)), k
    assert back.meta == inv.meta
    rec = json.loads((tmp_path / "e" / "inversion.json").read_text())["_integrity"]
    assert rec["size"] == (tmp_path / "e" / "inversion.safetensors").stat().st_size and len(rec["sha256"]) == 64
    assert rec["tensors"]["latents"] == {"shape": [4, 4, 4, 4, 4], "dtype": "float32"}
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["inversion.json", "inversion.safetensors"]


def _damage(folder: Path, how: str) -> None:
    st, js = folder / "inversion.safetensors", folder / "inversion.json"
    if how == "truncated":
        st.write_bytes(st.read_bytes()[: st.stat().st_size // 2])
    elif how == "empty":
        st.write_bytes(b"")
    elif how == "broken json":
        js.write_text(js.read_text()[:-20])
    elif how == "missing json":
        js.unlink()
    elif how == "missing tensors":
        st.unlink()
    elif how == "flipped byte":
        data = bytearray(st.read_bytes())
        data[-5] ^= 0x01
        st.write_bytes(bytes(data))
    elif how == "no integrity record":
        doc = json.loads(js.read_text())
        doc.pop("_integrity")
        js.write_text(json.dumps(doc))


@pytest.mark.parametrize("how, expected", [
    ("truncated", "bytes but its record says"), ("empty", "has 0 bytes"), ("broken json", "not valid JSON"),
    ("missing json", "inversion.json is missing"), ("missing tensors", "inversion.safetensors is missing"),
    ("flipped byte", "does not match its recorded sha256"), ("no integrity record", "no integrity record"),
])
def test_damaged_cache_entry_is_refused(tmp_path, how, expected):
    _inversion().save(tmp_path / "e")
    size = (tmp_path / "e" / "inversion.safetensors").stat().st_size
    _damage(tmp_path / "e", how)
    if how == "flipped byte":
        assert (tmp_path / "e" / "inversion.safetensors").stat().st_size == size
    with pytest.raises(CacheEntryError) as exc:
        Inversion.load(tmp_path / "e")
    msg = str(exc.value)
    assert expected in msg and str(tmp_path / "e") in msg and "invert --overwrite" in msg and "\n" not in msg


@pytest.mark.parametrize("field, value, expected", [
    ("masks", torch.zeros(3, 1, 32, 32, dtype=torch.bool), "masks have shape (3, 1, 32, 32)"),
    ("source_frames", torch.zeros(4, 3, 16, 16), "source_frames have shape"),
    ("guidance", torch.zeros(2, 4, 4, 4, 4), "guidance has shape"),
    ("null_embeddings", torch.zeros(3, 2, 77, 8), "null_embeddings have shape"),
    ("reconstruction", torch.zeros(2, 4, 4, 4, 4), "reconstruction has shape"),
    ("latents", torch.full((4, 4, 4, 4, 4), float("nan")), "non-finite"),
])
def test_well_formed_entry_with_wrong_content_is_refused(tmp_path, field, value, expected):
    inv = _inversion()
    setattr(inv, field, value)
    inv.save(tmp_path / "e")  # a valid file with a matching checksum, but inconsistent content
    with pytest.raises(CacheEntryError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        Inversion.load(tmp_path / "e")


def test_entry_made_for_other_settings_is_refused(tmp_path):
    _inversion().save(tmp_path / "e")
    with pytest.raises(CacheEntryError, match="source_prompt is 'a cat', 'a dog' expected"):
        Inversion.load(tmp_path / "e", expected={"source_prompt": "a dog"})
    with pytest.raises(CacheEntryError, match="num_steps is 3, 50 expected"):
        Inversion.load(tmp_path / "e", expected={"num_steps": 50})
    with pytest.raises(CacheEntryError, match="source_frames has shape"):
        Inversion.load(tmp_path / "e", expected={"shape": {"source_frames": [16, 3, 32, 32]}})
    assert Inversion.load(tmp_path / "e", expected={"settings": {"seed": 0}}).num_steps == 3


def test_damaged_cache_entry_can_be_replaced_atomically(tmp_path):
    folder = tmp_path / "cache" / "abc"
    with atomic_folder(folder) as tmp:
        _inversion().save(tmp)
    _damage(folder, "truncated")
    with pytest.raises(CacheEntryError):
        Inversion.load(folder)
    with atomic_folder(folder, overwrite=True) as tmp:  # what the api does after a CacheEntryError
        _inversion().save(tmp)
    assert Inversion.load(folder).num_steps == 3
    legacy = tmp_path / "cache" / "old"  # an entry from before manifests: replaceable as the cache's own files
    legacy.mkdir()
    (legacy / "inversion.safetensors").write_bytes(b"x")
    (legacy / "inversion.json").write_text("{}")
    with pytest.raises(OutputLocationError):
        check_output_location(legacy, overwrite=True)
    with atomic_folder(legacy, overwrite=True, own_files=Inversion.FILES) as tmp:
        _inversion().save(tmp)
    assert Inversion.load(legacy).num_steps == 3


def test_staged_entries_replace_only_what_the_export_writes(tmp_path: Path) -> None:
    """An export into a folder that holds more (the package's weights/ holds both bundled models) replaces its own
    entries whole and leaves the others; a failed export leaves the folder as it was. No staging folder stays."""
    dest = tmp_path / "weights"
    (dest / "sd").mkdir(parents=True)
    (dest / "sd" / "stale.bin").write_text("old")
    (dest / "i2v").mkdir()
    (dest / "i2v" / "model_index.json").write_text("{}")
    with staged_entries(dest) as staged:
        (staged / "sd").mkdir()
        (staged / "sd" / "unet.bin").write_text("new")
        (staged / "training.json").write_text("{}")
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
        "i2v/model_index.json", "sd/unet.bin", "training.json"]
    with pytest.raises(RuntimeError):
        with staged_entries(dest) as staged:
            (staged / "sd").mkdir()
            raise RuntimeError("export failed")
    assert (dest / "sd" / "unet.bin").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights"]
    assert sorted(p.name for p in dest.iterdir()) == ["i2v", "sd", "training.json"]  # no staging folder inside
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputLocationError, match="is a file"):
        with staged_entries(tmp_path / "file"):
            pass
    with staged_entries(tmp_path / "fresh") as staged:  # a destination that does not exist yet
        (staged / "training.json").write_text("{}")
    assert (tmp_path / "fresh" / "training.json").is_file()
