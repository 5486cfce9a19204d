"""SwinIR complexity, integer export/runtime and the config through
tools/train.py + tools/test.py (issue: transformer restorers)."""
import copy
import json

import pytest
import torch

import odm_mm
from odm_mm.analysis.complexity import KIND_FAMILY, count_complexity
from odm_mm.calibration import calibrate_model
from odm_mm.layers.attention import quant_acts
from odm_mm.swap import swap_convs

from conftest import REPO

pytestmark = pytest.mark.skipif(
    not odm_mm.HAS_MMAGIC, reason='mmagic (with mmcv ops) not importable')

KW = dict(img_size=16, embed_dim=16, depths=[2], num_heads=[2],
          window_size=4, mlp_ratio=2, upscale=2,
          upsampler='pixelshuffledirect')


def swinir(**over):
    from mmagic.models.editors.swinir.swinir_net import SwinIRNet
    return SwinIRNet(**dict(KW, **over))


@pytest.mark.parametrize('bits', [2, 4])
def test_complexity_counts_linears_and_matmuls(bits):
    """Hand formulas at an LR size that is a multiple of the window:
    Linear MACs = tokens x in x out; attention = 2 x tokens x N x C;
    BitOPs = 2 x MACs x b x b (activations x activations for matmuls)."""
    net = swinir()
    h, w, c, n = 8, 12, 16, 16  # LR, embedding, tokens per window (4 x 4)
    tokens = h * w
    fp = count_complexity(net, lr_shape=(3, h, w))
    rows = {r.name: r for r in fp.layers}
    blk = 'layers.0.residual_group.blocks.0.'
    assert rows[blk + 'attn.qkv'].macs == tokens * c * 3 * c
    assert rows[blk + 'mlp.fc1'].macs == tokens * c * 2 * c
    assert rows[blk + 'attn'].kind == 'matmul'
    assert rows[blk + 'attn'].macs == 2 * tokens * n * c
    assert rows[blk + 'attn'].bitops == 2 * rows[blk + 'attn'].macs * 32 * 32
    swap_convs(net, w_bits=bits, a_bits=bits)
    q = count_complexity(net, lr_shape=(3, h, w))
    qrows = {r.name: r for r in q.layers}
    assert qrows[blk + 'attn'].bitops == \
        2 * rows[blk + 'attn'].macs * bits * bits
    assert qrows[blk + 'attn.qkv'].kind == 'qlinear'
    assert qrows[blk + 'attn.qkv'].bitops == \
        2 * tokens * c * 3 * c * bits * bits
    # storage: quantized Linear weights at w_bits, their bias at 32 bits
    lin = net.get_submodule(blk + 'attn.qkv')
    assert qrows[blk + 'attn.qkv'].storage_bits == \
        lin.weight.numel() * bits + lin.bias.numel() * 32 + 2 * 32
    assert qrows[blk + 'attn.q_quant'].kind == 'qact'
    assert qrows[blk + 'attn.q_quant'].storage_bits == 2 * 32
    fam = {}
    for r in q.layers:
        fam.setdefault(KIND_FAMILY.get(r.kind, 'other'), []).append(r)
    assert sum(r.macs for r in fam['linear']) == \
        2 * tokens * (3 * c * c + c * c + 2 * c * 2 * c)
    assert q.macs == fp.macs


@pytest.mark.parametrize('method', ['odm', 'pams', 'odm_wcc'])
def test_export_round_trip_swinir(tmp_path, method):
    """The integer runtime (Linears and both matmuls on integer codes)
    equals the fake-quant SwinIR in float64, with both accumulators."""
    from odm_mm.deploy.export import export_artifact
    from odm_mm.deploy.runtime import load_runtime
    torch.manual_seed(5)
    fp = swinir()
    net = copy.deepcopy(fp)
    swap_convs(net, w_bits=3, a_bits=3, method=method)
    calibrate_model(net, [torch.rand(2, 3, 16, 16)], ratio=0.5)
    for _, m in net.named_modules():  # trained, non-identity offsets
        if hasattr(m, 'shift_enabled') and bool(m.shift_enabled):
            m.shift.data.uniform_(-0.1, 0.1)
    res = export_artifact(net.eval(), str(tmp_path), dict(type='SwinIRNet',
                                                          **KW))
    kinds = [r['kind'] for r in res.manifest['quant_layers'].values()]
    assert kinds.count('linear') == 8 and kinds.count('conv') == 1
    assert len(res.manifest['quant_attentions']) == 2
    x = torch.rand(1, 3, 12, 20, dtype=torch.float64)  # padded, shifted
    with torch.no_grad():
        ref = copy.deepcopy(net).double()(x)
        rt = load_runtime(str(tmp_path), dtype=torch.float64)
        y = rt(x)
        yi = load_runtime(str(tmp_path), dtype=torch.float64,
                          accumulate='int64')(x)
        assert type(rt).__name__ == 'SwinIRNet'
        assert (y - ref).abs().max() < 1e-12
        assert torch.equal(y, yi)
        assert (fp.double()(x) - ref).abs().max() > 1e-3  # not vacuous


def test_export_refusals(tmp_path):
    from odm_mm.deploy.export import export_artifact
    from odm_mm.deploy.onnx_export import export_onnx
    net = swinir()
    swap_convs(net, w_bits=2, a_bits=2, method='odm')
    calibrate_model(net, [torch.rand(1, 3, 16, 16)])
    with pytest.raises(ValueError, match='storage ONNX form covers QuantConv '
                       'layers only; this network has 16 quantized Linear'):
        export_onnx(net, str(tmp_path / 'm.onnx'), form='storage')
    dict(quant_acts(net))['layers.0.residual_group.blocks.1.attn.v_quant'] \
        .disable_quant()
    with pytest.raises(ValueError, match='disabled on its v operand'):
        export_artifact(net, str(tmp_path / 'a'))
    daq = swinir()
    swap_convs(daq, w_bits=2, a_bits=2, method='daq')
    with pytest.raises(ValueError, match='integer'):
        export_artifact(daq, str(tmp_path / 'b'))


@pytest.mark.parametrize('method', ['odm', 'pams'])
def test_integer_onnx_of_linears_and_attention(tmp_path, method):
    """The integer ONNX form carries QuantLinear and the attention
    operands: it loads with default onnxruntime options, every quantized
    Linear becomes an integer matmul in the optimized graph, and the output
    follows the fake-quant model (bound: 4-bit grids nudged into 8-bit
    codes and 8-bit requantised matmul outputs; measured mean ~1e-3)."""
    import numpy as np
    import onnxruntime as ort

    from odm_mm.deploy.onnx_export import export_onnx, optimized_ops
    from odm_mm.layers.linear import QuantLinear
    net = swinir()
    swap_convs(net, w_bits=4, a_bits=4, method=method)
    calibrate_model(net, [torch.rand(1, 3, 16, 16,
                                     generator=torch.Generator()
                                     .manual_seed(0))])
    net.eval()
    path = str(tmp_path / 'm.onnx')
    export_onnx(net, path, input_shape=(1, 3, 16, 16))
    sess = ort.InferenceSession(path)  # default options
    ops = optimized_ops(path)
    linears = sum(isinstance(m, QuantLinear) for m in net.modules())
    assert ops['MatMulIntegerToFloat'] + ops['QLinearMatMul'] >= linears
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = net(x).numpy()
    y = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert y.shape == ref.shape
    assert np.abs(y - ref).mean() <= 5e-3
    assert np.abs(y - ref).max() <= 0.1


def _tiny_swinir_config(tmp_path, fp32):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(f'''
_base_ = [{str(REPO / 'configs' / 'odm' / 'swinir_light_x4_w2a2.py')!r}]
model = dict(generator=dict(img_size=12, embed_dim=16, depths=[2],
                            num_heads=[2], window_size=4),
             fp32_checkpoint={str(fp32)!r})
train_pipeline = [
    dict(type='LoadImageFromFile', key='gt', color_type='color',
         channel_order='rgb', imdecode_backend='cv2'),
    dict(type='Crop', keys=['gt'], crop_size=(48, 48), random_crop=True),
    dict(type='CopyValues', src_keys=['gt'], dst_keys=['img']),
    dict(type='MATLABLikeResize', keys=['img'], output_shape=(12, 12)),
    dict(type='ToUint8', keys=['img']),
    dict(type='SetValues', dictionary=dict(
        scale=4, img_channel_order='rgb', img_color_type='color')),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    num_workers=0, batch_size=2, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(_delete_=True, type='SRFolderDataset',
                 metainfo=dict(dataset_type='t91', task_name='sisr'),
                 data_root=_base_.odm_data_root, data_prefix=dict(gt='T91'),
                 min_gt_size=48, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0)
test_dataloader = _base_.odm_test_dataloader
test_evaluator = _base_.odm_test_evaluator
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=2,
                 val_interval=100)
param_scheduler = dict(_delete_=True, type='MultiStepLR', by_epoch=False,
                       milestones=[1], gamma=0.5)
custom_hooks = [dict(type='OffsetHook', ratio=0.5, num_batches=1),
                dict(type='NumericalGuardHook')]
default_hooks = dict(logger=dict(interval=1),
                     checkpoint=dict(interval=2, save_best=None))
''')
    return cfg


def test_swinir_config_trains_and_tests(tmp_path, tiny_data_root):
    """configs/odm/swinir_light_x4_w2a2.py through tools/train.py and
    tools/test.py at smoke size (tiny SwinIR, 2 iterations, T91 data)."""
    import runpy
    import sys
    from tiny_odm import isolated_runs, load, train
    torch.manual_seed(0)
    fp = swinir(img_size=12, upscale=4)
    fp32 = tmp_path / 'fp32.pth'
    torch.save({'meta': {}, 'state_dict': {
        f'generator.{k}': v for k, v in fp.state_dict().items()}}, fp32)
    cfg = _tiny_swinir_config(tmp_path, fp32)
    work = tmp_path / 'work'
    train(cfg, work, tiny_data_root)
    state = load(work / 'iter_2.pth')['state_dict']
    blk = 'generator.layers.0.residual_group.blocks.0.attn.'
    for key in ('qkv.act_quantizer.upper', 'qkv.weight',
                'attn_quant.act_quantizer.lower', 'q_quant.act_quantizer.'
                'initialized'):
        assert blk + key in state, key
    assert bool(state[blk + 'q_quant.act_quantizer.initialized'])
    # the quantized Linear weights moved (QAT trained them)
    assert not torch.equal(state[blk + 'qkv.weight'],
                           fp.state_dict()['layers.0.residual_group.blocks.'
                                           '0.attn.qkv.weight'])
    out = tmp_path / 'metrics.json'
    argv = [str(REPO / 'tools' / 'test.py'), str(cfg),
            str(work / 'iter_2.pth'), '--work-dir', str(tmp_path / 'test'),
            '--out', str(out), '--cfg-options',
            f'odm_data_root={tiny_data_root}']
    with isolated_runs():
        sys.argv = argv
        runpy.run_path(argv[0], run_name='__main__')
    metrics = json.loads(out.read_text()) if out.suffix == '.json' else {}
    assert any('Set5' in k and 'PSNR' in k for k in metrics), metrics


def test_complexity_table_split_adds_up():
    """tools/analysis/complexity_swinir.py: the per-kind split of MACs and
    BitOPs adds up to the totals (nothing counted twice or left out)."""
    import sys
    sys.path.insert(0, str(REPO / 'tools' / 'analysis'))
    from complexity_swinir import FAMILIES, row
    kw = dict(KW, upscale=4)
    fp, q = row(32, kw), row(2, kw)
    for r in (fp, q):
        assert sum(r['split'][f]['macs'] for f in FAMILIES) == \
            pytest.approx(r['gmacs'] * 1e9)
        assert sum(r['split'][f]['bitops'] for f in FAMILIES) == \
            pytest.approx(r['bitops_t'] * 1e12)
    assert q['split']['linear']['bitops'] * 256 == \
        fp['split']['linear']['bitops']  # 2 x 2 bits vs 32 x 32
