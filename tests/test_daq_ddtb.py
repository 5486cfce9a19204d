"""DAQ and DDTB baselines: values and gradients against hand-written
references of the official formulas, calibration, QuantConv, export
refusal, the DDTB dynamic-layer choice and the complexity figures of the
paper-size EDSR (Table 4). Choices: docs/baselines.md, docs/complexity.md."""
import importlib.util
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

import odm_mm  # noqa: F401  (registers 'daq' and 'ddtb')
from odm_mm.analysis import count_complexity, storage_bits
from odm_mm.calibration import LayerStats, calibrate_model
from odm_mm.layers import QuantConv
from odm_mm.quantizers import QUANTIZERS
from odm_mm.quantizers.daq import (GAUSSIAN_STEPS, DAQActQuantizer,
                                   DAQWeightQuantizer)
from odm_mm.quantizers.ddtb import (DDTBActQuantizer, DDTBWeightQuantizer,
                                    ddtb_fake_quant, dynamic_scores,
                                    select_dynamic)
from odm_mm.swap import quant_convs

from conftest import REPO

D = torch.float64
# Lloyd-Max steps as printed in the official quantize.py, key = bits - 1
OFFICIAL_STEPS = {0: 2.0, 1: 1.596, 2: 0.996, 3: 0.586, 4: 0.335, 5: 0.188,
                  6: 0.104, 7: 0.057, 8: 0.031}


def _stats(lower, upper, channels=4):
    return LayerStats(lower=lower, upper=upper, absmax=max(-lower, upper),
                      m_mu=0.0, m_sigma=0.0, channels=channels)


# ------------------------------------------------------------ references
def ref_sigma_quant(sigma, qq):
    """Official sigma quantization, written out as in quantize.py."""
    g = OFFICIAL_STEPS[qq - 1]
    mean = sigma.mean(1, True)
    std = sigma.std(1, True).view(sigma.shape[0], 1, 1, 1)
    step = g * std
    thr = (2**qq / 2 - 0.5) * step
    step = step + (step == 0) * (-1)
    y = ((torch.round((sigma - mean) / step + 0.5) - 0.5) * step) * (step > 0)
    y = torch.max(torch.min(y, thr), -thr)
    return y + mean


def ref_daq_signed(x, bits, qq=4):
    """Official ``Quantization.forward``, branch ``x.min() != 0``."""
    mu = x.mean((2, 3), True)
    sigma = x.std((2, 3), True).view(x.shape[0], x.shape[1], 1, 1)
    if qq != 32:
        sigma = ref_sigma_quant(sigma, qq)
    step = OFFICIAL_STEPS[bits - 1] * sigma
    thr = (2**bits / 2 - 0.5) * step
    step = step + (step == 0) * (-1)
    y = ((torch.round((x - mu) / step + 0.5) - 0.5) * step) * (step > 0)
    return torch.max(torch.min(y, thr), -thr) + mu


def ref_daq_nonneg(x, bits, qq=4):
    """Official ``Quantization.forward``, branch ``x.min() == 0``."""
    num = (x > 0).sum((2, 3), True).to(x.dtype) + 1
    mu = x.sum((2, 3), True) / num
    sigma = (x.pow(2).sum((2, 3), True) / num - mu.pow(2)).sqrt()
    if qq != 32:
        sigma = ref_sigma_quant(sigma, qq)
    step = OFFICIAL_STEPS[bits - 1] * sigma
    thr = (2**bits / 2 - 0.5) * step
    step = step + (step == 0) * (-1)
    y = ((torch.round((x - thr) / step + 0.5) - 0.5) * step) * (step > 0)
    return y + thr


def ref_ddtb(xs, lo, hi, bits):
    """The DDTB quantizer element by element in python floats."""
    n = 2**bits - 1
    f = n / (hi - lo)
    z = round(f * lo) + 2**(bits - 1)  # python round: half-even
    return [(round(f * min(max(v, lo), hi) - z) + z) / f for v in xs]


def _qbitops(rep):
    return sum(r.quantizer_bitops for r in rep.layers)


def _feature(seed=0, shape=(2, 3, 5, 6)):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=D)
    # distinct per-image / per-channel distributions (what DAQ adapts to)
    scale = torch.rand(shape[0], shape[1], 1, 1, generator=g, dtype=D) * 3
    shift = torch.randn(shape[0], shape[1], 1, 1, generator=g, dtype=D)
    return x * (0.2 + scale) + shift


# ------------------------------------------------------------------- DAQ
def test_official_step_table():
    assert GAUSSIAN_STEPS == OFFICIAL_STEPS


@pytest.mark.parametrize('bits', [1, 2, 3, 4, 8])
@pytest.mark.parametrize('qq', [4, 32])
def test_daq_signed_branch_matches_official(bits, qq):
    x = _feature().requires_grad_()
    q = DAQActQuantizer(bits, sigma_bits=qq).to(D)
    y = q(x)
    assert_close(y, ref_daq_signed(x.detach(), bits, qq), atol=0, rtol=0)
    # 2^b mid-rise levels mu + (k - 1/2) s per image and channel
    for n in range(x.shape[0]):
        for c in range(x.shape[1]):
            assert y[n, c].unique().numel() <= 2**bits
    # identity STE, also where the input is clipped
    g = torch.randn_like(y)
    y.backward(g)
    assert_close(x.grad, g, atol=0, rtol=0)


@pytest.mark.parametrize('bits', [2, 4])
def test_daq_nonneg_branch_matches_official_and_is_unclipped(bits):
    x = torch.relu(_feature(1)).requires_grad_()
    q = DAQActQuantizer(bits).to(D)  # uncalibrated: decided per call
    y = q(x)
    assert bool(q.nonneg)  # x.min() == 0: the post-ReLU branch
    assert_close(y, ref_daq_nonneg(x.detach(), bits), atol=0, rtol=0)
    big = x.detach().clone()
    big[0, 0, 0, 0] = 1e3  # far beyond 2^b steps: the official grid goes on
    assert q.codes(big).max() > 2**bits - 1
    clipped = QuantConv(1, 1, 1, method='daq_clip', w_bits=bits,
                        a_bits=bits).act_quantizer.to(D)
    assert clipped.clip_nonneg  # the strict b-bit variant
    assert clipped.codes(big).max() <= 2**bits - 1
    assert clipped.codes(big).min() >= 0
    y.sum().backward()
    assert_close(x.grad, torch.ones_like(x), atol=0, rtol=0)


def test_daq_range_in_sigmas_and_constant_channel():
    # one channel with a single outlier, sigma_bits off: the clip range is
    # mu +- (2^(b-1) - 1/2) g sigma
    x = torch.full((1, 2, 4, 4), -1.0, dtype=D)  # min < 0: signed branch
    x[0, 0, 0, 0] = 100.0
    x[0, 1] = 3.0  # constant channel: sigma = 0, returned as its mean
    q = DAQActQuantizer(2, sigma_bits=32).to(D)
    y = q(x)
    mu, sigma = x[0, 0].mean(), x[0, 0].std()
    assert_close(y[0, 0].max(), mu + 1.5 * 1.596 * sigma, atol=1e-12,
                 rtol=0)
    assert torch.equal(y[0, 1], x[0, 1])


def official_daq(x, bits, qq=4):
    """The official ``Quantization.forward``: the branch from
    ``x.min() == 0`` at every call."""
    if x.min() == 0:
        return ref_daq_nonneg(x, bits, qq)
    return ref_daq_signed(x, bits, qq)


@pytest.mark.parametrize('stats', [None, (-0.3, 1.0), (0.0, 2.0)])
def test_daq_branch_is_the_official_per_call_rule(stats):
    # whatever the calibration said (or without one, e.g. tools/test.py on
    # an FP32 checkpoint), every call follows x.min() == 0
    q = DAQActQuantizer(2).to(D)
    if stats is not None:
        q.init_from_stats(_stats(*stats))
    signed = _feature(2)
    relu = torch.relu(_feature(3))
    positive = signed.abs() + 0.1  # min > 0: the official signed branch
    for x in (relu, signed, positive, relu):
        assert (x.min() == 0) == DAQActQuantizer.is_nonneg(x)
        assert_close(q(x), official_daq(x, 2), atol=0, rtol=0)
        assert bool(q.nonneg) == bool(x.min() == 0)
        assert_close(q.dequantize(q.codes(x), x), q(x), atol=0, rtol=0)


def test_daq_from_fp32_checkpoint_equals_the_official_rule():
    """``tools/test.py configs/daq/... FP32.pth``: the model built from the
    config with the FP32 weights loaded, no calibration, no QAT."""
    pytest.importorskip('mmagic.models.editors')
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmagic.registry import MODELS
    from odm_mm.checkpoint import load_fp32_generator
    init_default_scope('mmagic')
    cfg = Config.fromfile(str(REPO / 'configs' / 'daq' / 'edsr_x4_w2a2.py'))
    gen_cfg = dict(cfg.model.generator, mid_channels=8, num_blocks=2)
    torch.manual_seed(0)
    fp32 = MODELS.build(gen_cfg)
    cfg.model.generator = gen_cfg
    cfg.model.fp32_checkpoint = None
    model = MODELS.build(cfg.model)
    load_fp32_generator(model.generator, fp32.state_dict(), 'fp32')
    model.generator.to(D).eval()
    calls = []
    for name, conv in quant_convs(model.generator):
        conv.register_forward_pre_hook(
            lambda m, i: calls.append((m, i[0].detach().clone())))
    x = torch.rand(1, 3, 6, 6, dtype=D)
    with torch.no_grad():
        model.generator(x)
    assert len(calls) == 4
    for conv, inp in calls:  # conv1: the residual stream, conv2: ReLU out
        q = conv.act_quantizer
        assert not bool(q.initialized)
        assert_close(q(inp), official_daq(inp, 2), atol=0, rtol=0)
    assert [bool(c.act_quantizer.nonneg) for c, _ in calls] == \
        [False, True, False, True]


def test_daq_calibration_and_state_dict_sync_the_branch():
    q = DAQActQuantizer(2)
    q.init_from_stats(_stats(-0.3, 1.0))
    assert bool(q.initialized)
    r = DAQActQuantizer(2)
    r.load_state_dict({'initialized': torch.tensor(True),
                       'nonneg': torch.tensor(True)})
    assert r._nonneg and not q.repair_()
    assert q.range_values == 0 and list(q.parameters()) == []
    assert torch.isnan(DAQActQuantizer(2).range_width())


@pytest.mark.parametrize('bits', [1, 2, 3, 4])
def test_daq_weight_quantizer_matches_conv2d_q(bits):
    w = torch.randn(4, 3, 3, 3, dtype=D, requires_grad=True)
    wq = DAQWeightQuantizer(bits)
    out = wq(w)
    step = OFFICIAL_STEPS[bits - 1] * w.detach().std()
    thr = (2**bits / 2 - 0.5) * step
    ref = (torch.round(w.detach() / step + 0.5) - 0.5) * step
    assert_close(out, torch.max(torch.min(ref, thr), -thr), atol=0, rtol=0)
    out.sum().backward()
    assert_close(w.grad, torch.ones_like(w), atol=0, rtol=0)  # identity
    form = wq.integer_form(w)
    codes = wq.codes(w)
    assert torch.equal(wq.dequantize(codes, w), out.detach())
    assert codes.min() >= 0 and codes.max() <= 2**bits - 1
    assert_close(form.offset + codes * form.scale, out.detach(), atol=1e-12,
                 rtol=0)
    assert list(form.params) == ['std'] and wq.range_values == 1


# ------------------------------------------------------------------ DDTB
@pytest.mark.parametrize('bits', [1, 2, 3, 4, 8])
def test_ddtb_quantizer_values_and_gradients(bits):
    lo, hi = -0.43, 1.27
    xs = [-2.0, -0.43, -0.3, -0.01, 0.0, 0.2, 0.61, 1.0, 1.27, 4.0]
    x = torch.tensor(xs, dtype=D, requires_grad=True)
    low = torch.tensor(lo, dtype=D, requires_grad=True)
    up = torch.tensor(hi, dtype=D, requires_grad=True)
    out = ddtb_fake_quant(x, low, up, bits)
    ref = ref_ddtb(xs, lo, hi, bits)
    assert_close(out, torch.tensor(ref, dtype=D), atol=0, rtol=0)
    step = (hi - lo) / (2**bits - 1)
    k = out.detach() / step  # levels are multiples of the step (0 is one)
    assert_close(k, k.round(), atol=1e-9, rtol=0)
    out.sum().backward()
    # STE: dQ/dx = 1 on [l, u]; dQ/du = (Q - c)/(u - l) + [x > u],
    # dQ/dl = (c - Q)/(u - l) + [x < l], c = clip(x, l, u)
    cs = [min(max(v, lo), hi) for v in xs]
    # (f x) / f: 1 up to rounding
    assert_close(x.grad, torch.tensor([float(lo <= v <= hi) for v in xs],
                                      dtype=D), atol=1e-12, rtol=0)
    d_up = sum((q - c) / (hi - lo) + (v > hi) for q, c, v in zip(ref, cs, xs))
    d_lo = sum((c - q) / (hi - lo) + (v < lo) for q, c, v in zip(ref, cs, xs))
    assert_close(up.grad, torch.tensor(d_up, dtype=D), atol=1e-12, rtol=0)
    assert_close(low.grad, torch.tensor(d_lo, dtype=D), atol=1e-12, rtol=0)


def _gate_reference(q, x):
    """The official gate (atten_c) written out, BN in eval mode."""
    def act(a, b):
        lo, hi = a.min(), a.max()
        f = (2**b - 1) / (hi - lo)
        z = torch.round(f * lo) + 2**(b - 1)
        return (torch.round(f * a - z) + z) / f

    def weight(w, b):
        m = w.abs().max()
        return torch.round(w * (2**(b - 1) - 1) / m) * m / (2**(b - 1) - 1)

    gate = q.gate
    h = act(x.mean((2, 3)), 2) @ weight(gate.weight1.detach(), 2).T
    h = torch.relu(gate.bn(h))
    return 2 * torch.sigmoid(act(h, 2) @ weight(gate.weight2.detach(), 2).T)


def test_ddtb_dynamic_gate_forward_and_gradients():
    torch.manual_seed(0)
    conv = QuantConv(3, 4, 3, padding=1, w_bits=2, a_bits=2,
                     method='ddtb').to(D)
    q = conv.act_quantizer
    assert q.gate is not None and q.gate.in_channels == 3  # built by QuantConv
    q.init_from_stats(_stats(-1.1, 2.3, 3))
    assert (q.lower.item(), q.upper.item()) == (-1.1, 2.3)
    x = _feature(2, (3, 3, 5, 6))
    static = q(x)
    q.set_dynamic(True)
    q.eval()
    # weight2 starts at 0: scale 2 sigmoid(0) = 1, the static quantizer
    assert_close(q(x), static, atol=0, rtol=0)
    with torch.no_grad():
        q.gate.weight2.copy_(torch.randn(2, 32, dtype=D))
    s = _gate_reference(q, x)
    lo = (s[:, 1] * q.lower.detach()).view(-1, 1, 1, 1)
    hi = torch.maximum((s[:, 0] * q.upper.detach()).view(-1, 1, 1, 1),
                       lo + q.eps)
    ref = torch.cat([ddtb_fake_quant(x[n:n + 1], lo[n], hi[n], 2)
                     for n in range(3)])
    xg = x.clone().requires_grad_()
    y = q(xg)
    assert_close(y, ref, atol=0, rtol=0)
    assert not torch.equal(y, static)
    y.sum().backward()
    # the official gate detaches its input and its 2-bit activations: only
    # its last matrix, the bounds and x (through the quantizer) learn
    assert q.gate.weight2.grad.abs().sum() > 0
    assert q.lower.grad is not None and q.upper.grad is not None
    assert q.gate.weight1.grad is None and q.gate.bn.weight.grad is None
    inside = (xg.detach() >= lo) & (xg.detach() <= hi)
    assert_close(xg.grad, inside.to(D), atol=1e-12, rtol=0)


def test_ddtb_weight_quantizer_percentiles_and_ste():
    torch.manual_seed(1)
    w = torch.randn(8, 4, 3, 3, dtype=D, requires_grad=True)
    for j in (1.0, 0.0):  # official asym99 (EDSR/SRResNet), min/max (RDN)
        wq = DDTBWeightQuantizer(3, percentile_j=j)
        lo, hi = wq.weight_range(w)
        ref = np.percentile(w.detach().numpy(), [j, 100 - j])
        assert_close(torch.stack([lo, hi]), torch.tensor(ref, dtype=D),
                     atol=1e-12, rtol=0)
        out = wq(w)
        expect = ref_ddtb(w.detach().flatten().tolist(), lo.item(),
                          hi.item(), 3)
        assert_close(out.flatten(), torch.tensor(expect, dtype=D), atol=0,
                     rtol=0)
        codes = wq.codes(w)
        assert torch.equal(wq.dequantize(codes, w), out.detach())
        assert codes.min() >= 0 and codes.max() <= 7
    w.grad = None
    DDTBWeightQuantizer(3)(w).sum().backward()
    lo, hi = DDTBWeightQuantizer(3).weight_range(w)
    mask = (w.detach() >= lo) & (w.detach() <= hi)
    assert_close(w.grad, mask.to(D), atol=1e-12, rtol=0)


def test_ddtb_storage_counts_gate_only_where_dynamic():
    conv = QuantConv(64, 64, 3, padding=1, w_bits=2, a_bits=2, method='ddtb')
    net = nn.Sequential(conv)
    base = 64 * 64 * 9 * 2 + 64 * 32 + 2 * 32  # weights, bias, 2 bounds
    assert storage_bits(net) == base
    conv.act_quantizer.set_dynamic(True)
    gate = (32 * 64 + 2 * 32) * 2 + 2 * 32 * 32  # 2-bit matrices, BN affine
    assert storage_bits(net) == base + gate
    rep = count_complexity(net, lr_shape=(64, 10, 12), probe_size=4)
    assert rep.storage_bits == base + gate
    macs = 64 * 120 * 64 * 9
    pool = 64 * 120 * 32 * 32  # one 32-bit add per input element
    gate_ops = 2 * (32 * 64 + 2 * 32) * 2 * 2
    assert _qbitops(rep) == pool + gate_ops
    assert rep.bitops == 2 * macs * 2 * 2 + pool + gate_ops


# ------------------------------------------------------- QuantConv & co.
@pytest.mark.parametrize('method', ['daq', 'ddtb'])
def test_quant_conv_with_the_method_is_calibrated_and_trains(method):
    torch.manual_seed(0)
    net = nn.Sequential(QuantConv(3, 4, 3, padding=1, method=method,
                                  w_bits=2, a_bits=2), nn.ReLU(),
                        QuantConv(4, 4, 3, padding=1, method=method,
                                  w_bits=2, a_bits=2))
    assert QUANTIZERS[method][0] is type(net[0].act_quantizer)
    x = torch.randn(4, 3, 8, 8)
    stats = calibrate_model(net, [x], shift=False, scale=False)
    q0, q2 = net[0].act_quantizer, net[2].act_quantizer
    assert bool(q0.initialized) and bool(q2.initialized)
    if method == 'daq':  # the branch follows the input: signed, post-ReLU
        net(x)
        assert (q0._nonneg, q2._nonneg) == (False, True)
    else:  # the bounds are the calibration percentiles
        assert q2.lower.item() == pytest.approx(stats['2'].lower)
        assert q2.upper.item() == pytest.approx(stats['2'].upper)
    y = net(x)
    y.pow(2).mean().backward()
    assert net[0].weight.grad.abs().sum() > 0
    assert torch.isfinite(y).all()


def test_export_refuses_run_time_ranges(tmp_path):
    from odm_mm.deploy.export import export_artifact
    from odm_mm.deploy.runtime import load_runtime
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 8)
    daq = nn.Sequential(QuantConv(4, 4, 3, padding=1, method='daq'))
    calibrate_model(daq, [x], shift=False, scale=False)
    with pytest.raises(ValueError, match='DAQ normalises each input channel '
                       'with run-time statistics'):
        export_artifact(daq, str(tmp_path / 'daq'))
    ddtb = nn.Sequential(QuantConv(4, 4, 3, padding=1, method='ddtb'))
    calibrate_model(ddtb, [x], shift=False, scale=False)
    # static DDTB layers have an integer form: exported, but the independent
    # runtime has no DDTB formulas and says so
    export_artifact(ddtb, str(tmp_path / 'static'))
    with pytest.raises(ValueError, match='ddtb'):
        load_runtime(str(tmp_path / 'static'), generator=nn.Sequential(
            nn.Conv2d(4, 4, 3, padding=1)))
    ddtb[0].act_quantizer.set_dynamic(True)
    with pytest.raises(ValueError, match='DDTB scales the activation bounds '
                       'of this layer per image'):
        export_artifact(ddtb, str(tmp_path / 'dynamic'))
    # codes of one input still reproduce the dynamic forward exactly
    q = ddtb[0].act_quantizer.eval()
    assert torch.equal(q.dequantize(q.codes(x), x), q(x))
    # the distribution figure draws the calibration range instead
    from odm_mm.analysis.distribution import layer_range
    st = _stats(-0.5, 0.7)
    assert layer_range(daq[0], st) == (-0.5, 0.7, 'calibration range (P1/P99)')
    assert layer_range(ddtb[0], st)[2] == 'calibration range (P1/P99)'


# --------------------------------------------------- dynamic-layer choice
def test_dynamic_scores_and_selection_follow_the_official_rule():
    net = nn.Sequential(*[QuantConv(2, 2, 1, method='ddtb') for _ in range(4)])
    for i, conv in enumerate(net):  # conv i scales its input by 10^i
        conv.weight.data.copy_(torch.eye(2).view(2, 2, 1, 1) * 10**(i % 3))
        conv.bias.data.zero_()
    batches = [torch.full((1, 2, 2, 2), float(v)) for v in (1.0, 2.0, 4.0)]
    net[0].observer = 'kept'
    scores = dynamic_scores(net, batches)
    assert net[0].observer == 'kept' and net[0].quant_enabled
    # input of conv i = batch * prod of the previous scales
    for name, f in (('0', 1), ('1', 1), ('2', 10), ('3', 1000)):
        v = torch.tensor([1.0, 2.0, 4.0], dtype=D) * f
        assert scores[name] == pytest.approx(2 * float(v.var(unbiased=False)))
    # int(4 * 0.5) = 2 layers, the largest scores
    assert select_dynamic(net, scores, 0.5) == ['2', '3']
    assert [c.act_quantizer._dynamic for c in net] == [False, False, True,
                                                     True]
    assert select_dynamic(net, scores, 0.3) == ['3']  # int(1.2) = 1


def test_ddtb_calib_hook_selects_once(monkeypatch):
    from odm_mm.ddtb_hook import DDTBCalibHook
    from odm_mm.hooks import OffsetHook
    from mmagic.registry import HOOKS
    assert HOOKS.get('DDTBCalibHook') is DDTBCalibHook
    with pytest.raises(ValueError, match='dynamic_ratio'):
        DDTBCalibHook(dynamic_ratio=1.5)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.generator = nn.Sequential(
                *[QuantConv(2, 2, 1, method='ddtb') for _ in range(4)])

        def quant_layers(self):
            return quant_convs(self.generator)

    model = Model()
    for i, conv in enumerate(model.generator):
        conv.weight.data.copy_(torch.eye(2).view(2, 2, 1, 1) * (i + 1))

    def calibrated(self, runner):  # OffsetHook's part: bounds initialised
        for _, m in runner.model.quant_layers():
            m.act_quantizer.initialized.fill_(True)

    batches = [torch.rand(1, 2, 3, 3) * s for s in (1, 3, 9)]
    model.data_preprocessor = lambda data, training: data
    monkeypatch.setattr(OffsetHook, 'before_train', calibrated)
    # the private loader's epoch: three batches
    monkeypatch.setattr(DDTBCalibHook, '_private_loader',
                        lambda s, r: [dict(inputs=b) for b in batches])
    with pytest.raises(ValueError, match='dynamic_batches'):
        DDTBCalibHook(dynamic_batches=0)
    with pytest.raises(ValueError, match='first_stage'):
        DDTBCalibHook(first_stage=1.0)
    # one batch: no variance anywhere, the first two layers (module order)
    one = DDTBCalibHook(dynamic_ratio=0.5, dynamic_batches=1)
    assert one.calibration_passes(None) == 3 * 8
    one.before_train(SimpleNamespace(model=model))
    assert [m.act_quantizer._dynamic for _, m in model.quant_layers()] == \
        [True, True, False, False]
    for _, m in model.quant_layers():
        m.act_quantizer.initialized.fill_(False)
    hook = DDTBCalibHook(dynamic_ratio=0.5)  # default: one epoch
    assert hook.calibration_passes(SimpleNamespace()) == 3 * 8 + 2 * 3
    assert (hook.shift, hook.scale) == (False, False)
    state = torch.get_rng_state(), random.getstate()
    hook.before_train(SimpleNamespace(model=model))
    assert torch.equal(torch.get_rng_state(), state[0])
    assert random.getstate() == state[1]
    flags = [m.act_quantizer._dynamic for _, m in model.quant_layers()]
    assert sum(flags) == 2 and flags[-1]  # the widest-varying layers
    # resumed (initialised) model: the checkpoint's choice is kept
    model.generator[3].act_quantizer.set_dynamic(False)
    hook.before_train(SimpleNamespace(model=model))
    assert not model.generator[3].act_quantizer._dynamic


# ------------------------------------------- paper-size EDSR x4 (Table 4)
def _table():
    path = REPO / 'tools' / 'analysis' / 'complexity_table.py'
    spec = importlib.util.spec_from_file_location('_ct_daq_ddtb', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


LR_ELEMS = 64 * 270 * 480  # one 64-channel LR feature of a 1080p output


def test_edsr_x4_w2a2_daq_and_ddtb_complexity():
    pytest.importorskip('mmagic.models.editors')
    table = _table()
    pams = count_complexity(table.quantize(table.build('EDSRNet'), 2, 'pams'),
                            probe_size=4)
    daq_net = table.quantize(table.build('EDSRNet'), 2, 'daq')
    # a config alone (uncalibrated): the probe tells each quantizer its
    # branch (conv2 follows a ReLU), no layer is silently signed
    cal = count_complexity(daq_net, probe_size=4)
    # no stored parameter: the ResBlock weights at 2 bits, the rest float
    assert round(cal.storage_k, 1) == 411.7 and \
        cal.storage_bits == pams.storage_bits - 32 * 32
    assert [c.act_quantizer._nonneg for _, c in quant_convs(daq_net)] == \
        [False, True] * 16
    assert _qbitops(cal) == 16 * (8 + 6) * LR_ELEMS * 1024
    assert abs(cal.bitops_t - 216.1) / 216.1 < 0.01  # 216.40T

    ddtb_net = table.quantize(table.build('EDSRNet'), 2, 'ddtb')
    convs = quant_convs(ddtb_net)
    for i, (_, conv) in enumerate(convs):  # int(32 * 0.3) = 9 gates
        conv.act_quantizer.set_dynamic(i < int(len(convs) * 0.3))
    ddtb = count_complexity(ddtb_net, probe_size=4)
    gate_bits = (32 * 64 + 2 * 32) * 2 + 64 * 32
    assert ddtb.storage_bits == pams.storage_bits + 32 * 32 + 9 * gate_bits
    assert abs(ddtb.storage_k - 413.4) / 413.4 < 0.0005  # 413.479K
    assert ddtb.bitops - pams.bitops == 9 * (LR_ELEMS * 1024 +
                                             2 * 2112 * 2 * 2)


def test_complexity_cli_on_the_configs(tmp_path):
    pytest.importorskip('mmagic.models.editors')
    spec = importlib.util.spec_from_file_location(
        '_tool_cx_dd', REPO / 'tools' / 'analysis' / 'complexity.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    from mmengine.config import Config
    cfg = str(REPO / 'configs' / 'ddtb' / 'edsr_x4_w2a2.py')
    res = tool.main([cfg])  # the config alone: 9 nominal gates (0.3 x 32)
    assert round(res['storage_k'], 3) == 413.479
    # a calibrated checkpoint brings its own choice (here 9 later layers)
    gen = tool.build_generator(Config.fromfile(cfg))
    for i, (_, conv) in enumerate(quant_convs(gen)):
        conv.act_quantizer.set_dynamic(10 <= i < 19)
    ckpt = tmp_path / 'ddtb.pth'
    torch.save({'state_dict': {f'generator.{k}': v
                               for k, v in gen.state_dict().items()}}, ckpt)
    res = tool.main([cfg, str(ckpt)])
    assert round(res['storage_k'], 3) == 413.479
    # DAQ's config alone: the probe sets each layer's branch (16 post-ReLU)
    res = tool.main([str(REPO / 'configs' / 'daq' / 'edsr_x4_w2a2.py')])
    assert round(res['bitops_t'], 1) == 216.4


def test_ddtb_config_learning_rates():
    """Bounds at the official 1e-2 converted to [0, 1] pixels, gate and
    weights at the base lr 1e-4 (longest paramwise key wins)."""
    pytest.importorskip('mmagic.models.editors')
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmagic.registry import MODELS
    cfg = Config.fromfile(str(REPO / 'configs' / 'ddtb' / 'edsr_x4_w2a2.py'))
    init_default_scope('mmagic')
    cfg.model.generator.update(mid_channels=8, num_blocks=1)
    model = MODELS.build(cfg.model)
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    names = {id(p): n for n, p in model.named_parameters()}
    lrs = {}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            lrs[names[id(p)].split('.')[-1]] = group['lr']
    assert lrs['lower'] == lrs['upper'] == pytest.approx(1e-2 / 255)
    assert lrs['weight1'] == lrs['weight2'] == lrs['weight'] == 1e-4
