"""``inversion.cuda_graph``: the null-text iteration on static tensors (``diffusion.nulltext_graph``) against
:func:`null_text_step`. The CUDA capture itself needs a GPU (``benchmarks/speed.py --cuda-graph`` compares the
graphed edit with the eager one there); here the same static-tensor iteration runs eagerly, which checks what
the capture replays: the per-step loading of the inputs, the fresh Adam state and the early stop."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_within_rounding, float64_twin
from videodirector.diffusion.nulltext import LossReader, null_text_step
from videodirector.diffusion.nulltext_graph import NullTextGraph


def _step_inputs(models, seed: int, t: int):  # noqa: ANN001, ANN202
    g = torch.Generator().manual_seed(seed)
    z_t, target, guidance = torch.randn(3, 1, 4, 16, 8, 8, generator=g)
    cond, neg = models.encode_prompt(["a red circle moving right", ""]).chunk(2)
    with torch.no_grad():
        eps_c = models.eps(z_t, t, cond.expand(16, -1, -1))
    s = models.schedule
    return dict(eps_cond=eps_c, z_t=z_t, z_target=0.98 * z_t + 0.02 * target, phi_init=neg.expand(16, -1, -1).clone(),
                t=t, alpha_t=s.alpha(t), alpha_prev=s.alpha(t - 20), guidance=0.01 * guidance)


def _plain(models, inp, lr: float, inner: int, stop_below: float):  # noqa: ANN001, ANN202
    t = inp["t"]
    return null_text_step(lambda zz, e: models.eps(zz, t, e), inp["eps_cond"], inp["z_t"], inp["z_target"],
                          inp["phi_init"], inp["alpha_t"], inp["alpha_prev"], inp["guidance"], 1.0, 7.5, lr, inner,
                          stop_below)


@pytest.mark.numerics
def test_static_iteration_gives_null_text_step_and_starts_each_step_fresh(tiny_models):
    """Both ways in float64, against the float32 rounding of ``null_text_step`` as the yardstick: the static
    iteration differs from it by float64 rounding only (scalars as tensors, Adam with a tensor learning rate),
    while a wrong input, learning rate or leftover Adam state moves the result by far more. (In float32, Adam's
    first, normalised steps turn the rounding of near-zero gradient entries into steps of ±lr, so a float32
    comparison measures that amplification, not the code.)"""
    m = tiny_models
    m64 = float64_twin(m)
    first, second = _step_inputs(m, 1, 801), _step_inputs(m, 2, 601)
    first64, second64 = ({k: v.double() if torch.is_tensor(v) else v for k, v in d.items()} for d in (first, second))
    graph = NullTextGraph(lambda zz, t, e: m64.eps(zz, t, e), first64["z_t"], first64["phi_init"], 1.0, 7.5,
                          capture=False)
    assert graph.graph is None  # no capture on the CPU
    graph.step(**first64, lr=0.02, inner_steps=3, stop_below=-1.0)  # leaves Adam's state and phi behind
    got = graph.step(**second64, lr=0.01, inner_steps=3, stop_below=-1.0)
    want64 = _plain(m64, second64, 0.01, 3, -1.0)
    want32 = _plain(m, second, 0.01, 3, -1.0)
    assert got.iterations == want64.iterations == 3
    as_t = torch.tensor
    for what, a, b, b32 in (("phi", got.phi, want64.phi, want32.phi), ("z_next", got.z_next, want64.z_next, want32.z_next),
                            ("loss", as_t(got.loss), as_t(want64.loss), as_t(want32.loss))):
        assert_within_rounding(a, b, b32, b, k=0.01, what=what)  # measured gap 0 (1 and 2 threads)
    # the early stop: a threshold above any loss ends each step after its first iteration, as null_text_step
    stopped = graph.step(**second64, lr=0.01, inner_steps=3, stop_below=1e9)
    assert stopped.iterations == _plain(m64, second64, 0.01, 3, 1e9).iterations == 1


def test_loss_reader_gives_the_value_sent_not_what_the_tensor_became():
    reader = LossReader(torch.device("cpu"))
    loss = torch.tensor(0.25, dtype=torch.bfloat16)
    reader.send(loss)
    loss.mul_(4)  # later work on the same tensor, as the backward and the update are queued before the read
    assert reader.read() == 0.25


def test_a_failed_capture_falls_back_to_eager_iterations_with_one_warning(tiny_models, monkeypatch):
    import videodirector.methods.videodirector as vd_module
    from videodirector import notices

    def no_capture(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    said: list[str] = []
    monkeypatch.setattr(vd_module, "NullTextGraph", no_capture)
    notices.reset()
    notices.set_sink(said.append)
    try:
        z = torch.zeros(1, 4, 16, 8, 8)
        assert vd_module._null_text_graph(tiny_models, z, torch.zeros(16, 77, 32), 1.0, 7.5) is None
    finally:
        notices.set_sink(None)
    assert len(said) == 1 and "operation not permitted when stream is capturing" in said[0]
    assert "more detail" not in said[0] and "eagerly" in said[0]
