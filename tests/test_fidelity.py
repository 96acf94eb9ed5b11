"""Fidelity to the official VideoDirector code: the motion-module GroupNorm, the unused
``grad_guidance_threshold`` and local blend, the aligner's tie order, the temporal appearance keys,
``[start, end]`` windows for tau_s and tau_c, and float32 mask pooling (official code)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import CLIPTokenizer

from conftest import toy_inputs
from videodirector import notices
from videodirector.attention.control import (
    EditSchedule, FeatureRecorder, LocalBlend, RecordingProcessor, key_feature, step_window,
)
from videodirector.attention.processors import installed
from videodirector.attention.seq_align import global_align, refinement_mapper, word_token_indices
from videodirector.config import (
    OFFICIAL_KEYS_UNUSED, EditConfig, ModelConfig, apply_overrides, from_official, load_config,
)
from videodirector.errors import ConfigError, UserError
from videodirector.guidance.stdg import appearance_loss, masked_mean_keys, stdg_guidance
from videodirector.methods.videodirector import VideoDirector, masks_by_tokens
from videodirector.models.loading import load_models
from videodirector.models.motion_norm import (
    FrameGroupNorm, motion_norm_of, motion_transformers, resolve_motion_norm, set_motion_norm,
)

OFFICIAL = {  # the keys of bear_editing_config.yaml that matter here (official code)
    "inversion_prompt": "a red circle moving right", "new_prompt": "a blue circle moving right",
    "STDG_guide": [0.5, 0.5, 0.0, 0.5], "grad_guidance_threshold": None,
    "app_guidance": {"block_type": "spatial", "blocks": ["up_blocks.1", "up_blocks.2"], "weight_each": [20000, 10000]},
    "temp_guidance": {"blocks": ["up_blocks.1", "up_blocks.2"], "weight_each": [20000, 10000]},
    "p2p_blend_word_base": None, "p2p_blend_word_new": None,
}


# --------------------------------------------------------------------------- 1. motion-module GroupNorm


def _per_frame_by_hand(x: torch.Tensor, groups: int, weight: torch.Tensor, bias: torch.Tensor, eps: float):
    """GroupNorm of each frame written out: ``(B, C, F, H, W)``, statistics over ``C/G × H × W`` of each
    ``(b, f)`` with the biased variance, then the per-channel affine map (float64)."""
    b, c, f, h, w = x.shape
    g = x.double().reshape(b, groups, c // groups, f, h, w)
    mean = g.mean(dim=(2, 4, 5), keepdim=True)
    var = ((g - mean) ** 2).mean(dim=(2, 4, 5), keepdim=True)
    out = ((g - mean) / torch.sqrt(var + eps)).reshape(b, c, f, h, w)
    return out * weight.double()[:, None, None, None] + bias.double()[:, None, None, None]


def test_frame_group_norm_is_group_norm_per_frame_and_differs_from_joint():
    torch.manual_seed(0)
    norm = FrameGroupNorm(4, 8, eps=1e-6)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    # frames with their own offset and scale, as video features have: joint statistics mix them
    x = torch.randn(2, 8, 5, 3, 4) * torch.linspace(0.5, 3, 5)[:, None, None] + torch.arange(5.0)[:, None, None]
    out = norm(x)
    assert out.shape == x.shape
    assert torch.allclose(out.double(), _per_frame_by_hand(x, 4, norm.weight, norm.bias, 1e-6), atol=1e-5)
    joint = F.group_norm(x, 4, norm.weight, norm.bias, 1e-6)  # what diffusers' nn.GroupNorm does on (B, C, F, H, W)
    assert (out - joint).abs().max() > 0.5
    frames = x[:, :, 0]  # a 4-D input holds one frame per sample: plain GroupNorm
    assert torch.equal(norm(frames), F.group_norm(frames, 4, norm.weight, norm.bias, 1e-6))
    with pytest.raises(ValueError, match=r"\(B, C, F, H, W\)"):
        norm(torch.randn(2, 8, 5))


def _unet(tiny_paths):  # noqa: ANN001, ANN202
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    base, adapter = tiny_paths
    unet = UNetMotionModel.from_unet2d(UNet2DConditionModel.from_pretrained(base / "unet"),
                                       MotionAdapter.from_pretrained(adapter))
    return unet.eval()


def _forward(unet, seed: int = 0) -> torch.Tensor:  # noqa: ANN001
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(1, 4, 16, 8, 8, generator=g) + torch.linspace(-1, 1, 16)[None, None, :, None, None]
    emb = torch.randn(16, 77, unet.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        return unet(z, torch.tensor(500), encoder_hidden_states=emb).sample


def test_motion_norm_swaps_modules_keeps_parameters_and_joint_is_diffusers_bit_for_bit(tiny_paths):
    plain, unet = _unet(tiny_paths), _unet(tiny_paths)
    keys = list(unet.state_dict())
    params = {k: v.data_ptr() for k, v in unet.state_dict().items()}
    modules = motion_transformers(unet)
    assert set_motion_norm(unet, "per_frame") == len(modules) > 0
    assert all(type(m.norm) is FrameGroupNorm for m in modules) and motion_norm_of(unet) == "per_frame"
    assert list(unet.state_dict()) == keys  # same state-dict keys, the very same parameter tensors
    assert {k: v.data_ptr() for k, v in unet.state_dict().items()} == params
    base = _forward(plain)
    per_frame = _forward(unet)
    assert (per_frame - base).abs().max() > 1e-3  # the two norms differ on a random input
    set_motion_norm(unet, "joint")
    assert all(type(m.norm) is nn.GroupNorm for m in modules) and motion_norm_of(unet) == "joint"
    assert torch.equal(_forward(unet), base)  # joint: diffusers' own module, bit for bit
    with pytest.raises(ValueError, match="motion norm must be one of"):
        set_motion_norm(unet, "frames")


def test_per_frame_unet_survives_a_save_load_round_trip(tiny_paths, tmp_path):
    from diffusers import UNetMotionModel

    unet = _unet(tiny_paths)
    set_motion_norm(unet, "per_frame")
    before = _forward(unet, seed=1)
    unet.save_pretrained(tmp_path / "unet")
    loaded = UNetMotionModel.from_pretrained(tmp_path / "unet").eval()
    assert list(loaded.state_dict()) == list(unet.state_dict())
    assert motion_norm_of(loaded) == "joint"  # the choice is not a weight: it is made again at load time
    assert all(torch.equal(v, unet.state_dict()[k]) for k, v in loaded.state_dict().items())
    set_motion_norm(loaded, "per_frame")
    # diffusers' loading alone moves the last bits (the joint model too), so within float32 rounding
    assert torch.allclose(_forward(loaded, seed=1), before, atol=1e-5)


def test_auto_motion_norm_reads_the_model_card(tiny_paths, tmp_path):
    from videodirector.api import BUNDLED_WEIGHTS

    _, adapter = tiny_paths
    assert resolve_motion_norm("auto", str(adapter)) == "per_frame"  # a folder without a card
    assert resolve_motion_norm("auto", "guoyww/animatediff-motion-adapter-v1-5-3") == "per_frame"
    assert resolve_motion_norm("auto", "models/Motion_Module/v3_sd15_mm.ckpt") == "per_frame"
    assert resolve_motion_norm("joint", "models/Motion_Module/v3_sd15_mm.ckpt") == "joint"
    assert resolve_motion_norm("auto", str(BUNDLED_WEIGHTS / "motion_adapter")) == "joint"  # ShapeWorld's card
    folder = tmp_path / "w" / "motion_adapter"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": "MotionAdapter"}))
    (tmp_path / "w" / "training.json").write_text(json.dumps({"steps": {}, "motion_norm": "joint"}))
    assert resolve_motion_norm("auto", str(folder)) == "joint"  # a card beside the adapter
    (folder / "training.json").write_text(json.dumps({"motion_norm": "per_frame"}))
    assert resolve_motion_norm("auto", str(folder)) == "per_frame"  # the adapter's own card comes first
    (folder / "config.json").write_text(json.dumps({"motion_norm": "sideways"}))
    with pytest.raises(UserError, match="motion_norm='sideways'"):
        resolve_motion_norm("auto", str(folder))


def test_loaded_bundle_records_the_norm_in_its_fingerprint(tiny_models, tiny_paths):
    base, adapter = tiny_paths
    assert tiny_models.sources["motion_norm"] == "per_frame" and motion_norm_of(tiny_models.unet) == "per_frame"
    joint = load_models(ModelConfig(base=str(base), motion_adapter=str(adapter), local_files_only=True, device="cpu",
                                    motion_norm="joint"))
    assert joint.sources["motion_norm"] == "joint" and motion_norm_of(joint.unet) == "joint"
    assert joint.fingerprint() != tiny_models.fingerprint()  # an inversion cached under one is not reused


# --------------------------------------------------------------------------- 2. grad_guidance_threshold


def test_official_grad_guidance_threshold_is_accepted_and_ignored():
    cfg = from_official({**OFFICIAL, "grad_guidance_threshold": 0.01})
    assert cfg.stdg.threshold is None
    assert "grad_guidance_threshold" in OFFICIAL_KEYS_UNUSED


def test_reference_cost_and_fast_path_clamp_guidance_alike(tiny_models):
    """``stdg.threshold`` in our format clamps G alike in the fast path (one backward) and in the reference-cost
    path (four gradients summed). In float64: the two sum the same terms in another order, and the tiny model's
    per-frame norms over two values per group amplify float32 rounding."""
    m = tiny_models
    cfg = EditConfig()
    vd = VideoDirector(m, cfg)
    setup = vd._stdg_setup()
    rec = FeatureRecorder(setup.temporal, setup.appearance)
    procs = {l.name: RecordingProcessor(l, rec) for l in [*setup.temporal, *setup.appearance]}
    _, masks = toy_inputs()
    tok = masks_by_tokens(masks, (8, 8))
    m.unet.double()
    m.dtype = torch.float64
    try:
        cond = m.encode_prompt(["a red circle moving right"]).expand(16, -1, -1)
        g = torch.Generator().manual_seed(2)
        z_ref = torch.randn(1, 4, 16, 8, 8, generator=g, dtype=torch.float64)
        z = z_ref + 0.3 * torch.randn(z_ref.shape, generator=g, dtype=torch.float64)
        with installed(m.unet, procs):
            free, _ = stdg_guidance(m.eps, rec, z, z_ref, 500, cond, tok, setup)
            threshold = 0.25 * float(free.abs().max())
            cfg.stdg.threshold = threshold
            fast, _ = stdg_guidance(m.eps, rec, z, z_ref, 500, cond, tok, setup, cfg.stdg.threshold)
            reference, _ = vd._reference_stdg(rec, z, z_ref, 500, cond, tok, setup)
    finally:
        m.unet.float()
        m.dtype = torch.float32
    assert (free.abs() > threshold).any()  # the threshold bites
    assert float(fast.abs().max()) == pytest.approx(threshold)
    assert float(reference.abs().max()) == pytest.approx(threshold)
    assert torch.allclose(fast, reference, rtol=1e-9, atol=1e-9 * threshold)
    assert torch.equal(fast, free.clamp(-threshold, threshold))


# --------------------------------------------------------------------------- 3. local blend


@pytest.fixture()
def warnings_said():
    said: list[str] = []
    notices.reset()
    notices.set_sink(said.append)
    yield said
    notices.set_sink(None)
    notices.reset()


def test_official_blend_words_are_not_applied_and_say_so_once(warnings_said):
    cfg = from_official({**OFFICIAL, "p2p_blend_word_base": "circle", "p2p_blend_word_new": ["circle"]})
    assert cfg.prompts.blend_words_source == [] and cfg.prompts.blend_words_target == []
    assert len(warnings_said) == 1 and "never applies the blend" in warnings_said[0]
    assert "\n" not in warnings_said[0]
    from_official(OFFICIAL)  # no blend words: nothing to say
    assert len(warnings_said) == 1


def test_local_blend_waits_for_its_start_step():
    blend = LocalBlend([1], [1], latent_hw=(4, 4), start_step=2, level=0)
    z, ref = torch.full((1, 4, 3, 4, 4), 5.0), torch.zeros(1, 4, 3, 4, 4)
    assert torch.equal(blend.apply(3, z, ref), z)  # nothing recorded yet
    maps = torch.zeros(3, 1, 16, 77)
    maps[:, :, 0, 1] = 1.0  # the word attends to the first pixel of every frame
    blend.record(maps, maps)
    assert torch.equal(blend.apply(0, z, ref), z) and torch.equal(blend.apply(1, z, ref), z)
    out = blend.apply(2, z, ref)
    # the word's region (grown by the 3 x 3 max-pool) is edited, the rest keeps the reference
    assert out[..., :2, :2].eq(5).all() and out[..., 3, :].eq(0).all() and out[..., :, 3].eq(0).all()
    assert EditConfig().prompts.blend_start == 0.2


@pytest.fixture(scope="module")
def inverted(tiny_models, tiny_paths):  # noqa: ANN001, ANN201
    base, adapter = tiny_paths
    cfg = apply_overrides(EditConfig(), {
        "model.base": str(base), "model.motion_adapter": str(adapter), "model.device": "cpu",
        "input.height": 64, "input.width": 64, "inversion.num_steps": 5,
        "inversion.null_text": "none", "stdg.enabled": False,  # stage 2 is under test: a cheap inversion
    })
    frames, masks = toy_inputs()
    return cfg, VideoDirector(tiny_models, cfg).invert(frames, masks, "a red circle moving right")


def test_our_local_blend_starts_at_blend_start(tiny_models, inverted):
    cfg, inv = inverted
    target = "a blue circle moving right"

    def edit(**over):  # noqa: ANN003, ANN202
        return VideoDirector(tiny_models, apply_overrides(cfg, over)).edit(inv, target).latents

    plain = edit()
    words = {"prompts.blend_words_source": ["circle"], "prompts.blend_words_target": ["circle"]}
    never = edit(**words, **{"prompts.blend_start": 1.0})  # starts after the last step: no blend
    from_0 = edit(**words, **{"prompts.blend_start": 0.0})
    delayed = edit(**words)  # default 0.2 of 5 steps: blends from step 1
    assert torch.allclose(never, plain, atol=1e-4)
    assert not torch.allclose(from_0, plain, atol=1e-3) and not torch.allclose(delayed, plain, atol=1e-3)
    assert not torch.allclose(from_0, delayed, atol=1e-4)


# --------------------------------------------------------------------------- 4. refine alignment


def test_alignment_ties_break_as_the_official_aligner():
    # swapped tokens: two optimal alignments; the official traceback prefers "left" (a new target token)
    assert global_align([1, 2], [2, 1]) == [1, -1]  # diagonal-first would give [-1, 0]
    # a repeated source token: "up" (drop a source token) before the diagonal
    assert global_align([7, 7], [7]) == [0]  # diagonal-first would give [1]
    assert global_align([5, 1, 2, 6], [5, 2, 1, 6]) == [0, 2, -1, 3]
    # unique optimum: unchanged
    assert global_align([1, 2, 3, 4], [1, 9, 2, 3, 4]) == [0, -1, 1, 2, 3]


def test_refine_mapper_on_swapped_words_follows_the_official_choice(tiny_paths):
    tok = CLIPTokenizer.from_pretrained(tiny_paths[0] / "tokenizer")
    src, tgt = "a red blue circle", "a blue red circle"
    mapper, alphas = refinement_mapper(src, tgt, tok)
    (blue_t,), (red_t,) = word_token_indices(tgt, "blue", tok), word_token_indices(tgt, "red", tok)
    (blue_s,) = word_token_indices(src, "blue", tok)
    assert mapper[blue_t] == blue_s and alphas[blue_t] == 1  # "blue" reads the source's "blue" map
    assert alphas[red_t] == 0  # "red" is treated as new (diagonal-first would keep "red" and drop "blue")
    (circle_t,), (circle_s,) = word_token_indices(tgt, "circle", tok), word_token_indices(src, "circle", tok)
    assert mapper[circle_t] == circle_s and alphas[circle_t] == 1


# --------------------------------------------------------------------------- 5. temporal appearance keys


def test_official_block_type_temp_maps_to_temporal_appearance_layers():
    cfg = from_official({**OFFICIAL, "app_guidance": {**OFFICIAL["app_guidance"], "block_type": "temp"}})
    assert cfg.stdg.appearance_layers == "temporal"
    assert from_official(OFFICIAL).stdg.appearance_layers == "spatial" == EditConfig().stdg.appearance_layers
    with pytest.raises(ConfigError, match="'spatial' or 'temp'"):
        from_official({**OFFICIAL, "app_guidance": {**OFFICIAL["app_guidance"], "block_type": "cross"}})


def _appearance_guidance(models, layers: str):  # noqa: ANN001, ANN202
    cfg = apply_overrides(EditConfig(), {"stdg.coefficients": [0.0, 0.0, 0.0, 0.5], "stdg.appearance_layers": layers})
    setup = VideoDirector(models, cfg)._stdg_setup()
    rec = FeatureRecorder(setup.temporal, setup.appearance)
    procs = {l.name: RecordingProcessor(l, rec) for l in [*setup.temporal, *setup.appearance]}
    _, masks = toy_inputs()
    tok = masks_by_tokens(masks, (8, 8))
    cond = models.encode_prompt(["a red circle moving right"]).expand(16, -1, -1)
    g = torch.Generator().manual_seed(3)
    z_ref = torch.randn(1, 4, 16, 8, 8, generator=g)
    z = z_ref + 0.3 * torch.randn(z_ref.shape, generator=g)
    with installed(models.unet, procs):
        with torch.no_grad(), rec.capture() as cur:
            models.eps(z, 500, cond)
        keys = {l.name: cur[key_feature(l.name)] for l in setup.appearance}
        g_same, _ = stdg_guidance(models.eps, rec, z_ref, z_ref, 500, cond, tok, setup)
        g_t, _ = stdg_guidance(models.eps, rec, z, z_ref, 500, cond, tok, setup)
    return setup, keys, g_same, g_t


def test_temporal_appearance_loss_reads_motion_module_keys_and_differs_from_spatial(tiny_models):
    setup, keys, g_same, g_t = _appearance_guidance(tiny_models, "temporal")
    assert len(setup.appearance) == 12 and all(l.kind == "temporal" for l in setup.appearance)
    assert {l.block for l in setup.appearance} == {"up_blocks.1", "up_blocks.2"}
    for layer in setup.appearance:  # per frame, (F, h·w, C), as the official permute(1, 0, 2)
        k = keys[layer.name]
        assert k.shape[0] == 16 and k.shape[1] in (4, 16)
    assert g_same.abs().max() == 0 and g_t.abs().mean() > 0  # zero at the inverted latent, a loss elsewhere
    spatial, _, _, g_s = _appearance_guidance(tiny_models, "spatial")
    assert all(l.kind == "self" for l in spatial.appearance)
    assert g_s.abs().mean() > 0 and not torch.allclose(g_t, g_s, atol=1e-6)


# --------------------------------------------------------------------------- 5. [start, end] windows


def test_step_windows_follow_prompt_to_prompt():
    assert step_window(0.4, 50) == range(0, 20) and step_window([0.1, 0.4], 50) == range(5, 20)
    s = EditSchedule.build(50, [0.1, 0.4], [0.2, 0.8], [7, 16], None, [0, 16], sa1_max_tokens=1024)
    assert s.sa1_steps == range(5, 20) and s.sa2_steps == range(20, 50)  # SA-II from the window's end
    assert s.cross_steps == range(10, 40)  # the alpha table has T + 1 = 51 rows: int(51 · 0.2), int(51 · 0.8)
    d = EditSchedule.build(50, 0.4, 0.8, [7, 16], None, [0, 16], sa1_max_tokens=1024)
    assert d.sa1_steps == range(0, 20) and d.sa2_steps == range(20, 50) and d.cross_steps == range(0, 40)
    assert EditSchedule.build(50, [0.0, 0.4], [0.0, 0.8], [7, 16], None, [0, 16], 1024) == d


def test_windows_load_validate_and_reach_the_edit(tmp_path, tiny_models, inverted):
    p = tmp_path / "c.yaml"
    p.write_text("control:\n  self_replace_steps: [0.2, 0.6]\n  cross_replace_steps: [0.0, 0.5]\n")
    cfg = load_config(p)
    assert cfg.control.self_replace_steps == [0.2, 0.6] and cfg.control.cross_replace_steps == [0.0, 0.5]
    for bad in ("[0.6, 0.2]", "[0.1, 0.2, 0.3]", "[0.2, 1.5]"):
        p.write_text(f"control:\n  self_replace_steps: {bad}\n")
        with pytest.raises(ConfigError, match="control.self_replace_steps"):
            load_config(p)
    official = from_official({**OFFICIAL, "p2p_self_replace_steps": [0.2, 0.6], "p2p_cross_replace_steps": 0.8})
    assert official.control.self_replace_steps == [0.2, 0.6] and official.control.cross_replace_steps == 0.8
    base, inv = inverted
    cfg = apply_overrides(base, {"control.self_replace_steps": [0.2, 0.6], "control.cross_replace_steps": [0.2, 0.8]})
    schedule = VideoDirector(tiny_models, cfg).edit(inv, "a blue circle moving right").info["schedule"]
    assert schedule["sa1_steps"] == [1, 3] and schedule["sa2_steps"] == [3, 5] and schedule["cross_steps"] == [1, 4]


# --------------------------------------------------------------------------- 5. float32 mask pooling


def test_mask_pooling_is_float32_for_bf16_keys():
    g = torch.Generator().manual_seed(4)
    k = (torch.randn(16, 1024, 8, generator=g) * 0.1 + 4.0).bfloat16()  # a large common part, small details
    region = torch.rand(16, 1024, generator=g) < 0.5
    pooled = masked_mean_keys(k, region)
    assert pooled.dtype == torch.float32
    assert torch.equal(pooled, masked_mean_keys(k.float(), region))  # the float32 computation, exactly
    exact = (region[..., None].double() * k.double()).sum(1) / (region.double().sum(1, keepdim=True) + 1e-5)
    bf16_sum = (k * region[..., None].bfloat16()).sum(1).float() / (region.sum(1, keepdim=True) + 1e-5)
    assert (pooled.double() - exact).abs().max() < 1e-5 < (bf16_sum.double() - exact).abs().max()
    k2 = (k.float() + 0.05 * torch.randn(k.shape, generator=g)).bfloat16()
    for mode in ("mean_key", "per_token"):
        loss = appearance_loss(k, k2, region, mode)
        assert loss.dtype == torch.float32 and torch.equal(loss, appearance_loss(k.float(), k2.float(), region, mode))
