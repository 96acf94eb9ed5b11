"""Malformed and hostile inputs through the real CLI: each is answered with its exit status and one line
that names the problem, never a traceback, and every file the user had is left exactly as it was.

Outcomes: ``refused`` (status 2, one ``error:`` line), ``recovered`` (status 0 and one ``warning:`` line:
a damaged cache entry is rebuilt), ``interrupted`` (status 130, one ``error:`` line).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from videodirector import cli
from videodirector.io.outputs import to_uint8, write_video

from conftest import toy_inputs

SOURCE = "a red circle moving right"
TARGET = "a blue circle moving right"


@dataclass
class Case:
    make: Callable[[Path, list[str]], list[str]]
    """``make(workspace, base_args) -> argv``; may create files in the workspace first."""
    outcome: str
    expected: str
    """Text the one line must contain."""


def _write_inputs(d: Path) -> None:
    frames, masks = toy_inputs(frames=16)
    write_video(d / "v.mp4", to_uint8(frames))
    (d / "m").mkdir()
    for i, m in enumerate(masks):
        Image.fromarray((m[0].numpy() * 255).astype(np.uint8)).save(d / "m" / f"{i:04d}.png")


def _base(d: Path, tiny: tuple[Path, Path]) -> list[str]:
    return ["edit", "--video", str(d / "v.mp4"), "--masks", str(d / "m"), "--source-prompt", SOURCE,
            "--target-prompt", TARGET, "--base", str(tiny[0]), "--motion-adapter", str(tiny[1]), "--device", "cpu",
            "--height", "64", "--width", "64", "--steps", "2", "--inner-steps", "1", "--out", str(d / "out"),
            "--cache-dir", str(d / "cache")]


def _set(args: list[str], flag: str, value: str | None) -> list[str]:
    """``args`` with ``flag``'s value replaced (``None``: the flag removed; absent: appended)."""
    out = list(args)
    if flag in out:
        i = out.index(flag)
        del out[i : i + 2]
    return out if value is None else [*out, flag, value]


def _yaml(d: Path, text: str, name: str = "c.yaml") -> str:
    (d / name).write_text(text)
    return str(d / name)


def _edit_with_yaml(d: Path, b: list[str], text: str) -> list[str]:
    return ["edit", _yaml(d, text), *b[1:]]


def _file(d: Path, name: str, data: bytes) -> str:
    (d / name).write_bytes(data)
    return str(d / name)


def _png_as_mp4(d: Path) -> str:
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(d / "frame.png")
    shutil.copy(d / "frame.png", d / "frame.mp4")
    return str(d / "frame.mp4")


def _truncated_mp4(d: Path) -> str:
    data = (d / "v.mp4").read_bytes()
    return _file(d, "cut.mp4", data[: len(data) // 2])


def _fifo(d: Path, name: str) -> str:
    os.mkfifo(d / name)
    return str(d / name)


def _frames_folder(d: Path, sizes: list[int]) -> str:
    (d / "frames").mkdir()
    for i, s in enumerate(sizes):
        Image.fromarray(np.full((s, s, 3), 90, np.uint8)).save(d / "frames" / f"{i:03d}.png")
    return str(d / "frames")


def _masks(d: Path, name: str, n: int, size: int = 64, value: int = 0) -> str:
    (d / name).mkdir()
    for i in range(n):
        Image.fromarray(np.full((size, size), value, np.uint8)).save(d / name / f"{i:04d}.png")
    return str(d / name)


def _sd_copy(d: Path, tiny: Path, damage: str) -> str:
    dst = d / "sd"
    shutil.copytree(tiny, dst)
    if damage == "no unet config":
        (dst / "unet" / "config.json").unlink()
    elif damage == "corrupt unet":
        for f in (dst / "unet").glob("*.safetensors"):
            f.write_bytes(f.read_bytes()[:100])
    return str(dst)


def _user_folder_as_out(d: Path, b: list[str]) -> list[str]:
    (d / "mine").mkdir()
    (d / "mine" / "holiday.mp4").write_bytes(b"precious")
    return [*_set(b, "--out", str(d / "mine")), "--overwrite"]


def _out_under_file(d: Path, b: list[str]) -> list[str]:
    _file(d, "notes.txt", b"keep me")
    return _set(b, "--out", str(d / "notes.txt" / "out"))


def _existing_output(d: Path, b: list[str]) -> list[str]:
    (d / "out").mkdir()
    (d / "out" / "edited.mp4").write_bytes(b"an earlier result")
    return b


CASES: dict[str, Case] = {
    # ---------------------------------------------------------------- video
    "video missing": Case(lambda d, b: _set(b, "--video", str(d / "nope.mp4")), "refused", "video not found"),
    "video is text": Case(lambda d, b: _set(b, "--video", _file(d, "t.mp4", b"not a video at all" * 20)),
                          "refused", "t.mp4"),
    "video empty file": Case(lambda d, b: _set(b, "--video", _file(d, "e.mp4", b"")), "refused", "e.mp4"),
    "video is a png renamed mp4": Case(lambda d, b: _set(b, "--video", _png_as_mp4(d)), "refused", "PNG"),
    "video truncated": Case(lambda d, b: _set(b, "--video", _truncated_mp4(d)), "refused", "cut.mp4"),
    "video is a fifo": Case(lambda d, b: _set(b, "--video", _fifo(d, "pipe.mp4")), "refused", "not a regular file"),
    "video unsupported format": Case(lambda d, b: _set(b, "--video", _file(d, "v.txt", b"x")), "refused",
                                     "not a video"),
    "video folder without frames": Case(lambda d, b: _set(b, "--video", str(_masks(d, "empty_dir", 0))), "refused",
                                        "no image frames"),
    "video frames of two sizes": Case(lambda d, b: _set(b, "--video", _frames_folder(d, [64] * 8 + [32] * 8)),
                                      "refused", "different sizes"),
    "more frames than the video": Case(lambda d, b: _set(b, "--frames", "24"), "refused", "has 16 frames but 24"),
    "zero frames": Case(lambda d, b: _set(b, "--frames", "0"), "refused", "1 to 32 frames"),
    "zero height": Case(lambda d, b: _set(b, "--height", "0"), "refused", "multiples of 8 from 64"),
    "huge width": Case(lambda d, b: _set(b, "--width", "100000"), "refused", "multiples of 8 from 64"),
    "height not a multiple of 8": Case(lambda d, b: _set(b, "--height", "60"), "refused", "multiples of 8"),
    # ---------------------------------------------------------------- masks
    "masks missing": Case(lambda d, b: _set(b, "--masks", str(d / "nomasks")), "refused", "masks not found"),
    "masks too few": Case(lambda d, b: _set(b, "--masks", _masks(d, "m3", 3, value=255)), "refused", "3 masks"),
    "masks of another size": Case(lambda d, b: _set(b, "--masks", _masks(d, "m8", 16, size=8, value=255)), "refused",
                                  "mask size 8x8 differs"),
    "masks all empty": Case(lambda d, b: _set(b, "--masks", _masks(d, "m0", 16, value=0)), "refused", "empty"),
    "masks folder without images": Case(lambda d, b: _set(b, "--masks", _masks(d, "mnone", 0)), "refused",
                                        "no image masks"),
    "masks is a fifo": Case(lambda d, b: _set(b, "--masks", _fifo(d, "mpipe")), "refused", "not a regular file"),
    "mask blend without masks": Case(lambda d, b: [*_set(b, "--masks", None), "--mask-blend"], "refused",
                                     "the mask blend needs masks"),
    # ---------------------------------------------------------------- prompts
    "edit word absent": Case(lambda d, b: [*b, "--edit-words", "zebra"], "refused", "'zebra' does not appear"),
    "edit word past token 77": Case(
        lambda d, b: [*_set(b, "--target-prompt", "a blue circle " + "moving " * 80 + "zebra"), "--edit-words",
                      "zebra"], "refused", "77-token limit"),
    "no source prompt": Case(lambda d, b: _set(b, "--source-prompt", None), "refused", "no source prompt"),
    "no target prompt": Case(lambda d, b: _set(b, "--target-prompt", None), "refused", "no target prompt"),
    # ---------------------------------------------------------------- config
    "config missing": Case(lambda d, b: ["edit", str(d / "none.yaml"), *b[1:]], "refused", "config file not found"),
    "config unknown key": Case(lambda d, b: _edit_with_yaml(d, b, "inversion:\n  stepz: 3\n"), "refused",
                               "unknown config key 'inversion.stepz'"),
    "config wrong type": Case(lambda d, b: _edit_with_yaml(d, b, "inversion:\n  num_steps: ten\n"), "refused",
                              "must be an integer"),
    "config not yaml": Case(lambda d, b: _edit_with_yaml(d, b, "inversion: [1, 2\n"), "refused", "not valid YAML"),
    "config a list": Case(lambda d, b: _edit_with_yaml(d, b, "- 1\n- 2\n"), "refused", "must hold a mapping"),
    "guidance nan": Case(lambda d, b: _edit_with_yaml(d, b, "inversion:\n  guidance_scale: .nan\n"), "refused",
                         "inversion.guidance_scale"),
    "guidance negative": Case(lambda d, b: [*b, "--guidance-scale", "-3"], "refused", "inversion.guidance_scale"),
    "stdg infinite": Case(lambda d, b: [*b, "--stdg", "inf,0.5,0,0.5"], "refused", "stdg.coefficients[0]"),
    "stdg unparsable": Case(lambda d, b: [*b, "--stdg", "a,b,c,d"], "refused", "--stdg 'a,b,c,d' is not 4"),
    "stdg three numbers": Case(lambda d, b: [*b, "--stdg", "0.5,0.5,0"], "refused", "is not 4 comma-separated"),
    "stdg block that does not exist": Case(
        lambda d, b: _edit_with_yaml(d, b, "stdg:\n  temporal_block_weights: {up_blocks.7: 1.0}\n"), "refused",
        "'up_blocks.7', which this UNet does not have"),
    "stdg block not a block name": Case(
        lambda d, b: _edit_with_yaml(d, b, "stdg:\n  appearance_block_weights: {decoder: 1.0}\n"), "refused",
        "'decoder' is not a UNet block name"),
    "top_k beyond the frames": Case(lambda d, b: _edit_with_yaml(d, b, "stdg:\n  top_k: 99\n"), "refused",
                                    "stdg.top_k=99"),
    "inner steps negative": Case(lambda d, b: _set(b, "--inner-steps", "-1"), "refused", "null_inner_steps=-1"),
    "edit weight absurd": Case(lambda d, b: [*b, "--edit-words", "blue", "--edit-weight", "1e9"], "refused",
                               "equalizer_values[0]"),
    "seed past 64 bits": Case(lambda d, b: [*b, "--seed", str(2**70)], "refused", "seed="),
    "device tpu": Case(lambda d, b: _set(b, "--device", "tpu"), "refused", "'tpu'"),
    "float16 on the cpu": Case(lambda d, b: [*b, "--dtype", "float16"], "refused", "float16 does not work on the CPU"),
    "fps zero": Case(lambda d, b: _edit_with_yaml(d, b, "output:\n  fps: 0\n"), "refused", "output.fps=0"),
    "tau-s above one": Case(lambda d, b: [*b, "--tau-s", "2"], "refused", "control.self_replace_steps"),
    "unknown option": Case(lambda d, b: [*b, "--stepz", "3"], "refused", "No such option"),
    "bundled with base": Case(lambda d, b: [*b, "--bundled"], "refused", "--bundled and --base"),
    # ---------------------------------------------------------------- weights
    "base missing": Case(lambda d, b: _set(b, "--base", str(d / "no_sd")), "refused", "SD 1.5 weights not found"),
    "base is a file": Case(lambda d, b: _set(b, "--base", _file(d, "model.safetensors", b"x")), "refused",
                           "--single-file"),
    "base empty folder": Case(lambda d, b: _set(b, "--base", _masks(d, "empty_sd", 0)), "refused", "is empty"),
    "base without unet config": Case(lambda d, b, t=None: b, "refused", "unet/config.json is missing"),
    "base with corrupt unet": Case(lambda d, b: b, "refused", "corrupt"),
    "adapter checkpoint missing": Case(lambda d, b: _set(b, "--motion-adapter", str(d / "mm.ckpt")), "refused",
                                       "motion adapter checkpoint not found"),
    "hub id without network": Case(lambda d, b: _set(b, "--base", "nobody/no-such-model"), "refused",
                                   "cannot reach the model hub"),
    # ---------------------------------------------------------------- outputs
    "out is an existing file": Case(lambda d, b: [*_set(b, "--out", _file(d, "result.mp4", b"mine")), "--overwrite"],
                                    "refused", "is an existing file"),
    "out holds the user's files": Case(_user_folder_as_out, "refused", "holiday.mp4"),
    "out is the working directory": Case(lambda d, b: [*_set(b, "--out", "."), "--overwrite"], "refused",
                                         "is the current folder"),
    "out under a file": Case(_out_under_file, "refused", "notes.txt"),
    "out exists without overwrite": Case(_existing_output, "refused", "--overwrite"),
    "cache dir is a file": Case(lambda d, b: _set(b, "--cache-dir", _file(d, "cachefile", b"x")), "refused",
                                "is a file, not a folder"),
    "cache dir under a file": Case(lambda d, b: _set(b, "--cache-dir", str(Path(_file(d, "f", b"x")) / "c")),
                                   "refused", "lies under the file"),
}


def _sha(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, list[str]]:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
        raise SystemExit(0)
    err = capsys.readouterr().err
    return exc.value.code, [line for line in err.splitlines() if line.strip()]


@pytest.fixture()
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "user"
    d.mkdir()
    _write_inputs(d)
    monkeypatch.chdir(d)
    return d


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_and_nothing_is_lost(name: str, workspace: Path, tiny_paths, capsys, monkeypatch):
    case = CASES[name]
    d = workspace
    args = _base(d, tiny_paths)
    if name == "base without unet config":
        args = _set(args, "--base", _sd_copy(d, tiny_paths[0], "no unet config"))
    elif name == "base with corrupt unet":
        args = _set(args, "--base", _sd_copy(d, tiny_paths[0], "corrupt unet"))
    argv = case.make(d, args)
    before = _sha(d)
    t0 = time.monotonic()
    code, lines = run_cli(argv, capsys)
    assert code == 2, (code, lines)
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and case.expected in " ".join(errors[0].split()), lines
    assert not any("Traceback" in line for line in lines), lines
    after = _sha(d)
    assert {k: after.get(k) for k in before} == before  # every file the user had is still there, unchanged
    assert not (d / "out").exists() or name == "out exists without overwrite"
    assert time.monotonic() - t0 < 60  # no hang (the hub case answers in seconds)


# ---------------------------------------------------------------- cache damage: recovered
def _truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip_byte(f: Path) -> None:
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x55
    f.write_bytes(bytes(data))


def _wrong_shape(f: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    t = load_file(str(f))
    t["latents"] = torch.zeros(2, 4, 16, 4, 4)
    save_file(t, str(f))


CACHE_DAMAGE: dict[str, Callable[[Path], None]] = {
    "tensors truncated": lambda e: _truncate(e / "inversion.safetensors"),
    "tensors empty": lambda e: (e / "inversion.safetensors").write_bytes(b""),
    "tensors missing": lambda e: (e / "inversion.safetensors").unlink(),
    "json broken": lambda e: (e / "inversion.json").write_text("{not json"),
    "json missing": lambda e: (e / "inversion.json").unlink(),
    "one byte flipped": lambda e: _flip_byte(e / "inversion.safetensors"),
    "tensors of the wrong shape": lambda e: _wrong_shape(e / "inversion.safetensors"),
}


@pytest.mark.parametrize("damage", list(CACHE_DAMAGE))
def test_damaged_cache_entry_is_named_and_rebuilt(damage: str, workspace: Path, tiny_paths, capsys):
    d = workspace
    args = _base(d, tiny_paths)
    code, lines = run_cli(["invert", *_set(_set(args, "--target-prompt", None), "--out", None)[1:]], capsys)
    assert code == 0, lines
    (entry,) = [p for p in (d / "cache").iterdir() if not p.name.startswith(".")]
    CACHE_DAMAGE[damage](entry)
    before = {k: v for k, v in _sha(d).items() if not k.startswith("cache")}
    code, lines = run_cli(args, capsys)
    assert code == 0, lines
    warnings = [line for line in lines if line.startswith("warning:") and "cache" in line]
    assert len(warnings) == 1 and entry.name in warnings[0] and "again" in warnings[0], lines
    assert not any("Traceback" in line or line.startswith("error:") for line in lines), lines
    assert (d / "out" / "edited.mp4").is_file()
    # the entry was rebuilt: a second edit reads it without a warning
    code, lines = run_cli([*_set(args, "--out", str(d / "out2"))], capsys)
    assert code == 0 and not [line for line in lines if line.startswith("warning:") and "cache" in line], lines
    after = _sha(d)
    assert {k: after.get(k) for k in before} == before


# ---------------------------------------------------------------- interruption
def _cli_process(argv: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "videodirector", *argv], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_a_failure_after_ctrl_c_is_reported_as_the_interrupt(workspace: Path, tiny_paths, capsys, monkeypatch):
    """A Ctrl-C can land inside a library's import, which may swallow the KeyboardInterrupt and leave the
    module half-built, so that the next use fails another way (numpy's ``__getattr__`` recursing, seen under
    load at 0.4 s). The run then still ends as interrupted: status 130 and one line; a failure without Ctrl-C
    stays an internal error (status 1)."""
    import videodirector.api as api

    def cut_short_import(cfg):  # noqa: ANN001, ANN202
        cli._interrupted = ctrl_c
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(api, "load_inputs", cut_short_import)
    for ctrl_c, status, words in ((True, 130, "interrupted"), (False, 1, "internal error (RecursionError")):
        code, lines = run_cli(_base(workspace, tiny_paths), capsys)
        lines = [line for line in lines if not line.startswith("warning:")]
        assert code == status and len(lines) == 1 and words in lines[0], (code, lines)
    assert not (workspace / "out").exists()


def test_ctrl_c_inside_an_import_stops_at_once_with_one_line(tmp_path: Path):
    """A Ctrl-C that lands while a module is being imported is not raised into it: raised through torch's C++
    (which its imports call back from) it aborted the process (status -6 with a C++ dump, seen at 1.0 s under
    load). The run stops there with status 130 and the usual line; the import goes no further."""
    (tmp_path / "slow_module.py").write_text(
        "import os, signal, time\nos.kill(os.getpid(), signal.SIGINT)\ntime.sleep(0.5)\nprint('import went on')\n")
    code = ("from videodirector import cli\ncli.install_interrupt_handler()\nimport slow_module\n"
            "print('run went on')\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 130 and len(lines) == 1 and "interrupted" in lines[0], (proc.returncode, proc.stderr)
    assert "went on" not in proc.stdout and "Traceback" not in proc.stderr


@pytest.mark.parametrize("delay", [0.05, 0.2, 0.4, 0.7, 1.0, 1.5, 2.5, 4.0])
def test_ctrl_c_always_stops_the_run(delay: float, workspace: Path, tiny_paths):
    """Ctrl-C at any moment of start-up and of the run stops it: status 130 and one line. In the first tens of
    ms, before ``videodirector.__main__`` has run its first lines, the interpreter itself is still starting
    (``site``, ``runpy``): the signal's default action or Python's own handler ends the process (-2), the latter
    with its KeyboardInterrupt traceback of that start-up code (seen at 0.05 s on a loaded 2-core machine)."""
    d = workspace
    proc = _cli_process(_base(d, tiny_paths), d)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"Ctrl-C after {delay} s did not stop the run")
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("warning:")]
    assert proc.returncode in (130, -signal.SIGINT), (proc.returncode, err)  # never 0: the run did not go on
    if proc.returncode == 130:
        assert len(lines) == 1 and "interrupted" in lines[0], err
        assert "Traceback" not in err, err
    else:  # stopped before our handler existed: no frame of the tool or of a library it imports
        assert "cli.py" not in err and "site-packages" not in err, err
    assert not (d / "out").exists()


def test_a_killed_run_leaves_no_output_and_the_next_run_cleans_up(workspace: Path, tiny_paths, capsys):
    d = workspace
    args = [*_set(_base(d, tiny_paths), "--steps", "6"), "--no-cache"]
    proc = _cli_process(args, d)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(d.glob(".out.tmp-*")):  # wait until it is writing outputs
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (d / "out").exists()  # never a half-written output under the final name
    leftovers = list(d.glob(".out.tmp-*"))
    code, lines = run_cli(args, capsys)
    assert code == 0, lines
    assert (d / "out" / "edited.mp4").is_file()
    assert not any(p.exists() for p in leftovers) and not list(d.glob(".out.tmp-*"))
