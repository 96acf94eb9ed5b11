import pytest
import torch

from videodirector.attention.control import FeatureRecorder, RecordingProcessor
from videodirector.attention.processors import installed
from videodirector.config import EditConfig
from videodirector.guidance.stdg import appearance_loss, stdg_guidance, stdg_loss, temporal_loss
from videodirector.methods.videodirector import VideoDirector, masks_by_tokens

from conftest import assert_within_rounding, float64_twin, toy_inputs


def _setup(models, coefficients=(0.5, 0.5, 0.0, 0.5)):
    cfg = EditConfig()
    cfg.stdg.coefficients = list(coefficients)
    setup = VideoDirector(models, cfg)._stdg_setup()
    rec = FeatureRecorder(setup.temporal, setup.appearance)
    procs = {l.name: RecordingProcessor(l, rec) for l in [*setup.temporal, *setup.appearance]}
    _, masks = toy_inputs()
    return setup, rec, procs, masks_by_tokens(masks, (8, 8))


def test_losses_select_top_k_and_regions():
    p_ref = torch.softmax(torch.randn(4, 2, 3, 3), -1)
    p = p_ref.clone()
    region = torch.ones(3, 4, dtype=torch.bool)
    assert temporal_loss(p_ref, p, region, 1) == 0
    k = torch.randn(3, 4, 5)
    assert appearance_loss(k, k + 1.0, region, "mean_key") > 0.99
    assert torch.isclose(appearance_loss(k, k + 1.0, region, "per_token"), torch.tensor(1.0))


@pytest.mark.numerics
def test_stdg_zero_at_inverted_latent_nonzero_elsewhere(tiny_models):
    m = tiny_models
    setup, rec, procs, tok = _setup(m)
    cond = m.encode_prompt(["a red circle moving right"]).expand(16, -1, -1)
    torch.manual_seed(0)
    z_ref = torch.randn(1, 4, 16, 8, 8)
    with installed(m.unet, procs):
        g0, eps0 = stdg_guidance(m.eps, rec, z_ref, z_ref, 500, cond, tok, setup)
        g1, _ = stdg_guidance(m.eps, rec, z_ref + 0.3 * torch.randn_like(z_ref), z_ref, 500, cond, tok, setup)
    # exactly 0: the reference and the current forward are the same ops on the same latent (batch 1 both), so
    # the features and every squared difference are 0, and so is their gradient
    assert g0.abs().max() == 0
    assert g1.abs().mean() > 1e-6
    # ε_c comes from the same forward: the recording processors (explicit softmax maps on the temporal layers)
    # against diffusers' SDPA. Yardstick: the plain forward in float64; measured gap / yardstick 0.008 to 0.02
    with torch.no_grad():
        plain, plain64 = m.eps(z_ref, 500, cond), float64_twin(m).eps(z_ref, 500, cond)
    assert_within_rounding(eps0, plain, plain, plain64, k=20, what="eps_c")


@pytest.mark.numerics
def test_stdg_matches_finite_differences(tiny_models):
    m = tiny_models
    m.unet.double()
    try:
        setup, rec, procs, tok = _setup(m, (0.5, 0.5, 0.5, 0.5))
        cond = m.encode_prompt(["a red circle moving right"]).expand(16, -1, -1).double()
        torch.manual_seed(1)
        z_ref = torch.randn(1, 4, 16, 8, 8, dtype=torch.float64)
        z = z_ref + 0.2 * torch.randn_like(z_ref)
        d = torch.randn_like(z)
        m.dtype = torch.float64

        def loss(zz):
            with torch.no_grad():
                with rec.capture() as ref:
                    m.eps(z_ref, 400, cond)
                ref = dict(ref)
                with rec.capture() as cur:
                    m.eps(zz, 400, cond)
                return float(stdg_loss(ref, cur, tok, setup))

        with installed(m.unet, procs):
            g, _ = stdg_guidance(m.eps, rec, z, z_ref, 400, cond, tok, setup)
            # the random model's loss is strongly curved: central differences err by ~3e-16 h^-2 (relative)
            # through the third derivative, and by ~2e-17 / h through the float64 rounding of the loss. Measured
            # |fd - analytic| / |fd| at h = 1e-7, 1e-8, 1e-9, 5e-10: 2.9e-3, 3.0e-5, 4.4e-7, 1.5e-6 (AVX512), and
            # 3.7e-5 at 1e-8, 1.5e-6 at 1e-9, 2e-7 at 5e-10 (default kernels, whose float32 weight init differs by
            # ulps); threads change nothing in float64. h = 1e-9 and 1e-4 is 65x the worst of those
            h = 1e-9
            fd = (loss(z + h * d) - loss(z - h * d)) / (2 * h)
        analytic = float((g * d).sum())
        assert abs(fd - analytic) < 1e-4 * max(1.0, abs(fd)), (fd, analytic)
        assert abs(analytic) > 1e-8
    finally:
        m.unet.float()
        m.dtype = torch.float32
