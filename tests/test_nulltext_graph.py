"""``inversion.cuda_graph``: the null-text iteration and the STDG gradient on static tensors
(``diffusion.nulltext_graph``, ``guidance.stdg.STDGGraph``) against :func:`null_text_step` and
:func:`stdg_guidance`, and the whole pivotal stage on them against the eager one. The CUDA capture itself needs a
GPU (``benchmarks/cuda_graph_check.py`` and ``benchmarks/speed.py --cuda-graph-too`` compare the graphed edit
with the eager one there); here the same static-tensor work runs uncaptured, which checks what the capture
replays: the per-step loading of the inputs, the fresh Adam state, the early stop and the copies out."""

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
    graph = NullTextGraph(lambda zz, t, e: m64.eps(zz, t, e), first64["z_t"], first64["phi_init"], 1.0, 7.5)
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


def test_static_stdg_gives_stdg_guidance_at_every_call(tiny_models):
    """The same ops on copies of the inputs: equal to the bit, at a second call too (the statics reloaded, the
    recorder's features dropped after each call). On the CPU each call makes new outputs; that a replay cannot
    overwrite the ones returned before (the copies out) is what the GPU check covers."""
    from videodirector.attention.control import FeatureRecorder, RecordingProcessor
    from videodirector.attention.processors import installed
    from videodirector.config import EditConfig
    from videodirector.guidance.stdg import STDGGraph, stdg_guidance
    from videodirector.methods.videodirector import VideoDirector, masks_by_tokens

    from conftest import toy_inputs

    m = tiny_models
    setup = VideoDirector(m, EditConfig())._stdg_setup()
    rec = FeatureRecorder(setup.temporal, setup.appearance)
    procs = {l.name: RecordingProcessor(l, rec) for l in [*setup.temporal, *setup.appearance]}
    tok = masks_by_tokens(toy_inputs()[1], (8, 8))
    cond = m.encode_prompt(["a red circle moving right"]).expand(16, -1, -1)
    g = torch.Generator().manual_seed(3)
    z_ref = torch.randn(2, 1, 4, 16, 8, 8, generator=g)
    z = z_ref + 0.3 * torch.randn(z_ref.shape, generator=g)
    with installed(m.unet, procs):
        graph = STDGGraph(m.eps, rec, z[0], cond, tok, setup, threshold=0.05)
        first = graph(z[0], z_ref[0], 700)
        assert rec.store == {}
        second = graph(z[1], z_ref[1], 300)
        assert rec.store == {}
        for got, (zz, zr, t) in ((first, (z[0], z_ref[0], 700)), (second, (z[1], z_ref[1], 300))):
            want = stdg_guidance(m.eps, rec, zz, zr, t, cond, tok, setup, 0.05)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert first[0].abs().max() > 0 and not torch.equal(first[0], second[0])


@pytest.mark.numerics
def test_pivotal_stage_on_static_tensors_gives_the_eager_one(tiny_cfg, monkeypatch):
    """``inversion.cuda_graph`` end to end, uncaptured (CPU): the static-tensor path runs (4 STDG gradients, 5
    null-text steps), and its null-text embeddings and ``G_t`` of every step equal the eager stage's to the bit in
    float64: the same ops on the same values (measured on 1 and 2 threads). A float32 run is no yardstick here: on
    this random model its trajectory leaves float64's."""
    from videodirector.config import apply_overrides
    from videodirector.diffusion.nulltext_graph import NullTextGraph
    from videodirector.guidance.stdg import STDGGraph
    from videodirector.methods.videodirector import VideoDirector
    from videodirector.models.loading import load_models

    from conftest import toy_inputs

    calls = {"stdg": 0, "null_text": 0}

    def counted(cls, method: str, key: str):  # noqa: ANN001, ANN202
        original = getattr(cls, method)

        def wrapper(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
            calls[key] += 1
            return original(self, *args, **kwargs)
        monkeypatch.setattr(cls, method, wrapper)

    frames, masks = toy_inputs()
    cfg = apply_overrides(tiny_cfg, {"inversion.early_stop_epsilon": -1.0, "inversion.early_stop_slope": 0.0})
    m64 = float64_twin(load_models(cfg.model))
    want = VideoDirector(m64, cfg).invert(frames.double(), masks, "a red circle moving right")
    counted(STDGGraph, "__call__", "stdg")
    counted(NullTextGraph, "step", "null_text")
    vd = VideoDirector(m64, apply_overrides(cfg, {"inversion.cuda_graph": True}))
    got = vd.invert(frames.double(), masks, "a red circle moving right")
    assert calls == {"stdg": 4, "null_text": 5}  # every step but the first (z_T = z*_T: G = 0) has a G
    assert got.meta["null_inner_iterations"] == want.meta["null_inner_iterations"] == [2] * 5
    assert torch.equal(got.null_embeddings, want.null_embeddings)
    assert torch.equal(got.guidance, want.guidance)
    assert want.guidance[0].abs().max() == 0 and want.guidance[1:].abs().amax(dim=(1, 2, 3, 4)).min() > 0


def test_a_failed_capture_falls_back_to_eager_iterations_with_one_warning(tiny_models, monkeypatch):
    """The fallback of ``_pivotal_graphs``, with the capture replaced by a failing one; the release of graphs
    captured before a later one fails (``capture_together``'s ``except``) needs a GPU and is not run here."""
    import dataclasses

    import videodirector.methods.videodirector as vd_module
    from videodirector import notices
    from videodirector.config import STDGConfig

    def no_capture(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")

    said: list[str] = []
    monkeypatch.setattr(vd_module, "capture_together", no_capture)
    notices.reset()
    notices.set_sink(said.append)
    on_gpu = dataclasses.replace(tiny_models, device=torch.device("cuda"))  # only the device check reads it
    try:
        z = torch.zeros(1, 4, 16, 8, 8)
        got = vd_module._pivotal_graphs(on_gpu, z, torch.zeros(16, 77, 32), z, {}, None, None, STDGConfig(), 7.5)
    finally:
        notices.set_sink(None)
    assert got == (None, None)
    assert len(said) == 1 and "operation not permitted when stream is capturing" in said[0]
    assert "more detail" not in said[0] and "eagerly" in said[0]


def test_capture_together_frees_the_cache_before_warming_up_and_captures_each_graph_once(monkeypatch):
    """The warm-ups run on a side stream, which cannot reuse the current stream's cached blocks: without freeing
    them first, the eager warm-up's memory came on top of the cache (graph_memory_probe_h200.md: reserved peak
    26.0 GB, 17.8 GB with the cache freed). The CUDA calls are recorded, not run (no GPU here)."""
    import contextlib

    from videodirector.diffusion import static_graph

    log: list[str] = []

    class Work(static_graph.StaticGraph):
        def __init__(self, name: str) -> None:
            self.name = name

        def _work(self) -> None:
            log.append(f"work {self.name}")

    class FakeGraph:
        def reset(self) -> None:
            log.append("reset")

    @contextlib.contextmanager
    def fake_capture(graph, pool=None, stream=None):  # noqa: ANN001, ANN202
        log.append(f"capture pool={pool}")
        yield

    class FakeStream:
        def wait_stream(self, other) -> None:  # noqa: ANN001
            pass

    cuda = torch.cuda
    monkeypatch.setattr(cuda, "empty_cache", lambda: log.append("empty_cache"))
    monkeypatch.setattr(cuda, "Stream", FakeStream)
    monkeypatch.setattr(cuda, "current_stream", FakeStream)
    monkeypatch.setattr(cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(cuda, "graph_pool_handle", lambda: "P")
    monkeypatch.setattr(cuda, "CUDAGraph", FakeGraph)
    monkeypatch.setattr(cuda, "graph", fake_capture)
    graphs = [Work("a"), Work("b")]
    static_graph.capture_together(graphs, warmup=2)
    assert log == ["empty_cache", "work a", "work a", "work b", "work b",
                   "capture pool=P", "work a", "capture pool=P", "work b"]
    assert all(isinstance(g.graph, FakeGraph) for g in graphs)
