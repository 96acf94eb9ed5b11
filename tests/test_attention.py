import math

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor2_0

from conftest import assert_within_rounding, float64_twin
from videodirector.attention.control import (
    EditContext, EditSchedule, SelfControlProcessor, attention_hiding_keys, mutual_self_attention,
)
from videodirector.attention.processors import Branches, Clock, ControlProcessor, attention_layers, installed


def test_sd15_layout_has_16_self_and_cross_layers_in_call_order(tiny_models):
    layers = attention_layers(tiny_models.unet)
    selfs = [l for l in layers if l.kind == "self"]
    assert len(selfs) == 16 and len([l for l in layers if l.kind == "cross"]) == 16
    assert [l.block for l in selfs[7:10]] == ["up_blocks.1"] * 3 and selfs[6].block == "mid_block"
    assert len([l for l in layers if l.kind == "temporal" and l.block in ("up_blocks.1", "up_blocks.2")]) == 12


@pytest.mark.numerics
def test_sa2_empty_mask_equals_attention_over_concatenated_keys():
    torch.manual_seed(0)
    q, kr, vr, ke, ve = (torch.randn(3, 2, 10, 4) for _ in range(5))
    empty = torch.zeros(3, 10, dtype=torch.bool)
    out = mutual_self_attention(q, kr, vr, ke, ve, empty)

    def ref(q, kr, vr, ke, ve):  # noqa: ANN001, ANN202
        return F.scaled_dot_product_attention(q, torch.cat([kr, ke], 2), torch.cat([vr, ve], 2))

    # masked vs unmasked SDPA kernels: measured |out - ref| 0 against the yardstick |ref32 - ref64| 2.1e-7
    # (AVX512, AVX2 and default kernels; 1 and 2 threads)
    ref32, ref64 = ref(q, kr, vr, ke, ve), ref(*(x.double() for x in (q, kr, vr, ke, ve)))
    assert_within_rounding(out, ref32, ref32, ref64, k=20, what="SA-II with an empty mask")


@pytest.mark.numerics
def test_sa2_full_mask_gives_no_weight_to_reconstruction_keys():
    torch.manual_seed(1)
    q, kr, vr, ke, ve = (torch.randn(3, 2, 10, 4) for _ in range(5))
    full = torch.ones(3, 10, dtype=torch.bool)
    out = mutual_self_attention(q, kr, vr * 1000, ke, ve, full)
    # measured |out - ref| / |ref32 - ref64|: 0.72 (AVX512), 0.78 (AVX2), 1.08 (default kernels)
    ref = F.scaled_dot_product_attention(q, ke, ve)
    ref64 = F.scaled_dot_product_attention(q.double(), ke.double(), ve.double())
    assert_within_rounding(out, ref, ref, ref64, k=20, what="SA-II with a full mask")
    # half mask: only background recon keys can contribute
    half = torch.zeros(3, 10, dtype=torch.bool)
    half[:, :5] = True
    vr2 = vr.clone()
    vr2[:, :, :5] = 1e6  # values of masked recon tokens must not leak
    assert mutual_self_attention(q, kr, vr2, ke, ve, half).abs().max() < 100


@pytest.mark.numerics
@pytest.mark.parametrize("head_dim", [4, 40])
def test_hiding_keys_in_extra_dims_equals_the_masked_attention(head_dim):
    """SA-II's bias rides in extra head dimensions (so that flash kernels take it): the same function as the
    official additive -inf bias, on a random mask where some rows hide every reconstruction key."""
    torch.manual_seed(2)
    q, kr, vr, ke, ve = (3 * torch.randn(4, 2, 12, head_dim) for _ in range(5))
    hidden = torch.rand(4, 12) < 0.5
    hidden[0] = True
    hidden = torch.cat([hidden, torch.zeros_like(hidden)], 1)
    out = attention_hiding_keys(q, [kr, ke], [vr, ve], hidden)

    def ref(q, kr, vr, ke, ve):  # noqa: ANN001, ANN202
        return F.scaled_dot_product_attention(q, torch.cat([kr, ke], 2), torch.cat([vr, ve], 2),
                                              attn_mask=~hidden[:, None, None, :])

    # measured |out - ref32| / |ref32 - ref64|: 0.28 (d 4) and 0 (d 40), 1 and 2 threads
    ref32, ref64 = ref(q, kr, vr, ke, ve), ref(*(x.double() for x in (q, kr, vr, ke, ve)))
    assert_within_rounding(out, ref32, ref32, ref64, k=20, what="keys hidden in extra dimensions")
    # the hidden keys' values do not leak, whatever their size
    vr_loud = torch.where(hidden[:, None, :12, None], torch.full_like(vr, 1e6), vr)
    loud = attention_hiding_keys(q, [kr, ke], [vr_loud, ve], hidden)
    assert torch.equal(loud, out)


@pytest.mark.numerics
def test_inactive_processor_equals_diffusers_default_and_is_restored(tiny_models):
    m = tiny_models
    torch.manual_seed(0)
    z = torch.randn(1, 4, 16, 8, 8)
    emb = m.encode_prompt(["a red circle"]).expand(16, -1, -1)
    with torch.no_grad():
        base = m.eps(z, 500, emb)
        procs = {l.name: ControlProcessor(l) for l in attention_layers(m.unet)}
        with installed(m.unet, procs):
            same = m.eps(z, 500, emb)
        base64 = float64_twin(m).eps(z, 500, emb)
    # our processor against diffusers' AttnProcessor2_0: measured |same - base| 0 against the UNet's own
    # float32 rounding |base32 - base64| 4e-4 to 6e-4 (max-abs; |eps| reaches ~1e3 on the random model)
    assert_within_rounding(same, base, base, base64, k=20, what="inactive processors")
    assert all(isinstance(p, AttnProcessor2_0) for p in m.unet.attn_processors.values())


@pytest.mark.numerics
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
        plain64 = float64_twin(m).eps(z, 500, emb)
    assert torch.equal(a, b)  # the same forward on the same batch: bit for bit, on any CPU
    assert not torch.allclose(a[1], plain[1], atol=1e-4)  # SA-I changes edit-cond
    # the other branches attend plainly, through our processor instead of diffusers' (same batch of 4):
    # measured |a - plain| 0 on them against |plain32 - plain64| 1e-4 to 2e-3 (max-abs)
    for rows in (slice(0, 1), slice(2, 4)):
        assert_within_rounding(a[rows], plain[rows], plain[rows], plain64[rows], k=20, what=f"branches {rows}")
    assert not torch.allclose(c[:2], plain[:2], atol=1e-4)  # SA-II changes both edit branches
    assert sched.sa1_steps == range(0, 4) and sched.sa2_steps == range(4, 10) and sched.cross_steps == range(0, 8)


def _straightforward_self(ctx, layer, q, k, v):  # noqa: ANN001, ANN202
    """Eq. 6 as written: plain attention for all four branches, then the controlled ones replaced."""
    from videodirector.attention.processors import Branches

    step, tokens = ctx.clock.step, q.shape[2]
    out = Branches.split(F.scaled_dot_product_attention(q, k, v))
    qs, ks, vs = Branches.split(q), Branches.split(k), Branches.split(v)
    if step in ctx.schedule.sa1_steps and tokens <= ctx.schedule.sa1_max_tokens:
        out.parts["edit_cond"] = F.scaled_dot_product_attention(qs["recon_cond"], ks["recon_cond"], vs["edit_cond"])
    elif step in ctx.schedule.sa2_steps and layer.index in ctx.schedule.sa2_layers:
        for e, r in (("edit_uncond", "recon_uncond"), ("edit_cond", "recon_cond")):
            out.parts[e] = mutual_self_attention(qs[e], ks[r], vs[r], ks[e], vs[e], ctx.masks_by_tokens[tokens])
    return out.join()


def _straightforward_cross(ctx, layer, mode, mapper, alphas, eq, q, k, v, scale):  # noqa: ANN001, ANN202
    """Eq. 7 as written: explicit maps for all four branches, the edit-cond one replaced, then ``@ V``."""
    from videodirector.attention.processors import Branches

    probs = Branches.split(torch.softmax(q @ k.transpose(-1, -2) * scale, dim=-1))
    if ctx.clock.step in ctx.schedule.cross_steps and layer.index in ctx.schedule.cross_layers:
        base, edit = probs["recon_cond"], probs["edit_cond"]
        new = base @ mapper.to(base) if mode == "replace" else base[..., mapper] * alphas + edit * (1 - alphas)
        probs.parts["edit_cond"] = new * eq
    return probs.join() @ v


@pytest.mark.numerics
def test_control_processors_equal_the_straightforward_path():
    """The processors attend each branch only as far as Eq. 6/7 need (the SA-II edit branches in one
    masked call, the cross control as attention over mixed values, or explicit maps for the two cond branches
    where the local blend records them); outputs equal computing every branch plainly and then replacing, at
    SA-I, SA-II and cross steps, in replace and refine modes."""
    from types import SimpleNamespace

    from videodirector.attention.control import CrossControlProcessor, LocalBlend
    from videodirector.attention.processors import AttentionLayer

    torch.manual_seed(0)
    f, heads, n, d = 3, 2, 16, 8
    sched = EditSchedule.build(10, 0.4, 0.8, [0, 16], None, [0, 16], sa1_max_tokens=16)
    mask = torch.rand(f, n) < 0.4
    clock = Clock(step=0, num_steps=10)
    ctx = EditContext(clock, sched, f, {n: mask})
    layer = AttentionLayer("up_blocks.3.attentions.0.transformer_blocks.0.attn1", "self", "up_blocks.3", 9)
    q, k, v = (torch.randn(4 * f, heads, n, d) for _ in range(3))
    q64, k64, v64 = (x.double() for x in (q, k, v))
    proc = SelfControlProcessor(layer, ctx)
    # yardstick: the straightforward path's own float32 rounding, |ref32 - ref64| 3e-7 to 7e-7 (max-abs);
    # measured gap / yardstick 0 (self) and 0.35 to 1.1 (cross; AVX512, AVX2 and default kernels, 1-2 threads)
    for step in (0, 3, 4, 9):  # SA-I, SA-I, SA-II, SA-II
        clock.step = step
        ref = _straightforward_self(ctx, layer, q, k, v)
        ref64 = _straightforward_self(ctx, layer, q64, k64, v64)
        assert_within_rounding(proc.attend(None, q, k, v), ref, ref, ref64, k=20, what=f"self, step {step}")
    assert not torch.allclose(ref, F.scaled_dot_product_attention(q, k, v), atol=1e-3)  # SA-II acted

    tokens = 7
    kc, vc = torch.randn(4 * f, heads, tokens, d), torch.randn(4 * f, heads, tokens, d)
    attn = SimpleNamespace(scale=d**-0.5)
    cross = AttentionLayer("up_blocks.3.attentions.0.transformer_blocks.0.attn2", "cross", "up_blocks.3", 9)
    mapper_replace = torch.eye(tokens)[torch.randperm(tokens)]
    # refine: several target tokens may read one source column (repeats), new tokens have alpha 0
    mapper_refine, alphas = torch.randint(tokens, (tokens,)), (torch.rand(tokens) > 0.5).float()
    eq = torch.rand(tokens) + 0.5  # reweights every token, aligned (alpha 1) and new (alpha 0) alike
    for mode, mapper in (("replace", mapper_replace), ("refine", mapper_refine)):
        # without a blend the edited map is never formed (value mixing); with one it is, and recorded
        for blend, form_maps in ((None, False), (None, True), (LocalBlend([1], [2], (4, 4), level=0), False)):
            proc = CrossControlProcessor(cross, ctx, mode, mapper, alphas, eq, blend)
            proc.form_maps = form_maps
            for step in (0, 9):  # controlled, then past cross_steps
                clock.step = step
                ref = _straightforward_cross(ctx, cross, mode, mapper, alphas, eq, q, kc, vc, attn.scale)
                ref64 = _straightforward_cross(ctx, cross, mode, mapper, alphas, eq, q64, kc.double(), vc.double(),
                                               attn.scale)
                assert_within_rounding(proc.attend(attn, q, kc, vc), ref, ref, ref64, k=20,
                                       what=f"cross, {mode}, {step}, blend {blend is not None}, maps {form_maps}")
            assert blend is None or blend.acc is not None


def test_attention_backend_puts_its_kernel_first_only_inside_unet_forwards(tiny_models):
    """``model.attention_backend``: inside ``eps`` the chosen SDPA kernel leads PyTorch's priority order;
    outside, the order is PyTorch's own again. An unknown backend is a config error naming the choices."""
    import pytest
    from torch.nn.attention import SDPBackend

    from videodirector.config import EditConfig, apply_overrides
    from videodirector.errors import ConfigError
    from videodirector.models.loading import sdpa_priority

    if not hasattr(torch._C, "_get_sdp_priority_order"):
        pytest.skip("this PyTorch cannot report the SDPA priority order")
    before = list(torch._C._get_sdp_priority_order())
    for name, backend in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION)):
        with sdpa_priority(name):
            assert torch._C._get_sdp_priority_order()[0] == int(backend)
        assert list(torch._C._get_sdp_priority_order()) == before
    seen = []
    m = tiny_models
    m.unet.register_forward_pre_hook(lambda *a: seen.append(torch._C._get_sdp_priority_order()[0]))
    m.attention_backend = "cudnn"
    try:
        with torch.no_grad():
            m.eps(torch.randn(1, 4, 2, 8, 8), 500, m.encode_prompt(["a red circle"]).expand(2, -1, -1))
    finally:
        m.attention_backend = "default"
        m.unet._forward_pre_hooks.clear()
    assert seen == [int(SDPBackend.CUDNN_ATTENTION)]
    with pytest.raises(ConfigError, match="attention_backend"):
        apply_overrides(EditConfig(), {"model.attention_backend": "triton"})


@pytest.mark.numerics
def test_sa1_leaves_renoised_queries_their_own_attention():
    """With ``free_by_tokens`` (``--renoise``) SA-I applies the recon-cond map only to queries outside the
    renoised region; renoised edit-cond queries attend as without control, and the other branches are
    untouched."""
    from videodirector.attention.processors import AttentionLayer

    torch.manual_seed(0)
    f, heads, n, d = 2, 2, 16, 8
    sched = EditSchedule.build(10, 0.4, 0.8, [0, 16], None, [0, 16], sa1_max_tokens=16)
    free = torch.zeros(f, n, dtype=torch.bool)
    free[:, :6] = True
    clock = Clock(step=0, num_steps=10)
    layer = AttentionLayer("up_blocks.3.attentions.0.transformer_blocks.0.attn1", "self", "up_blocks.3", 9)
    ctx = EditContext(clock, sched, f, {n: torch.zeros(f, n, dtype=torch.bool)},
                      branches=Branches.WITHOUT_RECON_UNCOND)
    q, k, v = (torch.randn(3 * f, heads, n, d) for _ in range(3))
    sa1 = SelfControlProcessor(layer, ctx).attend(None, q, k, v)
    ctx.free_by_tokens = {n: free}
    freed = SelfControlProcessor(layer, ctx).attend(None, q, k, v)
    plain = F.scaled_dot_product_attention(q, k, v)
    e = slice(f, 2 * f)  # edit-cond rows in [edit-uncond, edit-cond, recon-cond]
    assert torch.allclose(freed[e][:, :, :6], plain[e][:, :, :6], atol=1e-6)
    assert torch.allclose(freed[e][:, :, 6:], sa1[e][:, :, 6:], atol=1e-6)
    assert not torch.allclose(sa1[e][:, :, :6], plain[e][:, :, :6], atol=1e-3)  # SA-I did act there
    assert torch.equal(freed[:f], sa1[:f]) and torch.equal(freed[2 * f:], sa1[2 * f:])


def test_unet_level_sizes_match_the_unets_feature_maps_at_any_latent_size(tiny_models):  # noqa: ANN001
    """Latents whose sides are not powers of two (a 720p video's latent has 90 rows): every spatial self-attention
    of the real UNet sees exactly the token counts ``unet_level_hw`` gives, so SA-I's and the local blend's level
    tests and the masks per token count find their layers. Rounding down would give 2 x 2 at level 1 of a 5 x 6
    latent, where the UNet has 3 x 3."""
    from videodirector.attention.control import unet_level_hw

    from videodirector.attention.control import LocalBlend

    assert unet_level_hw((90, 160), 2) == (23, 40) and unet_level_hw((5, 6), 1) == (3, 3)
    assert LocalBlend([1], [1], (90, 160)).wants(23 * 40)  # the blend's layers at a 720p latent
    unet = tiny_models.unet
    seen: set[int] = set()
    hooks = [mod.register_forward_hook(lambda mod, args, kwargs, out: seen.add(args[0].shape[1]), with_kwargs=True)
             for name, mod in unet.named_modules() if name.endswith("attn1") and "motion_modules" not in name]
    try:
        with torch.no_grad():
            for latent_hw in ((5, 6), (8, 8), (7, 12)):
                seen.clear()
                z = torch.randn(1, 4, 2, *latent_hw)
                tiny_models.eps(z, 10, torch.randn(2, 77, unet.config.cross_attention_dim))
                levels = len(unet.config.block_out_channels)
                want = {math.prod(unet_level_hw(latent_hw, level)) for level in range(levels)}
                assert seen and seen <= want and max(want) in seen, (latent_hw, seen, want)
    finally:
        for h in hooks:
            h.remove()
