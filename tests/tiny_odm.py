"""Helpers for the reliability tests: tiny ODM configs run by tools/train.py.

The tests write a small config file that inherits the real local recipe
``configs/odm/local/edsr_x4_w2a2_t91.py`` (T91 training with random crops,
flips and on-the-fly LR; Set5 validation) and shrinks it: EDSR with 8
channels and 2 blocks, a 48 px HR patch (the recipe's pipeline otherwise),
batch 2, no worker processes, a few iterations. The
FP32 teacher is a random tiny EDSR saved in mmagic's checkpoint format.

:func:`train` runs ``tools/train.py`` in this process (``runpy``), which
avoids paying the ~10 s mmagic import per run; :func:`isolated_runs` resets
the global state that an mmengine Runner changes.
"""
from __future__ import annotations

import contextlib
import copy
import os
import random
import runpy
import sys
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

from conftest import REPO

TRAIN_PY = REPO / 'tools' / 'train.py'
BASE_CONFIG = REPO / 'configs' / 'odm' / 'local' / 'edsr_x4_w2a2_t91.py'
TINY_GEN = dict(type='EDSRNet', in_channels=3, out_channels=3,
                mid_channels=8, num_blocks=2, upscale_factor=4,
                rgb_mean=[0.4488, 0.4371, 0.4040], rgb_std=[1.0, 1.0, 1.0])

CONFIG_TEMPLATE = '''
_base_ = [{base!r}]
experiment_name = {name!r}
model = dict(
    generator=dict(mid_channels=8, num_blocks=2),
    fp32_checkpoint={fp32!r})
# the recipe's T91 pipeline (random crop, flips, transpose, MATLAB-like
# bicubic LR, uint8 rounding) with a 48 px HR patch instead of 96
train_pipeline = [
    dict(type='LoadImageFromFile', key='gt', color_type='color',
         channel_order='rgb', imdecode_backend='cv2'),
    dict(type='Crop', keys=['gt'], crop_size=(48, 48), random_crop=True),
    dict(type='Flip', keys=['gt'], flip_ratio=0.5, direction='horizontal'),
    dict(type='Flip', keys=['gt'], flip_ratio=0.5, direction='vertical'),
    dict(type='RandomTransposeHW', keys=['gt'], transpose_ratio=0.5),
    dict(type='CopyValues', src_keys=['gt'], dst_keys=['img']),
    dict(type='MATLABLikeResize', keys=['img'], output_shape=(12, 12)),
    dict(type='ToUint8', keys=['img']),
    dict(type='SetValues', dictionary=dict(
        scale=4, img_channel_order='rgb', img_color_type='color')),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    num_workers=0, batch_size=2, persistent_workers=False,
    dataset=dict(min_gt_size=48, pipeline=train_pipeline))
val_dataloader = dict(num_workers=0)
train_cfg = dict(max_iters={max_iters}, val_interval={val_interval})
param_scheduler = dict(milestones=[{milestone}])
randomness = dict(seed=0, deterministic=True)
custom_hooks = [
    dict(type='OffsetHook', ratio=0.5, num_batches=2),
    dict(type='NumericalGuardHook'),
] + {extra_hooks}
default_hooks = dict(
    logger=dict(interval=1),
    checkpoint=dict(interval={ckpt_interval}, max_keep_ckpts=-1,
                    save_best=None))
'''


def write_fp32_checkpoint(path: Path, seed: int = 0) -> Path:
    """Save a random tiny EDSR x4 as ``{'meta', 'state_dict'}``."""
    import odm_mm  # noqa: F401  (registers)
    from mmagic.registry import MODELS
    torch.manual_seed(seed)
    gen = MODELS.build(copy.deepcopy(TINY_GEN))
    torch.save({'meta': {}, 'state_dict': {
        f'generator.{k}': v for k, v in gen.state_dict().items()}}, path)
    return path


def write_config(path: Path, fp32: Path, name: str, max_iters: int = 4,
                 val_interval: int = 2, ckpt_interval: int = 2,
                 milestone: int = 3,
                 extra_hooks: Optional[List[dict]] = None,
                 base: Path = BASE_CONFIG) -> Path:
    """Write a tiny ODM config (see the module docstring)."""
    path.write_text(CONFIG_TEMPLATE.format(
        base=str(base), name=name, fp32=str(fp32), max_iters=max_iters,
        val_interval=val_interval, milestone=milestone,
        ckpt_interval=ckpt_interval, extra_hooks=repr(extra_hooks or [])))
    return path


def _no_yapf(text: str, **_kwargs) -> tuple:
    """Stand-in for yapf's ``FormatCode``: the config text, unformatted."""
    return text, None


@contextlib.contextmanager
def isolated_runs() -> Iterator[None]:
    """Restore RNG, determinism, env and cwd after in-process Runner runs.

    Also skips yapf formatting of the config text while inside: mmengine
    formats the ~300-line config 3x per Runner and once per checkpoint
    (~2 s each here), which would dominate these tests. The dumped config
    and ``meta['cfg']`` are then valid but unformatted Python.
    """
    import mmengine.config.config as mm_config
    states = (random.getstate(), np.random.get_state(),
              torch.get_rng_state())
    det = torch.are_deterministic_algorithms_enabled()
    env = dict(os.environ)
    cwd = os.getcwd()
    argv = list(sys.argv)
    format_code = mm_config.FormatCode
    mm_config.FormatCode = _no_yapf
    try:
        yield
    finally:
        mm_config.FormatCode = format_code
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        torch.use_deterministic_algorithms(det)
        os.environ.clear()
        os.environ.update(env)
        os.chdir(cwd)
        sys.argv = argv


def train(config: Path, work_dir: Path, data_root: Path,
          options: Sequence[str] = (), args: Sequence[str] = ()) -> None:
    """Run ``tools/train.py CONFIG --work-dir W [args] --cfg-options ...``.

    In this process, from ``work_dir``'s parent (relative paths in configs
    then land in the tmp dir). Exceptions propagate to the caller.
    """
    argv = [str(TRAIN_PY), str(config), '--work-dir', str(work_dir),
            *map(str, args), '--cfg-options', f'odm_data_root={data_root}',
            *options]
    with isolated_runs():
        work_dir.parent.mkdir(parents=True, exist_ok=True)
        os.chdir(work_dir.parent)
        sys.argv = argv
        runpy.run_path(str(TRAIN_PY), run_name='__main__')


def snapshot(folder: Path) -> Dict[str, bytes]:
    """``{relative path: bytes}`` of every file below ``folder``."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob('*')) if p.is_file()}


def load(path: Path) -> dict:
    """``torch.load`` with ``weights_only=True`` (odm_mm's safe globals)."""
    import odm_mm  # noqa: F401  (registers the safe globals)
    return torch.load(path, map_location='cpu', weights_only=True)


def val_metrics(work_dir: Path) -> List[Dict[str, float]]:
    """The validation metrics of all runs in ``work_dir``, in run order.

    Read from each run's ``<timestamp>/vis_data/scalars.json`` (mmengine
    logs validation lines with the metric names, e.g. ``Set5/PSNR``).
    """
    import json
    out: List[Dict[str, float]] = []
    for f in sorted(work_dir.glob('*/vis_data/scalars.json')):
        for line in f.read_text().splitlines():
            rec = json.loads(line)
            metrics = {k: v for k, v in rec.items() if '/' in k}
            if metrics:
                out.append(metrics)
    return out
