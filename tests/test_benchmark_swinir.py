"""The `swinir` benchmark preset: generator overrides, run configs, targets."""
import copy

import pytest

import odm_mm

from odm_bench.presets import PRESETS, get_preset, network_label
from odm_bench.targets import check_targets

needs_mmagic = pytest.mark.skipif(
    not odm_mm.HAS_MMAGIC, reason='mmagic (with mmcv ops) not importable')


@needs_mmagic
def test_swinir_preset_builds_its_generator_in_both_stages(tmp_path):
    from mmagic.registry import MODELS
    from mmengine.registry import init_default_scope
    from odm_bench.configs import fp32_config, qat_config
    from odm_mm.layers.linear import QuantLinear
    from odm_mm.layers.attention import QuantWindowAttention
    init_default_scope('mmagic')
    p = get_preset('swinir')
    fp = fp32_config(p, str(tmp_path / 'fp32'), str(tmp_path), 'T91',
                     str(tmp_path), ['Set5'])
    gen = fp.model.generator
    assert (gen.type, gen.embed_dim, gen.depths, gen.img_size) == \
        ('SwinIRNet', 32, [2, 2], 24)
    assert 'mid_channels' not in gen  # the EDSR size fields stay out
    q = qat_config(p, 'odm', 2, str(tmp_path / 'q'), 'odm_w2a2', 'x.pth',
                   str(tmp_path), 'T91', str(tmp_path), ['Set5'])
    model_cfg = copy.deepcopy(q.model)
    model_cfg.fp32_checkpoint = None
    model = MODELS.build(model_cfg)
    mods = list(model.generator.modules())
    assert sum(isinstance(m, QuantLinear) for m in mods) == 16
    assert sum(isinstance(m, QuantWindowAttention) for m in mods) == 4
    assert model.quant_layers()[0][1].w_bits == 2
    assert network_label(p.to_dict()).startswith('SwinIR x4 (embed 32, 2 '
                                                 'RSTBs x 2 blocks')
    assert network_label(PRESETS['edsr'].to_dict()) == \
        'EDSR x4 (64ch/16 blocks)'


def test_swinir_targets_are_its_own():
    def run(v5, v14):
        return {'metrics': {'Set5': {'psnr': v5}, 'Set14': {'psnr': v14}},
                'train': {}}
    res = {'preset': {'test_sets': ['Set5', 'Set14'], 'targets': 'swinir'},
           'fp32': run(30.0, 27.0),
           'runs': {'odm_w4a4': run(29.75, 26.0), 'odm_w2a2': run(28.0, 25.9),
                    'pams_w2a2': run(27.9, 26.0),
                    'odm24_w2a2': run(27.8, 26.1)}}
    got = {c['id']: c for c in check_targets(res)}
    assert set(got) == {'S1', 'S2', 'S2*'}  # no EDSR target leaks in
    assert got['S1']['passed'] and list(got['S1']['per_set']) == ['Set5']
    assert not got['S2']['passed']  # Set14: 25.9 < 26.0
    assert got['S2*']['passed']  # best of odm / odm24 per set
    res['preset']['targets'] = 'edsr'
    assert {c['id'] for c in check_targets(res)} == {'T1', 'T3', 'T3*'}
