"""The ODM fragment on stock mmagic configs says what it replaces or refuses.

Configs are written as a user would (a stock ``mmagic::`` config plus
``odm_mm::odm/_base_/odm.py``) and read with mmengine:

* ``odm_mm::`` resolves to the package's configs;
* :func:`odm_mm.fragment.override_lines`: NAFNet's AdamW (lr 1e-3, weight
  decay 1e-3) replaced by the fragment's Adam is one line naming both, as
  is the model type;
* BasicVSR (``train_cfg.fix_iter``) and ESRGAN (discriminator, GAN and
  perceptual losses) are refused by ODMEditModel with one message naming
  what would be lost;
* a stock ``save_best='PSNR'`` is mapped to the validation set's
  ``Set5/PSNR``; a name no validation set logs is one error saying what to
  write.
"""
from pathlib import Path

import pytest

import odm_mm

pytestmark = pytest.mark.skipif(not odm_mm.HAS_MMAGIC, reason='needs mmagic')

if odm_mm.HAS_MMAGIC:
    from mmengine.config import Config

    from odm_mm.fragment import (override_lines, resolve_save_best,
                                 stock_configs)

USER_CFG = '''_base_ = ['mmagic::{stock}', 'odm_mm::odm/_base_/odm.py'{extra}]
model = dict(type='ODMEditModel', quant_cfg=dict(w_bits=2, a_bits=2))
optim_wrapper = _base_.odm_optim_wrapper
custom_hooks = _base_.odm_custom_hooks
'''
NAFNET = 'nafnet/nafnet_c64eb11128mb1db1111_8xb8-lr1e-3-400k_gopro.py'
BASICVSR = 'basicvsr/basicvsr_2xb4_reds4.py'
ESRGAN = 'esrgan/esrgan_x4c64b23g32_1xb16-400k_div2k.py'
EDSR = 'edsr/edsr_x4c64b16_1xb16-300k_div2k.py'


def user_config(tmp_path: Path, stock: str, extra: str = '') -> Config:
    path = tmp_path / 'user.py'
    path.write_text(USER_CFG.format(stock=stock, extra=extra))
    return Config.fromfile(str(path))


def build_model(cfg: Config):
    from mmagic.registry import MODELS
    from mmengine.registry import DefaultScope
    with DefaultScope.overwrite_default_scope('mmagic'):
        return MODELS.build(cfg.model)


def test_odm_mm_scope_resolves_to_the_package(tmp_path):
    cfg = user_config(tmp_path, EDSR)
    assert cfg.optim_wrapper.type == 'CooperativeOptimWrapper'
    assert cfg.custom_imports.imports == ['odm_mm']
    assert [Path(p).name for p in stock_configs(cfg.filename)] == [
        Path(EDSR).name]
    bad = tmp_path / 'bad.py'
    bad.write_text("_base_ = ['odm_mm::odm/_base_/nope.py']\n")
    with pytest.raises(FileNotFoundError, match='odm_mm::odm/_base_/odm.py'):
        Config.fromfile(str(bad))


def test_nafnet_optimizer_override_is_one_line(tmp_path):
    lines = override_lines(user_config(tmp_path, NAFNET))
    optim = [ln for ln in lines if ln.startswith('optim_wrapper:')]
    assert len(optim) == 1, lines
    assert 'AdamW' in optim[0] and 'lr=0.001' in optim[0]
    assert 'weight_decay=0.001' in optim[0]
    assert 'CooperativeOptimWrapper(Adam, lr=0.0001' in optim[0]
    assert any(ln.startswith('model: the stock') and 'ODMEditModel' in ln
               for ln in lines)


def test_basicvsr_is_refused(tmp_path):
    cfg = user_config(tmp_path, BASICVSR)
    with pytest.raises(ValueError) as err:
        build_model(cfg)
    msg = str(err.value)
    assert msg.startswith('ODMEditModel replaces the model of this config')
    assert 'fix_iter=5000' in msg and 'frozen for the first 5000' in msg


def test_gan_restorer_is_refused(tmp_path):
    """ESRGAN's model with ODMEditModel as its type (mmagic's ESRGAN config
    also defines model_wrapper_cfg, which mmengine refuses to merge with
    the fragment's: the model is built from its merged dict directly)."""
    from mmagic.registry import MODELS
    from mmengine.registry import DefaultScope
    stock = Config.fromfile(stock_configs_path(ESRGAN))
    model = dict(stock.model, type='ODMEditModel',
                 quant_cfg=dict(w_bits=2, a_bits=2))
    with DefaultScope.overwrite_default_scope('mmagic'):
        with pytest.raises(ValueError) as err:
            MODELS.build(model)
    msg = str(err.value)
    for word in ('discriminator', 'ModifiedVGG', 'perceptual loss',
                 'adversarial loss'):
        assert word in msg, msg


def stock_configs_path(rel: str) -> str:
    import mmagic
    return str(Path(mmagic.__file__).parent / '.mim' / 'configs' / rel)


def test_edsr_builds_without_refusal(tmp_path):
    model = build_model(user_config(tmp_path, EDSR))
    assert type(model).__name__ == 'ODMEditModel'


def test_save_best_is_mapped_or_explained(tmp_path):
    extra = ", 'odm_mm::_base_/datasets/t91_x4.py'"
    cfg = user_config(tmp_path, EDSR, extra)
    cfg.val_evaluator = cfg.odm_val_evaluator
    assert cfg.default_hooks.checkpoint.save_best == 'PSNR'
    line = resolve_save_best(cfg)
    assert cfg.default_hooks.checkpoint.save_best == 'Set5/PSNR'
    assert "'PSNR' -> 'Set5/PSNR'" in line
    assert resolve_save_best(cfg) is None  # already a logged name
    cfg.default_hooks.checkpoint.save_best = 'LPIPS'
    with pytest.raises(KeyError, match=r"save_best='Set5/PSNR'"):
        resolve_save_best(cfg)
