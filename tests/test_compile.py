"""``model.compile``: regional compilation of the UNet (``models.compile``) against the eager path.

The compiled blocks are traced with ``aot_eager`` (Dynamo and AOTAutograd, no code generation), so the
test checks what can go wrong on our side: which blocks compile, that attention control and STDG
recording keep working, that no block graph-breaks or hits the recompile limit, and that outputs and
gradients equal the eager ones. Kernel speed is measured on the GPU by ``benchmarks/speed.py --compile``.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from conftest import EPS64, assert_within_rounding, float64_twin, toy_inputs
from videodirector.attention.control import FeatureRecorder, RecordingProcessor
from videodirector.attention.processors import installed
from videodirector.config import apply_overrides
from videodirector.guidance.stdg import stdg_guidance
from videodirector.methods.videodirector import VideoDirector, masks_by_tokens
from videodirector.models.compile import BLOCKS_WITH_ATTENTION, COMPILED_BLOCKS, attention_blocks_eager, compile_blocks
from videodirector.models.loading import load_models


def _guidance(vd: VideoDirector, z: torch.Tensor, z_ref: torch.Tensor, cond: torch.Tensor, masks: torch.Tensor):
    setup = vd._stdg_setup()
    recorder = FeatureRecorder(setup.temporal, setup.appearance)
    procs = {l.name: RecordingProcessor(l, recorder) for l in [*setup.temporal, *setup.appearance]}
    with installed(vd.models.unet, procs):
        return stdg_guidance(vd.models.eps, recorder, z, z_ref, 601, cond,
                             masks_by_tokens(masks, tuple(z.shape[-2:])), setup)


@pytest.mark.numerics
def test_compiled_blocks_equal_eager_without_graph_breaks_or_eager_fallback(tiny_cfg):
    # the GEGLU recomputed in the backward, as on CUDA (model.recompute_feedforward: auto): the checkpoint compiled
    cfg = apply_overrides(tiny_cfg, {"inversion.num_steps": 4, "model.recompute_feedforward": True})
    m = load_models(cfg.model)
    vd = VideoDirector(m, cfg)
    frames, masks = toy_inputs()
    source, target = "a red circle moving right", "a blue circle moving right"
    g = torch.Generator().manual_seed(1)
    z, z_ref = torch.randn(2, 1, 4, 16, 8, 8, generator=g)
    cond = m.encode_prompt([source]).expand(16, -1, -1)
    phi0 = m.encode_prompt([""]).expand(16, -1, -1)

    def null_text_grad(models=m) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
        phi = phi0.to(models.dtype).clone().requires_grad_(True)
        eps = models.eps(z, 601, phi)
        eps.square().mean().backward()
        return eps.detach(), phi.grad

    inversion = vd.invert(frames, masks, source)
    eager = {"edit": vd.edit(inversion, target).latents, "null": null_text_grad(),
             "stdg": _guidance(vd, z, z_ref, cond, masks)}
    m64 = float64_twin(m)  # the yardstick: the eager computations in float64
    eager64 = {"edit": VideoDirector(m64, cfg).edit(inversion, target).latents, "null": null_text_grad(m64),
               "stdg": _guidance(VideoDirector(m64, cfg), z.double(), z_ref.double(), cond.double(), masks)}

    graphs: list[int] = []

    def counting_backend(gm, example_inputs):  # noqa: ANN001, ANN202
        graphs.append(len(gm.graph.nodes))
        return torch._dynamo.backends.debugging.aot_eager(gm, example_inputs)

    torch._dynamo.reset()
    counters.clear()
    compiled = compile_blocks(m.unet, backend=counting_backend)
    per_class = {name: sum(type(mod).__name__ == name for mod in m.unet.modules()) for name in COMPILED_BLOCKS}
    assert compiled == sum(per_class.values()) and all(per_class.values()), per_class
    with torch._dynamo.config.patch(fail_on_recompile_limit_hit=True):
        got = {"edit": vd.edit(inversion, target).latents, "null": null_text_grad(),
               "stdg": _guidance(vd, z, z_ref, cond, masks)}
        vd.invert(frames, masks, source)  # the whole stage 1 compiled too: no recompile-limit error
        # a second edit installs new processor objects: the compiled blocks do not depend on them
        graphs_before = len(graphs)
        again = vd.edit(inversion, target).latents
    assert len(graphs) == graphs_before, "a second edit recompiled"
    assert torch.equal(again, got["edit"])
    assert graphs, "no block was compiled"
    # the only graph breaks: the stage-2 control processors' attend, which compiled blocks call as it is
    # (attention.processors.opaque_to_compiler); no frame falls back to eager
    breaks = dict(counters["graph_break"])
    assert breaks and all("torch.compiler.disable" in r and "ControlProcessor.attend" in r for r in breaks), breaks
    assert not counters["unimplemented"], dict(counters["unimplemented"])
    # aot_eager runs the blocks' ATen ops after functionalisation: compiled and eager agree up to rounding.
    # Measured |compiled - eager| / |eager32 - eager64|: edit 0 (L2), eps 0, grad < 1e-4 (max-abs), with 1 and 2
    # threads and AVX512, AVX2 and default kernels. The edit's yardstick is coarse (the random model's 4-step
    # edit amplifies float32 rounding many times over); the single forward and backward are the sharp check:
    # a compiled FeedForward off by a factor 1 + 1e-5 fails them.
    assert_within_rounding(got["edit"], eager["edit"], eager["edit"], eager64["edit"], k=10, norm=True, what="edit")
    for name, a, b, b64 in zip(("eps", "grad"), got["null"], eager["null"], eager64["null"]):
        assert_within_rounding(a, b, b, b64, k=10, what=f"null-text {name}")
    # recording forwards run the motion modules eagerly and the resnets and feed-forwards compiled
    for name, a, b, b64 in zip(("G", "eps"), got["stdg"], eager["stdg"], eager64["stdg"]):
        assert_within_rounding(a, b, b, b64, k=10, what=f"STDG {name}")
    torch._dynamo.reset()


@pytest.mark.numerics
def test_compiled_blocks_with_gradient_checkpointing_keep_the_stdg_gradient(tiny_cfg):
    """STDG's backward recomputes the checkpointed blocks: they must run there as its recording forward ran them
    (eagerly); a compiled block recomputing what an eager one saved fails checkpoint's metadata check.

    In float64: the random tiny model's STDG loss selects top-1 key frames, and float32 rounding flips some
    selections (|G32 - G64| exceeds |G| there), so float32 gives no usable yardstick. Float64 compiled and eager
    run the same ATen ops; the yardstick is one float64 ulp of G, which the backward's summation order can amplify:
    measured |compiled - eager| = 0 with the transformer blocks compiled (1 and 2 threads), 7.4e-9 on |G| = 4.0e4
    (820 ulps) with every block compiled; eps 0 in both. Only the transformer blocks are compiled here: they are
    what checkpointing recomputes, and the test takes 11 s instead of 100."""
    cfg = apply_overrides(tiny_cfg, {"inversion.num_steps": 4, "model.gradient_checkpointing": True})
    m64 = float64_twin(load_models(cfg.model))
    vd = VideoDirector(m64, cfg)
    _, masks = toy_inputs()
    g = torch.Generator().manual_seed(1)
    z, z_ref = torch.randn(2, 1, 4, 16, 8, 8, generator=g).double()
    cond = m64.encode_prompt(["a red circle moving right"]).expand(16, -1, -1)
    eager = _guidance(vd, z, z_ref, cond, masks)
    torch._dynamo.reset()
    compile_blocks(m64.unet, ("BasicTransformerBlock",), backend="aot_eager")  # the blocks checkpointing recomputes
    got = _guidance(vd, z, z_ref, cond, masks)
    for name, a, b in zip(("G", "eps"), got, eager):
        assert_within_rounding(a, b, b, b, k=1e4, eps=EPS64, what=f"STDG {name}")
    torch._dynamo.reset()


def test_recording_runs_only_the_blocks_with_attention_eagerly(tiny_cfg):
    m = load_models(apply_overrides(tiny_cfg, {"model.compile": True}).model)
    by_class = {name: [mod for mod in m.unet.modules() if type(mod).__name__ == name] for name in COMPILED_BLOCKS}
    compiled_calls = {name: [mod._compiled_call_impl for mod in mods] for name, mods in by_class.items()}
    assert all(c is not None for calls in compiled_calls.values() for c in calls)
    with attention_blocks_eager():
        for name, mods in by_class.items():
            eager_now = [mod._compiled_call_impl is None for mod in mods]
            assert all(eager_now) if name in BLOCKS_WITH_ATTENTION else not any(eager_now), name
    assert {name: [mod._compiled_call_impl for mod in mods] for name, mods in by_class.items()} == compiled_calls
    torch._dynamo.reset()


def test_model_compile_flag_compiles_the_blocks(tiny_cfg):
    m = load_models(apply_overrides(tiny_cfg, {"model.compile": True}).model)
    blocks = [mod for mod in m.unet.modules() if type(mod).__name__ in COMPILED_BLOCKS]
    assert blocks and all(mod._compiled_call_impl is not None for mod in blocks)
    others = [mod for mod in m.unet.modules() if type(mod).__name__ not in COMPILED_BLOCKS]
    assert all(getattr(mod, "_compiled_call_impl", None) is None for mod in others)
    torch._dynamo.reset()


def test_cli_compile_flag_sets_model_compile():
    from videodirector.cli import _overrides

    assert _overrides(compile=True, gradient_checkpointing=None) == {"model.compile": True}
    assert _overrides(compile=None) == {}
    assert _overrides(mask_blend=True, mask_blend_dilation=0) == {"control.mask_blend": True,
                                                                   "control.mask_blend_dilation": 0}
