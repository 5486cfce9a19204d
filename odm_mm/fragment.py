"""What the ODM fragment does to a stock config: said, or refused.

Glue (mmengine configs). A user quantizes a stock mmagic config by
inheriting it and the fragment ``configs/odm/_base_/odm.py`` (README, "Use
it on your mmagic config"). The fragment replaces stock settings; this
module makes that visible:

* :func:`override_lines`: one line per stock setting the final config
  replaces: the model type, the optimizer (type, lr, weight decay), the
  model's ``train_cfg`` keys ODMEditModel ignores, the stock custom hooks
  that are gone. The "stock" config is every base the config (or its
  bases) loads from another package (``mmagic::...``).
* :func:`refuse_lost_training_logic`: called by
  :class:`~odm_mm.models.ODMEditModel` itself; refuses, with one message
  naming what would be lost, a wrapped model whose training logic
  ODMEditModel does not carry (BasicVSR's ``fix_iter``, a GAN restorer's
  discriminator and adversarial/perceptual losses).
* :func:`resolve_save_best`: stock configs save the best checkpoint by
  ``'PSNR'``, the package's test sets name it ``'Set5/PSNR'``; the name is
  mapped to the first validation set's metric (one log line), or one error
  says what to write.

``tools/train.py`` calls :func:`apply_fragment_checks` before its pre-run
checks.
"""
from __future__ import annotations

import logging
import os.path as osp
from typing import Any, Dict, List, Optional

from mmengine.config import Config
from mmengine.logging import print_log

__all__ = ['override_lines', 'refuse_lost_training_logic',
           'resolve_save_best', 'apply_fragment_checks', 'stock_configs']

#: Model keys of other mmagic restorers that carry training logic.
LOST_MODEL_KEYS = {
    'discriminator': 'the discriminator (adversarial training of a GAN '
                     'restorer such as ESRGAN/SRGAN)',
    'gan_loss': 'the adversarial loss (gan_loss)',
    'perceptual_loss': 'the perceptual loss (perceptual_loss)',
}
#: ``model.train_cfg`` keys with training logic ODMEditModel lacks.
LOST_TRAIN_CFG = {
    'fix_iter': 'BasicVSR-style fix_iter={} (the optical-flow network stays '
                'frozen for the first {} iterations)',
    'disc_steps': 'the discriminator schedule disc_steps={}',
    'disc_init_steps': 'the discriminator warm-up disc_init_steps={}',
    'disc_repeat': 'the discriminator repeats disc_repeat={}',
}


def refuse_lost_training_logic(train_cfg: Optional[dict],
                               extra: Dict[str, Any]) -> None:
    """Raise one ValueError if the wrapped model's training logic is lost.

    Args:
        train_cfg: ``model.train_cfg`` as ODMEditModel receives it.
        extra: Model keys ODMEditModel has no argument for.
    """
    lost = []
    for key, value in (train_cfg or {}).items():
        if key in LOST_TRAIN_CFG:
            lost.append(LOST_TRAIN_CFG[key].format(value, value))
    for key, value in extra.items():
        kind = value.get('type') if isinstance(value, dict) else None
        what = LOST_MODEL_KEYS.get(key, f'model.{key}')
        lost.append(what + (f' ({kind})' if kind else ''))
    if lost:
        raise ValueError(
            'ODMEditModel replaces the model of this config but does not '
            'carry its training logic; would be lost: ' + '; '.join(lost) +
            '. ODM quantizes single-image restorers trained with a pixel '
            'loss (EDSR, RDN, MSRResNet, RRDBNet with L1, SRCNN, SwinIR): '
            'start from such a config.')


def _base_paths(path: str) -> List[tuple]:
    """``[(resolved path, scope)]`` of the ``_base_`` files of ``path``."""
    out = []
    for base in Config._get_base_files(path):
        resolved, scope = Config._get_cfg_path(base, path)
        out.append((resolved, scope))
    return out


def stock_configs(path: str) -> List[str]:
    """Every base of ``path`` (recursively) loaded from another package."""
    found, todo, seen = [], [osp.abspath(path)], set()
    while todo:
        current = todo.pop(0)
        if current in seen:
            continue
        seen.add(current)
        for resolved, scope in _base_paths(current):
            if scope is not None and scope != 'odm_mm':
                found.append(resolved)
            else:
                todo.append(resolved)
    return found


def _optim(wrapper: Any) -> str:
    if not isinstance(wrapper, dict):
        return repr(wrapper)
    opt = wrapper.get('optimizer') or {}
    args = ', '.join(f'{k}={opt[k]}' for k in ('lr', 'weight_decay', 'betas')
                     if k in opt)
    return f'{wrapper.get("type", "OptimWrapper")}({opt.get("type")}' + (
        f', {args})' if args else ')')


def _hook_types(hooks: Any) -> List[str]:
    return [h.get('type') for h in (hooks or []) if isinstance(h, dict)]


def override_lines(cfg: Config) -> List[str]:
    """One line per stock setting the final config replaces (see module
    doc); empty when the config has no stock base or no ODMEditModel."""
    if not cfg.filename or (cfg.get('model') or {}).get('type') != \
            'ODMEditModel':
        return []
    stock_paths = stock_configs(cfg.filename)
    if not stock_paths:
        return []
    stock = Config.fromfile(stock_paths[0])
    name = osp.basename(stock_paths[0])
    lines = []
    smodel = stock.get('model') or {}
    if smodel.get('type') not in (None, 'ODMEditModel'):
        lines.append(f'model: the stock {smodel["type"]} ({name}) is '
                     'replaced by ODMEditModel (its generator, pixel_loss '
                     'and data_preprocessor are kept)')
    old, new = _optim(stock.get('optim_wrapper')), _optim(
        cfg.get('optim_wrapper'))
    if old != new:
        lines.append(f'optim_wrapper: the stock {old} is replaced by {new} '
                     '(set optim_wrapper.optimizer in your config to keep '
                     'yours)')
    dropped = sorted(set((smodel.get('train_cfg') or {})) -
                     set(LOST_TRAIN_CFG))
    if dropped:
        lines.append(f'model.train_cfg: {dropped} of the stock model are '
                     'not used by ODMEditModel (dropped)')
    gone = [t for t in _hook_types(stock.get('custom_hooks'))
            if t not in _hook_types(cfg.get('custom_hooks'))]
    if gone:
        lines.append(f'custom_hooks: the stock {gone} are replaced by '
                     f'{_hook_types(cfg.get("custom_hooks"))}')
    return lines


def _val_evaluators(cfg: Config) -> List[dict]:
    ev = cfg.get('val_evaluator')
    if isinstance(ev, dict):
        return [ev]
    return [e for e in (ev or []) if isinstance(e, dict)]


def resolve_save_best(cfg: Config) -> Optional[str]:
    """Map a prefix-less ``save_best`` to the first validation set's name.

    Stock configs say ``save_best='PSNR'``; with the package's test sets
    the metric is logged as ``'Set5/PSNR'``, and mmengine's CheckpointHook
    would fail with ``KeyError: 'PSNR'`` after the first validation.

    Returns:
        The log line if ``save_best`` was changed, else None.

    Raises:
        KeyError: ``save_best`` names no metric of the validation sets (one
            message naming the metrics to choose from).
    """
    ckpt = (cfg.get('default_hooks') or {}).get('checkpoint')
    best = ckpt.get('save_best') if isinstance(ckpt, dict) else None
    if not isinstance(best, str) or best == 'auto' or '/' in best:
        return None
    names = [f'{m["prefix"]}/{m["type"]}' if m.get('prefix') else m['type']
             for ev in _val_evaluators(cfg)
             for m in (ev.get('metrics') or []) if isinstance(m, dict)
             and 'type' in m]
    if not names or best in names:
        return None
    match = [n for n in names if n.split('/')[-1] == best]
    if not match:
        raise KeyError(
            f'default_hooks.checkpoint.save_best={best!r} is not a metric of '
            f'the validation sets; they log {names}: write e.g. '
            f"default_hooks = dict(checkpoint=dict(save_best={names[0]!r}))")
    ckpt['save_best'] = match[0]
    return (f'default_hooks.checkpoint.save_best: {best!r} -> '
            f'{match[0]!r} (the first validation set\'s metric)')


def apply_fragment_checks(cfg: Config) -> None:
    """Log the overrides and resolve ``save_best`` (``tools/train.py``).

    A config whose bases cannot be re-read (e.g. mmengine's pure-Python
    "lazy import" style) gets no override lines, and a debug line saying
    why; the ``save_best`` check applies to every config.
    """
    try:
        lines = override_lines(cfg)
    except Exception as err:  # a report only: never stop a run for it
        lines = []
        print_log(f'[odm_mm fragment] overrides not listed: {err!r}',
                  logger='current', level=logging.DEBUG)
    for line in lines + [resolve_save_best(cfg)]:
        if line:
            print_log(f'[odm_mm fragment] {line}', logger='current',
                      level=logging.INFO)
