"""Bad input fails before training with one clear message; nothing is lost.

Every case starts from the tiny ODM recipe of :mod:`tiny_odm` and breaks one
thing. Checked two ways:

* :func:`odm_mm.preflight.preflight_check` (what ``tools/train.py`` runs
  before the Runner) raises the error, and nothing has been written;
* end to end through ``tools/train.py`` (in this process) for the data and
  checkpoint cases: the same message, raised before iteration 1 as one
  exception (no chained "During handling ..." traceback), and an existing
  checkpoint, ``last_checkpoint`` and old logs in the work dir are untouched.
"""
import copy
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from mmengine.config import Config
from torch import nn

import odm_mm

from tiny_odm import TRAIN_PY, snapshot, train, write_config, \
    write_fp32_checkpoint

pytestmark = pytest.mark.skipif(not odm_mm.HAS_MMAGIC,
                                reason='needs mmagic')

if odm_mm.HAS_MMAGIC:
    from mmagic.registry import MODELS

    from odm_mm.data_root import merge_cfg_options
    from odm_mm.preflight import preflight_check, preflight_or_exit

    @MODELS.register_module(name='_TestNoConvNet', force=True)
    class NoConvNet(nn.Module):
        """A 'generator' without a single Conv2d."""

        def __init__(self) -> None:
            super().__init__()
            self.up = nn.Upsample(scale_factor=4)

        def forward(self, x):
            return self.up(x)


# ---------------------------------------------------------------- damage
def _no_root(root: Path) -> dict:
    return {'odm_data_root': str(root.parent / 'no_such_root')}


def _empty_train_split(root: Path) -> dict:
    for f in (root / 'T91').iterdir():
        f.unlink()
    return {}


def _missing_val_split(root: Path) -> dict:
    for f in (root / 'Set5' / 'LR_bicubic' / 'X4').iterdir():
        f.unlink()
    (root / 'Set5' / 'LR_bicubic' / 'X4').rmdir()
    return {}


def _wrong_scale(root: Path) -> dict:
    lr = root / 'Set5' / 'LR_bicubic' / 'X4' / 'img0x4.png'
    cv2.imwrite(str(lr), np.zeros((16, 12, 3), np.uint8))  # x3 size
    return {}


def _corrupt_image(root: Path) -> dict:
    data = (root / 'T91' / 't1.png').read_bytes()
    (root / 'T91' / 't1.png').write_bytes(data[:len(data) // 3])
    return {}


# (case id, damage to the data root or None, cfg options, error, regex)
CASES = [
    ('w_bits', None, {'model.quant_cfg.w_bits': 9}, ValueError,
     r'w_bits must be in 1\.\.8 \(or 32 for FP32\), got 9'),
    ('a_bits', None, {'model.quant_cfg.a_bits': 0}, ValueError,
     r'a_bits must be in 1\.\.8 \(or 32 for FP32\), got 0'),
    ('ratio_zero', None, {'custom_hooks.0.ratio': 0}, ValueError,
     r'OffsetHook\.ratio \(offset ratio p of Eq\. 7/8\) must be a number in '
     r'\(0, 1\], got 0'),
    ('ratio_big', None, {'custom_hooks.0.ratio': 1.5}, ValueError,
     r'OffsetHook\.ratio .* in \(0, 1\], got 1\.5'),
    ('lambda_v', None, {'model.var_loss': dict(type='VarianceRegLoss',
                                               loss_weight=-1e-4)},
     ValueError, r'VarianceRegLoss\.loss_weight must be >= 0, got -0\.0001'),
    ('skt_weight', None, {'model.skt_loss': dict(type='SKTLoss',
                                                 loss_weight=-2.0)},
     ValueError, r'SKTLoss\.loss_weight must be >= 0, got -2'),
    ('pattern', None, {'model.quant_cfg.patterns': ['head.*']}, ValueError,
     r"swap patterns \['head\.\*'\] match no layer of EDSRNet; its layers "
     r'are e\.g\.: conv_first'),
    ('no_convs', None, {'model.generator': dict(_delete_=True,
                                                type='_TestNoConvNet'),
                        'model.quant_cfg.patterns': ['.*'],
                        'model.skt_loss': None},
     ValueError, r'NoConvNet has no nn\.Conv2d, nn\.Linear or window '
     r'attention to quantize'),
    ('fp32_missing', None, {'model.fp32_checkpoint': 'work/nope.pth'},
     FileNotFoundError,
     r"model\.fp32_checkpoint: file 'work/nope\.pth' does not exist.*"
     r'python tools/train\.py configs/fp32/edsr_x4_t91\.py.*'
     r'download the official mmagic checkpoint https://download\.openmmlab'
     r'\.com/mmediting/restorers/edsr/edsr_x4c64b16_.*\.pth'),
    ('fp32_keys', None, {'model.generator.mid_channels': 16}, ValueError,
     r"FP32 checkpoint '.*fp32\.pth' does not fit the generator EDSRNet: "
     r'shape mismatch .*\(8, 8, 3, 3\) vs \(16, 16, 3, 3\)'),
    ('no_root', _no_root, {}, FileNotFoundError,
     r'SR dataset t91: data root folder .*no_such_root does not exist\.'
     r'.*ODM_DATA_ROOT'),
    ('empty_split', _empty_train_split, {}, FileNotFoundError,
     r'SR dataset t91: no images found in .*T91'),
    ('missing_split', _missing_val_split, {}, FileNotFoundError,
     r'SR dataset set5 \(x4\): img folder .*Set5/LR_bicubic/X4 does not '
     r'exist'),
    ('lr_hr_scale', _wrong_scale, {}, ValueError,
     r'SR dataset set5 \(x4\): LR size is not floor\(HR / 4\).*img0x4\.png '
     r'is 16x12 \(HxW\) but its HR .*img0\.png is 50x38: expected 12x9'),
    ('corrupt_image', _corrupt_image, {}, ValueError,
     r'SR dataset t91: unreadable or corrupt images:\n  - .*t1\.png'),
]
IDS = [c[0] for c in CASES]
# the cases that only fail once the Runner trains: run them through train.py
E2E = ['fp32_missing', 'fp32_keys', 'no_root', 'empty_split',
       'missing_split', 'lr_hr_scale', 'corrupt_image']


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    """``(config path, parsed config)`` of the tiny recipe."""
    tmp = tmp_path_factory.mktemp('validation')
    fp32 = write_fp32_checkpoint(tmp / 'fp32.pth')
    path = write_config(tmp / 'tiny.py', fp32, 'validation_tiny')
    return path, Config.fromfile(str(path))


def _prepare(case, tmp_path):
    """Damage a private data root; return ``(root, options)``."""
    from conftest import make_sr_root
    _, damage, options, _, _ = case
    root = make_sr_root(tmp_path / 'data')
    options = dict(options)
    if damage is not None:
        options.update(damage(root))
    return root, options


@pytest.mark.parametrize('case', CASES, ids=IDS)
def test_preflight_rejects(case, tiny, tmp_path):
    root, options = _prepare(case, tmp_path)
    cfg = copy.deepcopy(tiny[1])
    cfg.work_dir = str(tmp_path / 'work')
    merge_cfg_options(cfg, dict({'odm_data_root': str(root)}, **options))
    with pytest.raises(case[3]) as err:
        preflight_check(cfg)
    assert re.search(case[4], str(err.value), re.S), str(err.value)
    assert not (tmp_path / 'work').exists()


def test_preflight_accepts_the_good_config(tiny, tiny_data_root, tmp_path):
    cfg = copy.deepcopy(tiny[1])
    merge_cfg_options(cfg, {'odm_data_root': str(tiny_data_root)})
    preflight_check(cfg)  # does not raise


def test_preflight_or_exit_prints_one_message(tiny, tmp_path):
    cfg = copy.deepcopy(tiny[1])
    cfg.work_dir = str(tmp_path / 'work')
    cfg.merge_from_dict({'model.quant_cfg.w_bits': 9})
    with pytest.raises(SystemExit) as err:
        preflight_or_exit(cfg)
    msg = str(err.value.code)
    assert msg.startswith('ValueError: w_bits must be in 1..8')
    assert 'nothing was started or written' in msg
    assert 'Traceback' not in msg


def _old_work_dir(work: Path) -> dict:
    """A work dir holding a previous run's checkpoint and logs."""
    (work / '20200101_000000').mkdir(parents=True)
    (work / '20200101_000000' / '20200101_000000.log').write_text('old log')
    (work / 'iter_2.pth').write_bytes(b'previous good checkpoint')
    (work / 'last_checkpoint').write_text(str(work / 'iter_2.pth'))
    return snapshot(work)


def _options(options: dict) -> list:
    out = []
    for key, value in options.items():
        if key != 'odm_data_root':
            out.append(f'{key}={value}')
    return out


@pytest.mark.parametrize('case', [c for c in CASES if c[0] in E2E],
                         ids=E2E)
def test_train_tool_fails_early_and_keeps_work_dir(case, tiny, tmp_path):
    root, options = _prepare(case, tmp_path)
    root = options.pop('odm_data_root', root)
    work = tmp_path / 'work'
    before = _old_work_dir(work)
    with pytest.raises((case[3], SystemExit)) as err:
        train(tiny[0], work, root, options=_options(options))
    exc = err.value
    msg = str(exc.code if isinstance(exc, SystemExit) else exc)
    assert re.search(case[4], msg, re.S), msg
    assert exc.__cause__ is None and (exc.__context__ is None or
                                      exc.__suppress_context__), \
        'one exception, not a chain'
    after = snapshot(work)
    for name, data in before.items():  # old checkpoint, marker, logs kept
        assert after.get(name) == data, name
    assert sorted(p.name for p in work.glob('*.pth')) == ['iter_2.pth']
    logs = ''.join(p.read_text() for p in work.glob('2*/*.log'))
    assert 'Iter(train)' not in logs and 'ODM calibration' not in logs


def test_train_tool_writes_nothing_on_bad_input(tiny, tmp_path):
    """With the pre-run check in tools/train.py not even logs are written."""
    if 'preflight_or_exit' not in TRAIN_PY.read_text():
        pytest.skip('tools/train.py does not call '
                    'odm_mm.preflight.preflight_or_exit (hook-up pending)')
    root, options = _prepare(CASES[IDS.index('lr_hr_scale')], tmp_path)
    work = tmp_path / 'work'
    before = _old_work_dir(work)
    with pytest.raises(SystemExit) as err:
        train(tiny[0], work, root, options=_options(options))
    assert 'LR size is not floor(HR / 4)' in str(err.value.code)
    assert snapshot(work) == before
