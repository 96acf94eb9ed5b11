"""ASSD (methods/assd.py): the paper's equations by hand, the fusion processor, the shared noise, frozen
UNets, the ModelScope loader and one-line errors, on tiny random models built from configs."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from videodirector import cli
from videodirector.api import Editor
from videodirector.attention.fusion import WeightedFusionProcessor, fused_attention, spatial_self_attention_layers
from videodirector.attention.processors import installed
from videodirector.config import EditConfig, apply_overrides
from videodirector.errors import ConfigError, InputError, WeightsNotFoundError
from videodirector.io.outputs import to_uint8, write_video
from videodirector.methods.assd import ASSD, adaptive_mask, assd_gradient, sliding_smoothing, video_dds_gradient
from videodirector.models.factory import save_tiny_modelscope

from conftest import EPS32, toy_inputs

SOURCE, TARGET = "a red circle moving right", "a blue square moving right"


def assd_cfg(tiny_cfg, **settings):  # noqa: ANN001, ANN003, ANN201
    over = {"assd.iterations": 2, "prompts.source": SOURCE, "input.num_frames": 4}
    over.update({f"assd.{k}": v for k, v in settings.items()})
    return apply_overrides(tiny_cfg, over)


@pytest.fixture(scope="module")
def clip4():
    frames, masks = toy_inputs(frames=4)
    return frames, masks


# ------------------------------------------------------------------------------------------ equations by hand


def test_sliding_smoothing_matches_eq8_by_hand_with_boundaries():
    eps = torch.tensor([1.0, 2.0, 4.0, 8.0]).view(1, 1, 4, 1, 1)
    # symmetric γ (normalised [0.25, 0.5, 0.25]); at the ends the missing neighbour's weight is dropped and the
    # remaining two renormalised: frame 0 = (0.5·1 + 0.25·2) / 0.75
    want = [1.0 / 0.75, 0.25 + 1.0 + 1.0, 0.5 + 2.0 + 2.0, (1.0 + 4.0) / 0.75]
    torch.testing.assert_close(sliding_smoothing(eps, [1.0, 2.0, 1.0]).flatten(), torch.tensor(want))
    # asymmetric γ = [0.2, 0.5, 0.3] (sums to 1): γ_{i-1} weighs the previous frame, γ_{i+1} the next
    want = [(0.5 * 1 + 0.3 * 2) / 0.8, 0.2 * 1 + 0.5 * 2 + 0.3 * 4, 0.2 * 2 + 0.5 * 4 + 0.3 * 8, (0.2 * 4 + 0.5 * 8) / 0.7]
    torch.testing.assert_close(sliding_smoothing(eps, [0.2, 0.5, 0.3]).flatten(), torch.tensor(want))
    # a prediction that is the same in every frame is left as it is, boundaries included
    const = torch.full((1, 2, 5, 3, 3), 0.7)
    torch.testing.assert_close(sliding_smoothing(const, [0.2, 0.5, 0.3]), const)


def test_adaptive_mask_follows_eq9():
    # one (channel, y, x) position over 3 frames: |ε - ε̂| = [0.1, 0.5, 0.45]; max over frames 0.5
    edit = torch.tensor([0.1, 0.5, 0.45]).view(1, 1, 3, 1, 1)
    ref = torch.zeros_like(edit)
    assert adaptive_mask(edit, ref, tau=0.0).flatten().tolist() == [1.0, 0.0, 1.0]  # < 0.5
    assert adaptive_mask(edit, ref, tau=0.1).flatten().tolist() == [1.0, 0.0, 0.0]  # < 0.4
    assert adaptive_mask(edit, ref, tau=1.0).flatten().tolist() == [0.0, 0.0, 0.0]
    # the maximum is per channel: a second channel with other deltas gets its own threshold
    edit2 = torch.stack([edit[:, 0], torch.tensor([2.0, 1.0, 0.0]).view(1, 3, 1, 1)], dim=1)
    m = adaptive_mask(edit2, torch.zeros_like(edit2), tau=0.5)
    assert m[0, 1].flatten().tolist() == [0.0, 1.0, 1.0]  # < 2 - 0.5
    # Eq. 10: smoothed reference where m = 1, the plain Video DDS term where m = 0
    ref3 = torch.tensor([0.0, 1.0, 0.0]).view(1, 1, 3, 1, 1)
    g = assd_gradient(edit, ref3, [1.0, 2.0, 1.0], tau=0.0)
    m = adaptive_mask(edit, ref3, 0.0)
    want = m * (edit - sliding_smoothing(ref3, [1.0, 2.0, 1.0])) + (1 - m) * video_dds_gradient(edit, ref3)
    torch.testing.assert_close(g, want)
    assert not torch.equal(g, video_dds_gradient(edit, ref3))


def test_error_smoothing_leaves_a_perfect_reference_prediction_alone():
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(1, 4, 5, 3, 3, generator=g)
    edit = noise + 0.3 * torch.randn(noise.shape, generator=g)
    # a reference prediction equal to the injected noise has no error to smooth: Eq. 10 is then Video DDS exactly
    g_err = assd_gradient(edit, noise, [0.25, 0.5, 0.25], tau=0.0, use_mask=False, noise=noise)
    torch.testing.assert_close(g_err, video_dds_gradient(edit, noise), rtol=0, atol=1e-6)
    # smoothing the prediction itself adds the temporal high-pass of the noise, ε - SS(ε)
    g_pred = assd_gradient(edit, noise, [0.25, 0.5, 0.25], tau=0.0, use_mask=False)
    torch.testing.assert_close(g_pred - g_err, noise - sliding_smoothing(noise, [0.25, 0.5, 0.25]), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------ attention fusion


def test_fused_attention_lambda_one_is_self_and_zero_is_reference_only():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(4 * 3, 2, 5, 8, generator=g) for _ in range(3))  # 4 branches x 3 frames
    plain = F.scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(fused_attention(q, k, v, 1.0), plain, rtol=0, atol=0)
    out0 = fused_attention(q, k, v, 0.0)
    torch.testing.assert_close(out0[:6], plain[:6], rtol=0, atol=0)  # reference rows unmodified
    want = F.scaled_dot_product_attention(q[6:], k[:6], v[:6])  # edit row (branch b, frame i) -> ref (b - 2, i)
    torch.testing.assert_close(out0[6:], want, rtol=0, atol=0)
    k2, v2 = k.clone(), v.clone()
    k2[6:] += 5.0
    v2[6:] -= 3.0
    torch.testing.assert_close(fused_attention(q, k2, v2, 0.0)[6:], out0[6:], rtol=0, atol=0)  # own K/V unused


@pytest.mark.numerics
def test_fusion_processor_in_the_unet(tiny_models):
    unet = tiny_models.unet
    layers = spatial_self_attention_layers(unet, ["up_blocks.3"])
    assert [l.name for l in layers] == [f"up_blocks.3.attentions.{j}.transformer_blocks.0.attn1" for j in range(3)]
    g = torch.Generator().manual_seed(1)
    ref = torch.randn(1, 4, 3, 8, 8, generator=g)
    z = torch.cat([ref, ref, ref + 0.5 * torch.randn(ref.shape, generator=g), ref + 0.5 * torch.randn(ref.shape, generator=g)])
    emb = tiny_models.encode_prompt(["", SOURCE, "", TARGET]).repeat_interleave(3, 0)  # [ref ∅, ref y, edit ∅, edit y*]
    with torch.no_grad():
        plain = tiny_models.eps(z, 500, emb)
        with installed(unet, {l.name: WeightedFusionProcessor(l, 1.0) for l in layers}):
            lam1 = tiny_models.eps(z, 500, emb)
        with installed(unet, {l.name: WeightedFusionProcessor(l, 0.0) for l in layers}):
            lam0 = tiny_models.eps(z, 500, emb)
    # λ = 1: the stock processor's computation (same SDPA call on the same tensors): identical
    torch.testing.assert_close(lam1, plain, rtol=0, atol=0)
    # λ = 0: the reference branch is unmodified, the edit branch changes
    torch.testing.assert_close(lam0[:2], plain[:2], rtol=0, atol=0)
    assert (lam0[2:] - plain[2:]).abs().max() > 1e-3
    # the temporal layers of a ModelScope UNet are never selected
    assert all(".motion_modules." not in l.name for l in spatial_self_attention_layers(unet))


# ------------------------------------------------------------------------------------------ the optimisation


@pytest.mark.numerics
def test_dds_gradient_is_zero_when_prompts_and_latents_agree(tiny_models, tiny_cfg, clip4):
    frames, masks = clip4
    cfg = assd_cfg(tiny_cfg, iterations=1)
    method = ASSD(tiny_models, cfg)  # full method at its defaults: smoothing, mask, fusion, SD guidance
    inv = method.invert(frames, masks, SOURCE)
    same = method.edit(inv, SOURCE)
    moved = method.edit(inv, TARGET)
    z_ref = inv.latents[:1]
    movement = float((moved.latents - z_ref).abs().max())
    gap = float((same.latents - z_ref).abs().max())
    # y = y*, Z = Ẑ: both branches' rows hold the same inputs, so their predictions agree up to rounding (below τ,
    # so m = 0) and g is that rounding alone. Yardstick: the rounding of one prediction measured as the same
    # forward at another batch size (2 rows instead of 4), times the CFG gain (2w + 1), for both models, times
    # the step lr·s. (One step only: the random tiny models amplify any difference 1e4-fold per step.)
    t = same.info["timesteps"][0]
    with torch.inference_mode():
        z_t = tiny_models.schedule.alpha(t) ** 0.5 * z_ref
        emb = tiny_models.encode_prompt(["", SOURCE])
        four = method._video_eps(torch.cat([z_t] * 4), t, torch.cat([emb, emb]))
        two = method._video_eps(torch.cat([z_t] * 2), t, emb)
    rounding = max(float((four[:2] - two).abs().max()), float((four[2:] - two).abs().max()), EPS32)
    w = same.info["t2v_guidance_scale"]
    yard = 2 * (2 * w + 1) * rounding * cfg.settings_for("assd").lr * same.info["grad_scale"]
    # not vacuous: another prompt moves the latent an order of magnitude past the yardstick (measured 48x on a
    # 2-core AMD EPYC on one thread, where the batch-size rounding is largest; 100x failed there)
    assert movement > 10 * yard, (movement, yard)
    assert gap <= yard, (gap, yard)


@pytest.mark.numerics
def test_both_branches_share_t_and_eps_and_no_parameter_gets_a_gradient(tiny_models, tiny_cfg, clip4):
    frames, masks = clip4
    cfg = assd_cfg(tiny_cfg, iterations=2)
    method = ASSD(tiny_models, cfg)
    video_unet, image_unet = tiny_models.unet, method.image.unet
    seen: dict[str, list] = {"video": [], "image": []}

    def hook(kind):  # noqa: ANN001, ANN202
        def pre(module, args, kwargs):  # noqa: ANN001, ANN202
            sample, t = args[0], args[1]
            seen[kind].append((sample.detach().clone(), int(t), torch.is_inference_mode_enabled()))
        return pre

    for p in (*video_unet.parameters(), *image_unet.parameters()):
        p.requires_grad_(True)  # even trainable parameters must get no gradient
    handles = [video_unet.register_forward_pre_hook(hook("video"), with_kwargs=True),
               image_unet.register_forward_pre_hook(hook("image"), with_kwargs=True)]
    try:
        inv = method.invert(frames, masks, SOURCE)
        one = ASSD(tiny_models, assd_cfg(tiny_cfg, iterations=1)).edit(inv, TARGET)
        seen = {"video": [], "image": []}
        res = method.edit(inv, TARGET)
        grads = [p.grad for p in (*video_unet.parameters(), *image_unet.parameters())]
    finally:
        for h in handles:
            h.remove()
        for p in (*video_unet.parameters(), *image_unet.parameters()):
            p.requires_grad_(False)
            p.grad = None
    assert all(g is None for g in grads)
    assert all(inference for _, _, inference in seen["video"] + seen["image"])
    (x0, t0, _), (x1, t1, _) = seen["video"]
    assert [t0, t1] == res.info["timesteps"]
    z_ref = inv.latents[:1]
    # iteration 1: Z = Ẑ, so one t and one ε give identical noisy latents in all four rows
    for row in range(1, 4):
        torch.testing.assert_close(x0[row], x0[0], rtol=0, atol=0)
    # iteration 2: Z_t - Ẑ_t = sqrt(ᾱ_t) (Z - Ẑ) exactly when ε is shared (Eq. 1); Z after step 1 is ``one``'s
    a = tiny_models.schedule.alpha(t1)
    torch.testing.assert_close(x1[2:3] - x1[0:1], a**0.5 * (one.latents - z_ref), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x1[3], x1[2], rtol=0, atol=0)
    # the SD pass reads the same noisy latents, frame by frame, at the same noise level
    (xi, ti, _) = seen["image"][1]
    torch.testing.assert_close(xi, x1.permute(0, 2, 1, 3, 4).reshape(xi.shape), rtol=0, atol=0)
    assert ti == t1  # one schedule here: the matching SD timestep is t itself


# ------------------------------------------------------------------------------------------ ModelScope


@pytest.fixture(scope="module")
def tiny_modelscope(tmp_path_factory):  # noqa: ANN001, ANN201
    return save_tiny_modelscope(tmp_path_factory.mktemp("modelscope"), seed=3)


def test_tiny_modelscope_loads_through_the_loader_and_runs(tiny_modelscope, tiny_cfg, clip4):
    frames, masks = clip4
    cfg = assd_cfg(tiny_cfg, t2v="modelscope", t2v_model=str(tiny_modelscope), iterations=1)
    editor = Editor(cfg, method="assd")
    assert type(editor.models.unet).__name__ == "UNet3DConditionModel"
    assert not editor.models.unet.training
    fused = editor.method.fused
    assert [l.name for l in fused] == [f"up_blocks.3.attentions.{j}.transformer_blocks.0.attn1" for j in range(3)]
    inv = editor.invert(frames, masks, SOURCE, use_cache=False)
    res = editor.edit(inv, TARGET)
    assert res.frames.shape == frames.shape and torch.isfinite(res.frames).all()
    assert float((res.latents - inv.latents[:1]).abs().max()) > 1e-4  # the distillation moved Z
    assert res.info["t2v"] == "UNet3DConditionModel" and res.info["sd_guidance"]


def test_modelscope_folder_errors_are_one_line(tmp_path, tiny_cfg):
    (tmp_path / "ms" / "vae").mkdir(parents=True)
    cfg = assd_cfg(tiny_cfg, t2v="modelscope", t2v_model=str(tmp_path / "ms"))
    with pytest.raises(WeightsNotFoundError, match="unet/config.json is missing"):
        Editor(cfg, method="assd")


# ------------------------------------------------------------------------------------------ CLI, config


def run_cli(args, capsys, monkeypatch):  # noqa: ANN001, ANN201
    monkeypatch.setattr(sys, "argv", ["videodirector", *args])
    with pytest.raises(SystemExit) as exc:
        cli.main()
    return exc.value.code, " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("extra,message", [
    (["--iterations", "0"], "assd.iterations=0"),
    (["--lr", "nan"], "assd.lr=nan is out of range"),
    (["--t2v", "sora"], "must be one of ['animatediff', 'modelscope']"),
    (["--t2v", "modelscope", "--t2v-model", "no/such/folder/x"], "text-to-video weights not found"),
    (["--t2v-model", "some/model"], "add --t2v modelscope"),
    (["--fusion-blocks-typo"], "No such option"),
])
def test_bad_input_is_one_line(extra, message, tiny_paths, tmp_path, capsys, monkeypatch):
    frames, _ = toy_inputs(frames=4)
    write_video(tmp_path / "v.mp4", to_uint8(frames))
    base = ["edit", "--method", "assd", "--video", str(tmp_path / "v.mp4"), "--source-prompt", SOURCE,
            "--target-prompt", TARGET, "--base", str(tiny_paths[0]), "--motion-adapter", str(tiny_paths[1]),
            "--device", "cpu", "--height", "64", "--width", "64", "--frames", "4", "--out", str(tmp_path / "out"),
            "--no-cache"]
    code, err = run_cli([*base, *extra], capsys, monkeypatch)
    assert code == 2 and message in err and "Traceback" not in err, err
    assert err.startswith("error:") and err.count("error:") == 1


def test_settings_are_validated():
    with pytest.raises(ConfigError, match="assd.fusion_weight"):
        apply_overrides(EditConfig(), {"assd.fusion_weight": 1.5}).settings_for("assd").validate()
    with pytest.raises(ConfigError, match="3 weights"):
        apply_overrides(EditConfig(), {"assd.gamma": [1.0, 1.0]}).settings_for("assd").validate()


def test_cli_edit_runs_assd_and_bench_lists_the_ladder(tiny_paths, tmp_path, capsys, monkeypatch):
    frames, _ = toy_inputs(frames=4)
    write_video(tmp_path / "v.mp4", to_uint8(frames))
    args = ["edit", "--method", "assd", "--video", str(tmp_path / "v.mp4"), "--source-prompt", SOURCE,
            "--target-prompt", TARGET, "--base", str(tiny_paths[0]), "--motion-adapter", str(tiny_paths[1]),
            "--device", "cpu", "--height", "64", "--width", "64", "--frames", "4", "--out", str(tmp_path / "out"),
            "--cache-dir", str(tmp_path / "cache"), "--iterations", "1", "--no-fusion", "--lr", "0.05"]
    monkeypatch.setattr(sys, "argv", ["videodirector", *args])
    cli.main()
    import json

    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["method"] == "assd" and result["config"]["assd"]["iterations"] == 1
    assert result["config"]["assd"]["fusion"] is False and result["config"]["assd"]["lr"] == 0.05
    # the cached E(X) is read back (an inversion of 0 DDIM steps)
    monkeypatch.setattr(sys, "argv", ["videodirector", *args, "--overwrite"])
    cli.main()
    assert "using cached inversion" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["videodirector", "bench", "--list"])
    cli.main()
    out = capsys.readouterr().out
    for name in ("assd-video-dds", "assd-sliding", "assd-fusion", "assd "):
        assert name in out


# ------------------------------------------------------------------------------------------ CLIP metrics


def test_clip_metrics_with_a_tiny_clip_built_from_config(tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    from videodirector.metrics.video_pair import clip_scores
    from videodirector.models.tokenizer import build_clip_tokenizer

    words = SOURCE.split() + TARGET.split()
    tok_dir = build_clip_tokenizer(words, tmp_path / "clip")
    vocab = len(CLIPTokenizer.from_pretrained(tok_dir))
    torch.manual_seed(0)
    config = CLIPConfig(text_config={"vocab_size": vocab, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                     "num_attention_heads": 2, "max_position_embeddings": 77,
                                     "bos_token_id": vocab - 2, "eos_token_id": vocab - 1, "pad_token_id": vocab - 1},
                        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                                       "num_attention_heads": 2, "image_size": 32, "patch_size": 8},
                        projection_dim=16)
    model = CLIPModel(config).eval()
    model.save_pretrained(tmp_path / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path / "clip")
    frames, _ = toy_inputs(frames=3, size=32)
    got = clip_scores(frames, TARGET, str(tmp_path / "clip"), local_files_only=True)
    # by hand: embeddings of the frames (scaled to [0, 1], CLIP-normalised) and of the prompt
    from transformers import CLIPProcessor

    proc = CLIPProcessor.from_pretrained(tmp_path / "clip")
    pix = proc(images=[((f.permute(1, 2, 0) + 1) * 127.5).byte().numpy() for f in frames], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        img = model.get_image_features(pixel_values=pix)
        img = getattr(img, "pooler_output", img)
        img = img / img.norm(dim=-1, keepdim=True)
        t = proc(text=[TARGET], return_tensors="pt", padding=True)
        txt = model.get_text_features(input_ids=t["input_ids"], attention_mask=t["attention_mask"])
        txt = getattr(txt, "pooler_output", txt)
        txt = txt / txt.norm(dim=-1, keepdim=True)
    pairs = [float(img[i] @ img[j]) for i in range(3) for j in range(3) if i != j]
    assert got["clip_frame_consistency"] == pytest.approx(sum(pairs) / 6, abs=1e-5)
    assert got["clip_text_alignment"] == pytest.approx(float((img @ txt.T).mean()), abs=1e-5)
    with pytest.raises(InputError, match="no CLIP model available offline|cannot load CLIP model"):
        clip_scores(frames, TARGET, "nobody/no-such-clip-model", local_files_only=True)


def test_image_guidance_reads_the_single_file_checkpoint(tiny_paths, tiny_models, monkeypatch):
    """With ``--single-file`` the SD guidance is the checkpoint's UNet and text encoder (the 2-D weights the
    AnimateDiff model is built from), not the plain ``--base`` UNet; without it, ``--base``'s UNet and the video
    model's own text encoder."""
    from dataclasses import replace

    from diffusers import UNet2DConditionModel

    from videodirector.config import ModelConfig
    from videodirector.models import loading

    base, adapter = tiny_paths
    cfg = ModelConfig(base=str(base), motion_adapter=str(adapter), local_files_only=True, device="cpu")
    checkpoint_unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    calls = []

    def parts_of_the_checkpoint(c, b, offline):  # noqa: ANN001, ANN202
        calls.append(c.single_file)
        return tiny_models.tokenizer, checkpoint_unet, tiny_models.vae, tiny_models.text_encoder

    monkeypatch.setattr(loading, "load_sd15_parts", parts_of_the_checkpoint)
    with_file = loading.load_image_guidance(replace(cfg, single_file="community.safetensors"), tiny_models)
    assert calls == ["community.safetensors"] and with_file.unet is checkpoint_unet
    plain = loading.load_image_guidance(cfg, tiny_models)
    assert calls == ["community.safetensors"] and plain.unet is not checkpoint_unet
    assert plain.text_encoder is tiny_models.text_encoder  # same --base, no single file: shared


def test_tau_zero_with_prediction_smoothing_warns(tiny_models, tiny_cfg):
    from videodirector import notices

    said: list[str] = []
    notices.reset()
    notices.set_sink(said.append)
    try:
        ASSD(tiny_models, assd_cfg(tiny_cfg, tau=0.0, sd_guidance=False))
        ASSD(tiny_models, assd_cfg(tiny_cfg, tau=0.3, sd_guidance=False))
        ASSD(tiny_models, assd_cfg(tiny_cfg, tau=0.0, smooth="error", sd_guidance=False))
    finally:
        notices.set_sink(None)
        notices.reset()
    assert len(said) == 1 and "assd.tau is 0" in said[0], said
