"""Stage 1's memory savers, against the stock computation: what autograd keeps for the backward (the bytes
of the tensors it saves, measured with ``saved_tensors_hooks``) and that values and gradients do not change.

* ``model.recompute_feedforward`` (``models.feedforward``): GEGLU keeps its input only;
* STDG's forward runs without autograd after the last guided layer (``FeatureRecorder.capture``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch

from conftest import assert_within_rounding, float64_twin, toy_inputs
from videodirector.attention.control import FeatureRecorder, RecordingProcessor
from videodirector.attention.processors import installed
from videodirector.config import apply_overrides
from videodirector.guidance.stdg import stdg_guidance
from videodirector.methods.videodirector import VideoDirector, masks_by_tokens
from videodirector.models.feedforward import RecomputedGEGLU, set_recompute_feedforward
from videodirector.models.loading import load_models


def saved_bytes(fn: Callable[[], torch.Tensor], exclude: tuple[torch.Tensor, ...] = ()) -> tuple[torch.Tensor, int]:
    """``fn()`` and the bytes of the distinct storages autograd saves for its backward (``exclude``: storages
    that exist anyway, such as weights and inputs)."""
    seen = {t.untyped_storage().data_ptr() for t in exclude}
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        ptr = t.untyped_storage().data_ptr()
        if ptr not in seen:
            seen.add(ptr)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, total


def _geglu(dim: int = 24, seed: int = 0, dtype: torch.dtype = torch.float32):  # noqa: ANN202
    from diffusers.models.activations import GEGLU

    torch.manual_seed(seed)
    return GEGLU(dim, 4 * dim).to(dtype)


@pytest.mark.numerics
@pytest.mark.parametrize("weights_grad", [False, True])
def test_recomputed_geglu_keeps_one_twelfth_and_gives_the_stock_values_and_gradients(weights_grad):
    stock = _geglu()
    stock.requires_grad_(weights_grad)
    ours = RecomputedGEGLU(stock.proj)  # shares the weights
    twin = _geglu().double()
    twin.requires_grad_(weights_grad)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 50, 24, generator=g)
    upstream = torch.randn(3, 50, 96, generator=g)

    def run(module, xx):  # noqa: ANN001, ANN202
        xx = xx.clone().requires_grad_(True)
        params = tuple(p for p in module.parameters() if p.requires_grad)
        out, kept = saved_bytes(lambda: module(xx), exclude=(xx, *module.parameters()))
        grads = torch.autograd.grad(out, (xx, *params), upstream.to(out.dtype))
        return out.detach(), grads, kept

    out_s, grads_s, kept_s = run(stock, x)
    out_o, grads_o, kept_o = run(ours, x)
    out_64, grads_64, _ = run(twin, x.double())
    # stock: h = x W^T + b (192 wide) and GELU(g) (96 wide) per token, 12 times x; ours: nothing beyond x and
    # the weights
    assert kept_s == 3 * 50 * (192 + 96) * 4, kept_s
    assert kept_o == 0, kept_o
    assert torch.equal(out_o, out_s)  # the same operations in the same order
    assert len(grads_o) == len(grads_s) == (3 if weights_grad else 1)
    for name, a, b, b64 in zip(("x", "weight", "bias"), grads_o, grads_s, grads_64):
        assert_within_rounding(a, b, b, b64, k=4, what=f"gradient of {name}")


def test_recomputed_geglu_without_gradients_and_under_autocast_gives_the_stock_values():
    stock = _geglu()
    ours = RecomputedGEGLU(stock.proj)
    x = torch.randn(2, 10, 24)
    with torch.no_grad():
        assert torch.equal(ours(x), stock(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        xx = x.clone().requires_grad_(True)
        out, kept = saved_bytes(lambda: ours(xx), exclude=(xx, *stock.parameters()))
        want = stock(x)
        assert out.dtype == want.dtype == torch.bfloat16 and kept == 0
        assert torch.equal(out.detach(), want)
        # the recomputation in the backward runs under the forward's autocast state: the same gradient as stock
        grad = torch.autograd.grad(out, xx, torch.ones_like(out))[0]
        xs = x.clone().requires_grad_(True)
        want = torch.autograd.grad(stock(xs), xs, torch.ones_like(out))[0]
    assert torch.equal(grad, want)


def test_set_recompute_feedforward_swaps_every_geglu_and_back_keeping_the_state_dict(tiny_cfg):
    from diffusers.models.activations import GEGLU

    def acts(unet):  # noqa: ANN001, ANN202
        return [m.net[0] for m in unet.modules() if type(m).__name__ == "FeedForward"]

    assert all(type(a) is GEGLU for a in acts(load_models(tiny_cfg.model).unet))  # auto: off on the CPU
    unet = load_models(apply_overrides(tiny_cfg, {"model.recompute_feedforward": True}).model).unet
    assert all(type(a) is RecomputedGEGLU for a in acts(unet))
    before = {k: v.data_ptr() for k, v in unet.state_dict().items()}
    n = len(acts(unet))
    assert set_recompute_feedforward(unet, False) == n > 0
    assert all(type(a) is GEGLU for a in acts(unet))
    assert {k: v.data_ptr() for k, v in unet.state_dict().items()} == before
    assert set_recompute_feedforward(unet, False) == 0
    assert set_recompute_feedforward(unet, True) == n
    assert {k: v.data_ptr() for k, v in unet.state_dict().items()} == before


def _null_text_backward(models, z, phi0):  # noqa: ANN001, ANN202
    phi = phi0.to(models.dtype).clone().requires_grad_(True)
    eps, kept = saved_bytes(lambda: models.eps(z, 601, phi), exclude=(z, phi, *models.unet.parameters()))
    eps.square().mean().backward()
    return eps.detach(), phi.grad, kept


@pytest.mark.numerics
def test_null_text_backward_on_the_unet_keeps_less_and_gives_the_same_gradient(tiny_models):
    m = tiny_models
    g = torch.Generator().manual_seed(3)
    z = torch.randn(1, 4, 16, 8, 8, generator=g)
    phi0 = m.encode_prompt([""]).expand(16, -1, -1)
    set_recompute_feedforward(m.unet, True)
    try:
        eps_r, grad_r, kept_r = _null_text_backward(m, z, phi0)
    finally:
        set_recompute_feedforward(m.unet, False)  # the CPU's default (model.recompute_feedforward: auto)
    eps_s, grad_s, kept_s = _null_text_backward(m, z, phi0)
    m64 = float64_twin(m)
    _, grad_64, _ = _null_text_backward(m64, z.double(), phi0.double())
    # per feed-forward, 12 widths of x kept by the stock GEGLU against 1 (its input); the rest of what the tiny
    # UNet's backward keeps is unchanged: measured 0.66 of the stock bytes (shapes only, so on any CPU). The
    # checkpoint holds x outside the hook's view: with it, 0.69 (one twelfth of the stock feed-forward bytes)
    assert kept_r < 0.75 * kept_s, (kept_r, kept_s)
    assert torch.equal(eps_r, eps_s)
    assert_within_rounding(grad_r, grad_s, grad_s, grad_64, k=4, what="null-text gradient")


@pytest.mark.numerics
def test_stdg_forward_without_autograd_after_the_last_guided_layer_keeps_less_same_g_and_eps(tiny_cfg):
    cfg = apply_overrides(tiny_cfg, {"stdg.coefficients": [0.5, 0.5, 0.5, 0.5], "model.recompute_feedforward": True})
    m = load_models(cfg.model)
    vd = VideoDirector(m, cfg)
    _, masks = toy_inputs()
    g = torch.Generator().manual_seed(2)
    z, z_ref = torch.randn(2, 1, 4, 16, 8, 8, generator=g)
    cond = m.encode_prompt(["a red circle moving right"]).expand(16, -1, -1)
    tok = masks_by_tokens(masks, (8, 8))

    def guidance(models, full_graph: bool):  # noqa: ANN001, ANN202
        setup = VideoDirector(models, cfg)._stdg_setup()
        recorder = FeatureRecorder(setup.temporal, setup.appearance)
        procs = {l.name: RecordingProcessor(l, recorder) for l in [*setup.temporal, *setup.appearance]}
        dt = models.dtype
        with installed(models.unet, procs):
            (gg, eps), kept = saved_bytes(
                lambda: stdg_guidance(models.eps, recorder, z.to(dt), z_ref.to(dt), 601, cond.to(dt), tok, setup,
                                      full_graph=full_graph), exclude=tuple(models.unet.parameters()))
        assert torch.is_grad_enabled()  # capture() gave the grad mode back
        return gg, eps, kept

    g_cut, eps_cut, kept_cut = guidance(m, False)
    g_full, eps_full, kept_full = guidance(m, True)
    g_64, eps_64, _ = guidance(float64_twin(m), True)
    assert vd._stdg_setup().temporal[-1].block == "up_blocks.2"  # the default weights guide up_blocks.1 and 2 only
    # what the graph holds until the backward, as autograd packs it: without the tail (all of up_blocks.3, at
    # the highest resolution) measured 0.675 of the full forward's (shapes only, so on any CPU)
    assert kept_cut < 0.75 * kept_full, (kept_cut, kept_full)
    assert g_full.abs().max() > 0
    assert_within_rounding(g_cut, g_full, g_full, g_64, k=4, what="G")
    assert_within_rounding(eps_cut, eps_full, eps_full, eps_64, k=4, what="eps_c")


@pytest.mark.parametrize("on", [False, True])
def test_compiled_feedforward_keeps_only_its_input_with_recompute(on):
    """Under ``torch.compile`` the partitioner decides what a compiled block keeps. With inductor's partitioner
    (``aot_eager_decomp_partition`` is it without code generation) the stock GEGLU keeps ``h`` (the compiler
    recomputes ``GELU(g)`` on its own), and the checkpointed one nothing beyond its input. (A hand-written
    ``autograd.Function`` was re-partitioned and kept ``h``: on the H200 the compiled peak did not move.)"""
    from diffusers.models.attention import FeedForward

    torch.manual_seed(0)
    ff = FeedForward(32, activation_fn="geglu").requires_grad_(False)
    set_recompute_feedforward(torch.nn.Sequential(ff), on)
    x = torch.randn(2, 64, 32, requires_grad=True)
    want = torch.autograd.grad(ff(x).sum(), x)[0]  # eager, before compiling
    want64 = torch.autograd.grad(copy.deepcopy(ff).double()(x.double()).sum(), x)[0]
    torch._dynamo.reset()
    ff.compile(backend="aot_eager_decomp_partition", dynamic=False)
    out, kept = saved_bytes(lambda: ff(x), exclude=(x, *ff.parameters()))
    assert kept == (0 if on else 2 * 64 * 256 * 4), kept  # h: 64 tokens x 2 x 128 wide, float32
    grad = torch.autograd.grad(out.sum(), x)[0]
    assert_within_rounding(grad, want, want, want64, k=4, what="compiled feed-forward gradient")
    torch._dynamo.reset()
