"""Published ODM (ECCV 2024) through ODMEditModel + CooperativeOptimWrapper:
one training step against a hand-computed update (values), the clipping
factors learning from L_R alone, calibration of the factors, the configs."""
import copy

import pytest
import torch
from mmengine.config import Config
from torch.testing import assert_close

import odm_mm  # noqa: F401  (registers)
from odm_mm.gate import LossParts
from odm_mm.quantizers.wcc import WCCWeightQuantizer

from conftest import REPO
from test_odm_model import batch, build, calibrated, fp32_ckpt, sgd_wrapper

PUBLISHED = dict(quant_cfg=dict(w_bits=2, a_bits=2, method='odm_wcc'),
                 var_loss=None,
                 mismatch_loss=dict(type='MismatchRegLoss', loss_weight=1e-2))


def published(path, **kw):
    model = build(ckpt=path, **dict(PUBLISHED, **kw))
    model.init_weights()
    return model


def test_losses_and_reg_free_clipping_factors(tmp_path):
    _, path = fp32_ckpt(tmp_path)
    model = published(path)
    data = batch()
    calibrated(model, data)
    model.train()
    d = model.data_preprocessor(data, True)
    losses = model(**d, mode='loss')
    assert set(losses) == {'loss_pix', 'loss_skt', 'loss_mismatch'}
    # L_M = lambda_M * sum over the quantized layers of ||x - q(x)||
    terms = []
    hooks = [m.register_forward_pre_hook(
        lambda mod, inp: terms.append(
            (inp[0] - mod.act_quantizer(inp[0])).norm().detach()))
        for _, m in model.quant_layers()]
    with torch.no_grad():
        model.generator(d['inputs'])
    for h in hooks:
        h.remove()
    assert len(terms) == len(model.quant_layers()) == 4
    assert_close(losses['loss_mismatch'], 1e-2 * torch.stack(terms).sum(),
                 rtol=1e-5, atol=0)
    parts, _ = model.parse_losses(losses)
    assert isinstance(parts, LossParts)
    gammas = [m.weight_quantizer.gamma for _, m in model.quant_layers()]
    assert [id(p) for p in parts.exclude] == [id(g) for g in gammas]
    # L_M does depend on the factors (through the next layers' inputs):
    # the exclusion is what keeps it off them
    g = torch.autograd.grad(parts.reg, gammas, retain_graph=True,
                            allow_unused=True)
    assert any(x is not None and float(x.abs().sum()) > 0 for x in g)


@pytest.mark.parametrize('mode', ['similarity', 'similarity_tensor',
                                  'plain'])
def test_wrapper_equals_hand_weighted_sgd_step(tmp_path, mode):
    _, path = fp32_ckpt(tmp_path)
    model = published(path)
    data = batch()
    calibrated(model, data)
    model.train()
    ref = copy.deepcopy(model)
    d = ref.data_preprocessor(data, True)
    parts, _ = ref.parse_losses(ref(**d, mode='loss'))
    params = [p for p in ref.parameters() if p.requires_grad]
    skip = {id(p) for p in parts.exclude}
    g_m = torch.autograd.grad(parts.reg, params, retain_graph=True,
                              allow_unused=True)
    g_r = torch.autograd.grad(parts.recon, params, allow_unused=True)
    pairs = [(i, torch.zeros_like(p) if g_r[i] is None else g_r[i], g_m[i])
             for i, p in enumerate(params)
             if g_m[i] is not None and id(p) not in skip]

    def sim(a, b):
        a, b = a.double().flatten(), b.double().flatten()
        return float(((a @ b) / (a.norm() * b.norm()) + 1) / 2)

    glob = sim(torch.cat([r.flatten() for _, r, _ in pairs]),
               torch.cat([m.flatten() for _, _, m in pairs]))
    step = [torch.zeros_like(p) if g is None else g.clone()
            for p, g in zip(params, g_r)]
    for i, r, m in pairs:
        w = {'similarity': glob, 'similarity_tensor': sim(r, m),
             'plain': 1.0}[mode]
        step[i] = r + w * m
    expected = [p.detach() - 0.5 * s for p, s in zip(params, step)]
    wrapper = sgd_wrapper(model, mode)
    model.train_step(data, wrapper)
    got = [p for p in model.parameters() if p.requires_grad]
    for e, g in zip(expected, got):
        assert_close(g.detach(), e, rtol=1e-5, atol=1e-6)
    if mode == 'similarity':
        assert wrapper.last_gate_stats.weight == pytest.approx(glob,
                                                               abs=1e-6)
    # the factors moved by L_R's gradient alone
    gam = {id(p): i for i, p in enumerate(got)}
    for _, m in model.quant_layers():
        i = gam[id(m.weight_quantizer.gamma)]
        assert_close(got[i].detach(), params[i].detach() - 0.5 * (
            g_r[i] if g_r[i] is not None else 0), rtol=1e-5, atol=1e-7)


def test_calibration_sets_clipping_factors(tmp_path):
    _, path = fp32_ckpt(tmp_path)
    model = published(path, quant_cfg=dict(
        w_bits=2, a_bits=2, method='odm_wcc',
        weight_cfg=dict(gamma_init='mse')))
    for _, m in model.quant_layers():
        m.weight_quantizer.gamma.data.fill_(1.0)
    calibrated(model, batch())
    for _, m in model.quant_layers():
        q = m.weight_quantizer
        assert isinstance(q, WCCWeightQuantizer)
        ref = WCCWeightQuantizer(2, gamma_init='mse')
        ref.init_from_weight(m.weight)
        assert float(q.gamma) == float(ref.gamma) < 1.0


def test_mismatch_loss_paper_default_and_wrapper_check(tmp_path):
    from mmengine.optim import OptimWrapper
    model = build(**dict(PUBLISHED, mismatch_loss='paper'))
    assert model.mismatch_loss.loss_weight == 1e-5  # EDSR, [0, 1] pixels
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(TypeError, match='mismatch_loss needs'):
        model.train_step(batch(), wrapper)


PUBLISHED_CONFIGS = sorted(
    p.relative_to(REPO).as_posix()
    for p in (REPO / 'configs' / 'odm_eccv24').rglob('*.py')
    if '_base_' not in p.parts)


def test_published_configs_are_the_published_recipe():
    assert len(PUBLISHED_CONFIGS) == 17
    for path in PUBLISHED_CONFIGS:
        cfg = Config.fromfile(str(REPO / path))
        m = cfg.model
        assert m.var_loss is None, path
        ablation = 'ablation' in path
        if not ablation:
            assert m.quant_cfg.method == 'odm_wcc', path
            assert m.mismatch_loss == 'paper', path
            assert cfg.optim_wrapper.mode == 'similarity', path
        keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
        assert keys['act_quantizer']['lr_mult'] == 10, path
        assert keys['weight_quantizer']['lr_mult'] == 10, path
        hooks = [h for h in cfg.custom_hooks if h['type'] == 'OffsetHook']
        assert len(hooks) == 1 and not hooks[0]['shift'] \
            and not hooks[0]['scale'], path
        bits = 4 if 'w4a4' in path else 2
        assert m.quant_cfg.w_bits == m.quant_cfg.a_bits == bits, path


def test_published_local_recipe_trains_with_train_py(tmp_path,
                                                     tiny_data_root):
    """configs/odm_eccv24/local/edsr_x4_w2a2_t91.py through tools/train.py
    at smoke size (tiny EDSR, 4 iterations): the clipping factors are in
    the checkpoint and learned, L_M is logged, the gate weight is in (0, 1).
    """
    from tiny_odm import (load, train, write_config,
                          write_fp32_checkpoint)
    fp32 = write_fp32_checkpoint(tmp_path / 'fp32.pth')
    cfg = write_config(tmp_path / 'cfg.py', fp32, 'odm24_tiny',
                       base=REPO / 'configs' / 'odm_eccv24' / 'local' /
                       'edsr_x4_w2a2_t91.py')
    with open(cfg, 'a') as f:  # the recipe's hooks: no offsets
        f.write("custom_hooks = [dict(type='OffsetHook', ratio=0.5, "
                "num_batches=2, shift=False, scale=False), "
                "dict(type='NumericalGuardHook'), "
                "dict(type='QATRecorderHook')]\n")
    work = tmp_path / 'work'
    train(cfg, work, tiny_data_root)
    state = load(work / 'iter_4.pth')['state_dict']
    gammas = {k: float(v) for k, v in state.items()
              if k.endswith('weight_quantizer.gamma')
              and k.startswith('generator.')}
    assert len(gammas) == 4  # 2 blocks x 2 convs
    assert any(abs(g - 1.0) > 1e-6 for g in gammas.values())
    assert not any(bool(v) for k, v in state.items()
                   if k.endswith(('shift_enabled', 'scale_enabled')))
    import json
    log = json.loads((work / 'bench_log.json').read_text())
    recs = log['iters']
    assert len(recs) == 4 and all('loss_mismatch' in r for r in recs)
    assert all(0.0 <= r['gate_weight'] <= 1.0 for r in recs)
    start = log['quantizer_state_start']
    assert set(start) == {n[len('generator.'):-len('.weight_quantizer.gamma')]
                          for n in gammas}
    assert all(v == {'weight.gamma': 1.0} for v in start.values())
