"""Where the SR images live: ``ODM_DATA_ROOT`` and its config override.

Configs read the root in exactly one place,
``configs/_base_/datasets/data_root.py``::

    odm_data_root = os.environ.get('ODM_DATA_ROOT') or '<repo>/../shared/data'

and build every dataset path from it when the config is parsed. To point an
already parsed config somewhere else, ``tools/train.py`` / ``tools/test.py``
accept ``--cfg-options odm_data_root=/some/dir``: :func:`merge_cfg_options`
merges the options and then moves every path below the old root to the new
one (:func:`rebase_data_root`), so the override reaches all dataloaders.
"""
from __future__ import annotations

import os
import os.path as osp
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # annotations only: the root lookup needs no mmengine
    from mmengine.config import Config

#: Environment variable that overrides the data root.
ENV_VAR = 'ODM_DATA_ROOT'
#: Name of the config variable that holds the data root.
CFG_KEY = 'odm_data_root'


def default_data_root() -> str:
    """Returns the data root used when ``ODM_DATA_ROOT`` is not set.

    Returns:
        ``<repo>/../shared/data`` where ``<repo>`` holds the ``odm_mm``
        package (``/work/main`` -> ``/work/shared/data``).
    """
    repo = osp.dirname(osp.dirname(osp.abspath(__file__)))
    return osp.normpath(osp.join(repo, '..', 'shared', 'data'))


def get_data_root() -> str:
    """Returns ``$ODM_DATA_ROOT`` if set (and non-empty), else the default.

    Returns:
        The data root as an absolute, normalised path.
    """
    root = os.environ.get(ENV_VAR) or default_data_root()
    return osp.normpath(osp.abspath(osp.expanduser(root)))


#: Environment variable that overrides the folder of FP32 teachers.
MODELS_ENV_VAR = 'ODM_MODELS_ROOT'


def get_models_root() -> str:
    """``$ODM_MODELS_ROOT`` if set, else ``<repo>/../shared/models``.

    The folder of FP32 teacher checkpoints (e.g.
    ``edsr_x4c64b16_t91_fp32.pth``, the EDSR-baseline x4 trained on T91).
    """
    repo = osp.dirname(osp.dirname(osp.abspath(__file__)))
    root = os.environ.get(MODELS_ENV_VAR) or osp.join(repo, '..', 'shared',
                                                      'models')
    return osp.normpath(osp.abspath(osp.expanduser(root)))


def how_to_set_root() -> str:
    """One sentence telling the user how to point odm_mm at their data."""
    return (f'Set the environment variable {ENV_VAR}=/path/to/data (default: '
            f'{default_data_root()}) or pass --cfg-options '
            f'{CFG_KEY}=/path/to/data to tools/train.py or tools/test.py; '
            'see docs/data.md for the expected layout.')


def _rebase(value: Any, old: str, new: str) -> Any:
    """Recursively replaces the path prefix ``old`` by ``new`` in strings."""
    if isinstance(value, str):
        if value == old or value.startswith(old.rstrip('/') + '/'):
            return new.rstrip('/') + value[len(old.rstrip('/')):]
        return value
    if isinstance(value, dict):
        return type(value)({k: _rebase(v, old, new) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return type(value)(_rebase(v, old, new) for v in value)
    return value


def rebase_data_root(cfg: Config, old_root: str, new_root: str) -> None:
    """Moves every path below ``old_root`` in ``cfg`` to ``new_root``.

    Args:
        cfg: A parsed config; modified in place.
        old_root: The data root the config was parsed with.
        new_root: The data root to use instead.
    """
    if not old_root or osp.normpath(old_root) == osp.normpath(new_root):
        return
    old_root = osp.normpath(old_root)
    new_root = osp.normpath(osp.abspath(osp.expanduser(new_root)))
    for key in list(cfg.keys()):
        cfg[key] = _rebase(cfg[key], old_root, new_root)
    cfg[CFG_KEY] = new_root


def merge_cfg_options(cfg: Config, options: Optional[dict]) -> None:
    """Merges ``--cfg-options`` into ``cfg``, honouring ``odm_data_root``.

    A new ``odm_data_root`` moves all dataset paths below the old root;
    every other option is merged as mmengine does.

    Args:
        cfg: A parsed config; modified in place.
        options: The ``--cfg-options`` dict, or None.
    """
    if not options:
        return
    options = dict(options)
    new_root = options.pop(CFG_KEY, None)
    if new_root is not None:
        old_root = cfg.get(CFG_KEY)
        if old_root is None:
            raise KeyError(
                f'--cfg-options {CFG_KEY}={new_root} given, but the config '
                f'defines no {CFG_KEY}: it does not use '
                'configs/_base_/datasets/data_root.py. Override the '
                'dataloaders\' data_root instead.')
        rebase_data_root(cfg, old_root, str(new_root))
    if options:
        cfg.merge_from_dict(options)
