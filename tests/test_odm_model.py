"""ODMEditModel + CooperativeOptimWrapper + OffsetHook pieces (no Runner)."""
import copy

import pytest
import torch
from mmengine.logging import MessageHub
from mmengine.registry import DefaultScope
from mmengine.optim import OptimWrapper
from torch.testing import assert_close

import odm_mm  # noqa: F401  (registers)
from mmagic.registry import MODELS, OPTIM_WRAPPERS
from mmagic.structures import DataSample
from odm_mm.gate import LossParts
from odm_mm.layers import QuantConv
from odm_mm.calibration import apply_calibration, calibrate
from mmagic.utils import register_all_modules

register_all_modules(init_default_scope=True)

GEN = dict(type='EDSRNet', in_channels=3, out_channels=3, mid_channels=8,
           num_blocks=2, upscale_factor=2, rgb_mean=[0.4488, 0.4371, 0.4040],
           rgb_std=[1.0, 1.0, 1.0])


def build(tmp_path=None, ckpt=None, **kw):
    cfg = dict(type='ODMEditModel', generator=copy.deepcopy(GEN),
               pixel_loss=dict(type='L1Loss', loss_weight=1.0),
               quant_cfg=dict(w_bits=2, a_bits=2),
               skt_loss=dict(type='SKTLoss'),
               var_loss=dict(type='VarianceRegLoss', loss_weight=1e-2),
               fp32_checkpoint=ckpt,
               data_preprocessor=dict(type='DataPreprocessor', mean=[0.] * 3,
                                      std=[255.] * 3))
    cfg.update(kw)
    with DefaultScope.overwrite_default_scope('mmagic'):
        return MODELS.build(cfg)


def fp32_ckpt(tmp_path, gen_cfg=GEN, seed=0):
    torch.manual_seed(seed)
    with DefaultScope.overwrite_default_scope('mmagic'):
        gen = MODELS.build(copy.deepcopy(gen_cfg))
    path = tmp_path / 'fp32.pth'
    torch.save({'meta': {}, 'state_dict': {
        f'generator.{k}': v for k, v in gen.state_dict().items()}}, path)
    return gen, str(path)


def batch(n=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    lr = torch.rand(n, 3, 6, 6, generator=g) * 255
    gt = torch.rand(n, 3, 12, 12, generator=g) * 255
    samples = []
    for i in range(n):
        samples.append(DataSample(gt_img=gt[i]))
    return dict(inputs=list(lr), data_samples=samples)


def calibrated(model, data):
    d = model.data_preprocessor(data, True)
    stats = calibrate(model.generator, [d['inputs']])
    apply_calibration(model.generator, stats, ratio=0.5)
    return stats


def test_swap_teacher_and_fp32_identity(tmp_path):
    gen, path = fp32_ckpt(tmp_path)
    model = build(ckpt=path)
    assert model.quantized_layers == ['body.0.conv1', 'body.0.conv2',
                                      'body.1.conv1', 'body.1.conv2']
    model.init_weights()  # mmengine init, then the FP32 weights
    assert all(not p.requires_grad for p in model.teacher.parameters())
    x = torch.rand(1, 3, 6, 6)
    gen.eval()
    model.eval()
    for _, m in model.quant_layers():
        m.disable_quant()
    with torch.no_grad():
        assert_close(model.generator(x), gen(x), atol=0, rtol=0)
        assert_close(model.teacher(x), gen(x), atol=0, rtol=0)


def test_fp32_checkpoint_mismatch_is_one_clear_error(tmp_path):
    other = dict(GEN, mid_channels=4)
    _, path = fp32_ckpt(tmp_path, other)
    model = build(ckpt=path)
    with pytest.raises(ValueError, match='does not fit the generator.*shape'):
        model.init_weights()


def test_bad_quant_cfg():
    with pytest.raises(ValueError, match='unknown keys'):
        build(quant_cfg=dict(w_bits=2, bits=3))
    with pytest.raises(ValueError, match='w_bits'):
        build(quant_cfg=dict(w_bits=9, a_bits=2))
    with pytest.raises(ValueError, match='match no layer'):
        build(quant_cfg=dict(patterns=['nope']))


def test_losses_and_cooperative_step(tmp_path):
    _, path = fp32_ckpt(tmp_path)
    model = build(ckpt=path)
    model.init_weights()
    data = batch()
    calibrated(model, data)
    wrapper = OPTIM_WRAPPERS.build(dict(
        type='CooperativeOptimWrapper',
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1)))
    model.train()
    d = model.data_preprocessor(data, True)
    losses = model(**d, mode='loss')
    assert set(losses) == {'loss_pix', 'loss_skt', 'loss_var'}
    parsed, log_vars = model.parse_losses(losses)
    assert isinstance(parsed, LossParts)
    assert_close(parsed.reg, losses['loss_var'])
    assert_close(parsed.recon, losses['loss_pix'] + losses['loss_skt'])
    assert 'loss' in log_vars
    before = [p.detach().clone() for p in model.generator.parameters()]
    model.train_step(data, wrapper)
    ratio = MessageHub.get_current_instance().get_scalar(
        'train/conflict_ratio').current()
    assert 0.0 < ratio < 1.0
    assert wrapper.last_conflict_ratio == ratio
    changed = [not torch.equal(a, p) for a, p in
               zip(before, model.generator.parameters())]
    assert any(changed)


def _manual_grads(model, data):
    d = model.data_preprocessor(data, True)
    losses = model(**d, mode='loss')
    parts, _ = model.parse_losses(losses)
    params = [p for p in model.parameters() if p.requires_grad]
    g_v = torch.autograd.grad(parts.reg, params, retain_graph=True,
                              allow_unused=True)
    g_r = torch.autograd.grad(parts.recon, params, allow_unused=True)
    return params, g_r, g_v


@pytest.mark.parametrize('mode', ['cooperative', 'plain'])
def test_wrapper_equals_hand_gated_sgd_step(tmp_path, mode):
    _, path = fp32_ckpt(tmp_path)
    model = build(ckpt=path)
    model.init_weights()
    data = batch()
    calibrated(model, data)
    model.train()
    ref = copy.deepcopy(model)
    params, g_r, g_v = _manual_grads(ref, data)
    expected = []
    conflicts = total = 0
    for p, a, b in zip(params, g_r, g_v):
        a = torch.zeros_like(p) if a is None else a
        if b is not None:
            keep = (a * b) >= 0
            conflicts += int((~keep).sum())
            total += int(torch.count_nonzero(b))
            b = b if mode == 'plain' else torch.where(keep, b, 0 * b)
            a = a + b
        expected.append(p.detach() - 0.5 * a)
    wrapper = sgd_wrapper(model, mode)
    model.train_step(data, wrapper)
    got = [p for p in model.parameters() if p.requires_grad]
    for e, g in zip(expected, got):
        assert_close(g.detach(), e, rtol=1e-5, atol=1e-6)
    assert wrapper.last_conflict_ratio == pytest.approx(conflicts / total)


def sgd_wrapper(model, mode='cooperative', **kwargs):
    """CooperativeOptimWrapper around SGD(lr=0.5) on the trainable params."""
    return OPTIM_WRAPPERS.build(dict(
        type='CooperativeOptimWrapper', mode=mode,
        optimizer=torch.optim.SGD(
            [p for p in model.parameters() if p.requires_grad], lr=0.5),
        **kwargs))


def sample_std_model(ckpt, data, bits=2):
    """FP32-initialised, calibrated model with per-sample sigma (the mode in
    which a split batch sums exactly to the full batch)."""
    model = build(ckpt=ckpt, quant_cfg=dict(w_bits=bits, a_bits=bits,
                                            std_mode='sample'))
    model.init_weights()
    calibrated(model, data)
    model.train()
    return model


def test_gradient_accumulation_matches_full_batch(tmp_path):
    """2 micro-batches with accumulative_counts=2 == 1 batch of both."""
    _, path = fp32_ckpt(tmp_path)
    data = batch(4)
    model = sample_std_model(path, data, bits=4)
    ref = copy.deepcopy(model)
    w_full = sgd_wrapper(ref)
    ref.train_step(data, w_full)
    halves = [dict(inputs=data['inputs'][i:i + 2],
                   data_samples=data['data_samples'][i:i + 2])
              for i in (0, 2)]
    w_acc = sgd_wrapper(model, accumulative_counts=2)
    w_acc.initialize_count_status(model, 0, 2)
    for h in halves:
        model.train_step(h, w_acc)
    for a, b in zip(model.generator.parameters(), ref.generator.parameters()):
        assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_var_loss_requires_cooperative_wrapper(tmp_path):
    model = build()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(TypeError, match='CooperativeOptimWrapper'):
        model.train_step(batch(), wrapper)


def test_pams_model_plain_wrapper_trains():
    model = build(quant_cfg=dict(w_bits=2, a_bits=2, method='pams'),
                  var_loss=None)
    data = batch()
    calibrated(model, data)
    assert all(isinstance(m, QuantConv) and m.method == 'pams'
               for _, m in model.quant_layers())
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    log_vars = model.train_step(data, wrapper)
    assert set(log_vars) >= {'loss', 'loss_pix', 'loss_skt'}
    assert torch.isfinite(log_vars['loss'])


def test_skt_taps_edsr_after_the_long_skip(tmp_path):
    """Default EDSR tap = input of upsample = body(x) + x (PAMS's feature)."""
    from odm_mm.losses import skt_loss
    _, path = fp32_ckpt(tmp_path)
    model = build(ckpt=path, var_loss=None)
    model.init_weights()
    assert (model.feature_module, model.feature_tap) == ('upsample', 'input')
    data = batch()
    calibrated(model, data)
    model.train()
    d = model.data_preprocessor(data, True)
    losses = model(**d, mode='loss')

    def after_skip(gen):
        x = (d['inputs'] - gen.mean) / gen.std
        x = gen.conv_first(x)
        return gen.conv_after_body(gen.body(x)) + x

    with torch.no_grad():
        want = skt_loss(after_skip(model.generator),
                        after_skip(model.teacher)) * model.skt_loss.loss_weight
    assert_close(losses['loss_skt'].detach(), want, rtol=1e-5, atol=1e-9)
    # the old tap (before the skip) is one option away and differs
    old = build(ckpt=path, var_loss=None, feature_module='conv_after_body',
                feature_tap='output')
    old.init_weights()
    calibrated(old, data)
    old.train()
    assert not torch.allclose(old(**d, mode='loss')['loss_skt'].detach(),
                              want)
    with pytest.raises(ValueError, match='feature_tap'):
        build(ckpt=path, feature_tap='middle')


def test_every_swap_preset_generator_has_an_skt_default():
    from odm_mm.models import FEATURE_MODULES
    from odm_mm.swap import PRESETS
    assert set(PRESETS) <= set(FEATURE_MODULES)
    rrdb = dict(type='RRDBNet', in_channels=3, out_channels=3,
                mid_channels=8, num_blocks=1, growth_channels=4,
                upscale_factor=4)
    model = build(generator=rrdb)  # a stock ESRGAN-PSNR generator + SKT
    assert model.feature_module == 'conv_body'
    assert model.generator.get_submodule(model.feature_module) is not None
