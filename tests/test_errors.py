"""Every user mistake gives one clear line (exit 2), never a traceback."""

import sys

import numpy as np
import pytest
import torch

from videodirector import cli
from videodirector.io.outputs import to_uint8, write_video

from conftest import toy_inputs


def run_cli(args, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["videodirector", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    err = capsys.readouterr().err
    return exc.value.code, " ".join(err.split())


@pytest.fixture()
def inputs(tmp_path):
    frames, masks = toy_inputs(frames=16)
    write_video(tmp_path / "v.mp4", to_uint8(frames))
    from PIL import Image

    (tmp_path / "m").mkdir()
    for i, m in enumerate(masks):
        Image.fromarray((m[0].numpy() * 255).astype(np.uint8)).save(tmp_path / "m" / f"{i:04d}.png")
    return tmp_path


def _base(tiny_paths, inputs):
    return ["edit", "--video", str(inputs / "v.mp4"), "--masks", str(inputs / "m"), "--source-prompt",
            "a red circle moving right", "--target-prompt", "a blue circle moving right", "--base", str(tiny_paths[0]),
            "--motion-adapter", str(tiny_paths[1]), "--device", "cpu", "--height", "64", "--width", "64",
            "--steps", "2", "--inner-steps", "1", "--out", str(inputs / "out"), "--cache-dir", str(inputs / "cache")]


CASES = {
    "missing file": (lambda b, d: [*b, "--video", str(d / "nope.mp4")], "video not found"),
    "unreadable video": (lambda b, d: [*b, "--video", str(d / "bad.mp4")], "cannot read video"),
    "mask count": (lambda b, d: [*b, "--masks", str(d / "m3")], "3 masks"),
    "mask size": (lambda b, d: [*b, "--masks", str(d / "msize")], "mask size 8x8 differs from video size 64x64"),
    "edit word absent": (lambda b, d: [*b, "--edit-words", "zebra"], "'zebra' does not appear"),
    "edit weight without words": (lambda b, d: [*b, "--edit-weight", "2"], "name the words too"),
    "too many frames": (lambda b, d: [*b, "--frames", "40"], "1 to 32 frames"),
    "frames beyond video": (lambda b, d: [*b, "--frames", "24"], "has 16 frames but 24"),
    "unknown config key": (lambda b, d: ["edit", str(d / "bad.yaml")], "unknown config key 'inversion.stepz'"),
    "missing weights": (lambda b, d: [*b, "--base", str(d / "no_sd")], "SD 1.5 weights not found"),
    "missing adapter": (lambda b, d: [*b, "--motion-adapter", str(d / "mm.ckpt")], "motion adapter checkpoint not found"),
    "bad size": (lambda b, d: [*b, "--height", "60"], "multiples of 8"),
    "mask blend without masks": (lambda b, d: [*b[:b.index("--masks")], *b[b.index("--masks") + 2:], "--mask-blend"],
                                 "the mask blend needs masks; pass --masks DIR"),
    "renoise without mask blend": (lambda b, d: [*b, "--renoise"], "needs control.mask_blend: add --mask-blend"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gives_one_clear_line(case, tiny_paths, inputs, capsys, monkeypatch):
    d = inputs
    (d / "bad.mp4").write_bytes(b"not a video")
    (d / "bad.yaml").write_text("inversion:\n  stepz: 3\n")
    (d / "m3").mkdir()
    (d / "msize").mkdir()
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(d / "m3" / f"{i}.png")
    for i in range(16):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(d / "msize" / f"{i:02d}.png")
    make, expected = CASES[case]
    code, err = run_cli(make(_base(tiny_paths, d), d), capsys, monkeypatch)
    assert code == 2
    assert expected in err, err
    assert "Traceback" not in err and err.count("error:") == 1


def test_gpu_out_of_memory_names_the_flags(tiny_paths, inputs, capsys, monkeypatch):
    from videodirector.methods.videodirector import VideoDirector

    def boom(*a, **k):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(VideoDirector, "invert", boom)
    code, err = run_cli(_base(tiny_paths, inputs), capsys, monkeypatch)
    assert code == 2 and "--gradient-checkpointing" in err


def test_existing_output_is_not_overwritten(tiny_paths, inputs, capsys, monkeypatch):
    (inputs / "out").mkdir()
    (inputs / "out" / "keep.txt").write_text("mine")
    code, err = run_cli(_base(tiny_paths, inputs), capsys, monkeypatch)
    assert code == 2 and "--overwrite" in err and (inputs / "out" / "keep.txt").read_text() == "mine"


def test_command_line_config_is_validated_as_the_method_runs_it(tmp_path):
    """``--renoise`` with ``vd-mask-blend`` (whose settings switch the blend on) is valid; with the full method it
    is one line. ``--edit-weight`` alone reweights the words a config file names."""
    from videodirector.errors import UserError

    cfg = cli._config(None, cli._overrides(renoise=True), "vd-mask-blend")
    assert cfg.control.mask_blend and cfg.control.mask_blend_renoise
    with pytest.raises(UserError, match="needs control.mask_blend"):
        cli._config(None, cli._overrides(renoise=True), "videodirector")
    (tmp_path / "c.yaml").write_text("prompts: {equalizer_words: [blue, circle], equalizer_values: [1, 1]}\n")
    flags = cli._overrides(edit_weight=2.0)
    assert cli._config(tmp_path / "c.yaml", flags, "videodirector").prompts.equalizer_values == [2.0, 2.0]
    assert flags["prompts.equalizer_values"] == [2.0, 2.0]  # what the Editor applies again


def test_edit_weight_zero_is_a_weight():
    """``--edit-weight 0`` removes the words' attention (a valid weight), it does not fall back to 1."""
    over = cli._overrides(edit_words="blue, circle", edit_weight=0.0)
    assert over["prompts.equalizer_words"] == ["blue", "circle"] and over["prompts.equalizer_values"] == [0.0, 0.0]
    assert cli._overrides(edit_words="blue")["prompts.equalizer_values"] == [1.0]


def test_command_line_flags_win_over_a_variants_settings(tiny_paths, inputs, monkeypatch):
    """``vd-mask-blend`` registers no room around the object; ``--mask-blend-dilation 1`` given with it is
    what the edit runs with (result.json's config), and without the flag the variant's 0 stays."""
    import json

    for flag, dilation in ((["--mask-blend-dilation", "1"], 1), ([], 0)):
        out = inputs / f"out{dilation}"
        args = [*_base(tiny_paths, inputs), "--method", "vd-mask-blend", *flag, "--out", str(out)]
        monkeypatch.setattr(sys, "argv", ["videodirector", *args])
        cli.main()
        control = json.loads((out / "result.json").read_text())["config"]["control"]
        assert control["mask_blend"] and control["mask_blend_dilation"] == dilation


@pytest.mark.parametrize("shard, expected", [("3/2", "shard 3/2 is out of range"), ("a/b", "is not I/N")])
def test_bench_bad_shard(shard, expected, tmp_path, capsys, monkeypatch):
    code, err = run_cli(["bench", "--shard", shard, "--results", str(tmp_path), "--cases", "1"], capsys, monkeypatch)
    assert code == 2 and expected in err and "Traceback" not in err


def test_bench_stored_only_without_results_is_one_line(tmp_path, capsys, monkeypatch):
    code, err = run_cli(["bench", "--stored-only", "--results", str(tmp_path), "--cases", "1"], capsys, monkeypatch)
    assert code == 2 and "no case of shapeworld-v2 is finished" in err and "Traceback" not in err


def test_metrics_flow_problem_is_one_line(inputs, capsys, monkeypatch):
    v = str(inputs / "v.mp4")
    code, err = run_cli(["metrics", v, v, "--size", "64", "--flow", str(inputs / "none.pth")], capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err
    assert "need a working torchvision" in err or "none.pth' not found" in err


def test_metrics_lpips_problem_is_one_line(inputs, capsys, monkeypatch):
    v = str(inputs / "v.mp4")
    code, err = run_cli(["metrics", v, v, "--size", "64", "--lpips", "alex"], capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "lpips" in err.lower()


@pytest.mark.parametrize("setting, expected", [
    ("foo.bar=1", "unknown config key 'foo.bar'"),
    ("assd.iterations", "is not KEY=VALUE"),
    ("assd.iterations=abc", "'assd.iterations' must be an integer"),
    ("assd.iterations=[1", "not valid YAML"),
])
def test_bench_bad_set_is_one_line_before_any_work(setting, expected, tmp_path, capsys, monkeypatch):
    import videodirector.bench.runner as runner

    monkeypatch.setattr(runner, "run_bench", lambda *a, **k: pytest.fail("the bench ran despite a bad --set"))
    code, err = run_cli(["bench", "--set", setting, "--results", str(tmp_path), "--cases", "1"], capsys, monkeypatch)
    assert code == 2 and expected in err and "Traceback" not in err


def test_bench_set_reaches_the_run_and_every_worker(tmp_path, capsys, monkeypatch):
    import videodirector.bench.runner as runner

    seen: dict = {}
    monkeypatch.setattr(runner, "run_workers", lambda n, options, *a, **k: seen.update(options=options,
                                                                                      worker_ids=k["case_ids"]))
    monkeypatch.setattr(runner, "run_bench", lambda *a, **k: seen.update(overrides=a[-1], ids=k["case_ids"]) or {})
    monkeypatch.setattr(sys, "argv", ["videodirector", "bench", "--workers", "2", "--tune-steps", "7", "--set",
                                      "assd.iterations=30", "--set", "model.dtype=float32", "--results", str(tmp_path),
                                      "--case-ids", "05-colour, 13-shape"])
    cli.main()
    assert seen["overrides"] == {"assd.iterations": 30, "model.dtype": "float32", "video_p2p.tune_steps": 7}
    assert seen["ids"] == seen["worker_ids"] == ["05-colour", "13-shape"]
    opts = seen["options"]
    assert [opts[i + 1] for i, o in enumerate(opts) if o == "--set"] == ["assd.iterations=30", "model.dtype=float32"]
    assert opts[opts.index("--case-ids") + 1] == "05-colour, 13-shape"


def test_bench_unknown_case_id_is_one_line_before_any_work(tmp_path, capsys, monkeypatch):
    import videodirector.models.loading as loading

    monkeypatch.setattr(loading, "load_models", lambda *a, **k: pytest.fail("models loaded despite a bad --case-ids"))
    code, err = run_cli(["bench", "--case-ids", "05-colour,5-colour", "--results", str(tmp_path)], capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "shapeworld-v2 has no case '5-colour'" in err and "00-colour ... 35-texture" in err
    assert not list(tmp_path.rglob("*.json"))
    code, err = run_cli(["bench", "--case-ids", " , ", "--results", str(tmp_path)], capsys, monkeypatch)
    assert code == 2 and "names no case" in err and len(err.strip().splitlines()) == 1
