"""Flow warp error and motion smoothness, checked on videos whose motion is known exactly."""

import pytest
import torch

from conftest import assert_within_rounding
from videodirector.errors import InputError
from videodirector.metrics.motion import (backward_warp, blend_interpolator, flow_interpolator, motion_smoothness,
                                          warp_error)


def texture(h=48, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool2d(torch.rand(1, 3, h + 4, w + 4, generator=g), 5, 1)  # smooth, so bilinear is exact-ish
    return (x * 2 - 1)[0]


def panning(frames=9, step=2):
    """Frame t shows the texture shifted right by ``step * t`` pixels (cropped from a wide strip)."""
    strip = texture(w=64 + step * frames)
    return torch.stack([strip[:, :, step * (frames - t): step * (frames - t) + 64] for t in range(frames)])


def global_shift_flow(a, b, max_shift=8):
    """An exact flow estimator for global translations: the integer shift s minimising |a(p) - b(p + s)|."""
    out = []
    for x, y in zip(a, b):
        best, best_err = (0, 0), float("inf")
        for dx in range(-max_shift, max_shift + 1):
            err = (x[:, :, 10:-10] - y[:, :, 10 + dx: y.shape[-1] - 10 + dx]).abs().mean()
            if err < best_err:
                best, best_err = (dx, 0), err
        out.append(torch.tensor(best, dtype=x.dtype)[:, None, None].expand(2, *x.shape[-2:]))
    return torch.stack(out)


@pytest.mark.numerics
def test_backward_warp_moves_content_by_the_flow():
    v = panning(frames=2, step=3)
    flow = torch.zeros(1, 2, *v.shape[-2:])
    flow[:, 0] = 3.0  # frame 0 at p is frame 1 at p + (3, 0)
    warped = backward_warp(v[1:], flow)
    # float32 rounding of the sample coordinates (~64 eps) times the texture's pixel-to-pixel steps: measured
    # 3.9e-7 (AVX512, AVX2 and default grid_sample kernels, 1-4 threads; float64: 9e-16), so 1e-5 is 25x that,
    # while a warp off by a pixel errs by the texture's steps, > 0.05
    assert (warped - v[:1])[..., :-3].abs().max() < 1e-5
    assert (v[1:] - v[:1])[..., :-3].abs().max() > 0.05


@pytest.mark.numerics
def test_warp_error_is_zero_for_exact_flow_and_large_for_wrong_flow():
    v = panning()
    exact = warp_error(v, global_shift_flow)
    none = warp_error(v, lambda a, b: torch.zeros(a.shape[0], 2, *a.shape[-2:]))
    # measured: exact 1.1e-15 (a mean of squared rounding errors; AVX512, AVX2 and default, 1-4 threads)
    assert exact < 1e-4 < none / 10
    # the mask restricts the average to the pixels it keeps
    left = torch.zeros(len(v), 1, *v.shape[-2:], dtype=torch.bool)
    left[..., :32] = True
    assert warp_error(v, global_shift_flow, left) < 1e-8  # measured 1.5e-15


def test_motion_smoothness_rewards_predictable_motion_and_penalises_flicker():
    v = panning(step=2)
    flow_interp = flow_interpolator(global_shift_flow)
    smooth = motion_smoothness(v, flow_interp)
    blend = motion_smoothness(v, blend_interpolator)
    flicker = v.clone()
    flicker[1::2] = (flicker[1::2] + 0.4).clamp(-1, 1)
    flickery = motion_smoothness(flicker, flow_interp)
    assert smooth > 0.995 and blend < smooth - 0.01 and flickery < smooth - 0.05
    assert motion_smoothness(torch.zeros(5, 3, 8, 8), blend_interpolator) == 1.0


def test_motion_metrics_refuse_too_short_videos():
    with pytest.raises(InputError, match="at least 3 frames"):
        motion_smoothness(torch.zeros(2, 3, 8, 8), blend_interpolator)
    with pytest.raises(InputError, match="at least 2 frames"):
        warp_error(torch.zeros(1, 3, 8, 8), global_shift_flow)


def test_raft_adapter_on_random_weights(tmp_path):
    try:
        from torchvision.models import optical_flow as of
    except Exception:  # noqa: BLE001 - absent, or built for another torch (PyPI's beside the CPU torch)
        pytest.skip("no working torchvision here: the RAFT adapter runs where videodirector[metrics] installs")
    from videodirector.metrics.motion import raft_flow

    torch.save(of.raft_large(weights=None).state_dict(), tmp_path / "raft.pth")
    flow = raft_flow(str(tmp_path / "raft.pth"), num_flow_updates=2)
    v = panning(frames=3)[:, :, :44, :60]  # sides not multiples of 8
    assert flow(v[:-1], v[1:]).shape == (2, 2, 44, 60)
    assert warp_error(v, flow) >= 0


def tiny_lpips(seed=0, channels=(3, 8, 16)):
    """An LPIPS-shaped distance with random weights (Zhang et al. 2018, Eq. 1 before the spatial mean):
    per-pixel features (1x1 convs, so nothing leaks across pixels), unit-normalised over channels, squared
    differences weighted by non-negative per-channel weights, summed over layers."""
    g = torch.Generator().manual_seed(seed)
    convs = [torch.randn(o, i, 1, 1, generator=g) for i, o in zip(channels, channels[1:])]
    lins = [torch.rand(o, generator=g) for o in channels[1:]]

    def distance(x, y):
        total, fx, fy = 0, x, y
        for w, lin in zip(convs, lins):
            fx, fy = (torch.relu(torch.nn.functional.conv2d(f, w.to(f))) for f in (fx, fy))
            nx, ny = (f / (f.norm(dim=1, keepdim=True) + 1e-10) for f in (fx, fy))
            total = total + ((nx - ny) ** 2 * lin.to(nx)[:, None, None]).sum(1, keepdim=True)
        return total

    return distance


@pytest.mark.numerics
def test_masked_lpips_averages_only_the_kept_pixels():
    from videodirector.metrics.video_pair import masked_lpips

    src = texture()[None].repeat(4, 1, 1, 1)
    obj = torch.zeros(4, 1, 48, 64, dtype=torch.bool)
    obj[:, :, 10:30, 20:40] = True
    dist = tiny_lpips()
    assert masked_lpips(src, src, ~obj, dist) == 0.0
    inside = src.clone()
    inside[obj.expand_as(src)] = -inside[obj.expand_as(src)]  # change only the object
    assert masked_lpips(inside, src, ~obj, dist) < 1e-9  # the kept pixels are untouched
    assert masked_lpips(inside, src, None, dist) > 1e-3  # plain LPIPS sees the change
    outside = src.clone()
    outside[:, :, 40:] = -outside[:, :, 40:]  # change 8 background rows
    got = masked_lpips(outside, src, ~obj, dist, batch=3)

    def want(x, y):  # noqa: ANN001, ANN202
        return dist(x, y)[~obj].sum() / (~obj).sum()

    # batches of 3 + 1 against one of 4, and another order of sums: measured gap 0 (AVX512, AVX2) to 3.0e-8
    # (default kernels) against the yardstick 4.0e-8 (|want32 - want64| is below the floor of one ulp of want)
    want32, want64 = want(outside, src), want(outside.double(), src.double())
    assert_within_rounding(torch.tensor(got), want32, want32, want64, k=50, what="masked LPIPS")
    assert got > 0


def test_masked_lpips_refuses_masks_that_cover_everything():
    from videodirector.metrics.video_pair import masked_lpips

    src = texture()[None].repeat(2, 1, 1, 1)
    with pytest.raises(InputError, match="no background"):
        masked_lpips(src, src, torch.zeros(2, 1, 48, 64, dtype=torch.bool), tiny_lpips())
