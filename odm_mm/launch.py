"""Distributed launch on machines without CUDA (gloo), for tools/*.py.

mmengine 0.10.7's ``init_dist('pytorch')`` always calls
``torch.cuda.set_device(local_rank)``, which raises on a CPU-only machine
("Found no NVIDIA driver"), and its default DDP wrapper passes
``device_ids=[LOCAL_RANK]``, which DDP rejects for CPU modules. With CUDA
present nothing here changes mmengine's behaviour (nccl, one GPU per rank).

Without CUDA and with ``--launcher pytorch`` (``tools/dist_train.sh``,
``torchrun``), :func:`prepare_launcher` initialises the process group with
the gloo backend from the ``torchrun`` environment before the Runner is
built (the Runner then skips its own ``init_dist``), and sets a
``model_wrapper_cfg`` whose DDP has ``device_ids=None``.
"""
import os
from typing import Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.logging import print_log

_TORCHRUN_ENV = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                 'MASTER_PORT')


def _init_gloo(timeout_s: Optional[int]) -> None:
    missing = [k for k in _TORCHRUN_ENV if k not in os.environ]
    if missing:
        raise RuntimeError(
            '--launcher pytorch needs the torchrun environment, missing '
            f'{missing}. Start with tools/dist_train.sh CONFIG NPROC or '
            '`python -m torch.distributed.run --nproc_per_node N '
            'tools/train.py CONFIG --launcher pytorch`.')
    kwargs = {}
    if timeout_s is not None:
        import datetime
        kwargs['timeout'] = datetime.timedelta(seconds=timeout_s)
    torch_dist.init_process_group(
        backend='gloo',
        rank=int(os.environ['RANK']),
        world_size=int(os.environ['WORLD_SIZE']),
        **kwargs)


def prepare_launcher(cfg: Config, launcher: str) -> None:
    """Sets ``cfg.launcher`` and, on CPU-only machines, starts gloo.

    Args:
        cfg: The parsed config; ``launcher`` (and on CPU
            ``model_wrapper_cfg``) is set in place.
        launcher: ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.

    Raises:
        ValueError: For an unknown launcher, or slurm/mpi without CUDA.
    """
    if launcher not in ('none', 'pytorch', 'slurm', 'mpi'):
        raise ValueError(f'Unknown launcher {launcher!r}; use none, '
                         'pytorch, slurm or mpi.')
    cfg.launcher = launcher
    if launcher == 'none' or torch.cuda.is_available():
        return
    if launcher != 'pytorch':
        raise ValueError(
            f'--launcher {launcher} needs CUDA GPUs; on a CPU-only machine '
            'use --launcher pytorch (tools/dist_train.sh), which runs gloo.')
    if not torch_dist.is_initialized():
        dist_cfg = cfg.get('env_cfg', {}).get('dist_cfg', {})
        _init_gloo(dist_cfg.get('timeout'))
    wrapper = cfg.get('model_wrapper_cfg') or dict(
        type='MMDistributedDataParallel', broadcast_buffers=False)
    wrapper['device_ids'] = None  # CPU modules: DDP needs device_ids=None
    cfg.model_wrapper_cfg = wrapper
    print_log(
        f'No CUDA: rank {torch_dist.get_rank()}/{torch_dist.get_world_size()}'
        ' uses the gloo backend on CPU.',
        logger='current')
