"""Video-P2P: the T2S inflation, stage-1 tuning, shared null-text, the four-row decoupled guidance, the
replace mapper, the local blend, the official YAMLs and one-line errors, on tiny random models (the
bundled ShapeWorld models for the cached end-to-end run)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from videodirector import api
from videodirector.attention.control import LocalBlend
from videodirector.attention.seq_align import replacement_mapper
from videodirector.config import EditConfig, ModelConfig, apply_overrides, load_config
from videodirector.diffusion.ddim import cfg_combine, ddim_step, leading_timesteps, step_size
from videodirector.errors import ConfigError, InputError, UserError
from videodirector.methods.video_p2p import OFFICIAL_TRAINABLE, VideoP2P, trainable_parameters
from videodirector.models.t2s import FrameAttnProcessor, T2SUNet, load_t2s_models

from conftest import assert_within_rounding, toy_inputs

FRAMES = 4


@pytest.fixture(autouse=True, scope="module")
def one_thread():  # noqa: ANN201
    """One torch thread: on a busy 2-core machine two threads made these tests several times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def t2s_models(tiny_paths):  # noqa: ANN001, ANN201
    base, _ = tiny_paths
    return load_t2s_models(ModelConfig(base=str(base), local_files_only=True, device="cpu"))


def vp2p_cfg(tiny_paths, **over) -> EditConfig:  # noqa: ANN001
    base, _ = tiny_paths
    return apply_overrides(EditConfig(), {"model.base": str(base), "model.device": "cpu", "model.local_files_only": True,
                                          "input.height": 64, "input.width": 64, "input.num_frames": FRAMES,
                                          "inversion.num_steps": 4, "inversion.null_inner_steps": 3,
                                          "video_p2p.tune_steps": 0, **over})


def clip(frames: int = FRAMES) -> tuple[torch.Tensor, torch.Tensor]:
    v, m = toy_inputs(frames=frames)
    return v, m


# ----------------------------------------------------------------------------------------- T2S model

@pytest.mark.numerics
def test_inflation_with_zero_temporal_output_is_the_image_unet_per_frame(t2s_models, tiny_paths, tmp_path):
    from diffusers import UNet2DConditionModel

    unet = copy.deepcopy(t2s_models.unet)
    plain = UNet2DConditionModel.from_pretrained(tiny_paths[0] / "unet").eval()
    inflated = unet.unet.state_dict()
    assert all(torch.equal(v, inflated[k]) for k, v in plain.state_dict().items())  # image weights unchanged
    assert all(b.attn_temp.to_out[0].weight.abs().max() == 0 for b in unet.transformer_blocks())  # official init
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 1, 8, 8, generator=g).expand(1, 4, FRAMES, 8, 8).contiguous()  # identical frames
    emb = torch.randn(1, 77, plain.config.cross_attention_dim, generator=g)
    with torch.no_grad():
        with_bias = unet(x, 500, emb).sample
        for b in unet.transformer_blocks():
            torch.nn.init.zeros_(b.attn_temp.to_out[0].bias)  # zero temporal output
        got = unet(x, 500, emb).sample
        want32 = plain(x[:, :, 0], 500, encoder_hidden_states=emb).sample[:, :, None].expand_as(got)
        want64 = plain.double()(x[:, :, 0].double(), 500, encoder_hidden_states=emb.double()).sample[:, :, None]
    # yardstick: the image UNet's own float32 rounding (against float64); the T2S call differs from it only by
    # the batch of F frames and the frame-0 key/value gather. Measured gap / yardstick: about 1 on this CPU.
    assert_within_rounding(got, want32, want32, want64.expand_as(got), k=20, what="T2S vs image UNet")
    # the default (non-zero) temporal bias changes the output far beyond rounding: the test sees the branch
    assert (with_bias - got).abs().max() > 1e3 * (want32 - want64).abs().max()
    unet.save_pretrained(tmp_path / "t2s")
    again = T2SUNet.from_pretrained(tmp_path / "t2s")
    assert set(again.state_dict()) == set(unet.state_dict()) and any(".attn_temp." in k for k in again.state_dict())
    with torch.no_grad():  # same weights; the reload's memory layout changes rounding only
        assert_within_rounding(again(x, 500, emb).sample, got, want32, want64.expand_as(got), k=20, what="reloaded")


@pytest.mark.numerics
@pytest.mark.parametrize("mode", ["first", "sparse_causal"])
def test_frame_attention_reads_frame_zero_keys_and_values(t2s_models, mode):
    attn = copy.deepcopy(t2s_models.unet.transformer_blocks()[0].attn1)
    attn.set_processor(FrameAttnProcessor(None, mode))
    g = torch.Generator().manual_seed(1)
    n, c = 16, attn.to_q.in_features
    h = torch.randn(2 * FRAMES, n, c, generator=g)  # two clips of FRAMES frames, (b f) order
    with torch.no_grad():
        got = attn(h, num_frames=FRAMES)

        def reference(x, dtype):  # noqa: ANN001, ANN202
            x = x.to(dtype)
            w = {k: getattr(attn, k).weight.to(dtype) for k in ("to_q", "to_k", "to_v")}
            q, k, v = x @ w["to_q"].T, x @ w["to_k"].T, x @ w["to_v"].T
            out = []
            for b in range(2):
                for i in range(FRAMES):
                    src = [b * FRAMES] if mode == "first" else [b * FRAMES, b * FRAMES + max(i - 1, 0)]
                    kk, vv = torch.cat([k[j] for j in src]), torch.cat([v[j] for j in src])
                    qh = q[b * FRAMES + i].view(n, attn.heads, -1).transpose(0, 1)
                    kh = kk.view(-1, attn.heads, qh.shape[-1]).transpose(0, 1)
                    vh = vv.view(-1, attn.heads, qh.shape[-1]).transpose(0, 1)
                    p = torch.softmax(qh @ kh.transpose(-1, -2) / qh.shape[-1] ** 0.5, -1)
                    out.append((p @ vh).transpose(0, 1).reshape(n, -1))
            o = torch.stack(out)
            return o @ attn.to_out[0].weight.to(dtype).T + attn.to_out[0].bias.to(dtype)

        r32, r64 = reference(h, torch.float32), reference(h, torch.float64)
    # yardstick: the reference's own float32 rounding; SDPA and the explicit softmax differ by rounding only
    assert_within_rounding(got, r64.float(), r32, r64, k=20, what=f"frame attention ({mode})")
    other = h.clone()
    other[FRAMES - 1] += 1.0  # the last frame of clip 0: only its own row may change (nobody reads its keys)
    with torch.no_grad():
        moved = attn(other, num_frames=FRAMES)
    assert torch.equal(moved[: FRAMES - 1], got[: FRAMES - 1]) and not torch.equal(moved[FRAMES - 1], got[FRAMES - 1])


# ----------------------------------------------------------------------------------------- stage 1

def test_tuning_changes_exactly_the_official_set_and_lowers_the_loss(t2s_models, tiny_paths):
    cfg = vp2p_cfg(tiny_paths, **{"video_p2p.tune_steps": 15, "video_p2p.tune_lr": 2e-3})  # lr: visible in 15 steps
    method = VideoP2P(t2s_models, cfg)
    before = {k: v.clone() for k, v in t2s_models.unet.state_dict().items()}
    frames, _ = clip(2)
    state, losses = method.tune(frames, "a red circle moving right", lambda *a: None)
    after = t2s_models.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the shared model is left untuned
    official = set(trainable_parameters(t2s_models.unet, OFFICIAL_TRAINABLE))
    assert set(state) == official and not any("norm_temp" in k for k in official)
    assert all(any(k.endswith(e + ".weight") for e in ("attn1.to_q", "attn2.to_q")) or ".attn_temp." in k for k in state)
    assert all(not torch.equal(state[k], before[f"{k}"]) for k in state)  # every official parameter moved
    # the loss on fixed evaluation draws (t, noise) falls: evaluated with the base and the tuned weights
    m = t2s_models
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        z0 = m.encode_video(frames, sample=False)
        cond = m.encode_prompt(["a red circle moving right"])
        draws = [(int(t), torch.randn(z0.shape, generator=g)) for t in torch.randint(0, 1000, (12,), generator=g)]

        def eval_loss() -> float:
            tot = 0.0
            for t, n in draws:
                a = float(m.schedule.alphas_cumprod[t])
                tot += F.mse_loss(m.unet(a**0.5 * z0 + (1 - a) ** 0.5 * n, t, encoder_hidden_states=cond).sample, n).item()
            return tot / len(draws)

        base_loss = eval_loss()
        with method.weights(state):
            tuned_loss = eval_loss()
    # paired draws: the same (t, noise) for both; 30 steps at lr 1e-3 lowered it 3 % on this CPU
    assert tuned_loss < 0.99 * base_loss, (base_loss, tuned_loss)
    assert len(losses) == 15


# ----------------------------------------------------------------------------------------- stage 2a

def test_shared_null_text_beats_plain_ddim_with_cfg(t2s_models, tiny_paths):
    """On the bundled ShapeWorld UNet (a random UNet's null-text gradients are too weak to move it): DDIM + CFG 7.5
    from z*_T drifts from z*_0; the shared null-text trajectory ends nearer (measured: 18.4 against 22.9)."""
    from videodirector.world.scene import render, sample_clip

    spec = sample_clip(7, shape="circle", colour="red", motion="right", background="teal", texture="striped",
                       distractor_prob=0.0, frames=FRAMES)
    frames, masks = (x[0] for x in render(spec))
    cfg = apply_overrides(EditConfig(), {**api.bundled_model_config("cpu"), "input.height": 64, "input.width": 64,
                                         "input.num_frames": FRAMES, "inversion.num_steps": 4,
                                         "inversion.null_inner_steps": 10, "video_p2p.tune_steps": 0})
    method = api.Editor(cfg, method="video-p2p").method
    inv = method.invert(frames, masks, spec.caption())
    T = inv.num_steps
    assert tuple(inv.null_embeddings.shape[:2]) == (T, 1)  # one 1x77xD embedding per step, shared by the frames
    m = method.models
    ts, delta = leading_timesteps(T), step_size(m.schedule, T)
    cond, empty = m.encode_prompt([spec.caption(), ""]).chunk(2)
    z = inv.latents[T][None]
    with torch.no_grad():
        for t in ts:  # DDIM + CFG 7.5 with the "" embedding, no optimisation
            eu, ec = method.eps(z, t, empty.expand(FRAMES, -1, -1)), method.eps(z, t, cond.expand(FRAMES, -1, -1))
            z = ddim_step(cfg_combine(ec, eu, 6.5), z, m.schedule.alpha(t), m.schedule.alpha(t - delta))
    z0 = inv.latents[0][None]
    plain, optimised = (z - z0).norm().item(), (inv.reconstruction - z0).norm().item()
    assert optimised < 0.9 * plain, (optimised, plain)
    per_frame = VideoP2P(t2s_models, vp2p_cfg(tiny_paths, **{"video_p2p.null_text": "per_frame",
                                                             "inversion.num_steps": 1, "inversion.null_inner_steps": 1}))
    assert per_frame.invert(*clip(), "a red circle moving right").null_embeddings.shape[1] == FRAMES


# ----------------------------------------------------------------------------------------- stage 2b

@pytest.mark.parametrize("fast,decoupled", [(False, True), (True, True), (False, False)])
def test_four_row_batch_and_fast_rule(t2s_models, tiny_paths, fast, decoupled):
    cfg = vp2p_cfg(tiny_paths, **{"video_p2p.fast": fast, "video_p2p.decoupled_guidance": decoupled,
                                  "inversion.num_steps": 3})
    method = VideoP2P(t2s_models, cfg)
    frames, masks = clip()
    src, tgt = "a red circle moving right", "a blue circle moving right"
    inv = method.invert(frames, masks, src)
    calls = []
    plain_eps = method.eps
    method.eps = lambda z, t, e: calls.append((z, t, e, out := plain_eps(z, t, e))) or out  # type: ignore[method-assign]
    res = method.edit(inv, tgt)
    m = t2s_models
    s_emb, t_emb, empty = m.encode_prompt([src, tgt, ""]).chunk(3)
    T, delta = inv.num_steps, step_size(m.schedule, inv.num_steps)
    assert len(calls) == T
    for i, (z, t, e, eps) in enumerate(calls):
        rows = e.view(4, FRAMES, *e.shape[1:])
        null = empty if fast else inv.null_embeddings[i]
        assert torch.equal(rows[0], null.expand(FRAMES, -1, -1))  # source | optimised null (or "" in fast mode)
        assert torch.equal(rows[1], (empty if decoupled or fast else null).expand(FRAMES, -1, -1))  # target | ""
        assert torch.equal(rows[2], s_emb.expand(FRAMES, -1, -1)) and torch.equal(rows[3], t_emb.expand(FRAMES, -1, -1))
        assert torch.equal(z[0], z[2]) and torch.equal(z[1], z[3])
        eu, _, ec, _ = eps.chunk(4)
        eps_src = ec if fast else cfg_combine(ec, eu, 6.5)  # fast: the source branch's pure conditional prediction
        nxt = ddim_step(eps_src, z[0:1], m.schedule.alpha(t), m.schedule.alpha(t - delta))
        have = calls[i + 1][0][0:1] if i + 1 < T else res.info["source_branch"]
        assert torch.equal(nxt, have)
        wrong = cfg_combine(ec, eu, 6.5) if fast else ec
        assert not torch.equal(ddim_step(wrong, z[0:1], m.schedule.alpha(t), m.schedule.alpha(t - delta)), have)


def test_cache_keys_name_the_compute_precision(t2s_models, tiny_paths):
    """The T2S weights are float32 whatever autocasts them, so the model fingerprint cannot tell a bfloat16 run
    from a float32 one: the tuned-weights key and the inversion key name the compute precision, and a float32
    run never reads a bfloat16 run's cache."""
    frames, masks = clip()
    keys = {}
    for dtype in ("float32", "bfloat16"):
        cfg = vp2p_cfg(tiny_paths, **{"model.dtype": dtype})
        editor = api.Editor(cfg, method="video-p2p", models=t2s_models)
        keys[dtype] = (editor.method.tuning_key(frames, "a red circle"), editor.cache_key(frames, masks, "a red circle"))
    assert keys["float32"][0] != keys["bfloat16"][0] and keys["float32"][1] != keys["bfloat16"][1]
    same = api.Editor(vp2p_cfg(tiny_paths, **{"model.dtype": "float32"}), method="video-p2p", models=t2s_models)
    assert (same.method.tuning_key(frames, "a red circle"), same.cache_key(frames, masks, "a red circle")) == keys["float32"]


def test_replace_mapper_maps_words_by_position(tiny_paths):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tiny_paths[0] / "tokenizer")
    m = replacement_mapper("a red circle on a square", "a blue circle on a square", tok)
    assert m[1, 1] == 1 and m[5, 5] == 1 and m[1, 5] == 0 and m[5, 1] == 0  # the two "a" map one-to-one
    assert m[2, 2] == 1 and m[:, 2].sum() == 1  # red -> blue
    m = replacement_mapper("a xy circle", "a yx circle", tok)  # 2 tokens each ("x", "y"): pairwise
    assert m[2, 2] == 1 and m[3, 3] == 1 and m[2, 3] == 0 and m[3, 2] == 0
    m = replacement_mapper("a xyz circle", "a red circle", tok)  # 3 source tokens -> 1 target token (1 / n_t = 1)
    assert m[2:5, 2].tolist() == [1.0, 1.0, 1.0] and m[5, 3] == 1 and m[6, 4] == 1  # circle, then EOS, by offset
    assert m[:, 5:].sum(0).eq(1).all()  # padding keeps the offset: every position reads one source position
    with pytest.raises(UserError, match="same number of words"):
        replacement_mapper("a red circle", "a big red circle", tok)


def test_local_blend_mask_follows_the_official_steps():
    torch.manual_seed(0)
    f, heads, r, latent = 2, 3, 4, (8, 8)
    blend = LocalBlend([1], [2, 3], latent, threshold=0.3, start_step=2, level=1)
    recon, edit = 0.01 * torch.rand(f, heads, r * r, 77), 0.01 * torch.rand(f, heads, r * r, 77)
    recon[:, :, 5, 1] = 1.0  # the source word at pixel (1, 1)
    edit[0, :, 10, 2] = 1.0  # the target word at pixel (2, 2) in frame 0, at (3, 3) in frame 1
    edit[1, :, 15, 2] = 1.0
    blend.record(recon, edit)
    blend.record(edit, recon)  # a second layer/step: summed
    src = recon[..., [1]].sum(-1).mean(1) + edit[..., [1]].sum(-1).mean(1)  # source word tokens, mean over heads
    tgt = edit[..., [2, 3]].sum(-1).mean(1) + recon[..., [2, 3]].sum(-1).mean(1)
    masks = []
    for mm in (src, tgt):
        mm = mm.view(f, 1, r, r)
        padded = F.pad(mm, (1, 1, 1, 1), value=-float("inf"))
        pooled = torch.stack([padded[..., i:i + r, j:j + r] for i in range(3) for j in range(3)]).amax(0)  # 3x3 max
        up = pooled.repeat_interleave(2, -2).repeat_interleave(2, -1)  # nearest to the 8x8 latent
        masks.append(up / up.amax(dim=(2, 3), keepdim=True) > 0.3)
    want = (masks[0] | masks[1]).float().permute(1, 0, 2, 3)[None]  # target = source ∪ target
    assert torch.equal(blend.mask(), want) and 0 < want.mean() < 1
    z, ref = torch.randn(1, 4, f, *latent), torch.randn(1, 4, f, *latent)
    assert torch.equal(blend.apply(1, z, ref), z)  # before int(0.2 T): no blend
    assert torch.equal(blend.apply(2, z, ref), ref + want * (z - ref))


# ----------------------------------------------------------------------------------------- configs, errors

TUNE = """pretrained_model_path: "{base}"
output_dir: "./outputs/rabbit-jump"
train_data:
  video_path: "data/rabbit"
  prompt: "a rabbit is jumping on the grass"
  n_sample_frames: 8
  width: 512
  height: 512
  sample_start_idx: 0
  sample_frame_rate: 1
validation_data:
  prompts: ["a origami rabbit is jumping on the grass"]
  video_length: 8
  width: 512
  height: 512
  num_inference_steps: 50
  guidance_scale: 12.5
  use_inv_latent: True
  num_inv_steps: 50
learning_rate: 3e-5
train_batch_size: 1
max_train_steps: 500
checkpointing_steps: 1000
validation_steps: 500
trainable_modules:
  - "attn1.to_q"
  - "attn2.to_q"
  - "attn_temp"
seed: 33
mixed_precision: fp16
use_8bit_adam: False
gradient_checkpointing: True
enable_xformers_memory_efficient_attention: True
"""
P2P = """pretrained_model_path: "./outputs/rabbit-jump"
image_path: "./data/rabbit"
prompt: "a rabbit is jumping on the grass"
prompts:
  - "a rabbit is jumping on the grass"
  - "a origami rabbit is jumping on the grass"
blend_word:
  - 'rabbit'
  - 'rabbit'
eq_params:
  words:
    - "origami"
  values:
    - 2
save_name: "origami"
is_word_swap: False
"""


def test_official_yaml_pair_loads_from_either_file(tmp_path, tiny_paths, monkeypatch):
    repo = tmp_path / "Video-P2P"
    (repo / "configs").mkdir(parents=True)
    (repo / "data" / "rabbit").mkdir(parents=True)
    for i in range(1, 9):  # the shipped frames: numbered .jpg files that are TIFFs
        Image.fromarray(np.full((20, 20, 3), 30 * i, np.uint8)).save(repo / "data" / "rabbit" / f"{i}.jpg", format="TIFF")
    (repo / "configs" / "rabbit-jump-tune.yaml").write_text(TUNE.format(base=tiny_paths[0]))
    (repo / "configs" / "rabbit-jump-p2p.yaml").write_text(P2P)
    monkeypatch.chdir(tmp_path)  # not the repository root: paths resolve from the folder above configs/
    a = load_config(repo / "configs" / "rabbit-jump-tune.yaml")
    b = load_config(repo / "configs" / "rabbit-jump-p2p.yaml")
    assert a.to_dict() == b.to_dict()
    s = a.settings_for("video_p2p")
    assert a.method == "video-p2p" and s.tune_steps == 500 and s.tune_lr == 3e-5 and s.tune_seed == 33
    assert s.cross_mode == "refine" and s.cross_replace_steps == 0.2 and s.temporal_replace_steps == 0.5
    assert a.prompts.target == "a origami rabbit is jumping on the grass"
    assert a.prompts.blend_words_source == ["rabbit"] and a.prompts.equalizer_values == [2.0]
    assert Path(a.input.video) == repo / "data" / "rabbit" and a.model.base == str(tiny_paths[0])
    frames, _ = api.load_inputs(apply_overrides(a, {"input.height": 64, "input.width": 64}))
    assert frames.shape == (8, 3, 64, 64) and frames[0].mean() < frames[7].mean()  # numeric order 1..8
    (repo / "configs" / "car-drive-p2p.yaml").write_text(
        P2P.replace("rabbit-jump", "car-drive").replace("rabbit", "car").replace("is_word_swap: False", "is_word_swap: True")
        + "cross_replace_steps: 0.8\nself_replace_steps: 0.7\nbogus_key: 1\n")
    with pytest.raises(ConfigError, match="unknown key 'bogus_key'"):
        load_config(repo / "configs" / "car-drive-p2p.yaml")


def test_bad_input_is_one_line(t2s_models, tiny_models, tiny_paths):
    for over, match in (({"video_p2p.tune_steps": -1}, "tune_steps"), ({"video_p2p.tune_lr": float("nan")}, "tune_lr"),
                        ({"video_p2p.cross_replace_steps": 2.0}, "cross_replace_steps"),
                        ({"video_p2p.trainable": []}, "trainable")):
        with pytest.raises(ConfigError, match=match) as exc:
            from videodirector.config import validate

            validate(vp2p_cfg(tiny_paths, **over))
        assert "\n" not in str(exc.value)
    with pytest.raises(InputError, match="inflated image UNet"):
        VideoP2P(tiny_models, vp2p_cfg(tiny_paths))
    method = VideoP2P(t2s_models, vp2p_cfg(tiny_paths, **{"video_p2p.cross_mode": "replace", "inversion.num_steps": 1}))
    frames, masks = clip()
    inv = method.invert(frames, masks, "a red circle")
    with pytest.raises(UserError, match="same number of words"):
        method.edit(inv, "a big red circle")
    with pytest.raises(UserError, match="does not appear"):
        VideoP2P(t2s_models, vp2p_cfg(tiny_paths, **{"prompts.blend_words_target": ["tiger"]})).edit(inv, "a blue circle")


# ----------------------------------------------------------------------------------------- end to end

def test_bundled_edit_caches_the_tuned_weights(tmp_path):
    from videodirector.world.scene import render, sample_clip

    spec = sample_clip(7, shape="circle", colour="red", motion="right", background="teal", texture="striped",
                       distractor_prob=0.0, frames=FRAMES)
    frames, masks = (x[0] for x in render(spec))
    cfg = apply_overrides(EditConfig(), {**api.bundled_model_config("cpu"), "input.height": 64, "input.width": 64,
                                         "input.num_frames": FRAMES, "inversion.num_steps": 3,
                                         "inversion.null_inner_steps": 2, "video_p2p.tune_steps": 3,
                                         "video_p2p.auto_blend_words": True, "video_p2p.cross_mode": "replace"})
    from videodirector.methods import video_p2p

    video_p2p._TUNED.clear()
    editor = api.Editor(cfg, method="video-p2p", cache_dir=tmp_path / "inversions")
    stages: list[str] = []
    inv = editor.invert(frames, masks, spec.caption(), progress=lambda s, i, n: stages.append(s))
    assert "tuning" in stages and inv.meta["tuning"]["source"] == "tuned"
    assert (tmp_path / "tuned" / inv.meta["tuning"]["key"] / "t2s.safetensors").is_file()
    video_p2p._TUNED.clear()  # a new process: the tuned weights come from the disk cache
    again = api.Editor(cfg, method="video-p2p", cache_dir=tmp_path / "inversions", models=editor.models)
    stages.clear()
    inv2 = again.invert(frames, masks, spec.caption(), progress=lambda s, i, n: stages.append(s))
    assert inv2.meta["cache"]["hit"] and not stages
    res = again.edit(inv2, spec.edited(colour="blue").caption(), progress=lambda s, i, n: stages.append(s))
    assert "tuning" not in stages and res.info["blend_words"] == [["red"], ["blue"]]
    assert res.frames.shape == (FRAMES, 3, 64, 64) and torch.isfinite(res.frames).all()
    out = again.save(res, inv2, tmp_path / "out")
    assert (out / "edited.mp4").is_file() and (out / "result.json").is_file()


def test_cli_bad_video_p2p_input_is_one_line(tmp_path, capsys, monkeypatch):
    import sys

    from videodirector import cli

    def run(args: list[str]) -> tuple[int, str]:
        monkeypatch.setattr(sys, "argv", ["videodirector", *args])
        with pytest.raises(SystemExit) as exc:
            cli.main()
        err = capsys.readouterr().err
        return exc.value.code, err

    bad = tmp_path / "x-p2p.yaml"
    bad.write_text(P2P + "bogus_key: 1\n")
    code, err = run(["edit", str(bad), "--out", str(tmp_path / "o")])
    assert code != 0 and "unknown key 'bogus_key'" in err and len(err.strip().splitlines()) == 1
    code, err = run(["edit", "--method", "video-p2p", "--bundled", "--video", str(tmp_path / "missing.mp4"),
                     "--source-prompt", "a red circle", "--target-prompt", "a blue circle", "--cross-window", "3",
                     "--out", str(tmp_path / "o")])
    assert code != 0 and "cross_replace_steps" in err and len(err.strip().splitlines()) == 1
