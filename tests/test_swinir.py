"""QuantLinear, quantized window attention and SwinIR (issue: transformer
restorers).

References are hand-written: Eq. 1 with explicit clamp/round, the
percentile by sorting, mmagic's own WindowAttention for the float path,
hand MAC formulas for the complexity, the fake-quant model for the integer
runtime.
"""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import odm_mm
from odm_mm.layers.attention import QuantAct, QuantWindowAttention, quant_acts
from odm_mm.calibration import calibrate, calibrate_model
from odm_mm.layers import quantize_offset
from odm_mm.layers.linear import QuantLinear
from odm_mm.losses import attention_map
from odm_mm.quantizers import (QUANTIZERS, ActQuantizer, WeightQuantizer,
                               register_quantizer)
from odm_mm.swap import (quant_attentions, quant_layers, swap_convs,
                         unswap_convs)

needs_mmagic = pytest.mark.skipif(
    not odm_mm.HAS_MMAGIC, reason='mmagic (with mmcv ops) not importable')


def fq(x, lo, hi, bits):
    """Eq. 1 by hand."""
    step = (hi - lo) / (2**bits - 1)
    return torch.round((torch.clamp(x, lo, hi) - lo) / step) * step + lo


def nearest_rank(w, q):
    flat = torch.sort(w.detach().reshape(-1)).values
    k = min(max(math.ceil(q / 100 * flat.numel()), 1), flat.numel())
    return flat[k - 1]


def swinir(embed=16, depths=(2, ), heads=(2, ), window=4, img=16, up=2):
    from mmagic.models.editors.swinir.swinir_net import SwinIRNet
    return SwinIRNet(img_size=img, embed_dim=embed, depths=list(depths),
                     num_heads=list(heads), window_size=window, mlp_ratio=2,
                     upscale=up, upsampler='pixelshuffledirect')


# ------------------------------------------------------------ QuantLinear
@pytest.mark.parametrize('bits', [2, 4])
def test_quant_linear_is_eq1_on_input_and_weight(bits):
    torch.manual_seed(0)
    lin = nn.Linear(8, 6)
    q = QuantLinear.from_linear(lin, w_bits=bits, a_bits=bits)
    assert q.weight is lin.weight and q.bias is lin.bias
    q.act_quantizer.init_from_range(-0.7, 0.9)
    x = torch.randn(2, 5, 8)
    w = lin.weight.detach()
    lo, hi = torch.tensor(-0.7), torch.tensor(0.9)  # float32 bounds
    ref = F.linear(fq(x, lo, hi, bits),
                   fq(w, nearest_rank(w, 1), nearest_rank(w, 99), bits),
                   lin.bias)
    torch.testing.assert_close(q(x), ref, atol=0, rtol=0)
    q.disable_quant()
    torch.testing.assert_close(q(x), lin(x), atol=0, rtol=0)
    back = q.to_linear()
    assert back.weight is lin.weight and type(back) is nn.Linear


def test_quant_linear_channel_axis_is_last():
    """Offsets act on C of (B, N, C); per-channel quantizers and the
    observer see the (B, C, N, 1) map; sigma of Eq. 2 is the token
    tensor's."""
    torch.manual_seed(1)
    q = QuantLinear(4, 3, method='daq', w_bits=4, a_bits=4)
    q.set_offsets(False, True)
    q.scale.data.copy_(torch.tensor([0.5, 1.0, 1.5, 2.0]))
    x = torch.randn(2, 6, 4) + torch.tensor([0., 1., -2., 3.])
    s = quantize_offset(q.scale, 4)
    xs = x * s.view(1, 1, 4)
    m = xs.transpose(1, 2).unsqueeze(-1)  # (B, C, N, 1) by hand
    act = q.act_quantizer(m).squeeze(-1).transpose(1, 2)
    ref = F.linear(act, q.weight_quantizer(q.weight), q.bias)
    torch.testing.assert_close(q(x), ref, atol=0, rtol=0)
    q.record_std = True
    q.train()
    q(x)
    torch.testing.assert_close(q.feature_std, xs.std())
    stats = calibrate(nn.Sequential(q), [x])['0']
    torch.testing.assert_close(
        torch.tensor(stats.ch_mean, dtype=torch.float64),
        xs.double().mean(dim=(0, 1)))


def test_token_method_refused_in_one_message():
    class NoTokens(ActQuantizer):
        token_features = False
        token_features_why = 'its statistics need a spatial map'

    register_quantizer('_no_tokens', NoTokens, WeightQuantizer)
    try:
        QuantConv = odm_mm.QuantConv
        QuantConv(4, 4, 3, method='_no_tokens')  # convs are fine
        with pytest.raises(ValueError, match="method '_no_tokens' cannot "
                           r'quantize a Linear layer .*spatial map'):
            QuantLinear(4, 4, method='_no_tokens')
        with pytest.raises(ValueError, match='cannot quantize the attention'):
            QuantAct('_no_tokens', 4, 4)
    finally:
        QUANTIZERS.pop('_no_tokens')


def test_skt_attention_map_of_tokens():
    f = torch.randn(2, 5, 3, 4)  # (B, C, H, W)
    tokens = f.flatten(2).transpose(1, 2)  # (B, H*W, C)
    torch.testing.assert_close(attention_map(tokens), attention_map(f))


# ------------------------------------------------------------- attention
@needs_mmagic
@pytest.mark.parametrize('masked', [False, True])
def test_quant_window_attention(masked):
    from mmagic.models.editors.swinir.swinir_rstb import WindowAttention
    torch.manual_seed(2)
    attn = WindowAttention(8, (2, 2), 2).eval()
    x = torch.randn(6, 4, 8)
    mask = (torch.randint(0, 2, (3, 4, 4)) * -100.).float() \
        if masked else None
    q = QuantWindowAttention.from_attention(attn, method='odm', a_bits=3)
    assert q.qkv is attn.qkv and \
        q.relative_position_bias_table is attn.relative_position_bias_table
    for p in (q.q_quant, q.k_quant, q.v_quant, q.attn_quant):
        p.disable_quant()
    torch.testing.assert_close(q(x, mask), attn(x, mask), atol=0, rtol=0)
    bounds = dict(q=(-0.4, 0.5), k=(-0.9, 0.8), v=(-0.6, 0.7), attn=(0., .6))
    for key, (lo, hi) in bounds.items():
        getattr(q, f'{key}_quant').enable_quant()
        getattr(q, f'{key}_quant').act_quantizer.init_from_range(lo, hi)
        bounds[key] = (torch.tensor(lo), torch.tensor(hi))  # float32
    # hand reference: Swin attention with Eq. 1 on the four operands
    qkv = attn.qkv(x).reshape(6, 4, 3, 2, 4).permute(2, 0, 3, 1, 4)
    qq = fq(qkv[0] * attn.scale, *bounds['q'], 3)
    kk, vv = fq(qkv[1], *bounds['k'], 3), fq(qkv[2], *bounds['v'], 3)
    logits = qq @ kk.transpose(-2, -1)
    bias = attn.relative_position_bias_table[
        attn.relative_position_index.view(-1)].view(4, 4, -1)
    logits = logits + bias.permute(2, 0, 1).unsqueeze(0)
    if masked:
        logits = (logits.view(2, 3, 2, 4, 4)
                  + mask.unsqueeze(1).unsqueeze(0)).view(-1, 2, 4, 4)
    p = fq(logits.softmax(-1), *bounds['attn'], 3)
    ref = attn.proj((p @ vv).transpose(1, 2).reshape(6, 4, 8))
    torch.testing.assert_close(q(x, mask), ref, atol=1e-6, rtol=0)
    back = q.to_attention()
    assert type(back) is WindowAttention and back.qkv is attn.qkv
    torch.testing.assert_close(back(x, mask), attn(x, mask), atol=0, rtol=0)


@needs_mmagic
def test_swinir_light_swap_counts_every_rstb():
    """SwinIR-light x4: every Linear and both matmuls of every window
    attention quantized; head, conv_after_body and upsampler FP32."""
    from mmagic.models.editors.swinir.swinir_net import SwinIRNet
    net = SwinIRNet(img_size=64, embed_dim=60, depths=[6] * 4,
                    num_heads=[6] * 4, window_size=8, mlp_ratio=2, upscale=4,
                    upsampler='pixelshuffledirect')
    n_linear = sum(isinstance(m, nn.Linear) for m in net.modules())
    n_attn = sum(type(m).__name__ == 'WindowAttention'
                 for m in net.modules())
    assert (n_linear, n_attn) == (96, 24)
    swap_convs(net, w_bits=2, a_bits=2)
    layers = dict(quant_layers(net))
    assert sum(isinstance(m, QuantLinear) for m in layers.values()) == 96
    assert sum(isinstance(m, nn.Conv2d) for m in layers.values()) == 4
    assert not any(isinstance(m, nn.Linear) and not isinstance(
        m, QuantLinear) for m in net.modules())
    assert len(quant_attentions(net)) == 24 and len(quant_acts(net)) == 96
    for name in ('conv_first', 'conv_after_body', 'upsample.0'):
        assert name not in layers
    assert not isinstance(net.conv_after_body, odm_mm.QuantConv)
    # FP32 keys unchanged: an FP32 state dict loads (quantizer keys extra)
    fp = SwinIRNet(img_size=64, embed_dim=60, depths=[6] * 4,
                   num_heads=[6] * 4, window_size=8, mlp_ratio=2, upscale=4,
                   upsampler='pixelshuffledirect')
    res = net.load_state_dict(fp.state_dict(), strict=False)
    assert not res.unexpected_keys
    assert all('quant' in k or k.endswith(('.shift', '.scale', '_enabled'))
               for k in res.missing_keys)
    unswap_convs(net)
    assert set(net.state_dict()) == set(fp.state_dict())


@needs_mmagic
@pytest.mark.parametrize('method', ['odm', 'pams', 'odm_wcc', 'daq', 'ddtb'])
def test_every_method_quantizes_swinir(method):
    torch.manual_seed(3)
    fp = swinir()
    net = copy.deepcopy(fp)
    swap_convs(net, w_bits=4, a_bits=4, method=method)
    x = torch.rand(2, 3, 16, 16)
    stats = calibrate_model(net, [x])
    points = dict(quant_acts(net))
    assert set(points) <= set(stats) and len(points) == 8
    assert all(bool(p.act_quantizer.initialized) for p in points.values())
    net.train()
    y = net(x)
    y.mean().backward()
    assert net.layers[0].residual_group.blocks[0].attn.qkv.weight.grad \
        is not None
    with torch.no_grad():
        assert (net.eval()(x) - fp.eval()(x)).abs().max() > 1e-4


@needs_mmagic
def test_calibration_sets_operand_ranges_from_percentiles():
    torch.manual_seed(4)
    net = swinir()
    swap_convs(net, w_bits=4, a_bits=4, method='odm')
    x = torch.rand(2, 3, 16, 16)
    seen = {}
    point = net.layers[0].residual_group.blocks[0].attn.attn_quant
    h = point.register_forward_pre_hook(
        lambda m, inp: seen.setdefault('p', inp[0].detach().clone()))
    calibrate_model(net, [x])
    h.remove()
    p = seen['p']
    assert float(p.min()) >= 0.0  # softmax probabilities
    torch.testing.assert_close(point.act_quantizer.upper.detach(),
                               nearest_rank(p, 99).reshape(()))
    torch.testing.assert_close(point.act_quantizer.lower.detach(),
                               nearest_rank(p, 1).reshape(()))
