"""Every config under configs/ (not _base_) parses and its model builds.

Generic on purpose: it walks the folder, so configs added later (e.g.
configs/odm/) are covered. Models are built at a tiny width/depth by
overriding ``mid_channels``, ``num_blocks``, ``num_layers`` and
``channel_growth`` wherever they appear in ``cfg.model``; when the model has
a ``generator`` and the config a ``scale``, an 8x8 input must come out
``8*scale`` px. Configs using the odm data fragments must follow the paper
protocol (Y-channel PSNR/SSIM, crop_border=scale, data scale == model scale).
"""
import copy
import functools
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope

import odm_mm
from odm_mm.data_root import default_data_root, merge_cfg_options

from conftest import REPO

pytestmark = pytest.mark.skipif(
    not odm_mm.HAS_MMAGIC, reason='mmagic (with mmcv ops) not importable')

CONFIG_DIR = REPO / 'configs'
CONFIGS = sorted(
    p for p in CONFIG_DIR.rglob('*.py')
    if '_base_' not in p.relative_to(CONFIG_DIR).parts)
TINY = dict(mid_channels=8, num_blocks=1, num_layers=2, channel_growth=8)


@functools.lru_cache(maxsize=None)
def _load(path) -> Config:
    """Parses a config once per session (tests must not modify it)."""
    return Config.fromfile(str(path))


def _shrink(node):
    """Sets the TINY sizes wherever they occur in a model config."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in TINY and isinstance(value, int) and value > TINY[key]:
                node[key] = TINY[key]
            else:
                _shrink(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _shrink(value)


def _dataloaders(cfg):
    loaders = []
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        value = cfg.get(key)
        loaders += value if isinstance(value, list) else [value]
    return [dl for dl in loaders if dl]


def _evaluators(cfg):
    out = []
    for key in ('val_evaluator', 'test_evaluator'):
        value = cfg.get(key)
        out += value if isinstance(value, list) else [value]
    return [ev for ev in out if ev]


def test_configs_found():
    names = {p.relative_to(CONFIG_DIR).as_posix() for p in CONFIGS}
    assert {'fp32/edsr_x4_t91.py', 'fp32/rdn_x2_t91.py',
            'fp32/msrresnet_x4_t91.py', 'fp32/edsr_x4_div2k.py'} <= names


@pytest.mark.parametrize('method', ['daq', 'ddtb'])
def test_baseline_folders_mirror_pams(method):
    """configs/<method>/ has the PAMS experiments, each with its method."""
    names = {p.name for p in CONFIGS if p.parent.name == 'pams'}
    mine = [p for p in CONFIGS if p.parent.name == method]
    # every PAMS experiment, plus variants named <experiment>_<variant>.py
    # whose method is <method>_<variant> (e.g. DAQ's strict 'daq_clip'), or
    # the method itself with other quantizer options or another placement
    # (e.g. DAQ's 8-bit sigmas, DDTB's official placement)
    assert names <= {p.name for p in mine}
    for path in mine:
        cfg = _load(path)
        stem, variant = path.stem, ''
        if path.name not in names:
            stem, variant = path.stem.rsplit('_', 1)
            assert f'{stem}.py' in names
            variant = '_' + variant
            qcfg = cfg.model.quant_cfg
            if qcfg.method == method:
                base = _load(path.with_name(f'{stem}.py')).model.quant_cfg
                assert any(qcfg.get(k) != base.get(k) for k in
                           ('act_cfg', 'placement', 'patterns'))
                variant_method = method
            else:
                variant_method = method + variant
            assert qcfg.method == variant_method
        else:
            assert cfg.model.quant_cfg.method == method
        assert cfg.model.var_loss is None
        assert cfg.experiment_name == f'{method}{variant}_{stem}'
        bits = stem.split('_')[-1]
        assert bits == f'w{cfg.model.quant_cfg.w_bits}a' \
            f'{cfg.model.quant_cfg.a_bits}'


@pytest.mark.parametrize(
    'path', CONFIGS, ids=[p.relative_to(CONFIG_DIR).as_posix()
                          for p in CONFIGS])
def test_config_parses_and_model_builds(path):
    from mmagic.registry import DATASETS, METRICS, MODELS, TRANSFORMS
    cfg = _load(path)
    assert 'odm_mm' in cfg.get('custom_imports', {}).get('imports', []), \
        'configs must import odm_mm via custom_imports'
    init_default_scope(cfg.get('default_scope', 'mmagic'))

    for loader in _dataloaders(cfg):
        dataset = loader['dataset']
        assert DATASETS.get(dataset['type']) is not None, dataset['type']
        for step in dataset.get('pipeline', []):
            assert TRANSFORMS.get(step['type']) is not None, step['type']
    for evaluator in _evaluators(cfg):
        for metric in evaluator.get('metrics', []):
            assert METRICS.get(metric['type']) is not None, metric['type']

    model_cfg = copy.deepcopy(cfg.model)
    _shrink(model_cfg)
    model = MODELS.build(model_cfg)
    generator = getattr(model, 'generator', None)
    if generator is not None and 'scale' in cfg:
        generator.eval()
        with torch.no_grad():
            out = generator(torch.rand(1, 3, 8, 8))
        assert tuple(out.shape[-2:]) == (8 * cfg.scale, 8 * cfg.scale)


@pytest.mark.parametrize(
    'path', CONFIGS, ids=[p.relative_to(CONFIG_DIR).as_posix()
                          for p in CONFIGS])
def test_paper_protocol(path):
    cfg = _load(path)
    if 'odm_scale' not in cfg:
        pytest.skip('does not use configs/_base_/datasets/sr_test_x*.py')
    assert cfg.odm_scale == cfg.scale, 'data scale != model scale'
    test_loaders = cfg.test_dataloader
    assert len(test_loaders) == len(cfg.test_evaluator)
    for loader, evaluator in zip(test_loaders, cfg.test_evaluator):
        set_name = osp.basename(osp.dirname(loader.dataset.data_prefix.gt))
        kinds = set()
        for metric in evaluator.metrics:
            kinds.add(metric.type)
            assert metric.convert_to == 'Y'
            assert metric.crop_border == cfg.scale
            assert metric.prefix == set_name
        assert kinds == {'PSNR', 'SSIM'}
    names = [ev.metrics[0].prefix for ev in cfg.test_evaluator]
    assert names[:3] == ['Set5', 'Set14', 'B100']


def test_data_root_default_env_and_override(monkeypatch, tmp_path):
    fragment = str(CONFIG_DIR / '_base_' / 'datasets' / 't91_x4.py')
    monkeypatch.delenv('ODM_DATA_ROOT', raising=False)
    cfg = Config.fromfile(fragment)
    assert cfg.odm_data_root == default_data_root()
    assert cfg.odm_t91_dataset.data_root == default_data_root()

    monkeypatch.setenv('ODM_DATA_ROOT', str(tmp_path / 'env'))
    cfg = Config.fromfile(fragment)
    assert cfg.odm_test_dataloader[2].dataset.data_root == str(tmp_path /
                                                               'env')

    merge_cfg_options(cfg, {'odm_data_root': str(tmp_path / 'cli'),
                            'odm_t91_patch': 64})
    roots = {dl.dataset.data_root for dl in cfg.odm_test_dataloader_urban}
    assert roots == {str(tmp_path / 'cli')}
    assert cfg.odm_t91_dataset.data_root == str(tmp_path / 'cli')
    assert cfg.odm_t91_patch == 64
    assert str(tmp_path / 'env') not in cfg.pretty_text


def test_data_root_option_needs_fragment():
    cfg = Config(dict(model=dict()))
    with pytest.raises(KeyError, match='odm_data_root'):
        merge_cfg_options(cfg, {'odm_data_root': '/x'})


@pytest.mark.parametrize(
    'path', [p for p in CONFIGS if p.parent.name == 'fp32'],
    ids=lambda p: p.name)
def test_fp32_configs_download_nothing(path):
    cfg = _load(path)
    assert cfg.get('load_from') is None
    assert 'http://' not in cfg.pretty_text
    assert 'https://' not in cfg.pretty_text
    assert cfg.default_hooks.checkpoint.out_dir is None
    assert cfg.work_dir.endswith(path.stem)
