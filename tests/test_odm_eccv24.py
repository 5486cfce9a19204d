"""Published ODM (ECCV 2024): weight clipping correction, the mismatch
regulariser and the similarity gate against hand-written references
(values and gradients; torch-only)."""
import math

import pytest
import torch
from torch.testing import assert_close

from odm_mm.gate import LossParts, gate, merge_gradients, similarity
from odm_mm.layers import QuantConv
from odm_mm.mismatch import (MismatchRegLoss, mismatch,
                             mismatch_regularization)
from odm_mm.quantizers import ActQuantizer, quantizer_classes
from odm_mm.quantizers.wcc import MSE_GRID, WCCWeightQuantizer, mse_gamma


def ref_wcc(w, gamma, bits, j=1.0):
    """Eq. 1 over [-u, u], u = gamma * P_{100-j}(|w|), in python floats
    (nearest-rank percentile; python round is half-even like torch)."""
    flat = sorted(abs(v) for v in w.flatten().tolist())
    k = min(max(math.ceil((100 - j) / 100 * len(flat)), 1), len(flat))
    f = float(torch.tensor(flat[k - 1]).float())  # percentile() is float32
    u = gamma * f
    levels = 2**bits - 1
    s = (u - (-u)) / levels
    out = [round((min(max(v, -u), u) + u) / s) * s - u
           for v in w.flatten().tolist()]
    return torch.tensor(out, dtype=w.dtype).view_as(w), f, u, s


@pytest.mark.parametrize('bits', [2, 3, 4])
def test_wcc_forward_matches_hand_reference(bits):
    torch.manual_seed(bits)
    w = torch.randn(8, 4, 3, 3, dtype=torch.float64) * 0.05
    q = WCCWeightQuantizer(bits)
    q.gamma.data.fill_(0.8)
    ref, f, u, _ = ref_wcc(w, float(q.gamma), bits)  # 0.8 as float32
    assert float(q.statistic(w)) == f
    assert_close(q(w), ref, atol=1e-15, rtol=0)
    # 2^b levels, symmetric, the outer ones at -u and u
    levels = q(w).unique()
    assert len(levels) == 2**bits
    assert_close(levels.min(), torch.tensor(-u, dtype=w.dtype))
    assert_close(levels.max(), torch.tensor(u, dtype=w.dtype))


def test_wcc_gradients_hand_derived():
    """d out / d u: (2/L)(r - (w+u)/s) inside, +1 above, -1 below (STE for
    the rounding); dL/dgamma = sum(g * d out/d u) * f; weights: 1 inside,
    0 where clipped."""
    torch.manual_seed(0)
    bits, gamma = 2, 0.7
    w = (torch.randn(6, 5, 3, 3, dtype=torch.float64) * 0.05)
    q = WCCWeightQuantizer(bits).double()
    q.gamma.data.fill_(gamma)
    wp = w.clone().requires_grad_()
    g_out = torch.randn_like(w)
    (q(wp) * g_out).sum().backward()
    _, f, u, s = ref_wcc(w, gamma, bits)
    L = 2**bits - 1
    d_u = torch.empty_like(w)
    for i, v in enumerate(w.flatten().tolist()):
        if v > u:
            d_u.view(-1)[i] = 1.0
        elif v < -u:
            d_u.view(-1)[i] = -1.0
        else:
            r = round((v + u) / s)
            d_u.view(-1)[i] = (2 / L) * (r - (v + u) / s)
    assert_close(q.gamma.grad, (g_out * d_u).sum() * f, atol=1e-10,
                 rtol=1e-9)
    inside = (w >= -u) & (w <= u)
    # (x - l) / s * s: 1 up to one float64 rounding
    assert_close(wp.grad, torch.where(inside, g_out, torch.zeros_like(w)),
                 atol=1e-15, rtol=0)
    assert (wp.grad[~inside] == 0).all()
    assert (~inside).any() and inside.any()  # both branches exercised


def test_wcc_integer_form_codes_and_state():
    torch.manual_seed(1)
    w = torch.randn(16, 8, 3, 3) * 0.03
    q = WCCWeightQuantizer(2)
    q.gamma.data.fill_(0.9)
    codes = q.codes(w)
    assert codes.min() >= 0 and codes.max() <= 3
    assert torch.equal(q.dequantize(codes, w), q(w))  # bit for bit
    form = q.integer_form(w)
    u = form.params['half_width']
    assert list(form.params) == ['half_width'] and q.range_values == 1
    assert torch.equal(form.clip_lo, -u) and torch.equal(form.clip_hi, u)
    assert torch.equal(codes * ((u - (-u)) / 3) - u, q(w))
    assert q.summary() == {'gamma': pytest.approx(0.9)}
    assert q.reg_free_parameters() == [q.gamma]
    with pytest.raises(ValueError, match='gamma_init'):
        WCCWeightQuantizer(2, gamma_init='max')
    with pytest.raises(ValueError, match='percentile_j'):
        WCCWeightQuantizer(2, percentile_j=60)
    # a non-positive factor is held at eps instead of dividing by zero
    q.gamma.data.fill_(-1.0)
    assert torch.isfinite(q(w)).all()


def test_wcc_mse_init_is_the_grid_minimum():
    torch.manual_seed(2)
    w = torch.randn(32, 32, 3, 3, dtype=torch.float64) * 0.04
    q = WCCWeightQuantizer(2, gamma_init='mse')
    q.init_from_weight(w)
    g = float(q.gamma)
    f = q.statistic(w)

    def err(gamma):  # the hand reference's squared error
        return float((ref_wcc(w, gamma, 2)[0] - w).pow(2).sum())

    errors = {c: err(c) for c in MSE_GRID}
    best = min(errors, key=errors.get)
    assert g == pytest.approx(best, abs=1e-7)  # gamma is a float32
    assert errors[best] < err(1.0)
    assert 0.45 < best < 0.75  # 4-level grid on a Gaussian: ~1.5 sigma
    assert mse_gamma(w, f, 2) == best
    one = WCCWeightQuantizer(2)
    one.gamma.data.fill_(0.3)
    one.init_from_weight(w)
    assert float(one.gamma) == 1.0


def test_odm_wcc_method_in_quantconv():
    act_cls, w_cls = quantizer_classes('odm_wcc')
    assert act_cls is ActQuantizer and w_cls is WCCWeightQuantizer
    conv = QuantConv(4, 4, 3, padding=1, w_bits=2, a_bits=2,
                     method='odm_wcc', weight_cfg=dict(gamma_init='mse'))
    assert conv.weight_quantizer.gamma_init == 'mse'
    assert 'weight_quantizer.gamma' in dict(conv.named_parameters())
    with pytest.raises(ValueError, match="'odm'.*no options"):
        QuantConv(4, 4, 3, method='odm', weight_cfg=dict(gamma_init='mse'))
    with pytest.raises(ValueError, match=r"\['gama'\].*gamma_init"):
        QuantConv(4, 4, 3, method='odm_wcc', weight_cfg=dict(gama=1))


# ------------------------------------------------------------ mismatch
def _act(lo=0.0, hi=1.0, bits=2):
    q = ActQuantizer(bits)
    q.init_from_range(lo, hi)
    return q


def test_mismatch_value_and_ste_gradient():
    q = _act(0.0, 1.0, 2)  # grid 0, 1/3, 2/3, 1
    xs = [-0.5, 0.1, 0.3, 0.5, 0.9, 1.4, 2.0]
    x = torch.tensor(xs, dtype=torch.float64, requires_grad=True)
    x_q = q.double()(x)
    grid = [0.0, 1 / 3, 2 / 3, 1.0]
    qv = [min(grid, key=lambda g: abs(g - min(max(v, 0.0), 1.0)))
          for v in xs]
    diff = [v - g for v, g in zip(xs, qv)]
    norm = math.sqrt(sum(d * d for d in diff))
    m = mismatch(x, x_q, q, 'ste')
    assert_close(m, torch.tensor(norm, dtype=torch.float64), atol=1e-12,
                 rtol=0)
    m.backward()
    # only the clipped elements are pulled (towards the range)
    ref = [d / norm if (v < 0 or v > 1) else 0.0 for v, d in zip(xs, diff)]
    assert_close(x.grad, torch.tensor(ref, dtype=torch.float64),
                 atol=1e-12, rtol=0)
    assert q.lower.grad is None and q.upper.grad is None  # fixed range


def test_mismatch_detach_pulls_every_element_to_its_grid_point():
    q = _act(0.0, 1.0, 2)
    x = torch.tensor([0.1, 0.3, 1.4], dtype=torch.float64,
                     requires_grad=True)
    x_q = q.double()(x)
    m = mismatch(x, x_q, q, 'detach')
    m.backward()
    d = (x - x_q).detach()
    assert_close(x.grad, d / d.norm(), atol=1e-12, rtol=0)
    assert q.lower.grad is None and q.upper.grad is None
    with pytest.raises(ValueError, match='target'):
        mismatch(x, x_q, q, 'range')


def test_mismatch_loss_sum_and_weight():
    terms = [torch.tensor(3.0), torch.tensor(4.5)]
    assert_close(MismatchRegLoss(1e-5)(terms), torch.tensor(7.5e-5))
    assert_close(mismatch_regularization(terms, 2.0), torch.tensor(15.0))
    with pytest.raises(ValueError, match='no mismatch'):
        mismatch_regularization([])
    with pytest.raises(ValueError, match='>= 0'):
        MismatchRegLoss(-1.0)
    with pytest.raises(ValueError, match='target'):
        MismatchRegLoss(1e-5, target='clip')


def test_quantconv_records_mismatch_of_its_own_quantized_input():
    torch.manual_seed(3)
    conv = QuantConv(3, 4, 3, padding=1, w_bits=2, a_bits=2)
    conv.act_quantizer.init_from_range(-0.5, 0.5)
    x = torch.randn(2, 3, 5, 5)
    conv(x)
    assert conv.feature_mismatch is None  # off by default
    conv.mismatch_target = 'ste'
    conv(x)
    ref = (x - conv.act_quantizer(x)).norm()
    assert_close(conv.feature_mismatch, ref, atol=1e-6, rtol=0)
    conv.eval()
    conv.feature_mismatch = None
    conv(x)
    assert conv.feature_mismatch is None  # training only


# ------------------------------------------------------ similarity gate
def test_similarity_weight_hand_computed():
    a = torch.tensor([1.0, 0.0, 2.0])
    b = torch.tensor([1.0, 1.0, 0.0])
    cos = 1.0 / (math.sqrt(5) * math.sqrt(2))
    assert_close(similarity(a, b), torch.tensor((cos + 1) / 2))
    assert_close(similarity(a, -a), torch.tensor(0.0))
    assert_close(similarity(a, torch.zeros(3)), torch.tensor(0.5))
    merged, c = gate(a, b, 'similarity')
    assert_close(merged, a + (cos + 1) / 2 * b, atol=1e-7, rtol=0)
    assert int(c) == 0


@pytest.mark.parametrize('mode', ['similarity', 'similarity_tensor'])
def test_merge_gradients_similarity(mode):
    p1 = torch.nn.Parameter(torch.zeros(3))
    p2 = torch.nn.Parameter(torch.zeros(2))
    p1.grad = torch.tensor([1.0, -1.0, 2.0])
    p2.grad = torch.tensor([0.5, 0.5])
    v1 = torch.tensor([1.0, 1.0, 1.0])
    v2 = torch.tensor([-1.0, -2.0])
    r1, r2 = p1.grad.clone(), p2.grad.clone()

    def sim(a, b):
        return (float(a @ b) / float(a.norm() * b.norm()) + 1) / 2

    stats = merge_gradients([p1, p2], [v1, v2], mode)
    if mode == 'similarity':
        w = sim(torch.cat([r1, r2]), torch.cat([v1, v2]))
        w1 = w2 = w
        weight = w
    else:
        w1, w2 = sim(r1, v1), sim(r2, v2)
        weight = (3 * w1 + 2 * w2) / 5
    assert_close(p1.grad, r1 + w1 * v1, atol=1e-6, rtol=0)
    assert_close(p2.grad, r2 + w2 * v2, atol=1e-6, rtol=0)
    assert stats.weight == pytest.approx(weight, abs=1e-6)
    assert stats.conflicts == 3 and stats.total == 5  # -1*1, .5*-1, .5*-2


def test_loss_parts_exclude_defaults_empty():
    parts = LossParts(torch.tensor(1.0), torch.tensor(2.0))
    assert parts.exclude == ()
    assert float(parts.total()) == 3.0


def test_weight_clip_tool_table(tmp_path, capsys):
    """tools/analysis/weight_clip.py on Gaussian weights: the MSE factor
    beats the published gamma = 1 at W2 (a 4-level grid wants ~1.5 sigma,
    P_99(abs W) is ~2.6 sigma), and its table lists every column."""
    import importlib.util
    from conftest import REPO
    spec = importlib.util.spec_from_file_location(
        'weight_clip', REPO / 'tools' / 'analysis' / 'weight_clip.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    torch.manual_seed(4)
    state = {f'body.{i}.conv1.weight': torch.randn(16, 16, 3, 3) * 0.05
             for i in range(3)}
    state['conv_first.weight'] = torch.randn(16, 3, 3, 3)
    torch.save({'state_dict': state}, tmp_path / 'w.pth')
    t2 = tool.weight_table([v for k, v in state.items() if 'body' in k], 2)
    assert t2['wcc gamma=mse'] < t2['seed'] < t2['wcc gamma=1']
    assert 0.5 < t2['mse gamma mean'] < 0.75
    tool.main([str(tmp_path / 'w.pth'), '--bits', '2', '4'])
    out = capsys.readouterr().out
    assert out.startswith('3 weights;') and '| W4 |' in out
    with pytest.raises(SystemExit, match='no weight'):
        tool.main([str(tmp_path / 'w.pth'), '--pattern', 'head'])
