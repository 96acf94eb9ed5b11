"""The full-size benchmarks, end to end at a tiny size on the CPU.

``benchmarks/speed.py --tiny`` (ours, diffusers' ``AnimateDiffVideoToVideoPipeline`` on the same models, the official
cost structure, direct inversion, the 1/10-iteration estimate) and ``benchmarks/memory_profile.py --small`` run in
subprocesses at the small test widths, 2-4 frames of 64 x 64 and 2 steps, writing to ``tmp_path``. The parts that
only run on a GPU (the CUDA peak counter, the allocation-history replay) are checked on made-up inputs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
REQUIRED = ("end_to_end_s", "edit_only_s", "peak_gb", "peer_v2v_s", "peer_v2v_peak_gb", "reference_ratio",
            "fast_direct_end_to_end_s")


def _run(script: str, *args: str, timeout: int = 240) -> str:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, check=False)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


TINY = ("--tiny", "--frames", "2", "--size", "64", "--steps", "2", "--inner", "1", "--threads", "1")


@pytest.fixture(scope="module")
def speed_smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("speed")
    _run("speed.py", *TINY, "--estimate-steps", "1", "--budget-s", "0", "--out", str(out), "--name", "smoke")
    return out, json.loads((out / "smoke.json").read_text())


def test_speed_smoke_runs_ours_and_the_peer(speed_smoke: tuple[Path, dict]) -> None:
    out, data = speed_smoke
    for key in REQUIRED:
        assert _finite(data.get(key)), (key, data.get(key))
    assert isinstance(data["machine"], dict) and data["machine"]["torch"]
    assert data["peer_v2v_s"] > 0 and data["peer_v2v_peak_gb"] > 0
    assert data["peer_pipeline"] == "diffusers.AnimateDiffVideoToVideoPipeline"
    assert data["peer_denoising_steps"] == 1  # int(2 steps x strength 0.8)
    assert data["peer_state_changes"] == []  # the pipeline left the shared models as ours ran them
    assert _finite(data["edit_over_peer_time"]) and _finite(data["peak_over_peer_peak"])
    assert data["reference_steps"] == 2 and data["reference_max_abs_diff"] < 1e-2  # fp32: the same edit (3e-4 seen)
    stages = data["stage_peak_gb"]
    assert set(stages) == {"encode", "ddim_inversion", "stdg_gradient", "null_text_iteration", "pivotal", "edit",
                           "decode"}
    assert all(_finite(v) and v > 0 for v in stages.values())
    assert max(stages.values()) <= data["peak_gb"] + 1e-9
    assert _finite(data["null_text_iteration_s"]) and "skipped" not in data
    assert "gpu_slowdown_s" in data and data["gpu_slowdown_s"] is None  # no GPU counters on the CPU
    assert (out / "smoke.md").read_text().startswith("# smoke")


def test_speed_partial_run_merges(speed_smoke: tuple[Path, dict]) -> None:
    """``--only-peer`` runs the peer again and keeps the rest of the file."""
    out, data = speed_smoke
    _run("speed.py", *TINY, "--only-peer", "--out", str(out), "--name", "smoke")
    merged = json.loads((out / "smoke.json").read_text())
    assert merged["end_to_end_s"] == data["end_to_end_s"] and merged["reference_ratio"] == data["reference_ratio"]
    assert merged["peer_v2v_s"] > 0 and merged["peer_state_changes"] == []
    assert merged["edit_over_peer_time"] == pytest.approx(merged["edit_only_s"] / merged["peer_v2v_s"])


def test_memory_profile_small(tmp_path: Path) -> None:
    _run("memory_profile.py", "--small", "--frames", "4", "--invert-steps", "2", "--threads", "1",
         "--out", str(tmp_path), "--name", "mem")
    data = json.loads((tmp_path / "mem.json").read_text())
    for part in ("no_checkpointing", "gradient_checkpointing"):
        assert _finite(data["null_text_iteration"][part]["peak_gb"])
    assert _finite(data["stdg_gradient"]["peak_gb"])
    assert set(data["vae"]) == {"encode_4_frames_at_once", "decode_4_frames_at_once", "decode_in_chunks_of_4"}
    assert all(_finite(v["peak_gb"]) and v["peak_gb"] > 0 for v in data["vae"].values())
    assert set(data["stored_state"]) >= {"latents", "null_embeddings", "guidance"}
    # 50 steps of (F, 77, D) null embeddings: 50 / 2 times what 2 steps stored
    nulls = data["stored_state"]["null_embeddings"]
    assert nulls["gb_at_50_steps"] == pytest.approx(nulls["gb"] * 25)
    assert data["history"] == "left out: CUDA only"
    assert (tmp_path / "mem.md").is_file()


# ------------------------------------------------------------------------- the GPU-only parts, on made-up inputs


@pytest.fixture(scope="module")
def bench():  # noqa: ANN201
    """The benchmark modules ``_common`` and ``memory_profile``, imported from ``benchmarks/``; ``sys.path`` and
    ``sys.modules`` are put back afterwards."""
    import importlib

    path, before = list(sys.path), set(sys.modules)
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("_common"), importlib.import_module("memory_profile")
    finally:
        sys.path[:] = path
        for name in ("_common", "speed", "memory_profile"):
            if name not in before:
                sys.modules.pop(name, None)


class FakeMeter:
    """A meter whose allocations the test sets: ``alloc``/``free`` move the current amount, the peak follows."""

    cuda = False

    def __init__(self) -> None:
        self.cur = self.max = 0

    def alloc(self, n: int) -> None:
        self.cur += n
        self.max = max(self.max, self.cur)

    def free(self, n: int) -> None:
        self.cur -= n

    def current(self) -> int:
        return self.cur

    def peak(self) -> int:
        return self.max

    def reset(self) -> None:
        self.max = self.cur


def test_stage_tracker_nests_and_excludes(bench) -> None:  # noqa: ANN001
    meter = FakeMeter()
    tr = bench[0].StageTracker(meter)
    with tr.stage("total"):
        meter.alloc(10)  # held
        with tr.stage("pivotal"):
            for spike in (5, 7):
                with tr.stage("step"):
                    meter.alloc(spike)
                    meter.free(spike)
        with tr.stage("edit", excludes=("decode",)):
            meter.alloc(3)
            meter.free(3)
            with tr.stage("decode"):
                meter.alloc(20)
                meter.free(20)
            meter.alloc(1)
    assert tr.peaks == {"total": 30, "pivotal": 17, "step": 17, "edit": 13, "decode": 30}
    assert tr.calls["step"] == 2 and tr.starts["edit"] == 10


def test_gpu_slug(bench) -> None:  # noqa: ANN001
    slug = bench[0].gpu_slug
    assert slug({"gpu": "NVIDIA H200"}) == "h200"
    assert slug({"gpu": "NVIDIA H100 80GB HBM3"}) == "h100"
    assert slug({"gpu": "NVIDIA A100-SXM4-80GB"}) == "a100"
    assert slug({"gpu": "NVIDIA GeForce RTX 4090"}) == "rtx4090"
    assert slug({}) == "cpu"


NVIDIA_SMI_PERFORMANCE = """
==============NVSMI LOG==============

Attached GPUs                                          : 1
GPU 00000000:00:06.0
    Performance State                                  : P0
    Clocks Event Reasons
        Idle                                           : Active
        SW Power Cap                                   : Not Active
        HW Slowdown                                    : Not Active
            HW Thermal Slowdown                        : Not Active
            HW Power Brake Slowdown                    : Not Active
        Sync Boost                                     : Not Active
        SW Thermal Slowdown                            : Not Active
    Clocks Event Reasons Counters
        SW Power Capping                               : 174995311 us
        Sync Boost                                     : 0 us
        SW Thermal Slowdown                            : 0 us
        HW Thermal Slowdown                            : 12 us
        HW Power Braking                               : 0 us
    Sparse Operation Mode                              : Disabled
"""


def test_slowdown_counters_are_read_from_nvidia_smi_and_absent_without_it(bench, monkeypatch) -> None:  # noqa: ANN001
    """A timing taken while the card was power-capped says so: the counters come in seconds per reason (the
    "Clocks Event Reasons" lines, which say Active / Not Active, are not counters), and a machine without
    ``nvidia-smi`` or CUDA reports None instead of failing the benchmark."""
    common = bench[0]
    got = common.parse_slowdown_counters(NVIDIA_SMI_PERFORMANCE)
    assert got == {"sw_power_cap": 174.995311, "sw_thermal": 0.0, "hw_thermal": 1.2e-05, "hw_power_brake": 0.0,
                   "sync_boost": 0.0}
    assert common.parse_slowdown_counters("No devices were found") == {}
    # some drivers group digits and print the micro sign
    assert common.parse_slowdown_counters("        SW Power Capping : 4,007,672,629 µs") == {"sw_power_cap": 4007.672629}

    # on CUDA the GPU torch calls cuda:0 is asked for by its UUID; the watch reports the difference since it started
    calls, texts = [], [NVIDIA_SMI_PERFORMANCE, NVIDIA_SMI_PERFORMANCE.replace("174995311 us", "184995311 us")]
    monkeypatch.setattr(common.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(common.torch.cuda, "get_device_properties", lambda i: type("P", (), {"uuid": "ab-12"})())
    monkeypatch.setattr(common.shutil, "which", lambda name: "/bin/nvidia-smi")
    monkeypatch.setattr(common.subprocess, "run",
                        lambda cmd, **kw: calls.append(cmd) or type("R", (), {"stdout": texts[len(calls) - 1]})())
    watch = common.SlowdownWatch()
    assert watch.since() == {"sw_power_cap": 10.0, "sw_thermal": 0.0, "hw_thermal": 0.0, "hw_power_brake": 0.0,
                             "sync_boost": 0.0}
    assert calls[0] == ["nvidia-smi", "-q", "-d", "PERFORMANCE", "-i", "GPU-ab-12"]
    monkeypatch.setattr(common.torch.cuda, "is_available", lambda: False)
    watch = common.SlowdownWatch()
    assert watch.start is None and watch.since() is None


def test_history_replay_finds_the_live_set_at_the_peak(bench) -> None:  # noqa: ANN001
    _site, live_at_peak = bench[1]._site, bench[1].live_at_peak
    lib = [{"filename": "/x/site-packages/diffusers/models/attention_processor.py", "line": 7, "name": "__call__"}]
    torch_frame = {"filename": "/x/site-packages/torch/nn/modules/module.py", "line": 1, "name": "_call_impl"}
    trace = [{"action": "alloc", "addr": 1, "size": 100, "frames": lib},
             {"action": "alloc", "addr": 2, "size": 50, "frames": [torch_frame, *lib]},
             {"action": "free_requested", "addr": 1, "size": 100},
             {"action": "free_completed", "addr": 1, "size": 100},
             {"action": "alloc", "addr": 3, "size": 60, "frames": []},
             {"action": "free_requested", "addr": 99, "size": 1000},  # allocated before the recording
             {"action": "oom", "size": 5}]
    best, live, n = live_at_peak({"device_traces": [trace]})
    assert best == 150 and n == len(trace)
    assert sorted(size for size, _ in live) == [50, 100]
    assert _site([torch_frame, *lib]) == "diffusers/models/attention_processor.py:7 __call__"


def test_compare_runs_pairs_cases_and_methods(tmp_path: Path) -> None:
    """Paired means and standard errors over the shared cases, by hand: A − B = [1, 3] has mean 2, SE 1."""
    def store(root: Path, method: str, values: dict[str, float]) -> None:
        (root / "cases" / method).mkdir(parents=True)
        for case, v in values.items():
            (root / "cases" / method / f"{case}.json").write_text(json.dumps({"gt_psnr": v, "flicker": 1.0}))

    a, b = tmp_path / "a", tmp_path / "b"
    store(a, "m", {"c1": 21.0, "c2": 24.0, "only-a": 99.0})
    store(b, "m", {"c1": 20.0, "c2": 21.0})
    store(b, "ref", {"c1": 10.0, "c2": 14.0})
    out = _run("compare_runs.py", str(a), str(b), "--name", "cmp", "--out", str(tmp_path))
    res = json.loads((tmp_path / "cmp.json").read_text())
    assert res["m"]["n"] == 2 and res["m"]["cases"] == ["c1", "c2"]
    g = res["m"]["gt_psnr"]
    assert (g["a"], g["b"], g["diff"], g["se"], g["beyond_2se"]) == (22.5, 20.5, 2.0, 1.0, False)
    assert res["m"]["flicker"]["diff"] == 0.0 and "| m | 2 |" in out
    _run("compare_runs.py", str(a), str(b), "--against", "ref", "--name", "vs", "--out", str(tmp_path))
    g = json.loads((tmp_path / "vs.json").read_text())["m"]["gt_psnr"]
    assert (g["diff"], g["se"], g["beyond_2se"]) == (10.5, 0.5, True)  # A − ref = [11, 10]


def test_background_rings_reads_a_stored_run(tmp_path: Path) -> None:
    """``background_rings.py`` on a made-up stored run of two cases. A method that returns the ground truth scores
    as the script's own ``ground truth`` row: its soft outline lies just outside the binary masks, so its background
    error sits in the 0-2 px ring, and beyond it only 8-bit rounding is left. One that draws the target's object
    2 px larger all round loses the background in that ring and reports the larger area; one that returns the
    source keeps the background to the last bit and draws no object of the target's colour. A strip in the wrong
    layout is refused."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from videodirector.bench.runner import shapeworld_suite
    from videodirector.io.outputs import to_uint8
    from videodirector.world.scene import OBJECT_COLOURS, render

    root = tmp_path / "shapeworld-v2"
    (root / "strips").mkdir(parents=True)
    methods = ("as-target", "fatter", "as-source")
    (root / "summary.json").write_text(json.dumps({m: {} for m in methods}))
    cases = {c.id: c for c in shapeworld_suite("shapeworld-v2")}
    for cid in ("00-colour", "01-colour", "12-shape"):
        case = cases[cid]
        (src, _), (gt, gt_m) = ((x[0][[0, 4, 8, 12]] for x in render(s)) for s in (case.source, case.target))
        grown = F.max_pool2d(gt_m.float(), 5, stride=1, padding=2) > 0
        colour = torch.tensor(OBJECT_COLOURS[case.target.colour]).view(1, 3, 1, 1) / 127.5 - 1
        fatter = torch.where(grown & ~gt_m, colour, gt)
        rows = [np.concatenate(list(to_uint8(v)), 1) for v in (src, gt, gt, fatter, src)]
        Image.fromarray(np.concatenate(rows, 0)).save(root / "strips" / f"{cid}.png")
    _run("background_rings.py", "--results", str(root), "--reference", "as-target", "--out", str(tmp_path))
    res = json.loads((tmp_path / "background_rings_shapeworld-v2.json").read_text())
    summary = res["summary"]
    assert json.dumps(summary["ground truth"]) == json.dumps(summary["as-target"])  # NaN-aware: same frames, same row
    good, fat, same = (summary[m]["colour"] for m in methods)
    assert good["background_psnr"] > 35 and good["rings"]["0-2"]["error_share"] > 0.9
    assert all(r["psnr"] > 55 for k, r in good["rings"].items() if k != "0-2")  # 8-bit rounding alone: 58.9 dB
    assert abs(good["object_area_ratio"] - 1) < 0.05
    assert fat["background_psnr"] < good["background_psnr"] - 10 and fat["rings"]["0-2"]["error_share"] > 0.99
    assert fat["object_area_ratio"] > 1.3
    assert same["background_psnr"] > 55 and same["object_area_ratio"] < 0.05
    paired = res["object_area_against"]["methods"]
    assert paired["fatter"]["colour"]["larger"] == 2 and paired["fatter"]["colour"]["mean"] > 0.3
    assert "shape" not in paired["fatter"]  # one shape case: nothing to pair
    assert set(paired) == {"fatter", "as-source"}  # the run's methods only, not the ground-truth row
    assert fat["area_background_correlation"] is None  # two colour cases: no correlation quoted
    Image.open(root / "strips" / "12-shape.png").crop((0, 64, 256, 320)).save(root / "strips" / "12-shape.png")
    proc = subprocess.run([sys.executable, str(BENCH / "background_rings.py"), "--results", str(root), "--out", str(tmp_path)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "expected source, ground truth and 3 methods" in proc.stderr


def test_trajectory_probe_takes_a_named_variant_or_any_one_setting():
    """``--variants`` names a stored variant or gives one setting as ``section.key=value``, parsed as YAML
    (numbers, booleans, words); anything else stops with one line naming the choices."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("trajectory_probe", BENCH / "trajectory_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    assert probe.variant_overrides("tau_s=1.0") == {"control.self_replace_steps": 1.0}
    assert probe.variant_overrides("control.mask_blend_start=1.0") == {"control.mask_blend_start": 1.0}
    assert probe.variant_overrides("control.mask_blend_dilation=0") == {"control.mask_blend_dilation": 0}
    assert probe.variant_overrides("control.sa1=false") == {"control.sa1": False}
    assert probe.variant_overrides("inversion.null_text=none") == {"inversion.null_text": "none"}
    for bad in ("tau_s", "mask_blend_start=1.0"):
        with pytest.raises(SystemExit, match="neither one of"):
            probe.variant_overrides(bad)


def test_latent_reset_probe_keeps_the_source_latents_where_the_edit_must_keep_them(tmp_path: Path) -> None:
    """Two steps on the bundled models: a background case keeps the object's latent cells (its masks' share of
    the latent, as ``latent_keep_region`` counts it), and the decoded composite scores unlike the plain edit."""
    from videodirector.bench.runner import select_cases
    from videodirector.io.masks import latent_keep_region
    from videodirector.world.scene import render

    _run("latent_reset_probe.py", "--cases", "24-background", "--steps", "2", "--inner-steps", "1", "--threads", "1",
         "--out", str(tmp_path), "--name", "probe")
    row = json.loads((tmp_path / "probe_cpu.json").read_text())["results"]["24-background"]
    masks = render(select_cases(case_ids=["24-background"])[0].source)[1][0]
    assert row["edit_target"] == "background"
    keep = latent_keep_region(masks, tuple(row["latent_hw"]), "background", 0)
    assert row["kept_latent_fraction"] == pytest.approx(float(keep.mean())) and 0 < keep.mean() < 0.5
    assert row["edit"] != row["source latents kept"] and all(map(_finite, row["edit"].values()))
