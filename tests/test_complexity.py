"""Tests of odm_mm.analysis.complexity against hand counts and the paper.

Paper figures: Table 4 (EDSR x4), Table 5 (offset overhead), Table S3 (RDN,
SRResNet x4); conventions in docs/complexity.md.
"""
import importlib.util
import json
import os.path as osp

import pytest
import torch
from torch import nn

from odm_mm.analysis import count_complexity, storage_bits
from odm_mm.layers import QuantConv
from odm_mm.swap import quant_convs, swap_convs, unswap_convs

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))


def _load_tool(name):
    path = osp.join(ROOT, 'tools', 'analysis', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'_tool_{name}', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


table = _load_tool('complexity_table')


# ---------------------------------------------------------------- by hand
def test_one_quant_conv_by_hand():
    conv = QuantConv(4, 8, 3, padding=1, w_bits=2, a_bits=2)
    rep = count_complexity(conv, lr_shape=(4, 10, 12), probe_size=4)
    # weight 8*4*9 at 2 bits + bias 8 at 32 + lower/upper at 32
    assert rep.storage_bits == 288 * 2 + 8 * 32 + 2 * 32 == 896
    assert storage_bits(conv) == 896
    assert rep.params == 288 + 8 + 2
    macs = 8 * (10 * 12) * (4 * 9)
    assert rep.macs == macs == 34560
    assert rep.bitops == 2 * macs * 2 * 2 == 276480
    assert rep.out_shape == (8, 10, 12)

    conv.set_offsets(shift=True, scale=False)  # 4 values at 4 bits
    rep = count_complexity(conv, lr_shape=(4, 10, 12), probe_size=4)
    assert rep.storage_bits == 896 + 4 * 4
    # one add per input element, 4-bit offset x 32-bit activation
    assert rep.layers[0].offset_bitops == 4 * 120 * 4 * 32 == 61440
    assert rep.bitops == 276480 + 61440
    assert rep.layers[0].offset_vectors == 1

    conv.disable_quant()  # float conv with float offset: all at 32 bits
    rep = count_complexity(conv, lr_shape=(4, 10, 12), probe_size=4)
    assert rep.storage_bits == (288 + 8 + 2 + 4) * 32
    assert rep.bitops == 2 * macs * 32 * 32 + 4 * 120 * 32 * 32
    assert conv.quant_enabled is False  # switch restored


def test_strided_conv_geometry_and_linear():
    model = nn.Sequential(nn.Conv2d(3, 5, 3, stride=2), nn.Flatten(0),
                          nn.Linear(5 * 5 * 6, 7))
    rep = count_complexity(model, lr_shape=(3, 11, 13), probe_size=None)
    conv, lin = rep.layers[0], rep.layers[1]
    assert conv.out_shape == (5, 5, 6)
    assert conv.macs == 5 * 30 * 27
    assert lin.macs == 150 * 7
    assert rep.bitops == 2 * (4050 + 1050) * 32 * 32
    assert rep.params == 5 * 27 + 5 + 150 * 7 + 7


def test_probe_restores_state_and_counts_skip_and_other_params():
    class SkipQuant(nn.Module):
        bits = 8

        def forward(self, x):
            return x

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn = nn.BatchNorm2d(8)
            self.act = nn.PReLU()
            self.skip = SkipQuant()
            self.up = nn.PixelShuffle(2)

        def forward(self, x):
            y = self.act(self.bn(self.conv(x)))
            return self.up(y + self.skip(y))

    net = Net().train()
    swap_convs(net, patterns='conv', w_bits=4, a_bits=3, method='pams')
    observer = object()
    net.conv.observer = observer
    rep = count_complexity(net, hr_size=(40, 60))
    assert net.training and net.conv.training
    assert net.conv.observer is observer and net.conv.quant_enabled
    assert rep.lr_shape == (3, 20, 30) and rep.out_shape == (2, 40, 60)
    rows = {r.name: r for r in rep.layers}
    assert rows['bn'].kind == 'params' and rows['bn'].params == 16
    assert rows['act'].storage_bits == 32  # BN buffers are not counted
    assert rows['skip'].bitops == 8 * 600 * 8 * 8
    macs = 8 * 600 * 27
    assert rows['conv'].bitops == 2 * macs * 4 * 3
    # pams: weights at 4 bits, bias + alpha at 32 (+ max|w| on request)
    assert rows['conv'].storage_bits == 216 * 4 + 9 * 32
    assert storage_bits(net, count_weight_ranges=True) == \
        rep.storage_bits + 32
    with pytest.raises(ValueError, match='divisible'):
        count_complexity(net, hr_size=(41, 60))


def test_shared_module_called_twice_counts_twice():
    conv = nn.Conv2d(2, 2, 1, bias=False)
    model = nn.Sequential(conv, conv)
    rep = count_complexity(model, lr_shape=(2, 4, 4), probe_size=2)
    assert rep.params == 4  # stored once
    assert rep.macs == 2 * (2 * 16 * 2)
    assert rep.layers[0].calls == 2


def test_report_dict_and_table():
    conv = QuantConv(3, 4, 3, padding=1, w_bits=2, a_bits=2)
    rep = count_complexity(nn.Sequential(conv), hr_size=8, scale=1)
    d = rep.to_dict()
    json.dumps(d)
    assert d['storage_bits'] == rep.storage_bits
    assert d['layers'][0]['name'] == '0' and d['lr_shape'] == [3, 8, 8]
    text = rep.format_table()
    assert 'w2a2' in text and 'total' in text


# ----------------------------------------------------- paper's SRResNet
def test_paper_srresnet_reproduces_table_s3():
    model = table.PaperSRResNet()
    rep = count_complexity(model)
    assert rep.params == 1546771
    assert round(rep.storage_k, 1) == 1546.8
    assert round(rep.bitops_t, 1) == 588.8
    q = count_complexity(table.quantize(model, 2))
    assert round(q.storage_k, 1) == 440.9
    assert round(q.bitops_t, 1) == 276.9
    # Table S3 ODM row: offsets on every quantized conv -> 441.4K
    assert table.enable_offsets(model, None, None) == 64
    assert round(count_complexity(model).storage_k, 1) == 441.4


# ------------------------------------------------------- mmagic models
@pytest.fixture(scope='module')
def editors():
    return pytest.importorskip('mmagic.models.editors')


def test_edsr_x4_table4_and_table5(editors):
    model = table.build('EDSRNet')
    rep = count_complexity(model)
    assert rep.bitops == count_complexity(model, probe_size=(5, 7)).bitops
    assert rep.params == 1517571
    assert abs(rep.storage_k - 1517.6) < 0.05
    assert abs(rep.bitops_t - 527.1) / 527.1 < 0.002  # 526.37T
    for method in ('odm', 'pams'):
        q = table.quantize(table.build('EDSRNet'), 2, method)
        assert len(quant_convs(q)) == 32
        rq = count_complexity(q)
        assert abs(rq.storage_k - 411.7) < 0.05
        assert abs(rq.bitops_t - 215.1) / 215.1 < 0.005  # 214.49T
    # Table 5: +0.08K (+0.02%), +0.01T (+0.005%) = 10 vectors of 64
    assert table.enable_offsets(q, 5, 5) == 10
    ro = count_complexity(q)
    assert round(ro.offset_storage_k, 2) == 0.08
    assert round(ro.offset_bitops_t, 2) == 0.01
    assert round(100 * ro.offset_storage_k / rq.storage_k, 2) == 0.02
    assert round(100 * ro.offset_bitops_t / rq.bitops_t, 3) == 0.005
    assert ro.storage_bits - rq.storage_bits == 10 * 64 * 4


def test_rdn_x4_table_s3(editors):
    model = table.build('RDNNet')
    rep = count_complexity(model, probe_size=4)  # exact at any probe size
    assert rep.params == 22271107
    assert abs(rep.storage_k - 22271.1) < 0.05
    assert round(rep.bitops_t, 1) == 6032.9
    q = count_complexity(table.quantize(model, 2), probe_size=(4, 6))
    assert len(quant_convs(model)) == 16 * 9 + 2
    assert abs(q.storage_k - 1715.9) < 0.05  # 2 bounds per layer
    assert abs(q.bitops_t - 236.6) / 236.6 < 0.005  # 236.00T
    # PAMS (1 alpha per layer) needs its max|w| counted to give 1715.9K
    unswap_convs(model)
    table.quantize(model, 2, 'pams')
    assert round(storage_bits(model) / 32e3, 1) == 1715.7
    assert round(storage_bits(model, count_weight_ranges=True) / 32e3,
                 1) == 1715.9


def test_msrresnet_x4_counts(editors):
    rep = count_complexity(table.build('MSRResNet'))
    assert rep.params == 1517571  # same parameters as EDSR-baseline ...
    # ... but conv_hr runs at HR: +15 x 36864 MACs per LR pixel
    edsr = count_complexity(table.build('EDSRNet'))
    extra = 2 * 15 * 36864 * 270 * 480 * 32 * 32
    assert rep.bitops == edsr.bitops + extra


def test_cli_on_stock_config(editors, tmp_path):
    tool = _load_tool('complexity')
    cfg = 'mmagic::edsr/edsr_x4c64b16_1xb16-300k_div2k.py'
    out = tmp_path / 'r.json'
    res = tool.main([cfg, '--out', str(out), '--rows', '3'])
    assert abs(res['storage_k'] - 1517.6) < 0.05
    assert json.loads(out.read_text())['bitops'] == res['bitops']
    small = tool.main([cfg, '--hr-shape', '960x540', '--generator-only'])
    assert small['bitops'] * 4 == res['bitops']
    assert small['lr_shape'] == [3, 135, 240]


def test_cli_counts_offsets_from_checkpoint(editors, tmp_path):
    from mmengine.config import Config
    tool = _load_tool('complexity')
    cfg = 'mmagic::edsr/edsr_x4c64b16_1xb16-300k_div2k.py'
    opts = ['--cfg-options', 'model.type=ODMEditModel',
            'model.quant_cfg.w_bits=2', 'model.quant_cfg.a_bits=2']
    # an ODM checkpoint with 10 enabled offset vectors (Table 5)
    config = Config.fromfile(tool.resolve_config(cfg))
    config.merge_from_dict(tool.parse_args([cfg] + opts).cfg_options)
    gen = tool.build_generator(config)
    assert table.enable_offsets(gen, 5, 5) == 10
    ckpt = tmp_path / 'odm.pth'
    torch.save({'state_dict': {f'generator.{k}': v
                               for k, v in gen.state_dict().items()}}, ckpt)
    res = tool.main([cfg, str(ckpt)] + opts)
    assert res['offset_vectors'] == 10
    offset_bits = sum(r['offset_storage_bits'] for r in res['layers'])
    assert offset_bits == 10 * 64 * 4
    assert abs(res['storage_bits'] - offset_bits - 411.7 * 32e3) < 0.05 * 32e3
    assert round(res['offset_bitops_t'], 2) == 0.01
