"""Offset init from Eq. 6 statistics, one-offset policy, quantization error,
range-normalised L_V (torch-only options measured by the EDSR benchmark)."""
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from odm_mm.calibration import (LayerStats, apply_calibration, calibrate,
                                calibrate_model, init_offsets_from_stats,
                                quantization_error, select_offsets)
from odm_mm.layers import QuantConv, quantize_offset
from odm_mm.losses import VarianceRegLoss


class Mismatched(nn.Module):
    """Two QuantConvs fed channels with very different means and stds."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = QuantConv(4, 4, 3, padding=1, w_bits=4, a_bits=4)
        self.c2 = QuantConv(4, 3, 3, padding=1, w_bits=4, a_bits=4)
        self.register_buffer('mu', torch.tensor([0., 3., -2., 8.]))
        self.register_buffer('sig', torch.tensor([1., 0.2, 4., 0.5]))

    def forward(self, z):
        x = z * self.sig.view(1, 4, 1, 1) + self.mu.view(1, 4, 1, 1)
        return self.c2(torch.relu(self.c1(x)) + 1.0)


def _batches():
    g = torch.Generator().manual_seed(1)
    return [torch.randn(4, 4, 12, 12, generator=g) for _ in range(2)]


def test_stats_init_equalises_channels_and_keeps_the_function():
    net = Mismatched()
    batches = _batches()
    with torch.no_grad():
        for m in (net.c1, net.c2):
            m.disable_quant()
        ref = [net(b) for b in batches]
        for m in (net.c1, net.c2):
            m.enable_quant()
    stats = calibrate_model(net, batches, ratio=1.0, offset_init='stats')
    conv = net.c1
    st = stats['c1']
    mu = torch.tensor(st.ch_mean)
    sd = torch.tensor(st.ch_std)
    # S_mu = mean(mu_c) - mu_c and S_sigma = mean(sigma_c) / sigma_c, each
    # snapped to its own 4-bit grid
    want_shift = quantize_offset((mu.mean() - mu).float(), 4)
    want_scale = quantize_offset((sd.mean() / sd).float(), 4)
    assert_close(conv.shift.detach(), want_shift, atol=1e-6, rtol=0)
    assert_close(conv.scale.detach(), want_scale, atol=1e-6, rtol=0)
    # snapped: the 4-bit forward uses exactly the float values
    assert_close(quantize_offset(conv.shift.detach(), 4), conv.shift.detach(),
                 atol=1e-6, rtol=0)
    # the compensated network computes the same function (FP32) away from
    # the zero-padded border of the first layer's input
    with torch.no_grad():
        for m in (net.c1, net.c2):
            m.disable_quant()
        out = [net(b) for b in batches]
    for a, b in zip(out, ref):
        assert_close(a[..., 2:-2, 2:-2], b[..., 2:-2, 2:-2], atol=1e-4,
                     rtol=1e-4)
    assert not torch.allclose(out[0], ref[0], atol=1e-4)  # the border moves
    # the bounds were measured again on the offset feature
    again = calibrate(net, batches)
    assert conv.act_quantizer.lower.item() == pytest.approx(
        again['c1'].lower, abs=1e-6)


def test_stats_init_needs_bias_for_shift():
    conv = QuantConv(2, 2, 1, bias=False)
    conv.set_offsets(True, False)
    st = LayerStats(0., 1., 1., 1., 0., 2, ch_mean=[0., 1.],
                    ch_std=[1., 1.])
    with pytest.raises(ValueError, match='bias'):
        init_offsets_from_stats(conv, st)


def test_identity_init_is_unchanged_and_bad_option():
    net = Mismatched()
    stats = calibrate_model(net, _batches(), ratio=1.0)
    assert bool(net.c1.shift_enabled) and bool(net.c1.scale_enabled)
    assert torch.equal(net.c1.shift.detach(), torch.zeros(4))
    assert stats['c1'].lower == pytest.approx(
        net.c1.act_quantizer.lower.item())
    with pytest.raises(ValueError, match='offset_init'):
        calibrate_model(net, _batches(), offset_init='nope')


def test_select_offsets_one_policy():
    m_mu = [1.0, 5.0, 4.0, 0.5]
    m_sig = [0.1, 0.2, 0.9, 0.3]
    mu, sig = select_offsets(m_mu, m_sig, 0.5)
    assert mu == [False, True, True, False]
    assert sig == [False, False, True, True]
    mu, sig = select_offsets(m_mu, m_sig, 0.5, policy='one')
    # layer 2 was chosen for both: M_sigma ranks 4/4, M_mu 3/4 -> scale
    assert mu == [False, True, False, False]
    assert sig == [False, False, True, True]
    with pytest.raises(ValueError, match='policy'):
        select_offsets(m_mu, m_sig, 0.5, policy='x')


def test_quantization_error_matches_hand_computation():
    conv = QuantConv(2, 2, 1, w_bits=2, a_bits=2)
    conv.act_quantizer.init_from_range(-1.0, 1.0)
    x = torch.linspace(-2, 2, 2 * 2 * 3 * 3).view(2, 2, 3, 3)
    err = quantization_error(nn.Sequential(conv), [x])['0']
    q = conv.act_quantizer(x).detach()
    want = float((q - x).pow(2).mean() / x.var(unbiased=False))
    assert err['act'] == pytest.approx(want, rel=1e-6)
    w = conv.weight.detach()
    want_w = float((conv.weight_quantizer(w) - w).pow(2).mean()
                   / w.var(unbiased=False))
    assert err['weight'] == pytest.approx(want_w, rel=1e-6)
    assert conv.observer is None


def test_range_normalised_variance_loss():
    x1 = torch.randn(10, requires_grad=True)
    x2 = torch.randn(10, requires_grad=True)
    w1 = torch.tensor(2.0, requires_grad=True)
    w2 = torch.tensor(0.5, requires_grad=True)
    loss = VarianceRegLoss(0.1, normalize='range')
    out = loss([x1.std(), x2.std()], [w1, w2])
    assert_close(out, 0.1 * (x1.std() / 2.0 + x2.std() / 0.5))
    out.backward()
    assert w1.grad is None and w2.grad is None  # widths are detached
    assert_close(x1.grad, torch.autograd.grad(0.05 * x1.std(), x1)[0])
    plain = VarianceRegLoss(0.1)
    assert_close(plain([x1.std()], [w1]), 0.1 * x1.std())
    with pytest.raises(ValueError, match='one range width'):
        loss([x1.std()])
    with pytest.raises(ValueError, match='normalize'):
        VarianceRegLoss(normalize='z')


def test_range_width_of_both_quantizers():
    odm = QuantConv(1, 1, 1)
    odm.act_quantizer.init_from_range(-0.5, 1.5)
    pams = QuantConv(1, 1, 1, method='pams')
    pams.act_quantizer.init_from_range(-0.5, 1.5)
    assert float(odm.act_quantizer.range_width()) == pytest.approx(2.0)
    assert float(pams.act_quantizer.range_width()) == pytest.approx(3.0)
