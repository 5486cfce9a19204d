"""Pre-run checks: bad configs and data fail before the Runner writes.

Glue (mmengine/mmagic). Most checks live where the value is used (bit-widths
in :func:`odm_mm.quantizers.check_bits`, ``p`` in
:class:`~odm_mm.hooks.OffsetHook`, loss weights in :mod:`odm_mm.losses`,
swap patterns in :mod:`odm_mm.swap`, data in
:class:`~odm_mm.datasets.SRFolderDataset`, checkpoint keys in
:func:`~odm_mm.models.load_fp32_generator`) and raise one exception whose
message names the key and the allowed values. An mmengine Runner, however,
creates ``<work_dir>/<timestamp>/`` and re-dumps ``<work_dir>/<config>.py``
while it is built, and builds datasets and loads the FP32 checkpoint only in
``runner.train()``. :func:`preflight_check` runs the same checks first:

* builds the model (quantizer settings, swap patterns, loss weights) and the
  odm_mm hooks of ``custom_hooks`` (offset ratio);
* for an ODM model, checks that ``model.fp32_checkpoint`` exists (with a
  hint how to make or download one, :func:`check_fp32_checkpoint_file`) and
  that its keys fit the generator;
* builds the train and val datasets (data root, split folders, empty splits,
  LR/HR sizes vs. the scale, unreadable images).

``tools/train.py`` calls :func:`preflight_or_exit` before ``Runner.from_cfg``,
so these errors print as one message, without traceback, and leave the work
directory untouched. Set ``ODM_TRACEBACK=1`` to see the full traceback.
"""
from __future__ import annotations

import copy
import os
from typing import Any, List

from mmengine.config import Config
from mmengine.dataset import BaseDataset
from mmengine.registry import DefaultScope

from .checkpoint import (check_fp32_checkpoint_file,  # noqa: F401
                         fp32_checkpoint_hint, load_fp32_generator,
                         read_fp32_state)

__all__ = ['check_fp32_checkpoint_file', 'fp32_checkpoint_hint',
           'preflight_check', 'preflight_or_exit', 'PREFLIGHT_ERRORS']

#: Exceptions that :func:`preflight_or_exit` prints as one message.
PREFLIGHT_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError)
def _loaders(cfg: Config, key: str) -> List[dict]:
    value = cfg.get(key)
    if not value:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _check_datasets(cfg: Config) -> None:
    from mmagic.registry import DATASETS
    keys = []
    if cfg.get('train_cfg'):
        keys.append('train_dataloader')
    if cfg.get('val_cfg'):
        keys.append('val_dataloader')
    for key in keys:
        for loader in _loaders(cfg, key):
            dataset = loader.get('dataset') if isinstance(loader,
                                                          dict) else None
            if isinstance(dataset, dict):
                dataset = copy.deepcopy(dataset)
                cls = DATASETS.get(dataset.get('type'))
                if isinstance(cls, type) and issubclass(cls, BaseDataset):
                    # a check only: skip the serialisation (a gc.collect)
                    dataset['serialize_data'] = False
                DATASETS.build(dataset)


def _check_model(cfg: Config) -> Any:
    from mmagic.registry import HOOKS, MODELS
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    model = MODELS.build(model_cfg)
    for hook in cfg.get('custom_hooks') or []:
        if isinstance(hook, dict) and hook.get('type') in (
                'OffsetHook', 'NumericalGuardHook'):
            HOOKS.build(copy.deepcopy(hook))
    return model


def _check_fp32(model: Any) -> None:
    path = getattr(model, 'fp32_checkpoint', None)
    if not path:
        return
    load_fp32_generator(model.generator,
                        read_fp32_state(path, model.generator), path)


def preflight_check(cfg: Config) -> None:
    """Run the model, hook, checkpoint and data checks of a train config.

    Builds nothing that writes files. Raises the first problem found, as the
    component that owns the value would (see the module docstring); a
    missing FP32 checkpoint and missing data are reported together, in one
    FileNotFoundError.

    Args:
        cfg: The fully merged training config.
    """
    with DefaultScope.overwrite_default_scope(
            cfg.get('default_scope', 'mmagic')):
        model = _check_model(cfg)
        missing = []  # a missing teacher and missing data: one message
        if cfg.get('train_cfg'):  # init_weights loads it, resumed or not
            try:
                _check_fp32(model)
            except FileNotFoundError as err:
                missing.append(err)
        del model
        try:
            _check_datasets(cfg)
        except FileNotFoundError as err:
            missing.append(err)
        if len(missing) == 1:
            raise missing[0]
        if missing:
            raise FileNotFoundError(' | '.join(
                f'({i + 1}) {e}' for i, e in enumerate(missing)))


def preflight_or_exit(cfg: Config) -> None:
    """:func:`preflight_check`; a failure exits with its message only.

    Exits (``SystemExit``, status 1) with ``<ErrorType>: <message>`` and a
    pointer to docs/troubleshooting.md for the errors in
    :data:`PREFLIGHT_ERRORS`; other exceptions propagate unchanged. With
    ``ODM_TRACEBACK=1`` nothing is caught.

    Args:
        cfg: The fully merged training config.
    """
    if os.environ.get('ODM_TRACEBACK'):
        preflight_check(cfg)
        return
    try:
        preflight_check(cfg)
    except PREFLIGHT_ERRORS as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise SystemExit(
            f'{type(err).__name__}: {msg}\n'
            f'[odm_mm pre-run check: nothing was started or written in '
            f'{cfg.get("work_dir")}. See docs/troubleshooting.md; '
            'ODM_TRACEBACK=1 shows the traceback.]') from None
