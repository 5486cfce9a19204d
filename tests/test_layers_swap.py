"""QuantConv, offsets and the explicit swap (torch-only)."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from odm_mm.layers import QuantConv, feature_std, quantize_offset
from odm_mm.quantizers import fake_quant
from odm_mm.swap import quant_convs, swap_convs, unswap_convs


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        identity = x
        out = self.conv2(self.relu(self.conv1(x)))
        out += identity
        return out


class TinyEDSR(nn.Module):
    """Same module names as mmagic's EDSRNet, for torch-only tests."""

    def __init__(self, c=8, n=2):
        super().__init__()
        self.conv_first = nn.Conv2d(3, c, 3, padding=1)
        self.body = nn.Sequential(*[Block(c) for _ in range(n)])
        self.conv_after_body = nn.Conv2d(c, c, 3, padding=1)
        self.conv_last = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x):
        x = self.conv_first(x)
        res = self.conv_after_body(self.body(x))
        res += x
        return self.conv_last(res)


TinyEDSR.__name__ = 'EDSRNet'  # picks the EDSRNet preset


def test_from_conv_shares_parameters_and_to_conv_roundtrip():
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=True)
    q = QuantConv.from_conv(conv, w_bits=3, a_bits=2)
    assert q.weight is conv.weight and q.bias is conv.bias
    back = q.to_conv()
    assert type(back) is nn.Conv2d and back.weight is conv.weight
    x = torch.randn(2, 4, 5, 5)
    q.disable_quant()
    assert_close(q(x), conv(x), atol=0, rtol=0)


def test_quantized_forward_equals_hand_written_reference():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 5, 3, padding=1)
    q = QuantConv.from_conv(conv, w_bits=2, a_bits=3)
    q.act_quantizer.init_from_range(-0.8, 1.1)
    x = torch.randn(2, 4, 6, 6)
    lo, up = q.weight_quantizer.weight_range(conv.weight)
    ref = F.conv2d(
        fake_quant(x, torch.tensor(-0.8), torch.tensor(1.1), 3),
        fake_quant(conv.weight.detach(), lo, up, 2), conv.bias, padding=1)
    assert_close(q(x), ref, atol=0, rtol=0)


def test_offsets_shift_then_scale_quantized_to_4_bits():
    torch.manual_seed(1)
    q = QuantConv(3, 2, 1, w_bits=8, a_bits=8, offset_bits=4)
    with torch.no_grad():
        q.shift.copy_(torch.tensor([0.1, -0.3, 0.25]))
        q.scale.copy_(torch.tensor([1.0, 2.0, 0.5]))
    x = torch.randn(2, 3, 4, 4)
    assert_close(q.apply_offsets(x), x, atol=0, rtol=0)  # disabled
    q.set_offsets(shift=True, scale=True)
    s_mu = fake_quant(q.shift.detach(), torch.tensor(-0.3), torch.tensor(
        0.25), 4)
    s_sig = fake_quant(q.scale.detach(), torch.tensor(0.5), torch.tensor(
        2.0), 4)
    ref = (x + s_mu.view(1, 3, 1, 1)) * s_sig.view(1, 3, 1, 1)
    assert_close(q.apply_offsets(x), ref, atol=0, rtol=0)
    # offsets at the identity are kept exactly (constant vector)
    ident = torch.ones(5)
    assert_close(quantize_offset(ident, 4), ident, atol=0, rtol=0)
    # float offsets when quantization is off
    q.disable_quant()
    ref_f = (x + q.shift.detach().view(1, 3, 1, 1)) * q.scale.detach().view(
        1, 3, 1, 1)
    assert_close(q.apply_offsets(x), ref_f, atol=0, rtol=0)
    with pytest.raises(ValueError, match='offsets'):
        q.to_conv()


def test_offsets_receive_gradients_and_std_recorded():
    q = QuantConv(3, 2, 3, padding=1, w_bits=4, a_bits=4)
    q.act_quantizer.init_from_range(-2, 2)
    q.set_offsets(True, True)
    q.record_std = True
    q.train()
    x = torch.randn(2, 3, 5, 5)
    q(x).sum().backward()
    assert q.shift.grad is not None and q.scale.grad is not None
    assert_close(q.feature_std, x.std(), atol=1e-6, rtol=0)
    assert_close(feature_std(x, 'sample'), x.flatten(1).std(1).mean())


def test_swap_edsr_preset_and_fp32_identity():
    torch.manual_seed(0)
    net = TinyEDSR()
    ref = TinyEDSR()
    ref.load_state_dict(net.state_dict())
    names = swap_convs(net, w_bits=2, a_bits=2)
    assert names == ['body.0.conv1', 'body.0.conv2', 'body.1.conv1',
                     'body.1.conv2']
    assert isinstance(net.body[0].conv1, QuantConv)
    assert not isinstance(net.conv_after_body, QuantConv)
    # FP32 state_dict of the original loads with only quantizer keys missing
    missing, unexpected = net.load_state_dict(ref.state_dict(), strict=False)
    assert not unexpected
    assert all(k.split('.')[-1] in ('shift', 'scale', 'shift_enabled',
                                    'scale_enabled', 'lower', 'upper',
                                    'initialized') for k in missing)
    for _, m in quant_convs(net):
        m.disable_quant()
    x = torch.rand(1, 3, 8, 8)
    assert_close(net(x), ref(x), atol=0, rtol=0)
    assert unswap_convs(net) == names
    assert not quant_convs(net)


def test_swap_patterns_full_and_errors():
    net = TinyEDSR()
    assert len(swap_convs(net, mode='full')) == 7
    with pytest.raises(ValueError, match='match no layer'):
        swap_convs(TinyEDSR(), patterns=[r'nothing\.here'])
    with pytest.raises(ValueError, match='no nn.Conv2d'):
        swap_convs(nn.Sequential(nn.ReLU()), patterns='.*')
    other = nn.Sequential(nn.Conv2d(3, 3, 1))
    with pytest.raises(ValueError, match='No default swap patterns'):
        swap_convs(other)
    assert swap_convs(other, patterns='0') == ['0']


def test_quantized_skip_connections_match_hand_written_block():
    from odm_mm.calibration import apply_calibration, calibrate
    from odm_mm.fullquant import quantize_skips, skip_quantizers
    torch.manual_seed(0)
    net = TinyEDSR()
    Block.__name__ = 'ResidualBlockNoBN'
    try:
        names = quantize_skips(net, bits=8)
    finally:
        Block.__name__ = 'Block'
    assert names == ['body.0', 'body.1']
    assert 'body.0.skip_quantizer.lower' in net.state_dict()
    x = torch.rand(2, 3, 6, 6)
    stats = calibrate(net, [x])
    assert set(stats) == {'body.0.skip_quantizer', 'body.1.skip_quantizer'}
    apply_calibration(net, stats)
    q = net.body[0].skip_quantizer
    assert float(q.lower) == pytest.approx(stats['body.0.skip_quantizer'].lower)
    h = torch.randn(2, 8, 6, 6)
    blk = net.body[0]
    r = blk.conv2(torch.relu(blk.conv1(h)))
    ref = r + fake_quant(h, q.lower, q.upper, 8)
    assert_close(blk(h), ref, atol=1e-6, rtol=0)
    q.disable_quant()
    assert_close(blk(h), r + h, atol=0, rtol=0)
    assert [n for n, _ in skip_quantizers(net)] == [
        'body.0.skip_quantizer', 'body.1.skip_quantizer']
    with pytest.raises(ValueError, match='no residual block'):
        quantize_skips(nn.Sequential(nn.Conv2d(1, 1, 1)))
