import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0

from videodirector.attention.control import EditContext, EditSchedule, SelfControlProcessor, mutual_self_attention
from videodirector.attention.processors import Clock, ControlProcessor, attention_layers, installed


def test_sd15_layout_has_16_self_and_cross_layers_in_call_order(tiny_models):
    layers = attention_layers(tiny_models.unet)
    selfs = [l for l in layers if l.kind == "self"]
    assert len(selfs) == 16 and len([l for l in layers if l.kind == "cross"]) == 16
    assert [l.block for l in selfs[7:10]] == ["up_blocks.1"] * 3 and selfs[6].block == "mid_block"
    assert len([l for l in layers if l.kind == "temporal" and l.block in ("up_blocks.1", "up_blocks.2")]) == 12


def test_sa2_empty_mask_equals_attention_over_concatenated_keys():
    torch.manual_seed(0)
    q, kr, vr, ke, ve = (torch.randn(3, 2, 10, 4) for _ in range(5))
    empty = torch.zeros(3, 10, dtype=torch.bool)
    out = mutual_self_attention(q, kr, vr, ke, ve, empty)
    ref = F.scaled_dot_product_attention(q, torch.cat([kr, ke], 2), torch.cat([vr, ve], 2))
    assert torch.allclose(out, ref, atol=1e-6)


def test_sa2_full_mask_gives_no_weight_to_reconstruction_keys():
    torch.manual_seed(1)
    q, kr, vr, ke, ve = (torch.randn(3, 2, 10, 4) for _ in range(5))
    full = torch.ones(3, 10, dtype=torch.bool)
    out = mutual_self_attention(q, kr, vr * 1000, ke, ve, full)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, ke, ve), atol=1e-5)
    # half mask: only background recon keys can contribute
    half = torch.zeros(3, 10, dtype=torch.bool)
    half[:, :5] = True
    vr2 = vr.clone()
    vr2[:, :, :5] = 1e6  # values of masked recon tokens must not leak
    assert mutual_self_attention(q, kr, vr2, ke, ve, half).abs().max() < 100


def test_inactive_processor_equals_diffusers_default_and_is_restored(tiny_models):
    m = tiny_models
    z = torch.randn(1, 4, 16, 8, 8)
    emb = m.encode_prompt(["a red circle"]).expand(16, -1, -1)
    with torch.no_grad():
        base = m.eps(z, 500, emb)
        procs = {l.name: ControlProcessor(l) for l in attention_layers(m.unet)}
        with installed(m.unet, procs):
            same = m.eps(z, 500, emb)
    assert torch.allclose(base, same, atol=1e-5)
    assert all(isinstance(p, AttnProcessor2_0) for p in m.unet.attn_processors.values())


def test_schedule_reads_the_clock_not_call_counts(tiny_models):
    m = tiny_models
    F_ = 16
    clock = Clock(step=0, num_steps=10)
    sched = EditSchedule.build(10, 0.4, 0.8, [7, 16], None, [0, 16], sa1_max_tokens=16)
    masks = {n: torch.zeros(F_, n, dtype=torch.bool) for n in (64, 16, 4, 1)}
    ctx = EditContext(clock, sched, F_, masks)
    procs = {l.name: SelfControlProcessor(l, ctx) for l in attention_layers(m.unet) if l.kind == "self"}
    torch.manual_seed(0)
    z = torch.randn(4, 4, F_, 8, 8)
    emb = m.encode_prompt(["a", "b", "c", "d"]).repeat_interleave(F_, 0)
    with torch.no_grad():
        plain = m.eps(z, 500, emb)
        with installed(m.unet, procs):
            a = m.eps(z, 500, emb)
            m.eps(z[:1], 500, emb[:F_])  # an extra forward (as STDG or null-text would do)
            b = m.eps(z, 500, emb)
            clock.step = 9  # SA-II step, with an empty mask
            c = m.eps(z, 500, emb)
    assert torch.equal(a, b)
    assert not torch.allclose(a[1], plain[1], atol=1e-4)  # SA-I changes edit-cond
    assert torch.allclose(a[0], plain[0], atol=1e-5) and torch.allclose(a[2:], plain[2:], atol=1e-5)
    assert not torch.allclose(c[:2], plain[:2], atol=1e-4)  # SA-II changes both edit branches
    assert sched.sa1_steps == range(0, 4) and sched.sa2_steps == range(4, 10) and sched.cross_steps == range(0, 8)
