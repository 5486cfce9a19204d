"""Train an mmagic model with odm_mm's components registered.

mmagic's ``tools/train.py`` (same CLI), plus: ``import odm_mm`` (registers
the datasets, transforms, QuantConv, ... and the weights_only-safe
checkpoint globals), ``--resume [PATH]``, ``--cfg-options
odm_data_root=DIR`` (moves every dataset path, see docs/data.md) and
gloo on CPU-only machines for ``--launcher pytorch``.

Examples::

    python tools/train.py configs/fp32/edsr_x4_t91.py
    python tools/train.py CONFIG --work-dir work_dirs/x --resume
    python tools/train.py CONFIG --resume work_dirs/x/iter_2000.pth
    bash tools/dist_train.sh CONFIG 2 --work-dir work_dirs/x
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from odm_quiet import demote_param_logs, quiet_third_party  # noqa: E402

quiet_third_party()  # before torch/mmagic are imported

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import odm_mm  # noqa: E402,F401  (registers odm_mm into mmagic)
from odm_mm.data_root import merge_cfg_options  # noqa: E402
from odm_mm.launch import prepare_launcher  # noqa: E402
from odm_mm.preflight import preflight_or_exit  # noqa: E402
from odm_mm.resume_check import check_resume_or_exit  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        help='resume training: alone, from the latest checkpoint in the work '
        'dir; with a path, from that checkpoint')
    parser.add_argument(
        '--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value (e.g. '
        'odm_data_root=/data train_cfg.max_iters=10)')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    # torch.distributed.launch passes --local-rank (torch>=2) / --local_rank
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def enable_amp(cfg: Config) -> None:
    """Switches a plain ``OptimWrapper`` to ``AmpOptimWrapper``."""
    wrapper = cfg.optim_wrapper
    if wrapper.get('type', 'OptimWrapper') == 'AmpOptimWrapper':
        return
    if wrapper.get('type', 'OptimWrapper') != 'OptimWrapper':
        raise ValueError('--amp supports optim_wrapper type OptimWrapper '
                         f'only, got {wrapper.get("type")}')
    wrapper.type = 'AmpOptimWrapper'
    wrapper.loss_scale = 'dynamic'


def main() -> None:
    args = parse_args()
    cfg = Config.fromfile(args.config)
    merge_cfg_options(cfg, args.cfg_options)
    prepare_launcher(cfg, args.launcher)

    # work_dir priority: CLI > config > ./work_dirs/<config name>
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        enable_amp(cfg)
    if args.resume is not None:
        cfg.resume = True
        if args.resume != 'auto':
            if not osp.isfile(args.resume):
                raise FileNotFoundError(
                    f'--resume {args.resume}: no such checkpoint file')
            cfg.load_from = args.resume

    # one clear message, before the Runner touches the work dir
    demote_param_logs()
    check_resume_or_exit(cfg)
    preflight_or_exit(cfg)
    runner = Runner.from_cfg(cfg)
    print_log(f'Working directory: {cfg.work_dir}', logger='current')
    runner.train()
    print_log(f'Checkpoints and logs saved under {cfg.work_dir}',
              logger='current')


if __name__ == '__main__':
    main()
