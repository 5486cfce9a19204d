"""Percentile init and Eq. 6 layer selection on constructed features."""
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from odm_mm.calibration import (FeatureObserver, apply_calibration, calibrate,
                                offset_table, select_top_p)
from odm_mm.layers import QuantConv
from odm_mm.quantizers import percentile


def test_observer_eq6_statistics_exact():
    x1 = torch.randn(2, 3, 4, 4)
    x2 = torch.randn(3, 3, 4, 4) * 2 + 1
    obs = FeatureObserver()
    obs.update(x1)
    obs.update(x2)
    st = obs.stats()
    allx = torch.cat([x1, x2]).transpose(0, 1).reshape(3, -1).double()
    mu_c = allx.mean(1)
    sig_c = allx.std(1, unbiased=False)
    assert st.m_mu == pytest.approx(float(mu_c.std()), abs=1e-9)
    assert st.m_sigma == pytest.approx(float(sig_c.std()), abs=1e-9)
    lo_ref = (float(percentile(x1, 1)) + float(percentile(x2, 1))) / 2
    assert st.lower == pytest.approx(lo_ref, abs=1e-7)
    assert st.channels == 3


def test_select_top_p():
    vals = [float(v) for v in range(10)]  # 70th pct (linear) = 6.3
    assert select_top_p(vals, 0.3) == [False] * 7 + [True] * 3
    assert all(select_top_p(vals, 1.0))
    with pytest.raises(ValueError, match=r'\(0, 1\]'):
        select_top_p(vals, 0.0)
    with pytest.raises(ValueError):
        select_top_p(vals, 1.5)


class Net(nn.Module):
    """Layer i receives a feature whose channel means/stds we control."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(
            [QuantConv(4, 4, 1, w_bits=4, a_bits=4) for _ in range(4)])
        # per-layer channel shifts (mean mismatch) and scales (std mismatch)
        self.mu = [torch.zeros(4), torch.tensor([0., 5., -5., 10.]),
                   torch.zeros(4), torch.tensor([0., .1, .2, .3])]
        self.sig = [torch.ones(4), torch.ones(4),
                    torch.tensor([1., 4., 8., 16.]), torch.ones(4)]

    def forward(self, z):
        out = []
        for conv, mu, sig in zip(self.convs, self.mu, self.sig):
            out.append(conv(z * sig.view(1, 4, 1, 1) + mu.view(1, 4, 1, 1)))
        return out


def test_calibrate_selects_mean_and_std_mismatch_layers():
    torch.manual_seed(0)
    net = Net()
    batches = [torch.randn(4, 4, 16, 16) for _ in range(3)]
    stats = calibrate(net, batches)
    assert list(stats) == [f'convs.{i}' for i in range(4)]
    # quantization switched back on, observers removed
    assert all(c.quant_enabled and c.observer is None for c in net.convs)
    apply_calibration(net, stats, ratio=0.25)
    flags = [(bool(c.shift_enabled), bool(c.scale_enabled))
             for c in net.convs]
    assert flags == [(False, False), (True, False), (False, True),
                     (False, False)]
    st = stats['convs.2']
    assert_close(net.convs[2].act_quantizer.lower.detach(),
                 torch.tensor(st.lower), atol=0, rtol=0)
    assert bool(net.convs[0].act_quantizer.initialized)
    table = offset_table(stats)
    assert 'convs.1' in table and 'shift offsets on 1' in table


def test_calibrate_errors():
    with pytest.raises(ValueError, match='no quantized layer'):
        calibrate(nn.Conv2d(1, 1, 1), [torch.zeros(1, 1, 2, 2)])
    with pytest.raises(ValueError, match='no calibration batch'):
        calibrate(Net(), [])
