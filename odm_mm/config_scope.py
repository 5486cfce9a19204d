"""``odm_mm::`` in a config's ``_base_``, as ``mmagic::`` works for mmagic.

Glue (mmengine configs). mmengine resolves ``'<package>::<path>'`` bases
only for the OpenMMLab packages it knows, through the package's installed
``.mim/configs`` folder, and then scopes every registry lookup of that base
to the package. odm_mm's components live in mmagic's registries and its
configs in the repository's ``configs/`` (an editable install has no
``.mim`` folder), so, after ``import odm_mm``, a config may say::

    _base_ = ['mmagic::edsr/edsr_x4c64b16_1xb16-300k_div2k.py',
              'odm_mm::odm/_base_/odm.py']

and ``odm_mm::<path>`` is read as ``<repo>/configs/<path>``, a plain local
base (no separate scope). The tools (``tools/train.py``, ``test.py``,
``infer.py``) import odm_mm before they read the config. mmagic's own
``tools/train.py`` reads the config first: give it the fragment's path
relative to your config instead (the package's own configs do).
"""
from __future__ import annotations

import os.path as osp
from typing import Optional, Tuple

from mmengine.config import Config

__all__ = ['SCOPE', 'CONFIGS_DIR', 'resolve', 'install']

#: The prefix of odm_mm's configs.
SCOPE = 'odm_mm::'
#: Where ``odm_mm::`` paths point.
CONFIGS_DIR = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                       'configs')


def resolve(cfg_path: str) -> str:
    """``<CONFIGS_DIR>/<path>`` for ``'odm_mm::<path>'``.

    Raises:
        FileNotFoundError: no such config in the package, naming the
            folder searched.
    """
    rel = cfg_path[len(SCOPE):]
    path = osp.join(CONFIGS_DIR, rel)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'{cfg_path}: no such config in odm_mm (looked for {path}); the '
            "fragment is 'odm_mm::odm/_base_/odm.py'")
    return path


def install() -> None:
    """Teach ``Config`` the ``odm_mm::`` prefix (idempotent)."""
    original = Config._get_cfg_path
    if getattr(original, 'odm_mm', False):
        return

    def _get_cfg_path(cfg_path: str,
                      filename: str) -> Tuple[str, Optional[str]]:
        if cfg_path.startswith(SCOPE):
            return resolve(cfg_path), None
        return original(cfg_path, filename)

    _get_cfg_path.odm_mm = True  # type: ignore[attr-defined]
    Config._get_cfg_path = staticmethod(_get_cfg_path)
