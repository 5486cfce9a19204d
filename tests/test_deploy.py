"""Tests of odm_mm.deploy: artifact format, integer runtime, ONNX QDQ, CLI.

References are independent of the code under test: hand-packed bytes, hand
parameter counts and the paper's storage figure, the fake-quant model
(QuantConv) for the runtime, and onnxruntime for the ONNX graphs.
"""
import ast
import copy
import json
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from odm_mm.analysis.complexity import storage_bits
from odm_mm.deploy.export import export_artifact
from odm_mm.deploy.format import pack_bits, read_artifact, unpack_bits
from odm_mm.deploy.runtime import load_runtime
from odm_mm.swap import quant_convs, swap_convs

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
SET5 = osp.join(ROOT, '..', 'shared', 'data', 'Set5')


def edsr(mid=16, blocks=2):
    from mmagic.models.editors.edsr.edsr_net import EDSRNet
    return EDSRNet(3, 3, mid_channels=mid, num_blocks=blocks,
                   upscale_factor=4)


def edsr_cfg(mid=16, blocks=2):
    return dict(type='EDSRNet', in_channels=3, out_channels=3,
                mid_channels=mid, num_blocks=blocks, upscale_factor=4)


@torch.no_grad()
def calibrate(model, x):
    """1st/99th percentile bounds of every QuantConv input (FP32 pass)."""
    feats, hooks = {}, []
    for name, m in quant_convs(model):
        m.disable_quant()
        hooks.append(m.register_forward_pre_hook(
            lambda mod, inp, name=name: feats.__setitem__(
                name, inp[0].detach().clone())))
    model(x)
    for h in hooks:
        h.remove()
    for name, m in quant_convs(model):
        q = torch.quantile(feats[name].flatten()[::7], torch.tensor(
            [0.01, 0.99]))
        m.act_quantizer.init_from_range(float(q[0]), float(q[1]))
        m.enable_quant()


@torch.no_grad()
def upsampling_init(gen, body_gain=0.05):
    """Make a random EDSRNet a nearest-neighbour upsampler plus its body.

    conv_first copies RGB into channels 0-2 (other channels random), each
    PixelShufflePack conv replicates every channel into its 4 sub-pixels,
    conv_last reads channels 0-2: the output is nearest x4 upsampling of the
    input plus ``body_gain`` x what the (random, later quantized) body adds,
    so PSNR on a real image is meaningful (about 27 dB) without training.
    """
    def eye(conv, n):
        conv.weight[:n].zero_()
        conv.bias[:n].zero_()
        for c in range(n):
            conv.weight[c, c, 1, 1] = 1.0
    eye(gen.conv_first, 3)
    eye(gen.conv_last, 3)
    gen.conv_after_body.weight.mul_(body_gain)
    gen.conv_after_body.bias.zero_()
    for up in gen.upsample:
        conv = up.upsample_conv
        conv.weight.zero_()
        conv.bias.zero_()
        for c in range(conv.in_channels):
            conv.weight[4 * c:4 * c + 4, c, 1, 1] = 1.0


@torch.no_grad()
def quantized_edsr(method, bits, seed=0, mid=16, blocks=2, calib=None,
                   body_gain=0.05):
    """EDSRNet with calibrated bounds and non-trivial offsets."""
    torch.manual_seed(seed)
    gen = edsr(mid, blocks)
    upsampling_init(gen, body_gain)
    swap_convs(gen, w_bits=bits, a_bits=bits, method=method)
    calibrate(gen, torch.rand(2, 3, 24, 24) if calib is None else calib)
    for _, m in quant_convs(gen):  # a trained clipping factor ('odm_wcc')
        for p in m.weight_quantizer.parameters():
            p.data.fill_(0.7)
    g = torch.Generator().manual_seed(seed + 1)
    for name, shift, scale in (('body.0.conv1', True, True),
                               ('body.0.conv2', True, False),
                               ('body.1.conv2', False, True)):
        m = gen.get_submodule(name)
        m.set_offsets(shift, scale)
        m.shift.copy_(torch.rand(m.in_channels, generator=g) * 0.4 - 0.2)
        m.scale.copy_(torch.rand(m.in_channels, generator=g) * 0.6 + 0.7)
    return gen.eval()


def psnr(a, b, crop=4):
    a = a.clamp(0, 1)[..., crop:-crop, crop:-crop].double()
    b = b[..., crop:-crop, crop:-crop].double()
    return float(10 * torch.log10(1 / ((a - b)**2).mean()))


def _assert_float32_agreement(y, ref):
    """Runtime (float32 parts, exact integer sums) vs float32 fake quant.

    Float32 fake quant accumulates its convs with rounding error that
    depends on the CPU's kernel (FMA or not, blocking); an activation
    within that error of a rounding boundary can land one level apart from
    the exact integer runtime (docs/deploy.md). So: almost every element
    agrees to float32 rounding of the output (1e-5 at these magnitudes),
    and none differs by more than one code step of a 2-bit grid through
    this small body (0.05).
    """
    d = (y - ref).abs()
    assert float((d > 1e-5).float().mean()) <= 1e-3
    assert float(d.max()) <= 0.05


# ----------------------------------------------------------------- format
def test_pack_bits_hand_layout():
    # four 2-bit codes per byte, first code in the low bits
    assert pack_bits(np.array([0, 1, 2, 3, 3]), 2) == bytes([0xE4, 0x03])
    # 3-bit codes straddle bytes: 5,3,7 -> stream 101 110 111 (LSB first)
    assert pack_bits(np.array([5, 3, 7]), 3) == bytes([0xDD, 0x01])
    assert pack_bits(np.array([1, 0, 1, 1, 0, 0, 0, 1, 1]), 1) == bytes(
        [0x8D, 0x01])
    with pytest.raises(ValueError):
        pack_bits(np.array([4]), 2)
    rng = np.random.default_rng(0)
    for bits in range(1, 9):
        codes = rng.integers(0, 2**bits, size=1001)
        data = pack_bits(codes, bits)
        assert len(data) == -(-1001 * bits // 8)
        np.testing.assert_array_equal(unpack_bits(data, bits, 1001), codes)


def test_runtime_is_independent_of_training_modules():
    banned = {'layers', 'quantizers', 'swap', 'calibration', 'models',
              'attention', 'act_site', 'linear', 'conv'}
    for mod in ('runtime', 'runtime_tokens', 'format'):
        tree = ast.parse(open(osp.join(ROOT, 'odm_mm', 'deploy',
                                       f'{mod}.py')).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                parts = set((node.module or '').split('.'))
                assert not parts & banned, (mod, node.module)
                assert not {a.name for a in node.names} & banned
            elif isinstance(node, ast.Import):
                for a in node.names:
                    assert not set(a.name.split('.')) & banned


# ----------------------------------------------------- integer runtime
class Odd(nn.Module):
    """Convs with stride, dilation, groups, no bias and a 1x1 kernel."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, stride=2, padding=2, dilation=2)
        self.b = nn.Conv2d(8, 8, 3, padding=1, groups=4, bias=False)
        self.c = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        return self.c(torch.relu(self.b(self.a(x))))


@pytest.mark.parametrize('method', ['odm', 'pams', 'odm_wcc'])
def test_integer_conv_geometry_and_zero_padding(tmp_path, method):
    torch.manual_seed(0)
    fp = Odd()
    q = copy.deepcopy(fp)
    swap_convs(q, patterns=['a', 'b', 'c'], w_bits=3, a_bits=3,
               method=method)
    with torch.no_grad():
        for _, m in quant_convs(q):  # a_l far from 0: padding must not
            m.act_quantizer.init_from_range(0.6, 1.9)  # contribute a_l
        q.b.set_offsets(True, True)
        q.b.shift.uniform_(-0.3, 0.3)
    export_artifact(q, str(tmp_path))
    x = torch.rand(2, 3, 11, 9, dtype=torch.float64) * 3 - 1
    with torch.no_grad():
        ref = copy.deepcopy(q).double()(x)
        y64 = load_runtime(str(tmp_path), copy.deepcopy(fp),
                           torch.float64)(x)
        yint = load_runtime(str(tmp_path), copy.deepcopy(fp), torch.float64,
                            accumulate='int64')(x)
    assert (y64 - ref).abs().max() < 1e-12
    assert torch.equal(y64, yint)  # exact sums: both backends agree


@pytest.mark.parametrize('method', ['odm', 'pams', 'odm_wcc'])
@pytest.mark.parametrize('bits', [2, 3, 4])
def test_runtime_matches_fake_quant_edsr(tmp_path, method, bits):
    gen = quantized_edsr(method, bits, body_gain=1.0)
    res = export_artifact(gen, str(tmp_path), edsr_cfg())
    assert res.manifest['quant_layers']['body.0.conv1']['shift'] is not None
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    rt32 = load_runtime(str(tmp_path))  # EDSRNet rebuilt from the manifest
    rt64 = load_runtime(str(tmp_path), dtype=torch.float64)
    assert type(rt32).__name__ == 'EDSRNet'
    with torch.no_grad():
        ref32 = gen(x)
        ref64 = copy.deepcopy(gen).double()(x.double())
        y32, y64 = rt32(x), rt64(x.double())
    # float64: the same arithmetic up to float64 rounding
    assert (y64 - ref64).abs().max() <= 1e-9
    _assert_float32_agreement(y32, ref32)
    fp = copy.deepcopy(gen)  # not vacuous: quantization changes the output
    for _, m in quant_convs(fp):
        m.disable_quant()
    with torch.no_grad():
        assert (fp(x) - ref32).abs().max() > 1e-3


@pytest.mark.parametrize('method', ['odm', 'pams'])
@pytest.mark.parametrize('bits', [2, 3, 4])
def test_runtime_psnr_set5_baby(tmp_path, method, bits):
    lr_path = osp.join(SET5, 'LR_bicubic', 'X4', 'babyx4.png')
    hr_path = osp.join(SET5, 'HR', 'baby.png')
    if not (osp.isfile(lr_path) and osp.isfile(hr_path)):
        pytest.skip('Set5 baby not found in ../shared/data')

    def load(p):
        img = cv2.imread(p)[..., ::-1].astype(np.float32) / 255
        return torch.from_numpy(img.copy()).permute(2, 0, 1)[None]

    lr, hr = load(lr_path), load(hr_path)
    gen = quantized_edsr(method, bits, calib=lr[..., :48, :48],
                         body_gain=0.3)  # about 25.4 dB, varies with bits
    export_artifact(gen, str(tmp_path), edsr_cfg())
    with torch.no_grad():
        ref = gen(lr)
        out = load_runtime(str(tmp_path))(lr)
    hr = hr[..., :ref.shape[-2], :ref.shape[-1]]
    assert abs(psnr(out, hr) - psnr(ref, hr)) <= 0.01
    _assert_float32_agreement(out, ref)


# ------------------------------------------------------ sizes vs storage
def edsr_param_count(mid=64, blocks=16, scale_convs=2, colors=3):
    """Hand count of EDSR-baseline x4 parameters (weights + biases)."""
    conv = lambda cin, cout: cin * cout * 9 + cout  # noqa: E731
    return (conv(colors, mid) + 2 * blocks * conv(mid, mid) +
            conv(mid, mid) + scale_convs * conv(mid, 4 * mid) +
            conv(mid, colors))


@pytest.mark.parametrize('method', ['odm', 'pams'])
def test_artifact_size_matches_storage_figure(tmp_path, method, bits=2,
                                              paper_k=411.7):
    torch.manual_seed(0)
    gen = edsr(64, 16)  # the paper's EDSR-baseline x4
    names = swap_convs(gen, w_bits=bits, a_bits=bits, method=method)
    assert len(names) == 32
    gen.body[3].conv1.set_offsets(True, True)  # 2 x 64 4-bit offsets
    gen.body[3].conv1.shift.data.normal_()
    res = export_artifact(gen, str(tmp_path), edsr_cfg(64, 16))

    n_q = 32 * 64 * 64 * 9
    bounds = 2 if method == 'odm' else 1
    expected = ((edsr_param_count() - n_q) * 32 + n_q * bits +
                32 * bounds * 32 + 2 * 64 * 4)
    assert storage_bits(gen) == expected == res.storage_bits
    # Table 4: 411.7K (offsets: + 0.08K for 10 layers in Table 5)
    assert round((expected - 2 * 64 * 4) / 32e3, 1) == paper_k
    # tensors.bin = storage figure + weight ranges (2 or 1 float32 per
    # layer) + the offsets' [min, max] (2 float32 each); codes pack exactly
    ranges = 32 * bounds * 4 + 2 * 2 * 4
    assert res.blob_bytes == expected // 8 + ranges
    assert res.ratio < 1.03  # with manifest.json (about 2% of it)
    assert osp.getsize(osp.join(str(tmp_path), 'tensors.bin')) == \
        res.blob_bytes
    manifest, tensors = read_artifact(str(tmp_path))
    entry = manifest['tensors']['body.0.conv1.weight']
    assert entry['dtype'] == 'packed' and entry['bits'] == bits
    assert entry['nbytes'] == 64 * 64 * 9 * bits // 8
    assert tensors['body.0.conv1.weight'].max() <= 2**bits - 1


def test_export_refuses_disabled_quant_and_corrupt_blob(tmp_path):
    gen = quantized_edsr('odm', 2)
    gen.body[0].conv1.disable_quant()
    with pytest.raises(ValueError, match='disabled'):
        export_artifact(gen, str(tmp_path / 'a'))
    gen.body[0].conv1.enable_quant()
    export_artifact(gen, str(tmp_path / 'b'))  # no generator_cfg
    with open(tmp_path / 'b' / 'manifest.json') as f:
        assert json.load(f)['generator']['kwargs'] is None
    with pytest.raises(ValueError, match='kwargs'):
        load_runtime(str(tmp_path / 'b'))
    blob = tmp_path / 'b' / 'tensors.bin'
    data = bytearray(blob.read_bytes())
    data[10] ^= 1
    blob.write_bytes(bytes(data))
    with pytest.raises(ValueError, match='sha256'):
        read_artifact(str(tmp_path / 'b'))


# ------------------------------------------------------------------ ONNX
@pytest.mark.parametrize('method', ['odm', 'pams'])
@pytest.mark.parametrize('bits,opset,container', [(4, 21, 4), (8, 17, 8),
                                                  (2, 25, 2), (3, 21, 4)])
def test_onnx_qdq_matches_fake_quant(tmp_path, method, bits, opset,
                                     container):
    import onnx
    from odm_mm.deploy.onnx_export import export_onnx, ort_session
    gen = quantized_edsr(method, bits)
    path = str(tmp_path / 'm.onnx')
    info = export_onnx(gen, path, form='storage')
    assert info.form == 'storage' and info.opset == opset
    assert {c['act'] for c in info.containers.values()} == {container}
    proto = onnx.load(path)
    ops = {n.op_type for n in proto.graph.node}
    assert {'QuantizeLinear', 'DequantizeLinear', 'DepthToSpace'} <= ops
    codes = next(t for t in proto.graph.initializer
                 if t.name == 'body.0.conv1.weight_codes')
    assert len(codes.raw_data) == 16 * 16 * 9 * container // 8  # packed
    x = torch.rand(2, 3, 12, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = gen(x).numpy()
    import onnxruntime as ort
    y = ort.InferenceSession(path).run(None, {'input': x.numpy()})[0]
    assert y.shape == ref.shape == (2, 3, 48, 64)  # dynamic H, W
    # ODM's Clip/Sub/Q/DQ/Add is bit-exact to fake_quant; PAMS divides by
    # a/q where torch multiplies by q/a (1 ulp before rounding).
    assert np.abs(y - ref).max() <= 1e-5
    if bits in (2, 3):  # the same grid in 8-bit containers
        info8 = export_onnx(gen, path, form='storage', container_bits=8)
        assert info8.opset == 17
        y8 = ort_session(path).run(None, {'input': x.numpy()})[0]
        assert np.abs(y8 - ref).max() <= 1e-5


# ------------------------------------------------------------------- CLI
def _cli_setup(tmp_path):
    """The export tool as a module, the lead config, a tiny trained-like
    checkpoint of it, and the --cfg-options that make it tiny."""
    import importlib.util

    from mmagic.registry import MODELS
    from mmengine.config import Config
    cfg_file = osp.join(ROOT, 'configs', 'odm', 'edsr_x4_w4a4.py')
    tool_file = osp.join(ROOT, 'tools', 'deploy', 'export.py')
    spec = importlib.util.spec_from_file_location('_deploy_tool', tool_file)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    small = ['model.generator.mid_channels=16', 'model.generator.num_blocks=2']
    cfg = Config.fromfile(cfg_file)
    cfg.merge_from_dict({'model.generator.mid_channels': 16,
                         'model.generator.num_blocks': 2})
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    calibrate(model.generator, torch.rand(2, 3, 24, 24))
    with torch.no_grad():
        model.generator.body[1].conv1.set_offsets(True, False)
        model.generator.body[1].conv1.shift.uniform_(-0.3, 0.3)
    ckpt = str(tmp_path / 'model.pth')
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, ckpt)
    return tool, cfg, cfg_file, model, ckpt, small


def test_cli_export_with_lead_config(tmp_path, capsys, monkeypatch):
    import re
    tool, cfg, cfg_file, model, ckpt, small = _cli_setup(tmp_path)
    out = str(tmp_path / 'artifact')
    monkeypatch.setattr('sys.argv', ['export.py', cfg_file, ckpt, out,
                                     '--onnx', '--check', '--cfg-options',
                                     *small])
    tool.main()
    text = capsys.readouterr().out
    runtime, onnx_part = text.split('onnxruntime (model.onnx)')
    diffs = [float(v.rstrip(','))
             for v in re.findall(r'max \|diff\| = (\S+)', runtime)]
    # float64 sums: on real images a few float32 activations of the
    # fake-quant model sit on a rounding boundary and flip one code (one
    # step of a 4-bit grid times this body's gain, ~1e-4 here)
    assert len(diffs) == 2 and max(diffs) <= 1e-3, text
    # integer ONNX: 8-bit requantised conv outputs and nudged grids (see
    # test_onnx_integer.py for the bounds); real images, not noise
    assert re.findall(r'Set5/|skimage/', onnx_part), text
    deltas = [float(v) for v in re.findall(r'diff ([-+]\d\.\d+)\)',
                                           onnx_part)]
    assert len(deltas) == 2 and max(abs(d) for d in deltas) <= 0.05, text
    assert re.search(r'artifact / storage = 1\.0\d', text), text
    manifest, _ = read_artifact(out)
    assert manifest['generator']['kwargs']['mid_channels'] == 16
    assert manifest['quant_layers']['body.1.conv1']['shift'] is not None
    assert osp.isfile(osp.join(out, 'model.onnx'))
    x = torch.rand(1, 3, 10, 14)
    with torch.no_grad():
        assert (load_runtime(out)(x) - model.generator(x)).abs().max() <= \
            1e-5
    state = dict(model.state_dict(), extra=torch.zeros(1))  # strict load
    torch.save({'state_dict': state}, ckpt)
    with pytest.raises(RuntimeError, match='extra'):
        tool.build_model(cfg, ckpt)


def test_cli_export_deploy_profile_and_storage_form(tmp_path, capsys,
                                                    monkeypatch):
    from odm_mm.deploy.onnx_export import optimized_ops
    tool, _, cfg_file, _, ckpt, small = _cli_setup(tmp_path)

    def run(out, *flags):
        monkeypatch.setattr('sys.argv', ['export.py', cfg_file, ckpt, out,
                                         *flags, '--cfg-options', *small])
        tool.main()
        return capsys.readouterr().out

    out = str(tmp_path / 'deploy')
    text = run(out, '--onnx', '--profile', 'deploy')
    assert 'integer form' in text and 'profile deploy' in text, text
    ops = optimized_ops(osp.join(out, 'model.onnx'))
    assert ops['QLinearConv'] == 9 and ops['Conv'] == 0  # all 9 convs
    text = run(str(tmp_path / 'storage'), '--onnx', '--onnx-form', 'storage')
    assert 'storage form, opset 21' in text and 'float compute' in text
    with pytest.raises(SystemExit, match='add --onnx'):
        run(str(tmp_path / 'none'), '--profile', 'deploy')


@pytest.mark.parametrize('bits', [2, 4, 8])
def test_onnx_odm_qdq_rounds_as_eq1(tmp_path, bits):
    """One input channel, 1x1 kernel, storage form: Eq. 1's rounding.

    The activation codes must be Eq. 1's exactly (a wrong rounding at a
    tie moves an output by ``step * |w| >= 0.02``). The conv's multiply-add
    itself is a float kernel: with or without a fused multiply-add it is
    within two float32 roundings of the float64 value, ``2 eps (|xq w| +
    |b|)``; both the torch model and onnxruntime are checked against that
    float64 reference, so the test holds whichever the CPU's kernel picks.
    """
    from odm_mm.deploy.onnx_export import export_onnx, ort_session
    from odm_mm.quantizers import fake_quant
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 1))
    swap_convs(net, patterns=['0'], w_bits=bits, a_bits=bits)
    layer = net[0]
    layer.act_quantizer.init_from_range(-0.731, 1.91)
    lo, hi = layer.act_quantizer.lower, layer.act_quantizer.upper
    step = (hi - lo) / (2**bits - 1)
    ties = (torch.arange(2**bits - 1) + 0.5) * step + lo  # rounding ties
    x = torch.cat([torch.rand(4000) * 3.2 - 1, ties.detach(),
                   torch.nextafter(ties, torch.tensor(9.)).detach()])
    x = x.view(1, 1, 1, -1)
    with torch.no_grad():
        xq = fake_quant(x, lo, hi, bits).double()
        w = layer.weight_quantizer(layer.weight).double().view(1, 4, 1, 1)
        b = layer.bias.double().view(1, 4, 1, 1)
        ref64 = (xq * w + b).numpy()
        bound = 2 * np.finfo(np.float32).eps * (xq.abs() * w.abs() +
                                                b.abs()).numpy()
        assert (abs(net(x).double().numpy() - ref64) <= bound).all()
        # a one-level error would be far outside the bound
        assert float(((hi - lo) / (2**bits - 1)) * w.abs().min()) > \
            100 * bound.max()
    export_onnx(net, str(tmp_path / 'm.onnx'), input_shape=x.shape,
                form='storage')
    y = ort_session(str(tmp_path / 'm.onnx')).run(None, {'input': x.numpy()})
    assert (abs(y[0].astype(np.float64) - ref64) <= bound).all()
