"""``model.compile``: regional compilation of the UNet (``models.compile``) against the eager path.

The compiled blocks are traced with ``aot_eager`` (Dynamo and AOTAutograd, no code generation), so the
test checks what can go wrong on our side: which blocks compile, that attention control and STDG
recording keep working, that no block graph-breaks or hits the recompile limit, and that outputs and
gradients equal the eager ones. Kernel speed is measured on the GPU by ``benchmarks/speed.py --compile``.
"""

from __future__ import annotations

import torch
import torch._dynamo
from torch._dynamo.utils import counters

from conftest import toy_inputs
from videodirector.attention.control import FeatureRecorder, RecordingProcessor
from videodirector.attention.processors import installed
from videodirector.config import apply_overrides
from videodirector.guidance.stdg import stdg_guidance
from videodirector.methods.videodirector import VideoDirector, masks_by_tokens
from videodirector.models.compile import COMPILED_BLOCKS, compile_blocks
from videodirector.models.loading import load_models


def _guidance(vd: VideoDirector, z: torch.Tensor, z_ref: torch.Tensor, cond: torch.Tensor, masks: torch.Tensor):
    setup = vd._stdg_setup()
    recorder = FeatureRecorder(setup.temporal, setup.appearance)
    procs = {l.name: RecordingProcessor(l, recorder) for l in [*setup.temporal, *setup.appearance]}
    with installed(vd.models.unet, procs):
        return stdg_guidance(vd.models.eps, recorder, z, z_ref, 601, cond,
                             masks_by_tokens(masks, tuple(z.shape[-2:])), setup)


def test_compiled_blocks_equal_eager_without_graph_breaks_or_eager_fallback(tiny_cfg):
    cfg = apply_overrides(tiny_cfg, {"inversion.num_steps": 4})
    m = load_models(cfg.model)
    vd = VideoDirector(m, cfg)
    frames, masks = toy_inputs()
    source, target = "a red circle moving right", "a blue circle moving right"
    g = torch.Generator().manual_seed(1)
    z, z_ref = torch.randn(2, 1, 4, 16, 8, 8, generator=g)
    cond = m.encode_prompt([source]).expand(16, -1, -1)
    phi = m.encode_prompt([""]).expand(16, -1, -1).clone().requires_grad_(True)

    def null_text_grad() -> tuple[torch.Tensor, torch.Tensor]:
        phi.grad = None
        eps = m.eps(z, 601, phi)
        eps.square().mean().backward()
        return eps.detach(), phi.grad.clone()

    inversion = vd.invert(frames, masks, source)
    eager = {"edit": vd.edit(inversion, target).latents, "null": null_text_grad(),
             "stdg": _guidance(vd, z, z_ref, cond, masks)}

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
    assert graphs, "no block was compiled"
    assert not counters["graph_break"], dict(counters["graph_break"])
    torch.testing.assert_close(got["edit"], eager["edit"], rtol=1e-4, atol=1e-4)
    for a, b in zip(got["null"], eager["null"]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(got["stdg"], eager["stdg"]):  # recording forwards run eagerly: exactly equal
        assert torch.equal(a, b)
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
