"""The integer ONNX form (odm_mm.deploy.onnx_integer) and the deploy profile.

* the grid embeddings, exactly: integer codes, float64 arithmetic;
* every export loads in ``onnxruntime.InferenceSession(path)`` with default
  options, and every quantized conv is an integer kernel (``QLinearConv``)
  in onnxruntime's optimized graph;
* outputs follow the fake-quant model within stated bounds (float kernels
  and the 8-bit requantisation of conv outputs that return to float: no
  bit-equality of float sums is asserted).
"""
import os.path as osp

import numpy as np
import pytest
import torch

from odm_mm.deploy.onnx_grid import (D_MAX_FULL, D_MAX_SAFE, act_grid,
                                     weight_grid)
from odm_mm.swap import quant_convs

from test_deploy import quantized_edsr


# ------------------------------------------------------------- the grids
@pytest.mark.parametrize('bits', [2, 3, 4, 8])
def test_act_grid_holds_every_level_with_one_nudge(bits):
    g = torch.Generator().manual_seed(bits)
    levels = 2**bits
    for _ in range(50):
        step = float(torch.rand(1, generator=g)) * 0.5 / levels + 1e-4
        # 0 at most 100 steps below the grid (else no zero point fits:
        # refused, see test_act_grid_refuses_a_grid_far_from_zero)
        level0 = float(torch.rand(1, generator=g)) * -100 * step
        grid = act_grid(step, level0, levels)
        k = np.arange(levels)
        codes = grid.u0 + grid.m * k
        assert codes.min() >= 0 and codes.max() <= 255
        assert 0 <= grid.zero_point <= 255
        represented = (codes - grid.zero_point) * (step / grid.m)
        exact = level0 + k * step
        # the same nudge r for every level, within half a code
        np.testing.assert_allclose(exact - represented, grid.residual,
                                   rtol=0, atol=1e-12)
        assert abs(grid.residual) <= step / grid.m / 2 + 1e-12
        # no m that fits in 8 bits gives a smaller nudge
        for m in range(1, 255 // (levels - 1) + 1):
            ze = int(np.rint(level0 * m / step))  # zero point Z = -ze
            if 0 <= -ze <= 255 and m * (levels - 1) <= 255:
                r = level0 - ze * step / m
                assert abs(grid.residual) <= abs(r) + 1e-12


def test_act_grid_refuses_a_grid_far_from_zero():
    with pytest.raises(ValueError, match='integer zero point cannot'):
        act_grid(1e-4, -0.4, 4)


def test_symmetric_grid_is_exact_and_requantised_grid_has_m_1():
    # PAMS: l0 = -alpha, s = alpha / q: l0 / s = -q is an integer
    alpha, q = 0.8125, 7
    grid = act_grid(alpha / q, -alpha, 2 * q + 1)
    assert grid.residual == pytest.approx(0, abs=1e-15)
    assert act_grid(0.013, -0.4, 4, max_m=1).m == 1


@pytest.mark.parametrize('d_max', [D_MAX_SAFE, D_MAX_FULL])
def test_weight_grid_codes_are_int8_and_exact_up_to_the_channel_nudge(
        d_max):
    g = torch.Generator().manual_seed(0)
    for bits in (2, 3, 4):
        step, level0 = 0.0123, -0.031 * (2**bits - 1) / 2 - 0.0017
        j = torch.randint(0, 2**bits, (8, 5, 3, 3), generator=g).numpy()
        wg = weight_grid(j, step, level0, d_max)
        assert wg.codes.dtype == np.int8
        assert np.abs(wg.codes.astype(int)).max() <= d_max + 1
        w = level0 + j * step
        rep = wg.codes.astype(np.float64) * wg.scales.astype(
            np.float64).reshape(-1, 1, 1, 1)
        # float32 scales: relative 6e-8 of the largest represented weight
        err = rep - w - wg.residual.reshape(-1, 1, 1, 1)
        assert np.abs(err).max() <= 1e-7 * np.abs(w).max() * 64
        assert (np.abs(wg.residual) <= step / wg.m / 2 + 1e-12).all()


# ------------------------------------------------------ onnxruntime graphs
def _session(path, tmp_path):
    """A default session, and the op counts of its optimized graph."""
    import onnxruntime as ort

    from odm_mm.deploy.onnx_export import optimized_ops
    sess = ort.InferenceSession(path)  # default options, no arguments
    return sess, optimized_ops(path)


def _real_lr():
    from odm_mm.deploy.check import check_images
    return check_images(4)


@pytest.mark.parametrize('method,bits', [('odm', 2), ('odm', 4), ('odm', 8),
                                         ('pams', 2), ('pams', 4),
                                         ('odm_wcc', 4)])
def test_integer_export_loads_fuses_and_follows_fake_quant(tmp_path, method,
                                                           bits):
    from odm_mm.deploy.check import compare, onnx_callable
    from odm_mm.deploy.onnx_export import export_onnx
    gen = quantized_edsr(method, bits, body_gain=1.0)
    path = str(tmp_path / 'm.onnx')
    info = export_onnx(gen, path)
    assert info.form == 'integer' and info.opset == 17
    sess, ops = _session(path, tmp_path)
    # every quantized conv is one integer kernel; nothing of it stays float
    assert ops['QLinearConv'] == len(quant_convs(gen)) == 4
    assert ops['Conv'] == 5  # the FP32 head, upsampler (2) and tail convs
    x = torch.rand(2, 3, 12, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = gen(x).numpy()
    y = sess.run(None, {'input': x.numpy()})[0]
    assert y.shape == ref.shape == (2, 3, 48, 64)  # dynamic batch, H, W
    # bound: each conv output that returns to float is requantised at 8 bits
    # over its calibrated range (error <= S_y / 2, then through the rest of
    # the network), a float32 value on a rounding boundary of a low-bit
    # grid may take the neighbouring code (one step s times the weights
    # downstream), and nudged grids move image-border outputs by r times
    # the padded taps' weights. Measured on this model: mean 1e-4..7e-4,
    # max <= 4e-3.
    diff = np.abs(y - ref)
    assert diff.mean() <= 1e-3 and diff.max() <= 0.01
    # not vacuous: quantization itself moves the output (mean 2.6e-3 to
    # 6.7e-3) more than twice the bound
    for _, m in quant_convs(gen):
        m.disable_quant()
    with torch.no_grad():
        assert np.abs(gen(x).numpy() - ref).mean() > 2 * 1e-3
    for _, m in quant_convs(gen):
        m.enable_quant()
    # a real image (Set5 baby, or a photograph without ../shared): this
    # random body adds as much as the upsampled image (PSNR ~20 dB), so
    # the PSNR bound is loose here; the trained teacher's figures are
    # measured by tools/deploy/bench.py (docs/deploy.md)
    res = compare(gen, onnx_callable(sess), _real_lr()[:1], 4)
    assert abs(res[0].psnr_delta) <= 0.1


@pytest.mark.parametrize('method', ['odm', 'pams'])
def test_deploy_profile_is_integer_end_to_end(tmp_path, method):
    from odm_mm.deploy.check import compare, onnx_callable
    from odm_mm.deploy.onnx_export import export_onnx
    from odm_mm.deploy.onnx_integer import NARROW_PAD
    from odm_mm.deploy.profile import deploy_profile, float_convs
    gen = quantized_edsr(method, 4, body_gain=0.3)
    before = {k: v.clone() for k, v in gen.state_dict().items()}
    prof = deploy_profile(gen, [torch.rand(2, 3, 24, 24)])
    # the trained model is untouched; the profile has no float conv left
    assert all(torch.equal(before[k], v) for k, v in gen.state_dict().items())
    assert float_convs(prof) == []
    assert len(quant_convs(prof)) == 4 + 5
    for name in float_convs(gen):
        layer = prof.get_submodule(name)
        assert (layer.w_bits, layer.a_bits) == (8, 8)
    path = str(tmp_path / 'p.onnx')
    info = export_onnx(prof, path)
    assert info.plan.padded == {'conv_last': NARROW_PAD}
    sess, ops = _session(path, tmp_path)
    assert ops['QLinearConv'] == 9 and ops['Conv'] == 0
    x = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = prof(x).numpy()
        trained = gen(x).numpy()
    y = sess.run(None, {'input': x.numpy()})[0]
    # the tail's output (the image) is requantised at 8 bits over its
    # calibrated range (~[0, 1]): error <= S_y / 2 ~ 2e-3, mean ~1e-3
    assert np.abs(y - ref).mean() <= 3e-3
    assert np.abs(y - ref).max() <= 0.02
    # the profile's own 8-bit cost is small but not zero
    assert 0 < np.abs(ref - trained).mean() <= 5e-3
    res = compare(prof, onnx_callable(sess), _real_lr()[:1], 4)
    assert abs(res[0].psnr_delta) <= 0.05


def test_deploy_profile_refusals():
    from odm_mm.deploy.profile import deploy_profile
    gen = quantized_edsr('odm', 4)
    with pytest.raises(ValueError, match='not float convs'):
        deploy_profile(gen, [torch.rand(1, 3, 8, 8)], names=['body.0.conv1'])
    prof = deploy_profile(gen, [torch.rand(1, 3, 8, 8)])
    with pytest.raises(ValueError, match='no float conv left'):
        deploy_profile(prof, [torch.rand(1, 3, 8, 8)])


def test_check_images_fall_back_to_photographs(tmp_path):
    from odm_mm.deploy.check import check_images, y_psnr
    imgs = check_images(4, data_root=str(tmp_path))  # no Set5 there
    assert [i.name.split('/')[0] for i in imgs] == ['skimage', 'skimage']
    for im in imgs:
        assert im.hr.shape[-2:] == (im.lr.shape[-2] * 4, im.lr.shape[-1] * 4)
        assert 0 <= float(im.lr.min()) and float(im.lr.max()) <= 1
    up = torch.nn.functional.interpolate(imgs[0].lr, scale_factor=4,
                                         mode='bicubic').clamp(0, 1)
    assert 15 < y_psnr(up, imgs[0].hr, 4) < 40
    assert y_psnr(imgs[0].hr, imgs[0].hr, 4) == float('inf')
    shared = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), '..',
                      'shared', 'data', 'Set5')
    if osp.isdir(shared):
        assert check_images(4)[0].name == 'Set5/baby'
