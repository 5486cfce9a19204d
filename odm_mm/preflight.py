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
import os.path as osp
from typing import Any, List, Optional, Union

import torch
from mmengine.config import Config
from mmengine.dataset import BaseDataset
from mmengine.registry import DefaultScope

__all__ = ['check_fp32_checkpoint_file', 'fp32_checkpoint_hint',
           'preflight_check', 'preflight_or_exit', 'PREFLIGHT_ERRORS']

#: Exceptions that :func:`preflight_or_exit` prints as one message.
PREFLIGHT_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError)
#: Our FP32 recipes per generator (``configs/fp32/<name>_x<s>_t91.py``).
FP32_RECIPES = {'EDSRNet': 'edsr', 'RDNNet': 'rdn', 'MSRResNet': 'msrresnet'}
_ZOO = 'https://download.openmmlab.com/mmediting/restorers/'
#: Official mmagic DIV2K checkpoints (the ``Weights:`` of its metafiles).
OFFICIAL_FP32 = {
    ('EDSRNet', 2): _ZOO + 'edsr/edsr_x2c64b16_1x16_300k_div2k_20200604-'
    '19fe95ea.pth',
    ('EDSRNet', 3): _ZOO + 'edsr/edsr_x3c64b16_1x16_300k_div2k_20200608-'
    '36d896f4.pth',
    ('EDSRNet', 4): _ZOO + 'edsr/edsr_x4c64b16_1x16_300k_div2k_20200608-'
    '3c2af8a3.pth',
    ('RDNNet', 2): _ZOO + 'rdn/rdn_x2c64b16_g1_1000k_div2k_20210419-'
    'dc146009.pth',
    ('RDNNet', 3): _ZOO + 'rdn/rdn_x3c64b16_g1_1000k_div2k_20210419-'
    'b93cb6aa.pth',
    ('RDNNet', 4): _ZOO + 'rdn/rdn_x4c64b16_g1_1000k_div2k_20210419-'
    '3577d44f.pth',
    ('MSRResNet', 4): _ZOO + 'srresnet_srgan/msrresnet_x4c64b16_1x16_300k_'
    'div2k_20200521-61556be5.pth',
}
_REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def fp32_checkpoint_hint(gen_type: Optional[str],
                         scale: Optional[int] = None) -> str:
    """How to obtain an FP32 checkpoint for a generator.

    Args:
        gen_type: Generator class name (``'EDSRNet'`` ...).
        scale: Upscale factor, if known.

    Returns:
        One or two sentences naming our FP32 config and the official mmagic
        checkpoint URL where they exist.
    """
    recipe = FP32_RECIPES.get(gen_type or '')
    cfgs = []
    if recipe:
        scales = [scale] if scale else [2, 3, 4]
        cfgs = [f'configs/fp32/{recipe}_x{s}_t91.py' for s in scales
                if osp.isfile(osp.join(_REPO, 'configs', 'fp32',
                                       f'{recipe}_x{s}_t91.py'))]
    train = (f'train it with `python tools/train.py {cfgs[0]}` (its last '
             'checkpoint is work_dirs/<config name>/iter_<N>.pth)'
             if cfgs else 'train it with the matching configs/fp32/ config')
    url = OFFICIAL_FP32.get((gen_type, scale)) if scale else None
    down = (f'download the official mmagic checkpoint {url}'
            if url else 'download the official mmagic checkpoint (the '
            '"Weights:" URL in mmagic configs/<model>/metafile.yml)')
    return (f'To get one, {train}, or {down}; then set '
            'model.fp32_checkpoint=PATH (a URL works too).')


def _gen_info(generator: Union[dict, torch.nn.Module, None]) -> tuple:
    if isinstance(generator, dict):
        return generator.get('type'), generator.get('upscale_factor')
    if isinstance(generator, torch.nn.Module):
        return (type(generator).__name__,
                getattr(generator, 'upscale_factor', None))
    return None, None


def check_fp32_checkpoint_file(path: Optional[str],
                               generator: Union[dict, torch.nn.Module,
                                                None] = None) -> None:
    """Raise one clear FileNotFoundError if a local checkpoint is missing.

    URLs and mmengine prefixes (``scheme://...``) are left to the loader.

    Args:
        path: ``model.fp32_checkpoint``; None/empty is accepted.
        generator: Generator config or module, for the hint.
    """
    if not path or '://' in str(path) or osp.isfile(str(path)):
        return
    gen_type, scale = _gen_info(generator)
    raise FileNotFoundError(
        f'model.fp32_checkpoint: file {path!r} does not exist (working '
        f'directory {os.getcwd()}). ODM needs the pre-trained FP32 '
        f'{gen_type or "generator"} as student init and teacher. ' +
        fp32_checkpoint_hint(gen_type, scale))


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
    from mmengine.runner.checkpoint import _load_checkpoint

    from .models import _generator_state, load_fp32_generator
    path = getattr(model, 'fp32_checkpoint', None)
    if not path:
        return
    check_fp32_checkpoint_file(path, model.generator)
    state = _generator_state(_load_checkpoint(path, map_location='cpu'))
    load_fp32_generator(model.generator, state, path)


def preflight_check(cfg: Config) -> None:
    """Run the model, hook, checkpoint and data checks of a train config.

    Builds nothing that writes files. Raises the first problem found, as the
    component that owns the value would (see the module docstring).

    Args:
        cfg: The fully merged training config.
    """
    with DefaultScope.overwrite_default_scope(
            cfg.get('default_scope', 'mmagic')):
        model = _check_model(cfg)
        if cfg.get('train_cfg'):  # init_weights loads it, resumed or not
            _check_fp32(model)
        del model
        _check_datasets(cfg)


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
