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
           'preflight_check', 'preflight_or_exit', 'test_preflight_check',
           'exit_with_message', 'PREFLIGHT_ERRORS']

#: Exceptions that :func:`preflight_or_exit` prints as one message.
PREFLIGHT_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError)


def _loaders(cfg: Config, key: str) -> List[dict]:
    value = cfg.get(key)
    if not value:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _dataset_keys(cfg: Config) -> List[str]:
    keys = []
    if cfg.get('train_cfg'):
        keys.append('train_dataloader')
    if cfg.get('val_cfg'):
        keys.append('val_dataloader')
    return keys


def _dataset_errors(cfg: Config, keys: List[str]) -> List[Exception]:
    """Build every dataset of the ``keys`` dataloaders; their errors.

    Every dataset is built, so the problems of all of them (e.g. corrupt
    images in T91 *and* Set5) can be reported in one message.
    """
    from mmagic.registry import DATASETS
    errors: List[Exception] = []
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
                try:
                    DATASETS.build(dataset)
                except (ValueError, FileNotFoundError) as err:
                    errors.append(err)
    return errors


def _raise_together(errors: List[Exception]) -> None:
    """Raise the one error, or all of them as one (numbered) message: a
    FileNotFoundError if any is one, else a ValueError."""
    if len(errors) == 1:
        raise errors[0]
    if errors:
        kind = FileNotFoundError if any(
            isinstance(e, FileNotFoundError) for e in errors) else ValueError
        raise kind(' | '.join(f'({i + 1}) {e}' for i, e in enumerate(errors)))


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

    Builds nothing that writes files. Raises the problem found, as the
    component that owns the value would (see the module docstring); a
    missing FP32 checkpoint and the problems of every dataset (missing
    folders, corrupt images) are reported together, in one error.

    Args:
        cfg: The fully merged training config.
    """
    with DefaultScope.overwrite_default_scope(
            cfg.get('default_scope', 'mmagic')):
        model = _check_model(cfg)
        errors = []  # a missing teacher and bad data: one message
        if cfg.get('train_cfg'):  # init_weights loads it, resumed or not
            try:
                _check_fp32(model)
            except FileNotFoundError as err:
                errors.append(err)
        del model
        errors += _dataset_errors(cfg, _dataset_keys(cfg))
        _raise_together(errors)


def test_preflight_check(cfg: Config, checkpoint: str,
                         strict: bool = True) -> None:
    """The checks of ``tools/test.py``, before anything is written.

    The model builds, the checkpoint is readable and (``strict``) fits it
    key for key (:func:`~odm_mm.checkpoint_match.check_checkpoint_fits`),
    and every test dataset builds (folders, pairs, readable images). All
    problems found come in one error.

    Args:
        cfg: The fully merged config.
        checkpoint: The checkpoint to test.
        strict: Compare its keys and shapes with the model.
    """
    from .checkpoint_match import check_checkpoint_fits, read_state
    with DefaultScope.overwrite_default_scope(
            cfg.get('default_scope', 'mmagic')):
        model = _check_model(cfg)
        errors: List[Exception] = []
        try:
            state, _ = read_state(checkpoint)
            if strict:
                check_checkpoint_fits(model, checkpoint, state)
        except (ValueError, FileNotFoundError) as err:
            errors.append(err)
        del model
        errors += _dataset_errors(cfg, ['test_dataloader'])
        _raise_together(errors)


def exit_with_message(err: BaseException, cfg: Config,
                      what: str = 'pre-run check') -> None:
    """Exit (status 1) with ``<ErrorType>: <message>`` and where to look.

    Args:
        err: The error to show (no traceback).
        cfg: The config (its ``work_dir`` is named).
        what: Which check failed, for the last line.
    """
    msg = err.args[0] if isinstance(err, KeyError) and err.args else err
    raise SystemExit(
        f'{type(err).__name__}: {msg}\n'
        f'[odm_mm {what}: nothing was started or written in '
        f'{cfg.get("work_dir")}. See docs/troubleshooting.md; '
        'ODM_TRACEBACK=1 shows the traceback.]') from None


def preflight_or_exit(cfg: Config) -> None:
    """The fragment's report, then :func:`preflight_check`; a failure
    exits with its message only.

    First logs what the ODM fragment replaces in the stock config and maps
    a stock ``save_best='PSNR'`` to the validation set's metric
    (:func:`odm_mm.fragment.apply_fragment_checks`). Exits (``SystemExit``,
    status 1) with ``<ErrorType>: <message>`` and a pointer to
    docs/troubleshooting.md for the errors in :data:`PREFLIGHT_ERRORS`;
    other exceptions propagate unchanged. With ``ODM_TRACEBACK=1`` nothing
    is caught.

    Args:
        cfg: The fully merged training config (``save_best`` may change).
    """
    from .fragment import apply_fragment_checks
    if os.environ.get('ODM_TRACEBACK'):
        apply_fragment_checks(cfg)
        preflight_check(cfg)
        return
    try:
        apply_fragment_checks(cfg)
        preflight_check(cfg)
    except PREFLIGHT_ERRORS as err:
        exit_with_message(err, cfg)
