"""Placements (odm_mm/placement.py) and DDTB as its authors ran it: the
official placement (quantized skip / residual paths), its first stage, the
dynamic gate read-outs."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.testing import assert_close

import odm_mm  # noqa: F401  (registers the methods and placements)
from odm_mm.analysis import count_complexity
from odm_mm.calibration import calibrate_model
from odm_mm.placement import (PLACEMENTS, Placement, QuantizedInput,
                              act_sites, apply_placement, get_placement,
                              register_placement)
from odm_mm.quantizers.ddtb import (DDTBActQuantizer, _ddtb_layers,
                                    dynamic_scores)
from odm_mm.swap import quant_convs

D = torch.float64
LR_PIX = 270 * 480  # LR pixels of a 1080p x4 output

mmagic = pytest.importorskip('mmagic.models.editors')


def _edsr(ch=8, blocks=2):
    from mmagic.registry import MODELS
    torch.manual_seed(0)
    return MODELS.build(dict(type='EDSRNet', in_channels=3, out_channels=3,
                             mid_channels=ch, num_blocks=blocks,
                             upscale_factor=4))


def _rdn(blocks=2, layers=3):
    from mmagic.registry import MODELS
    torch.manual_seed(0)
    return MODELS.build(dict(type='RDNNet', in_channels=3, out_channels=3,
                             mid_channels=8, num_blocks=blocks,
                             num_layers=layers, channel_growth=4,
                             upscale_factor=2))


# ------------------------------------------------------------ references
def official_act(x, lo, hi, bits):
    """Official ``DDTB_quant_act_asym_dynamic_quantized`` (static layer)."""
    act = torch.max(torch.min(x, hi), lo)
    n = 2**bits - 1
    f = n / (hi - lo)
    z = torch.round(f * lo) + 2**(bits - 1)
    return (torch.round(f * act - z) + z) / f


def official_weight99(w, bits):
    """Official ``quant_weight_asym99`` (np.percentile 1 / 99)."""
    hi = torch.tensor(np.percentile(w.detach().numpy(), 99), dtype=w.dtype)
    lo = torch.tensor(np.percentile(w.detach().numpy(), 1), dtype=w.dtype)
    return official_act(w, lo, hi, bits)


def _bounds(q):
    return q.lower.detach(), q.upper.detach()


def official_resblock(block, x, bits):
    """Official ``DDTB_ResBlock.forward`` with the block's bounds."""
    q1 = block.skip_site.act_quantizer
    q2 = block.conv2.act_quantizer
    q3 = block.residual_site.act_quantizer
    c1, c2 = block.conv1, block.conv2
    residual = official_act(x, *_bounds(q1), bits)
    h = nn.functional.conv2d(x, official_weight99(c1.weight, bits), c1.bias,
                             padding=1).relu()
    h = official_act(h, *_bounds(q2), bits)
    body = nn.functional.conv2d(h, official_weight99(c2.weight, bits),
                                c2.bias, padding=1) * block.res_scale
    return official_act(body, *_bounds(q3), bits) + residual


def _set_bounds(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    for _, m in _ddtb_layers(model):
        q = m.act_quantizer
        lo = -0.5 - torch.rand(1, generator=g, dtype=D).item()
        q.init_from_range(lo, 0.5 + torch.rand(1, generator=g).item())


# ------------------------------------------------------------ registry
def test_registry_and_errors():
    assert set(PLACEMENTS['ddtb_official']) == {'EDSRNet', 'RDNNet'}
    with pytest.raises(ValueError, match="one of.*ddtb_official"):
        get_placement('nope', 'EDSRNet')
    with pytest.raises(ValueError, match='not MSRResNet'):
        get_placement('ddtb_official', 'MSRResNet')
    with pytest.raises(ValueError, match='default placement'):
        register_placement('conv_inputs', 'EDSRNet', Placement(weights=[]))
    with pytest.raises(ValueError, match='input_terms'):
        QuantizedInput(2, input_terms=0)
    register_placement('_t_bad', 'EDSRNet', Placement(
        weights=[r'body\.\d+\.conv2'], input_sites=[r'nothing\.here']))
    try:
        with pytest.raises(ValueError, match='match no module'):
            apply_placement(_edsr(), '_t_bad', method='ddtb')
    finally:
        del PLACEMENTS['_t_bad']


# ------------------------------------------------------ EDSR, official
def test_edsr_baseline_official_counts_48_quantizers_14_gates():
    from odm_mm.ddtb_hook import DDTBCalibHook
    net = _edsr(64, 16)
    swapped = apply_placement(net, 'ddtb_official', method='ddtb',
                              w_bits=2, a_bits=2)
    assert len(swapped) == 32 and len(act_sites(net)) == 32
    layers = _ddtb_layers(net)
    assert len(layers) == 48
    # conv1 reads the block input: float for block 0, two quantized terms
    # (skip + residual of the previous block) for the others
    for name, conv in quant_convs(net):
        q = conv.act_quantizer
        if name == 'body.0.conv1':
            assert isinstance(q, QuantizedInput) and q.bits == 32
        elif name.endswith('conv1'):
            assert isinstance(q, QuantizedInput)
            assert (q.bits, q.input_terms) == (2, 2)
        else:
            assert isinstance(q, DDTBActQuantizer)
    note = DDTBCalibHook(dynamic_ratio=0.3).nominal_choice(net)
    assert '14 of 48' in note
    assert sum(m.act_quantizer._dynamic for _, m in layers) == 14
    rep = count_complexity(net, probe_size=4)
    # storage: 2-bit ResBlock weights, 48 x 2 bounds, 14 gates of
    # (32 x 64 + 2 x 32) 2-bit weights + 64 BN affine values
    fp_params = sum(p.numel() for p in _edsr(64, 16).parameters())
    body_w = 32 * 64 * 64 * 9
    gate_bits = (32 * 64 + 2 * 32) * 2 + 64 * 32
    expect = (fp_params - body_w) * 32 + body_w * 2 + 48 * 2 * 32 + \
        14 * gate_bits
    assert rep.storage_bits == expect
    assert round(rep.storage_k, 1) == 414.5
    # BitOPs: conv2 at 2x2; conv1 of block 0 at 2x32, the other 15 as two
    # 2x2 convs; the 14 gates' average pool (32-bit adds) + their MACs
    conv_macs = 64 * 64 * 9 * LR_PIX
    body = 16 * 2 * conv_macs * 4 + 2 * conv_macs * 2 * 32 + \
        15 * 2 * conv_macs * 4 * 2
    gates = 14 * (64 * LR_PIX * 32 * 32 + 2 * 32 * (64 + 2) * 4)
    conv_only = count_complexity(_edsr(64, 16), probe_size=4)
    float_part = conv_only.bitops - 32 * 2 * conv_macs * 32 * 32
    assert rep.bitops == float_part + body + gates
    assert sum(r.quantizer_bitops for r in rep.layers) == gates


def test_edsr_official_forward_equals_the_official_resblock():
    net = _edsr().to(D)
    apply_placement(net, 'ddtb_official', method='ddtb', w_bits=2, a_bits=2)
    net.to(D)
    _set_bounds(net)
    net.eval()
    x = torch.randn(2, 8, 6, 6, dtype=D)
    block = net.body[1]
    assert_close(block(x), official_resblock(block, x, 2), atol=1e-12,
                 rtol=0)
    # the whole body: block 0 reads the float head output
    y = x
    for blk in net.body[:2]:
        y = official_resblock(blk, y, 2)
    z = x
    for blk in net.body[:2]:
        z = blk(z)
    assert_close(z, y, atol=1e-12, rtol=0)


def test_official_placement_calibrates_and_scores_every_site():
    net = _edsr()
    apply_placement(net, 'ddtb_official', method='ddtb', w_bits=2, a_bits=2)
    batches = [torch.rand(2, 3, 6, 6) * s for s in (1.0, 2.0, 4.0)]
    stats = calibrate_model(net, batches, shift=False, scale=False)
    names = [n for n, _ in _ddtb_layers(net)]
    assert set(names) <= set(stats) and len(names) == 6
    for name, m in _ddtb_layers(net):
        q = m.act_quantizer
        assert bool(q.initialized)
        assert q.lower.item() == pytest.approx(stats[name].lower)
        assert q.upper.item() == pytest.approx(stats[name].upper)
    seen = []
    net.body[0].register_forward_pre_hook(
        lambda m, i: seen.append(i[0].detach().clone()))
    scores = dynamic_scores(net, batches)
    assert set(scores) == set(names)
    # the skip site of block 0 sees the block input: var(max) + var(min)
    assert len(seen) == 3
    mx = np.array([float(h.max()) for h in seen])
    mn = np.array([float(h.min()) for h in seen])
    assert scores['body.0.skip_site'] == pytest.approx(
        np.var(mx) + np.var(mn))


# ------------------------------------------------------- RDN, official
def test_rdn_official_sites_and_quantized_concatenation():
    net = _rdn()
    apply_placement(net, 'ddtb_official', method='ddtb', w_bits=2, a_bits=2)
    sites = sorted(n for n, _ in act_sites(net))
    # RDB inputs + dense inputs after the first; LFF and GFF 1x1 in-conv
    assert sites == ['rdbs.0.input_site', 'rdbs.0.layers.1.input_site',
                     'rdbs.0.layers.2.input_site', 'rdbs.1.input_site',
                     'rdbs.1.layers.1.input_site',
                     'rdbs.1.layers.2.input_site']
    assert len(_ddtb_layers(net)) == 6 + 2 + 1
    convs = dict(quant_convs(net))
    assert convs['gff.1'].act_quantizer.bits == 32  # float input
    assert isinstance(convs['gff.0'].act_quantizer, DDTBActQuantizer)
    assert isinstance(convs['rdbs.0.layers.0.conv'].act_quantizer,
                      QuantizedInput)
    _set_bounds(net)
    net.eval()
    seen = {}
    layer = net.rdbs[0].layers[1]
    layer.register_forward_hook(
        lambda m, i, o: seen.update(inp=i[0], out=o))
    rdb_in = {}
    net.rdbs[0].register_forward_hook(
        lambda m, i, o: rdb_in.update(x=i[0], out=o))
    net(torch.rand(1, 3, 5, 5))
    q = layer.input_site.act_quantizer
    # the concatenation carries the quantized input (official DDTB_RDB_Conv_in)
    c_in = layer.conv.in_channels
    assert torch.equal(seen['out'][:, :c_in], seen['inp'])
    levels = seen['inp'].unique().numel()
    assert levels <= 2**q.bits
    # the RDB's residual is its quantized input (official DDTB_RDB)
    assert rdb_in['x'].unique().numel() <= 4


# ------------------------------------------------------- first stage
def test_first_stage_static_bounds_and_gate_loss():
    torch.manual_seed(0)
    q = DDTBActQuantizer(2, in_channels=4, gate_init='official').to(D)
    q.init_from_range(-1.0, 1.0)
    q.set_dynamic(True)
    assert q.gate.weight2.abs().sum() > 0  # official random init
    x = torch.randn(3, 4, 5, 5, dtype=D)
    q.first_stage = True
    y = q(x)
    assert_close(y, official_act(x, torch.tensor(-1.0, dtype=D),
                                 torch.tensor(1.0, dtype=D), 2),
                 atol=0, rtol=0)
    logits = q.gate.logits(x)
    loss = q.aux_loss()
    assert_close(loss, torch.nn.functional.mse_loss(
        logits, torch.zeros_like(logits)))
    loss.backward()
    assert q.gate.weight2.grad.abs().sum() > 0
    assert q.aux_loss() is None  # consumed
    q.first_stage = False
    s = q.gate(x)
    lo = (s[:, 1] * -1.0).view(-1, 1, 1, 1)
    hi = (s[:, 0] * 1.0).view(-1, 1, 1, 1)
    assert_close(q(x), official_act(x, lo, hi, 2), atol=1e-12, rtol=0)
    assert q.aux_loss() is None
    with pytest.raises(ValueError, match='gate_init'):
        DDTBActQuantizer(2, in_channels=4, gate_init='nope')


def test_first_stage_hook_switches_by_iteration():
    from odm_mm.ddtb_hook import DDTBCalibHook
    net = _edsr()
    apply_placement(net, 'ddtb_official', method='ddtb')
    model = SimpleNamespace(generator=net)
    hook = DDTBCalibHook(first_stage=0.25)
    for it, expect in ((0, True), (24, True), (25, False), (99, False)):
        hook.before_train_iter(SimpleNamespace(model=model, iter=it,
                                               max_iters=100), 0)
        assert all(m.act_quantizer.first_stage is expect
                   for _, m in _ddtb_layers(net))


def test_model_collects_the_first_stage_loss():
    from mmengine.registry import init_default_scope
    from mmagic.registry import MODELS
    from mmagic.structures import DataSample
    init_default_scope('mmagic')
    cfg = dict(type='ODMEditModel',
               generator=dict(type='EDSRNet', in_channels=3, out_channels=3,
                              mid_channels=8, num_blocks=2,
                              upscale_factor=4),
               pixel_loss=dict(type='L1Loss', loss_weight=1.0),
               quant_cfg=dict(method='ddtb', w_bits=2, a_bits=2,
                              placement='ddtb_official',
                              act_cfg=dict(gate_init='official')),
               skt_loss=None, var_loss=None,
               data_preprocessor=dict(type='DataPreprocessor'))
    model = MODELS.build(cfg)
    layers = _ddtb_layers(model.generator)
    for i, (_, m) in enumerate(layers):
        m.act_quantizer.set_dynamic(i < 2)
        m.act_quantizer.first_stage = True
    x = torch.rand(2, 3, 6, 6)
    sample = DataSample(gt_img=torch.rand(2, 3, 24, 24))
    losses = model.forward_train(x, sample)
    logits = [m.act_quantizer.gate.logits for _, m in layers[:2]]
    assert 'loss_quant_aux' in losses and losses['loss_quant_aux'] > 0
    # no first stage: no extra loss
    for _, m in layers:
        m.act_quantizer.first_stage = False
    assert 'loss_quant_aux' not in model.forward_train(x, sample)
    assert logits  # (the gates exist)
    with pytest.raises(ValueError, match='placement'):
        MODELS.build(dict(cfg, quant_cfg=dict(cfg['quant_cfg'],
                                              patterns=['body.*'])))


# --------------------------------------------------- read-outs are pure
def test_ddtb_codes_do_not_touch_the_gate_batchnorm():
    torch.manual_seed(0)
    q = DDTBActQuantizer(2, in_channels=4)
    q.init_from_range(-1.0, 1.0)
    q.set_dynamic(True)
    q.train()
    x = torch.randn(3, 4, 5, 5)
    before = {k: v.clone() for k, v in q.gate.bn.state_dict().items()}
    codes = q.codes(x)
    q.dequantize(codes, x)
    for k, v in q.gate.bn.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert q.gate.bn.training  # mode restored
    q.eval()
    assert_close(q.dequantize(q.codes(x), x), q(x), atol=0, rtol=0)


def test_progress_counts_the_ddtb_calibration(monkeypatch):
    """progress.py recognises OffsetHook subclasses (DDTBCalibHook) by
    their ``calibration_passes``, not by class name."""
    from odm_mm.ddtb_hook import DDTBCalibHook
    from odm_mm.hooks import OffsetHook
    from odm_mm.progress import ProgressFileHook
    net = nn.Sequential(nn.Conv2d(2, 2, 1))
    from odm_mm.swap import swap_convs
    swap_convs(net, [r'0'], method='ddtb')
    model = SimpleNamespace(quant_layers=lambda: quant_convs(net))
    monkeypatch.setattr(DDTBCalibHook, '_private_loader',
                        lambda s, r: [None] * 5)  # an epoch of 5 batches
    prog = ProgressFileHook.__new__(ProgressFileHook)
    for hook, passes in ((OffsetHook(num_batches=2), 6),
                         (DDTBCalibHook(num_batches=2), 6 + 2 * 5),
                         (DDTBCalibHook(num_batches=2, dynamic_batches=3),
                          6 + 2 * 3)):
        runner = SimpleNamespace(model=model, hooks=[hook])
        assert prog._calibration_passes(runner) == passes


def test_one_convention_for_every_method():
    """Storage under ``count_weight_ranges=True`` (docs/complexity.md, "One
    convention"): every float a deployed model stores, counted by hand."""
    from odm_mm.ddtb_hook import DDTBCalibHook
    from odm_mm.swap import swap_convs
    fp = sum(p.numel() for p in _edsr(64, 16).parameters())
    body_w = 32 * 64 * 64 * 9
    base = (fp - body_w) * 32 + body_w * 2  # weights only
    gate = (32 * 64 + 2 * 32) * 2 + 64 * 32 + 2 * 32  # + its 2 max|w|

    def count(method, placement=None):
        net = _edsr(64, 16)
        if placement:
            apply_placement(net, placement, method=method, w_bits=2,
                            a_bits=2)
        else:
            swap_convs(net, method=method, w_bits=2, a_bits=2)
        if method == 'ddtb':
            DDTBCalibHook(dynamic_ratio=0.3).nominal_choice(net)
        return count_complexity(net, probe_size=4,
                                count_weight_ranges=True).storage_bits

    # PAMS: alpha + max|w|; ODM: 2 bounds + 2 weight percentiles; DAQ: the
    # weight std; DDTB: 2 bounds + 2 weight percentiles + 9 gates
    assert count('pams') == base + 32 * (1 + 1) * 32
    assert count('odm') == base + 32 * (2 + 2) * 32
    assert count('daq') == base + 32 * 1 * 32
    assert count('ddtb') == base + 32 * (2 + 2) * 32 + 9 * gate
    # official placement: 48 x 2 bounds, 32 weight ranges, 14 gates
    assert count('ddtb', 'ddtb_official') == \
        base + 48 * 2 * 32 + 32 * 2 * 32 + 14 * gate
