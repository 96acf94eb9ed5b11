import pytest
import torch

from conftest import assert_within_rounding
from videodirector.diffusion.ddim import (
    NoiseSchedule, ddim_invert, ddim_sample, ddim_step, leading_timesteps, linspace_timesteps, predicted_x0,
)
from videodirector.models.loading import ANIMATEDIFF_SCHEDULER


def test_timesteps_match_official_lists():
    lin = linspace_timesteps(50)
    assert lin[:5] == [999, 979, 958, 938, 917] and lin[-4:] == [61, 41, 20, 0] and len(lin) == 50
    lead = leading_timesteps(50)
    assert lead[0] == 981 and lead[-1] == 1 and all(a - b == 20 for a, b in zip(lead, lead[1:]))


def test_schedule_is_linear_animatediff():
    s = NoiseSchedule.from_scheduler_config(ANIMATEDIFF_SCHEDULER)
    betas = 1 - s.alphas_cumprod[1:] / s.alphas_cumprod[:-1]
    assert torch.allclose(betas[[0, -1]], torch.tensor([0.00085 + (0.012 - 0.00085) / 999, 0.012], dtype=torch.float64), atol=1e-9)
    assert s.alpha(-20) == 1.0


@pytest.mark.numerics
def test_guidance_enters_only_the_direction_term():
    torch.manual_seed(0)
    z, eps, g = torch.randn(1, 4, 2, 3, 3), torch.randn(1, 4, 2, 3, 3), torch.randn(1, 4, 2, 3, 3)
    a_t, a_p = 0.5, 0.7

    def guided_minus_plain(z, eps, g):  # noqa: ANN001, ANN202
        return ddim_step(eps, z, a_t, a_p, g, guidance_scale=2.0) - ddim_step(eps, z, a_t, a_p)

    # z_{t-1} gets -s sqrt(1 - a_p) sqrt(1 - a_t) G (official code). The difference of two steps cancels terms
    # several times larger than G's: the fixed atol of 1e-6 this replaces had a margin of 1.4x (worst gap
    # 7.2e-7 over 2000 random draws). Yardstick: the same difference in float64; measured gap / yardstick
    # 0.75 (default kernels) to 1.0 (AVX512, AVX2)
    diff = guided_minus_plain(z, eps, g)
    want = -2.0 * (1 - a_p) ** 0.5 * (1 - a_t) ** 0.5 * g
    diff64 = guided_minus_plain(z.double(), eps.double(), g.double())
    assert_within_rounding(diff, want, diff, diff64, k=20, what="guidance term")
    # measured gap 0 against the yardstick 4.7e-7 (one ulp of max |x0|; AVX512, AVX2 and default kernels)
    x0 = predicted_x0(eps, z, a_t)
    x0_64 = predicted_x0(eps.double(), z.double(), a_t)
    assert_within_rounding(x0, (z - (1 - a_t) ** 0.5 * eps) / a_t**0.5, x0, x0_64, k=20, what="predicted x0")


def test_inversion_round_trip_on_tiny_model(tiny_models):
    """Inversion then reconstruction with guidance 1 returns the input latents.

    ε comes from the tiny model at every timestep but on a fixed latent: DDIM inversion is then exact
    (its only approximation is ε(z_t) ≈ ε(z_{t-1}), Eq. 12), so any bookkeeping error in the timestep
    lists or alpha indices shows up. Shifted timesteps must not round-trip.
    """
    m = tiny_models
    torch.manual_seed(0)
    z0 = torch.randn(1, 4, 4, 8, 8, dtype=torch.float64) * 0.5
    cond = m.encode_prompt(["a red circle moving right"]).expand(4, -1, -1)
    probe = torch.randn(1, 4, 4, 8, 8)
    with torch.no_grad():
        table = {t: m.eps(probe, t, cond).double() for t in set(linspace_timesteps(20)) | set(leading_timesteps(20))}
    ts = linspace_timesteps(20)
    lat = ddim_invert(lambda z, t: table[t], z0, m.schedule, ts)
    rec = ddim_sample(lambda z, t: table[t], lat[-1][None], m.schedule, ts)
    shifted = ddim_sample(lambda z, t: table[t], lat[-1][None], m.schedule, leading_timesteps(20))
    assert lat.shape == (21, 4, 4, 8, 8) and torch.equal(lat[0], z0[0])
    err = (rec - z0).abs().max().item()
    assert err < 1e-8, err  # float64 rounding: measured 4.6e-15 (AVX512) and 6.4e-15 (default kernels)
    assert (shifted - z0).abs().max() > 1e-3  # off-by-one timesteps do not round-trip
    assert (lat[-1] - z0[0]).abs().mean() > 0.3  # it really went to noise and back

