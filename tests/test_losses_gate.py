"""Eq. 2-3, SKT and Eq. 5 against hand-written references (torch-only)."""
import pytest
import torch
from torch.testing import assert_close

from odm_mm.gate import LossParts, gate, merge_gradients
from odm_mm.losses import (SKTLoss, VarianceRegLoss, attention_map, skt_loss,
                           variance_regularization)


def test_variance_regularization_value():
    a = torch.tensor([[1., 2.], [3., 4.]])
    b = torch.tensor([0., 10.])
    # unbiased std: a -> sqrt(5/3), b -> sqrt(50)
    ref = 1e-4 * ((5 / 3) ** 0.5 + 50 ** 0.5)
    got = variance_regularization([a.std(), b.std()], 1e-4)
    assert_close(got, torch.tensor(ref), atol=1e-9, rtol=0)
    assert_close(VarianceRegLoss(1e-4)([a.std(), b.std()]), got)
    with pytest.raises(ValueError, match='no feature std'):
        variance_regularization([])
    with pytest.raises(ValueError, match='>= 0'):
        VarianceRegLoss(-1.0)


def test_skt_value_hand_computed():
    s = torch.zeros(1, 2, 1, 2)
    s[0, :, 0, 0] = torch.tensor([1., 1.])   # mean f^2 = 1
    s[0, :, 0, 1] = torch.tensor([0., 0.])   # 0  -> map [1, 0]
    t = torch.ones(1, 2, 1, 2)               # map [1, 1]/sqrt(2)
    r = 2 ** -0.5
    ref = ((1 - r) ** 2 + r ** 2) / 2
    assert_close(skt_loss(s, t), torch.tensor(ref), atol=1e-7, rtol=0)
    assert_close(attention_map(t), torch.tensor([[r, r]]))
    assert_close(SKTLoss(1000.)(s, t), torch.tensor(1000 * ref), rtol=1e-6,
                 atol=0)
    with pytest.raises(ValueError, match='differ'):
        skt_loss(s, torch.ones(1, 2, 2, 2))


def test_gate_eq5_masking_and_conflicts():
    g_r = torch.tensor([1.0, -2.0, 0.5, 0.0, -1.0])
    g_v = torch.tensor([0.3, 0.4, -0.1, 0.7, -0.2])
    merged, c = gate(g_r, g_v, 'cooperative')
    assert_close(merged, torch.tensor([1.3, -2.0, 0.5, 0.7, -1.2]), atol=0,
                 rtol=0)
    assert int(c) == 2
    plain, c2 = gate(g_r, g_v, 'plain')
    assert_close(plain, g_r + g_v, atol=0, rtol=0)
    assert int(c2) == 2
    with pytest.raises(ValueError):
        gate(g_r, g_v, 'other')


def test_merge_gradients_in_place():
    p1 = torch.nn.Parameter(torch.zeros(3))
    p2 = torch.nn.Parameter(torch.zeros(2))
    p3 = torch.nn.Parameter(torch.zeros(2))
    p4 = torch.nn.Parameter(torch.zeros(2))
    p4.grad = torch.tensor([1., -1.])
    p1.grad = torch.tensor([1., -1., 1.])
    p2.grad = None  # no L_R gradient: counts as cooperative
    p3.grad = torch.tensor([5., 5.])
    st = merge_gradients([p1, p2, p3, p4],
                         [torch.tensor([1., 1., -1.]),
                          torch.tensor([2., -2.]), None,
                          torch.zeros(2)])  # zeros: not counted
    assert (st.conflicts, st.total) == (2, 5)
    assert st.conflict_ratio == pytest.approx(2 / 5)
    # over p1, p2, p4 (p3 has no L_V gradient): g_R = [1,-1,1, 0,0, 1,-1]
    # g_V = [1,1,-1, 2,-2, 0,0]; |g_V| > |g_R| on the two p2 elements
    assert st.norm_r == pytest.approx(5 ** 0.5)
    assert st.norm_v == pytest.approx(11 ** 0.5)
    assert st.dominant == 2
    assert st.grad_ratio == pytest.approx((11 / 5) ** 0.5)
    assert_close(p1.grad, torch.tensor([2., -1., 1.]), atol=0, rtol=0)
    assert_close(p2.grad, torch.tensor([2., -2.]), atol=0, rtol=0)
    assert_close(p3.grad, torch.tensor([5., 5.]), atol=0, rtol=0)
    assert_close(p4.grad, torch.tensor([1., -1.]), atol=0, rtol=0)
    parts = LossParts(torch.tensor(1.), torch.tensor(2.))
    assert float(parts.total()) == 3.0
