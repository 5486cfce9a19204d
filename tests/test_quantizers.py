"""Eq. 1 quantizers: values and STE gradients against hand-written formulas."""
import math

import pytest
import torch
from torch.testing import assert_close

from odm_mm.quantizers import (ActQuantizer, PAMSActQuantizer,
                               PAMSWeightQuantizer, WeightQuantizer,
                               check_bits, fake_quant, percentile)


def ref_quant(x, lo, up, b):
    """Eq. 1 written out element by element in python floats."""
    s = (up - lo) / (2**b - 1)
    out = []
    for v in x:
        c = min(max(v, lo), up)
        out.append(round((c - lo) / s) * s + lo)  # python round: half-even
    return out


@pytest.mark.parametrize('bits', [1, 2, 3, 4, 8])
def test_fake_quant_values_match_eq1(bits):
    lo, up = -0.7, 1.3
    xs = [-2.0, -0.7, -0.31, 0.0, 0.2, 0.5, 0.99, 1.3, 5.0]
    x = torch.tensor(xs, dtype=torch.float64)
    got = fake_quant(x, torch.tensor(lo, dtype=torch.float64),
                     torch.tensor(up, dtype=torch.float64), bits)
    assert_close(got, torch.tensor(ref_quant(xs, lo, up, bits),
                                   dtype=torch.float64), atol=1e-12, rtol=0)
    # every output lies on the grid lo + k s, k in [0, 2^b - 1]
    s = (up - lo) / (2**bits - 1)
    k = (got - lo) / s
    assert_close(k, k.round(), atol=1e-9, rtol=0)
    assert k.min() >= 0 and k.max() <= 2**bits - 1


def test_ste_gradients_input_and_bounds():
    b = 2
    lo = torch.tensor(-1.0, requires_grad=True)
    up = torch.tensor(2.0, requires_grad=True)
    xs = [-3.0, -0.6, 0.4, 1.1, 2.5]
    x = torch.tensor(xs, requires_grad=True)
    y = fake_quant(x, lo, up, b)
    y.sum().backward()
    # d/dx: 1 strictly inside the range, 0 outside
    assert_close(x.grad, torch.tensor([0., 1., 1., 1., 0.]), atol=0, rtol=0)
    # hand-derived: inside, dQ/dl = -(R(v)-v)/(2^b-1), dQ/du = (R(v)-v)/(2^b-1)
    # with v=(x-l)/s; below the range dQ/dl = 1; above dQ/du = 1.
    n = 2**b - 1
    s = 3.0 / n
    dl = du = 0.0
    for v in xs:
        if v <= -1.0:
            dl += 1.0
        elif v >= 2.0:
            du += 1.0
        else:
            t = (v + 1.0) / s
            r = round(t) - t
            dl += -r / n
            du += r / n
    assert_close(lo.grad, torch.tensor(dl), atol=1e-6, rtol=0)
    assert_close(up.grad, torch.tensor(du), atol=1e-6, rtol=0)


def test_percentile_nearest_rank():
    x = torch.arange(1, 101, dtype=torch.float32)  # 1..100
    assert float(percentile(x, 1)) == 1.0
    assert float(percentile(x, 99)) == 99.0
    assert float(percentile(x, 50)) == 50.0
    big = torch.arange((1 << 24) + 10, dtype=torch.float32)
    p = float(percentile(big, 50))  # subsampled, still ~median
    assert abs(p / big.numel() - 0.5) < 1e-3


def test_act_quantizer_init_and_repair():
    q = ActQuantizer(3)
    lower_ref, upper_ref = q.lower, q.upper
    q.init_from_range(-0.5, 1.5)
    assert q.lower is lower_ref and q.upper is upper_ref  # same Parameters
    assert q.lower.item() == -0.5 and q.upper.item() == 1.5
    assert bool(q.initialized)
    with torch.no_grad():
        q.lower.fill_(2.0)
    assert q.repair_() and float(q.upper - q.lower) >= q.eps
    assert not q.repair_()


def test_weight_quantizer_percentile_range_and_grad():
    torch.manual_seed(0)
    w = torch.randn(8, 4, 3, 3, requires_grad=True)
    wq = WeightQuantizer(2, percentile_j=1.0)
    lo, up = wq.weight_range(w)
    flat = w.detach().flatten().sort().values
    n = flat.numel()
    assert float(lo) == float(flat[math.ceil(0.01 * n) - 1])
    assert float(up) == float(flat[math.ceil(0.99 * n) - 1])
    out = wq(w)
    assert out.unique().numel() <= 4
    assert_close(out, fake_quant(w.detach(), lo, up, 2), atol=0, rtol=0)
    out.sum().backward()
    inside = ((w.detach() >= lo) & (w.detach() <= up)).float()
    assert_close(w.grad, inside, atol=0, rtol=0)


def test_pams_quantizers():
    q = PAMSActQuantizer(2)
    q.init_from_range(-0.3, 0.8)
    assert float(q.alpha) == pytest.approx(0.8)
    x = torch.tensor([-1.0, -0.5, -0.2, 0.1, 0.5, 2.0])
    # qmax = 1: levels {-a, 0, a}
    assert_close(q(x), torch.tensor([-0.8, -0.8, 0., 0., 0.8, 0.8]), atol=0,
                 rtol=0)
    w = torch.tensor([-0.4, 0.1, 0.25, 0.3])
    wq = PAMSWeightQuantizer(3)  # qmax = 3, m = 0.4
    ref = torch.round(w * 3 / 0.4) * 0.4 / 3
    assert_close(wq(w), ref, atol=0, rtol=0)


@pytest.mark.parametrize('bad', [0, 9, 16, -1, 2.0, True, '4'])
def test_bits_validation(bad):
    with pytest.raises((ValueError, TypeError), match='bits'):
        check_bits(bad, 'a_bits')
