import json
import math
from pathlib import Path

import pytest
import torch

from conftest import EPS32

from videodirector.api import BUNDLED_WEIGHTS, bundled_model_config
from videodirector.bench.runner import run_case, shapeworld_suite
from videodirector.config import EditConfig, apply_overrides
from videodirector.models.loading import load_models
from videodirector.world.evaluate import score_edit
from videodirector.world.scene import render, sample_clip


def test_generator_is_deterministic():
    assert sample_clip(123) == sample_clip(123) and sample_clip(123) != sample_clip(124)
    a, ma = render(sample_clip(123))
    b, mb = render(sample_clip(123))
    assert torch.equal(a, b) and torch.equal(ma, mb)


def test_ground_truth_edits_change_only_what_they_name():
    s = sample_clip(7, distractor_prob=1.0)
    v, m = (x[0] for x in render(s))
    for change in ({"colour": "blue" if s.colour != "blue" else "red"}, {"shape": "square" if s.shape != "square" else "circle"}):
        t = s.edited(**change)
        vt, mt = (x[0] for x in render(t))
        # one pixel beyond the masks: the anti-aliasing ramp of the edge
        outside = ~torch.nn.functional.max_pool2d((m | mt).float(), 3, 1, 1).bool()
        assert (vt - v).abs()[outside.expand_as(v)].max() < 1e-6  # measured 0: the same background ops
        assert (vt - v).abs().max() > 0.1
        assert t.centres_and_radii()[0].tolist() == s.centres_and_radii()[0].tolist()
    t = s.edited(background="orange" if s.background != "orange" else "teal")
    vt, mt = (x[0] for x in render(t))
    inside = ~torch.nn.functional.max_pool2d((~m).float(), 3, 1, 1).bool()  # one pixel inside the edge
    assert torch.equal(m, mt) and (vt - v).abs()[inside.expand_as(v)].max() < 1e-6
    assert "with a gray box" in s.caption()


def test_bundled_models_load_through_the_common_loader():
    m = load_models(apply_overrides(EditConfig(), bundled_model_config("cpu")).model)
    assert type(m.unet).__name__ == "UNetMotionModel" and m.vae_scale_factor == 4
    # all bundled weights (text-to-video 34 MB, image-to-video 38 MB) within 80 MB, each file at most 15 MB
    assert sum(f.stat().st_size for f in BUNDLED_WEIGHTS.rglob("*") if f.is_file()) <= 80 * 10**6
    assert max(f.stat().st_size for f in BUNDLED_WEIGHTS.rglob("*") if f.is_file()) <= 15 * 2**20


def test_short_end_to_end_edit_beats_an_unedited_copy():
    case = shapeworld_suite()[0]  # a colour swap
    base = apply_overrides(EditConfig(), {**bundled_model_config("cpu"), "input.height": 64, "input.width": 64,
                                          "inversion.num_steps": 8, "inversion.null_inner_steps": 1})
    models = load_models(base.model)
    scores, _ = run_case(models, base, "videodirector", case)
    copy = score_edit(render(case.source)[0][0], case.source, case.target)
    assert copy["edit_accuracy"] == 0.0
    assert scores["edit_accuracy"] > copy["edit_accuracy"] + 0.5, scores
    assert scores["trajectory_error_px"] < 6.0 and scores["background_psnr"] > 15.0  # measured 4.7 px, 64-px frames


def test_bench_workers_cover_every_kind_first():
    from videodirector.bench.runner import interleave_kinds, shapeworld_suite

    cases = shapeworld_suite()
    order = interleave_kinds(cases)
    assert sorted(c.id for c in order) == sorted(c.id for c in cases)  # a permutation
    kinds = sorted({c.kind for c in cases})
    assert sorted(c.kind for c in order[: len(kinds)]) == kinds  # the first round has one case of each kind


def test_bench_case_ids_pick_cases_in_suite_order():
    from videodirector.bench.runner import select_cases

    assert [c.id for c in select_cases(case_ids=["29-texture", "05-colour", "05-colour"])] == ["05-colour", "29-texture"]
    assert [c.id for c in select_cases(max_cases=2)] == ["00-colour", "01-colour"]
    assert [c.kind for c in select_cases("shapeworld-v2-holdout", case_ids=["13-shape"])] == ["shape"]


def test_bench_variant_on_other_model_settings_gets_its_own_models_and_inversion(tmp_path, monkeypatch):
    """``vd-motion-per-frame`` overrides ``model.motion_norm``: the bench must not hand it the shared models
    (joint norm, by the bundled model card) nor share an inversion made with them."""
    from torch import nn

    import videodirector.bench.runner as runner
    from videodirector.models.motion_norm import FrameGroupNorm, motion_transformers

    methods = ["videodirector", "vd-no-sa1", "vd-motion-per-frame"]
    base = runner.apply_overrides(runner.EditConfig(), runner.bundled_model_config("cpu"))
    case = runner.select_cases(case_ids=["05-colour"])[0]
    assert runner.inversion_groups(base, methods, case) == [["videodirector", "vd-no-sa1"], ["vd-motion-per-frame"]]
    norms: dict[str, set[type]] = {}

    def fake_run(models, base, method, case, f, shared=None, settings=None):  # noqa: ANN001, ANN202
        norms.setdefault(method, set()).update(type(m.norm) for m in motion_transformers(models.unet))
        return {}

    monkeypatch.setattr(runner, "_run_and_store", fake_run)
    runner.run_bench(methods=methods, device="cpu", case_ids=["05-colour"], results=tmp_path, shard=(0, 1))
    assert norms == {"videodirector": {nn.GroupNorm}, "vd-no-sa1": {nn.GroupNorm}, "vd-motion-per-frame": {FrameGroupNorm}}


def test_bench_reduced_cpu_mode_shards_resume_and_report(tmp_path):
    """The reduced CPU mode of the bench: two shard workers, then a gathering run that re-uses their cases."""
    import json

    from videodirector.bench.runner import run_bench

    kw = dict(methods=["videodirector", "vd-no-stdg"], device="cpu", max_cases=1, steps=2, inner_steps=1,
              results=tmp_path)
    assert run_bench(**kw, shard=(0, 2)) == {} and run_bench(**kw, shard=(1, 2)) == {}
    cases = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.json"))
    assert cases == ["shapeworld-v2/cases/vd-no-stdg/00-colour.json", "shapeworld-v2/cases/videodirector/00-colour.json"]
    stamp = (tmp_path / cases[1]).stat().st_mtime_ns
    partial = run_bench(**{**kw, "max_cases": 2}, stored_only=True)  # case 01 not run by anyone: left out, not run
    assert not list(tmp_path.rglob("01-*.json")) and set(partial) == set(kw["methods"])
    assert "1 cases" in (tmp_path / "shapeworld-v2" / "report.md").read_text()
    summary = run_bench(**kw)
    assert (tmp_path / cases[1]).stat().st_mtime_ns == stamp  # resumed, not re-run
    root = tmp_path / "shapeworld-v2"
    assert json.loads((root / "summary.json").read_text()) == summary
    for m in kw["methods"]:
        for k in ("gt_psnr", "background_psnr", "edit_accuracy", "trajectory_error_px", "reconstruction_psnr", "flicker"):
            assert set(summary[m][k]) == {"mean", "std"}
        assert 5 < summary[m]["background_psnr"]["mean"] < 60
    report = (root / "report.md").read_text()
    assert "| videodirector |" in report and (root / "metrics.png").stat().st_size > 1000
    assert "CFG scale w = 3," in report  # the bundled models' own guidance scale, not SD 1.5's 7.5
    assert "| vd-no-stdg | " in report.split("case by case")[1]  # the paired table
    assert set(json.loads((root / "paired.json").read_text())) == {"vd-no-stdg"}
    assert (root / "strips" / "00-colour.png").is_file()
    by_kind = json.loads((root / "by_kind.json").read_text())
    assert by_kind["videodirector"]["colour"]["gt_psnr"]["n"] == 1
    assert "## The full method by kind of edit" in report and "| colour | 1 |" in report
    strip = (root / "strips" / "00-colour.png").read_bytes()
    for f in (root / "cases").rglob("*.png"):  # results copied without their rows: the strip is kept, not redrawn
        f.unlink()
    run_bench(**kw, stored_only=True)
    assert (root / "strips" / "00-colour.png").read_bytes() == strip


def test_summarise_by_kind_splits_the_cases():
    from videodirector.bench.runner import shapeworld_suite, summarise_by_kind

    cases = shapeworld_suite()[:40]
    per_case = [{"case": c.id, "gt_psnr": 10.0 if c.kind == "colour" else 30.0, "edit_accuracy": 1.0} for c in cases]
    out = summarise_by_kind(per_case, cases)
    assert set(out) == {c.kind for c in cases}
    assert out["colour"]["gt_psnr"]["mean"] == 10.0 and out["shape"]["gt_psnr"]["mean"] == 30.0
    assert sum(v["gt_psnr"]["n"] for v in out.values()) == len(cases)


def test_paired_comparison_flags_only_consistent_losses():
    from videodirector.bench.runner import paired_comparison

    full = [{"case": f"{i:02d}", "gt_psnr": 20.0 + i, "trajectory_error_px": 1.0} for i in range(8)]
    worse = [{"case": f"{i:02d}", "gt_psnr": 19.0 + i, "trajectory_error_px": 1.0 + 0.5 * (i % 2)} for i in range(8)]
    noisy = [{"case": f"{i:02d}", "gt_psnr": 20.0 + i + (-1) ** i, "trajectory_error_px": 0.5} for i in range(8)]
    out = paired_comparison({"videodirector": full, "a": worse, "b": noisy}, metrics=("gt_psnr", "trajectory_error_px"))
    assert out["a"]["gt_psnr"]["worse"] and out["a"]["gt_psnr"]["worse_cases"] == 8
    assert abs(out["a"]["gt_psnr"]["mean_diff"] + 1.0) < 1e-12
    assert out["a"]["trajectory_error_px"]["worse"]  # higher trajectory error is worse
    assert not out["b"]["gt_psnr"]["worse"] and out["b"]["gt_psnr"]["worse_cases"] == 4
    assert not out["b"]["trajectory_error_px"]["worse"]  # lower trajectory error is better
    assert out["b"]["trajectory_error_px"]["better"] and not out["b"]["gt_psnr"]["better"]


def test_min_snr_weights_follow_eq8():
    import torch

    from videodirector.world.train import min_snr_weights

    acp = torch.tensor([0.999, 5 / 6, 0.5, 0.01])  # SNR 999, 5, 1, 0.0101
    w = min_snr_weights(acp, gamma=5.0)
    assert torch.allclose(w, torch.tensor([5 / 999, 1.0, 1.0, 1.0]), rtol=1e-4)


def test_high_noise_weights_are_the_x0_loss_below_snr_1_and_min_snr_above():
    """``|ε - ε̂|² = SNR |x₀ - x̂₀|²``: for SNR < 1 the weight is 1/SNR up to the cap, so the weighted ε loss
    is the x₀ loss; from SNR 1 up it is min-SNR-5; cap 0 is plain min-SNR."""
    import torch

    from videodirector.world.train import high_noise_weights, min_snr_weights

    acp = torch.tensor([0.999, 5 / 6, 0.5, 0.2, 0.01])  # SNR 999, 5, 1, 0.25, 0.0101
    w = high_noise_weights(acp, cap=20.0, gamma=5.0)
    assert torch.allclose(w, torch.tensor([5 / 999, 1.0, 1.0, 4.0, 20.0]), rtol=1e-4)
    snr = acp / (1 - acp)
    eps_err = torch.tensor([0.3, 0.2, 0.1, 0.4, 0.1])  # |ε - ε̂|² per sample
    assert torch.allclose(w[3] * eps_err[3], eps_err[3] / snr[3])  # = |x₀ - x̂₀|² where uncapped
    assert torch.equal(high_noise_weights(acp, cap=0.0), min_snr_weights(acp))


def test_offset_noise_adds_one_constant_per_clip_and_channel():
    """The per-(clip, channel) mean of the training noise has variance 1/(F·H·W) + offset², and for
    video the constant is shared by all frames (so the mean over pixels of each frame agrees)."""
    import torch

    from videodirector.world.train import training_noise

    torch.manual_seed(0)
    z = torch.zeros(4000, 4, 16, 16)
    mean = training_noise(z, offset=0.15).mean((2, 3))
    assert abs(mean.var().item() - (1 / 256 + 0.15**2)) < 0.1 * (1 / 256 + 0.15**2)
    assert abs(training_noise(z, offset=0.0).mean((2, 3)).var().item() - 1 / 256) < 0.1 / 256
    v = training_noise(torch.zeros(64, 4, 8, 32, 32), offset=0.5).mean((3, 4))  # (B, C, F)
    spread_over_frames = v.std(2).mean().item()  # frame means differ by pixel noise only: ~1/32
    assert spread_over_frames < 0.05 and v.mean(2).std().item() > 0.4


def test_reopened_vae_trains_only_its_decoder(tmp_path):
    """--reopen vae: the encoder (and so the latent space the UNet learnt) and the scaling factor stay."""
    import json

    import torch

    from videodirector.world import train
    from videodirector.world.train import Trainer, init_from_export

    weights = Path(train.__file__).parent / "weights"
    init_from_export(tmp_path, weights, reopen=("vae",))
    assert json.loads((tmp_path / "init_steps.json").read_text()) == {
        "vae": json.loads((weights / "training.json").read_text())["steps"]["vae"]}
    tr = Trainer(tmp_path, torch.device("cpu"), minutes=5)
    vae = tr.build()[0]
    before = {k: v.clone() for k, v in torch.load(tmp_path / "vae.pt", weights_only=False)["modules"]["vae"].items()}
    scale = json.loads((tmp_path / "vae_scaling.json").read_text())["scaling_factor"]
    old = dict(train.STAGE_STEPS), dict(train.STAGE_BATCH)
    train.STAGE_STEPS["vae"], train.STAGE_BATCH["vae"] = 2, 1
    try:
        tr.train_vae(vae)
    finally:
        train.STAGE_STEPS.update(old[0])
        train.STAGE_BATCH.update(old[1])
    after = vae.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith(("encoder.", "quant_conv.")))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    assert vae.config.scaling_factor == scale and tr.done("vae")
    assert (tmp_path / "image.pt").is_file() and not (tmp_path / "motion.pt").exists()  # image counts as trained


def test_motion_stage_trains_only_the_adapter_and_the_cross_attention_keys_values(tmp_path):
    """--reopen motion: two motion steps on CPU, then export. The image UNet's cross-attention key/value
    projections change (that is how caption directions reach the motion module), every other image-UNet
    weight stays bit-identical, and the model card says so."""
    import json

    import torch
    from diffusers import UNet2DConditionModel

    from videodirector.world import train
    from videodirector.world.train import Trainer, cross_kv_names, export, init_from_export

    weights = Path(train.__file__).parent / "weights"
    init_from_export(tmp_path / "run", weights, reopen=("motion",))
    tr = Trainer(tmp_path / "run", torch.device("cpu"), minutes=5)
    vae, unet, text, adapter = tr.build()
    vae.load_state_dict(tr.load_state("vae")["modules"]["vae"])
    vae.register_to_config(**json.loads((tmp_path / "run" / "vae_scaling.json").read_text()))
    old = dict(train.STAGE_STEPS), dict(train.STAGE_BATCH)
    train.STAGE_STEPS["motion"], train.STAGE_BATCH["motion"] = 2, 1
    try:
        tr.train_motion(vae, unet, text, adapter)
    finally:
        train.STAGE_STEPS.update(old[0])
        train.STAGE_BATCH.update(old[1])
    (tmp_path / "w" / "i2v").mkdir(parents=True)  # the package's weights/ holds the image-to-video model too
    (tmp_path / "w" / "i2v" / "model_index.json").write_text("{}")
    info = export(tmp_path / "run", tmp_path / "w")
    assert (tmp_path / "w" / "i2v" / "model_index.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "w"]  # no staging folder left beside it
    assert info["motion_stage_trains_cross_kv"] and info["steps"]["motion"] > 2
    history = json.loads((weights / "training.json").read_text()).get("motion_eval", [])
    assert info["motion_eval"][: len(history)] == history and len(info["motion_eval"]) == len(history) + 1
    assert info["motion_stage_recipe"]["probe_weight"] == train.MOTION_PROBE_WEIGHT > 0
    assert info["motion_stage_recipe"]["high_noise_weight"] == train.HIGH_NOISE_WEIGHT > 1
    assert set(info["motion_eval"][-1]["direction_preference"]) == {"t=700", "t=900", "mean"}
    probe = tr.load_state("motion")["probe"]  # kept for resuming, not exported
    assert probe["head.weight"].shape == (10, 64)
    assert not any("probe" in f.name for f in (tmp_path / "w").rglob("*"))
    before = UNet2DConditionModel.from_pretrained(weights / "sd" / "unet").state_dict()
    after = UNet2DConditionModel.from_pretrained(tmp_path / "w" / "sd" / "unet").state_dict()
    kv = set(cross_kv_names(UNet2DConditionModel.from_pretrained(weights / "sd" / "unet")))
    assert len(kv) == 32  # 16 cross-attention layers x (to_k, to_v)
    assert all(not torch.equal(before[k], after[k]) for k in kv)
    assert all(torch.equal(before[k], after[k]) for k in before if k not in kv)


def test_training_step_reports_oom_and_falls_back_from_a_failed_compile(tmp_path):
    """Out of GPU memory gives no loss (the stage halves its batch); a compiler failure, not an OOM,
    switches to the eager forward."""
    import torch

    from videodirector.world.train import Trainer

    tr = Trainer(tmp_path, torch.device("cpu"), minutes=1)
    w = torch.ones(3, requires_grad=True)
    eager = lambda: w  # noqa: E731

    def broken():  # noqa: ANN202
        raise RuntimeError("inductor error")

    def oom(u):  # noqa: ANN001, ANN202
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    assert tr._backward(eager, eager, oom) == (None, eager)
    assert tr._backward(broken, eager, oom) == (None, broken)  # an OOM is not taken for a compiler failure
    loss, fwd = tr._backward(broken, eager, lambda u: (u() * 2).sum())
    assert fwd is eager and float(loss) == 6.0 and torch.equal(w.grad, torch.full((3,), 2.0))


def test_background_coefficients_per_method():
    """``vd-bg-no-appearance`` drops zeta_f on background and texture cases only, so it shares the full
    method's inversion on object cases and has its own on background cases."""
    from videodirector.bench.runner import BACKGROUND_COEFFICIENTS, case_config, inversion_groups

    cases = {c.kind: c for c in shapeworld_suite()}
    base = EditConfig()
    for kind in ("background", "texture"):
        assert case_config(base, "videodirector", cases[kind]).stdg.coefficients == BACKGROUND_COEFFICIENTS
        assert case_config(base, "vd-bg-no-appearance", cases[kind]).stdg.coefficients == [0.5, 0.5, 0.0, 0.0]
        assert inversion_groups(base, ["videodirector", "vd-bg-no-appearance"], cases[kind]) == [
            ["videodirector"], ["vd-bg-no-appearance"]]
    for kind in ("colour", "shape"):
        assert case_config(base, "vd-bg-no-appearance", cases[kind]) == case_config(base, "videodirector", cases[kind])
        assert inversion_groups(base, ["videodirector", "vd-bg-no-appearance"], cases[kind]) == [
            ["videodirector", "vd-bg-no-appearance"]]


def test_methods_that_invert_alike_share_one_inversion_and_score_the_same(monkeypatch):
    from videodirector.bench.runner import inversion_groups
    from videodirector.methods.videodirector import VideoDirector

    case = shapeworld_suite()[0]
    base = apply_overrides(EditConfig(), {**bundled_model_config("cpu"), "input.height": 64, "input.width": 64,
                                          "inversion.num_steps": 2, "inversion.null_inner_steps": 1})
    assert inversion_groups(base, ["videodirector", "vd-no-stdg", "vd-no-sa1", "vd-no-cross"], case) == [
        ["videodirector", "vd-no-sa1", "vd-no-cross"], ["vd-no-stdg"]]
    calls = []
    invert = VideoDirector.invert
    monkeypatch.setattr(VideoDirector, "invert", lambda self, *a, **k: calls.append(1) or invert(self, *a, **k))
    models = load_models(base.model)
    shared: dict = {}
    run_case(models, base, "videodirector", case, shared)
    with_shared, frames_shared = run_case(models, base, "vd-no-sa1", case, shared)
    assert len(calls) == 1  # the ablation reused the full method's inversion
    alone, frames_alone = run_case(models, base, "vd-no-sa1", case)
    assert len(calls) == 2
    for k in ("gt_psnr", "background_psnr", "edit_accuracy", "reconstruction_psnr"):
        assert with_shared[k] == alone[k], k
    assert (frames_shared == frames_alone).all()


@pytest.mark.numerics
def test_motion_probe_adds_its_weighted_cross_entropy_to_the_diffusion_loss(tmp_path):
    """``_diffusion_loss`` with the caption-motion probe = the same loss without it + weight x the probe's
    cross-entropy (same seed, so the same dropped captions, timesteps and noise)."""
    from diffusers import UNetMotionModel

    from videodirector.world.scene import MOTIONS
    from videodirector.world.train import CaptionMotionProbe, Trainer

    tr = Trainer(tmp_path / "run", torch.device("cpu"), minutes=1, motion_probe=0.5)
    _, unet2d, text, adapter = tr.build()
    unet = UNetMotionModel.from_unet2d(unet2d, adapter)
    specs = [sample_clip(k, motion=m) for k, m in enumerate(["left", "growing"])]
    z = torch.randn(2, 4, 16, 16, 16)
    labels = torch.tensor([list(MOTIONS).index(s.motion) for s in specs])
    probe = CaptionMotionProbe(text.config.hidden_size, len(MOTIONS))
    losses = []
    for with_probe in (False, True):
        torch.manual_seed(3)
        with torch.no_grad():
            losses.append(float(tr._diffusion_loss(unet, text, z, [s.caption() for s in specs], motion=True,
                                                   probe=probe if with_probe else None, labels=labels)))
    ce = float(tr.last_probe_loss)
    assert 1.0 < ce < 4.0  # an untrained 10-way read-out: about ln 10
    # the same ops on the same draws, then one float32 addition: equal up to half an ulp of the sum. Measured
    # 0.18 (AVX512) and 0.22 (default kernels) x eps32 |loss| (|loss| ~ 23), 1 and 2 threads
    assert abs(losses[1] - (losses[0] + 0.5 * ce)) <= 8 * EPS32 * abs(losses[1]), (losses, ce)


@pytest.mark.numerics
def test_direction_preference_is_zero_for_a_caption_blind_model_and_large_for_one_that_knows():
    import math

    from videodirector.diffusion.ddim import NoiseSchedule
    from videodirector.models.loading import ANIMATEDIFF_SCHEDULER
    from videodirector.world.check import direction_preference, with_motion
    from videodirector.world.scene import MOTIONS

    assert with_motion("a red circle moving up right on a teal striped background", "up right", "down left") == \
        "a red circle moving down left on a teal striped background"
    assert with_motion("a red circle growing on a teal striped background", "growing", "shrinking") == \
        "a red circle shrinking on a teal striped background"
    schedule = NoiseSchedule.from_scheduler_config(ANIMATEDIFF_SCHEDULER)
    seen: dict = {}

    def encode(frames):
        seen["z0"] = frames[None].permute(0, 2, 1, 3, 4)[:, :, :, ::8, ::8].contiguous()
        return seen["z0"]

    true = {sample_clip(50_000 + k, motion=list(MOTIONS)[k % len(MOTIONS)], distractor_prob=0.0).caption()
            for k in range(4)}

    def knows(z, t, caps):  # the exact noise, scaled by 1.1 for the true caption and 0.5 for the wrong one
        a = schedule.alpha(t)
        noise = (z - math.sqrt(a) * seen["z0"]) / math.sqrt(1 - a)
        return noise * (1.1 if caps[0] in true else 0.5)

    blind = direction_preference(encode, lambda z, t, caps: 0.9 * z, schedule, n=4)
    assert blind == {"t=700": 0.0, "t=900": 0.0, "mean": 0.0}
    pref = direction_preference(encode, knows, schedule, n=4)
    # ((0.5-1)^2 - (1.1-1)^2) / (1.1-1)^2 = 24, up to float32 rounding of the re-derived noise over a 10x
    # smaller difference: measured 1.1e-5 (AVX512, AVX2) and 1.2e-5 (default kernels), 1e-3 is 80x that
    assert abs(pref["mean"] - (0.25 - 0.01) / 0.01) < 1e-3


def test_world_check_scores_the_weights_it_is_given(tmp_path, capsys):
    """``world.check --weights DIR`` checks an exported folder, not the bundled one; a wrong folder is a
    one-line usage error."""
    import json
    import shutil

    import pytest

    from videodirector.world import check

    weights = tmp_path / "w"
    shutil.copytree(BUNDLED_WEIGHTS, weights)
    card = json.loads((weights / "training.json").read_text())
    (weights / "training.json").write_text(json.dumps({**card, "marker": "this copy"}))
    out = tmp_path / "check.json"
    res = check.main(["--weights", str(weights), "--device", "cpu", "--captions", "2", "--steps", "2",
                      "--inversions", "1", "--inversion-steps", "4", "--out", str(out)])
    assert res["training"]["marker"] == "this copy" and json.loads(out.read_text())["colour_acc"] == res["colour_acc"]
    assert res["vae_psnr"] > 30 and res["inversion_psnr"] > 25  # the bundled models: 33 dB; 4 steps invert less well
    assert set(res["direction_preference"]) == {"t=700", "t=900", "mean"}
    with pytest.raises(SystemExit) as exc:
        check.main(["--weights", str(tmp_path / "missing"), "--out", str(out)])
    assert exc.value.code == 2 and "no ShapeWorld weights in" in capsys.readouterr().err


def test_suite_v2_spreads_background_and_texture_edits_and_v1_is_unchanged():
    import collections
    import json

    v1, v2 = shapeworld_suite("shapeworld-v1"), shapeworld_suite("shapeworld-v2")
    kinds = collections.Counter(c.kind for c in v2)
    assert kinds == {"colour": 12, "shape": 12, "background": 8, "texture": 4}
    assert {c.source.motion for c in v2} == {c.source.motion for c in v1} and len({c.source.motion for c in v2}) == 10
    assert {c.source.texture for c in v2 if c.kind == "background"} == {"striped", "checkered", "gradient"}
    pairs = {(c.source.texture, c.target.texture) for c in v2 if c.kind == "texture"}
    assert len(pairs) == 4 and {s for s, _ in pairs} | {t for _, t in pairs} == {"striped", "checkered", "gradient"}
    assert [(c.id, c.source, c.change) for c in v1[:24]] == [(c.id, c.source, c.change) for c in v2[:24]]
    # v1 still makes exactly the cases of the committed v1 results
    stored = Path(__file__).parents[1] / "benchmarks" / "results" / "shapeworld-v1" / "cases" / "videodirector"
    recs = [json.loads(f.read_text()) for f in sorted(stored.glob("*.json"))]
    assert len(recs) >= 12
    by_id = {c.id: c for c in v1}
    assert all(by_id[r["case"]].source.caption() == r["source"] and by_id[r["case"]].target.caption() == r["target"]
               for r in recs)


def test_holdout_suite_is_v2s_recipe_on_other_clips():
    """``shapeworld-v2-holdout`` has v2's kinds and spread, every source drawn from a seed v2 does not use, and
    every case is a valid edit (the ground truth counts, the source does not)."""
    import collections

    from videodirector.bench.runner import SUITE_SEEDS
    from videodirector.world.evaluate import edit_accuracy

    v2, held = shapeworld_suite("shapeworld-v2"), shapeworld_suite("shapeworld-v2-holdout")
    assert collections.Counter(c.kind for c in held) == collections.Counter(c.kind for c in v2)
    assert [c.id for c in held] == [c.id for c in v2]
    assert len({c.source.motion for c in held}) == 10
    assert {c.source.texture for c in held if c.kind == "background"} == {"striped", "checkered", "gradient"}
    first_v2, first_held = SUITE_SEEDS["shapeworld-v2"], SUITE_SEEDS["shapeworld-v2-holdout"]
    assert not set(range(first_v2, first_v2 + 36)) & set(range(first_held, first_held + 36))
    assert all(a.source != b.source for a, b in zip(v2, held))
    # other objects, not v2's with another seed's noise: most colours and shapes differ case by case
    assert sum(a.source.colour != b.source.colour or a.source.shape != b.source.shape for a, b in zip(v2, held)) >= 24
    for c in held:
        assert edit_accuracy(render(c.target)[0][0], c.source, c.target) == 1.0, c.id
        assert edit_accuracy(render(c.source)[0][0], c.source, c.target) == 0.0, c.id


def test_texture_edit_counts_whatever_the_phase_of_the_new_pattern():
    """A correct texture edit may draw its stripes at any phase and period: it still counts, while the
    unedited source and a wrong texture do not, and the exact ground truth always does."""
    from dataclasses import replace

    case = next(c for c in shapeworld_suite("shapeworld-v2") if c.kind == "texture")
    target = case.target
    shifted = replace(target, texture_phase=(target.texture_phase + 0.5) % 1, texture_period=15.0)
    wrong = target.edited(texture=next(t for t in ("striped", "checkered", "gradient")
                                       if t not in (target.texture, case.source.texture)))
    acc = {name: score_edit(render(spec)[0][0], case.source, target)["edit_accuracy"]
           for name, spec in {"gt": target, "shifted": shifted, "source": case.source, "wrong": wrong}.items()}
    assert acc == {"gt": 1.0, "shifted": 1.0, "source": 0.0, "wrong": 0.0}, acc
    assert score_edit(render(shifted)[0][0], case.source, target)["gt_psnr"] < 25  # gt_psnr still wants the exact one


def test_shape_edit_is_read_from_the_objects_own_outline():
    """A correct shape drawn two pixels off the ground truth's place counts; the source shape and a
    wrong shape do not; every ground-truth target of the suite counts fully and every source not at all."""
    from dataclasses import replace

    from videodirector.world.evaluate import edit_accuracy
    from videodirector.world.scene import SHAPES

    suite = shapeworld_suite("shapeworld-v2")
    for c in suite:
        assert edit_accuracy(render(c.target)[0][0], c.source, c.target) == 1.0, c.id
        assert edit_accuracy(render(c.source)[0][0], c.source, c.target) == 0.0, c.id
    case = next(c for c in suite if c.kind == "shape")
    t = case.target
    off = replace(t, x0=t.x0 + 2, y0=t.y0 - 2)
    wrong = t.edited(shape=next(s for s in SHAPES if s not in (t.shape, case.source.shape)))
    assert edit_accuracy(render(off)[0][0], case.source, t) == 1.0
    assert edit_accuracy(render(wrong)[0][0], case.source, t) == 0.0


def test_bench_workers_run_the_shards_in_subprocesses_then_gather(tmp_path):
    """``videodirector bench --workers 2``: two worker processes store every (case, method) pair, each
    with its log, and the gathering run writes the summary without re-running them."""
    import json
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "videodirector.cli", "bench", "--device", "cpu", "--cases", "1", "--steps", "2",
           "--inner-steps", "1", "--methods", "videodirector,vd-no-stdg", "--results", str(tmp_path), "--workers", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    root = tmp_path / "shapeworld-v2"
    logs = sorted(p.name for p in (root / "workers").iterdir())
    assert logs == ["worker-0-of-2.log", "worker-1-of-2.log"]
    assert all("shard" in (root / "workers" / n).read_text() for n in logs)  # each ran its share and said so
    summary = json.loads((root / "summary.json").read_text())
    assert set(summary) == {"videodirector", "vd-no-stdg"} and summary["videodirector"]["gt_psnr"]["mean"] > 5
    bad = subprocess.run(cmd[:-2] + ["--workers", "2", "--stored-only"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--workers starts its own shards" in " ".join(bad.stdout.split() + bad.stderr.split())
    failing = [*cmd[:5], "cuda", *cmd[6:]]  # no GPU here: every worker stops with an error
    failing[failing.index("--results") + 1] = str(tmp_path / "other")
    res = subprocess.run(failing, capture_output=True, text=True, timeout=300)
    said = " ".join(res.stdout.split() + res.stderr.split())
    assert res.returncode == 2 and "2 of 2 bench workers failed" in said and "worker-0-of-2.log" in said
    assert "Traceback" not in said


def test_mask_blend_variant_renoises_only_texture_cases_and_shares_the_inversion():
    from videodirector.bench.runner import case_config, inversion_groups

    cases = {c.kind: c for c in shapeworld_suite()}
    base = EditConfig()
    for kind in ("colour", "shape", "background", "texture"):
        per_edit = int(kind == "shape")  # room for a new outline only
        for method, dilation in (("vd-mask-blend", 0), ("vd-mask-blend-dilated", 1), ("vd-mask-blend-per-edit", per_edit)):
            cfg = case_config(base, method, cases[kind])  # vd-mask-blend registers 0: its texture override wins
            assert cfg.control.mask_blend and cfg.control.mask_blend_dilation == dilation
            assert cfg.control.mask_blend_renoise == (kind == "texture")
        blends = ["vd-mask-blend", "vd-mask-blend-dilated", "vd-mask-blend-per-edit"]
        assert inversion_groups(base, ["videodirector", *blends], cases[kind]) == [
            ["videodirector", *blends]]  # the blend acts in stage 2 only


def test_shape_reader_knows_every_exact_shape_with_a_gray_box_and_a_tilt():
    """The outline reader names the drawn shape of exact renderings whatever their tilt (clips draw
    +-0.15 rad) and with the gray box in the frame (it belongs to the background): 48 held-out clips,
    12 per shape, every other frame. The reader before this rule (axis-aligned templates, the box
    counted as object) got 0.83 of these frames right."""
    from videodirector.world.read import object_mask, shape_from_outline
    from videodirector.world.scene import SHAPES

    specs = [sample_clip(20_000 + k, shape=SHAPES[k % 4]) for k in range(48)]
    assert sum(s.distractor is not None for s in specs) >= 8 and max(abs(s.angle) for s in specs) > 0.12
    videos, _ = render(specs)
    wrong = [(s.shape, i, shape_from_outline(m[0])) for s, v in zip(specs, videos)
             for i, m in enumerate(object_mask(v, s.background)[::2])
             if shape_from_outline(m[0]) != s.shape]
    assert wrong == []


def test_background_error_by_distance_puts_an_error_in_its_ring():
    """An error band at Chebyshev distance 3 from an 8 x 8 object lands in the 2-4 px ring, alone; moved to
    distance 6 it lands in 4-8. The rings' pixel fractions and error shares each sum to 1, and their
    pixel-weighted errors give back the whole background's PSNR."""
    from videodirector.metrics.ground_truth import background_error_by_distance, psnr

    source = torch.zeros(2, 3, 40, 40)
    mask = torch.zeros(2, 1, 40, 40, dtype=torch.bool)
    mask[:, :, 16:24, 16:24] = True

    def band(d: int) -> torch.Tensor:
        ring = torch.zeros(2, 1, 40, 40, dtype=torch.bool)
        ring[:, :, 16 - d:24 + d, 16 - d:24 + d] = True
        ring[:, :, 17 - d:23 + d, 17 - d:23 + d] = False  # one pixel wide, at distance d
        return ring

    for d, where in ((3, "2-4"), (6, "4-8")):
        edited = source + 0.5 * band(d).float()
        edited[:, 0] += 0.2 * mask[:, 0].float()  # inside the object: not background, counted nowhere
        rows = {r["ring_px"]: r for r in background_error_by_distance(edited, source, mask)}
        assert list(rows) == ["0-2", "2-4", "4-8", "8-16", ">16"]
        assert rows[where]["error_share"] == pytest.approx(1.0)
        assert all(r["error_share"] == 0.0 for k, r in rows.items() if k != where)
        assert sum(r["fraction"] for r in rows.values()) == pytest.approx(1.0)
        # the 2 px-wide ring at distances 3-4 holds (16 x 16 - 12 x 12) pixels of each frame's 40 x 40 - 8 x 8
        assert rows["2-4"]["fraction"] == pytest.approx((16 * 16 - 12 * 12) / (40 * 40 - 8 * 8))
        assert rows[">16"]["fraction"] == 0.0 and math.isnan(rows[">16"]["psnr"])  # corners are 16 px away: empty
        mse = sum(r["fraction"] * 10 ** (-r["psnr"] / 10) for r in rows.values() if r["fraction"])
        assert -10 * torch.log10(torch.tensor(mse)).item() == pytest.approx(psnr(edited, source, ~mask), abs=1e-4)


def test_bench_resumes_only_cases_made_with_its_settings(tmp_path):
    """A stored case made with --steps 25 is refused in one line by a run with --steps 10 (the summary would mix
    the two), taken by a run with the same settings whatever its device, and files written before the settings
    were stored are taken as they are."""
    from videodirector.bench.runner import _stored_record, bench_settings
    from videodirector.errors import UserError

    base25 = apply_overrides(EditConfig(), {"inversion.num_steps": 25, "model.device": "cuda"})
    f = tmp_path / "00-colour.json"
    f.write_text(json.dumps({"case": "00-colour", "gt_psnr": 30.0, "bench_settings": bench_settings(base25, {"seed": 1})}))
    same = apply_overrides(base25, {"model.device": "cpu", "model.dtype": "float32"})
    assert _stored_record(f, bench_settings(same, {"seed": 1}))["gt_psnr"] == 30.0
    for other, over in ((apply_overrides(base25, {"inversion.num_steps": 10}), {"seed": 1}), (base25, {"seed": 2})):
        with pytest.raises(UserError, match="made with other bench settings") as err:
            _stored_record(f, bench_settings(other, over))
        assert "another --results" in str(err.value)
    f.write_text(json.dumps({"case": "00-colour", "gt_psnr": 30.0}))
    assert _stored_record(f, bench_settings(base25))["gt_psnr"] == 30.0
