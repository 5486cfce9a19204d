"""Test (and evaluate) an mmagic model with odm_mm's components registered.

mmagic's ``tools/test.py`` (same CLI: CONFIG CHECKPOINT, ``--out``,
``--work-dir``, ``--cfg-options``, ``--launcher``), plus ``import odm_mm``,
``--cfg-options odm_data_root=DIR`` and gloo on CPU-only machines. The
metrics of all test sets (e.g. ``Set5/PSNR``, ``Set5/SSIM``) are logged,
and written to ``--out`` (``.json``/``.yaml``/``.pkl``) when given.

Unlike mmengine's default, before anything is written:

* the checkpoint must fit the model key for key (strict; ``--non-strict``
  loads what fits): a checkpoint of another network, or the FP32 teacher in
  place of the trained model, stops with one message saying what the
  checkpoint is (:mod:`odm_mm.checkpoint_match`);
* every test set must be readable (folders, pairs, images; all problems in
  one message).

The config is dumped into the run's ``<work_dir>/<timestamp>/`` folder, so
testing in a training work dir never overwrites the training config, and
result images are written only with ``--save-images``.

Examples::

    python tools/test.py configs/fp32/edsr_x4_t91.py CKPT --out m.json
    bash tools/dist_test.sh CONFIG CKPT 2 --out m.json
"""
import argparse
import os
import os.path as osp
import sys
from typing import Dict, Optional

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
from odm_quiet import demote_param_logs, quiet_third_party  # noqa: E402

quiet_third_party()

import mmengine  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.dist import is_main_process  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402
from mmengine.logging import print_log  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import odm_mm  # noqa: E402,F401  (registers odm_mm into mmagic)
from odm_mm.data_root import merge_cfg_options  # noqa: E402
from odm_mm.launch import prepare_launcher  # noqa: E402
from odm_mm.preflight import (PREFLIGHT_ERRORS, exit_with_message,  # noqa
                              test_preflight_check)

#: Hooks that write result images during the test.
IMAGE_HOOKS = ('BasicVisualizationHook', 'VisualizationHook')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and eval) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out', help='file to save the metrics to (.json, .yaml or .pkl)')
    parser.add_argument(
        '--work-dir', help='the dir to save logs (and visualizations)')
    parser.add_argument(
        '--non-strict', action='store_true',
        help='load a checkpoint that does not fit the model (mmengine\'s '
        'default: keys that fit are loaded, the rest is left as built)')
    parser.add_argument(
        '--save-images', action='store_true',
        help='write the upscaled test images (the config\'s visualization '
        'hook) under the work dir')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value (e.g. '
        'odm_data_root=/data model.generator.mid_channels=16)')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args()
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


class MetricsHook(Hook):
    """Keeps the test metrics and dumps them to ``out`` (if given).

    mmagic's ``MultiTestLoop.run`` returns None, so the metrics are taken
    from ``after_test_epoch``.
    """

    def __init__(self, out: Optional[str] = None) -> None:
        self.out = out
        self.metrics: Dict[str, float] = {}

    def after_test_epoch(self, runner, metrics=None) -> None:
        self.metrics = dict(metrics or {})
        if self.out and is_main_process():
            mmengine.dump(self.metrics, self.out)


class TestRunner(Runner):
    """A Runner that dumps its config into its timestamped log folder.

    mmengine writes ``<work_dir>/<config name>.py``, the same file a
    training run in that work dir wrote; a test must not replace it.
    """

    def dump_config(self) -> None:  # noqa: D102
        if not is_main_process():
            return
        name = osp.basename(self.cfg.filename) if self.cfg.filename \
            else f'{self.timestamp}.py'
        os.makedirs(self.log_dir, exist_ok=True)
        self.cfg.dump(osp.join(self.log_dir, name))


def drop_image_hooks(cfg: Config) -> None:
    """Removes the hooks that write result images from ``custom_hooks``."""
    hooks = cfg.get('custom_hooks') or []
    cfg.custom_hooks = [h for h in hooks if not (
        isinstance(h, dict) and h.get('type') in IMAGE_HOOKS)]


def add_image_hook(cfg: Config) -> None:
    """Adds mmagic's BasicVisualizationHook unless an image hook is there."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(isinstance(h, dict) and h.get('type') in IMAGE_HOOKS
               for h in hooks):
        hooks.append(dict(type='BasicVisualizationHook', interval=1))
    cfg.custom_hooks = hooks


def main() -> None:
    args = parse_args()
    if args.out and not args.out.endswith(('.json', '.yaml', '.yml',
                                           '.pkl', '.pickle')):
        raise SystemExit(
            f'--out {args.out}: use a .json, .yaml or .pkl file')
    cfg = Config.fromfile(args.config)
    merge_cfg_options(cfg, args.cfg_options)
    prepare_launcher(cfg, args.launcher)

    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    cfg.load_from = args.checkpoint
    cfg.resume = False
    # Testing needs no training data. Without this, mmagic's
    # BasicVisualizationHook reads runner.iter, which builds the training
    # dataloader, so T91/DIV2K would have to exist to test a model.
    for key in ('train_dataloader', 'train_cfg', 'optim_wrapper',
                'param_scheduler'):
        cfg[key] = None
    if args.save_images:
        add_image_hook(cfg)
    else:
        drop_image_hooks(cfg)

    demote_param_logs()
    # one message, before the Runner touches the work dir
    if os.environ.get('ODM_TRACEBACK'):
        test_preflight_check(cfg, args.checkpoint, not args.non_strict)
    else:
        try:
            test_preflight_check(cfg, args.checkpoint, not args.non_strict)
        except PREFLIGHT_ERRORS as err:
            exit_with_message(err, cfg)
    runner = TestRunner.from_cfg(cfg)
    hook = MetricsHook(args.out)
    runner.register_hook(hook, 'LOWEST')
    runner.test()
    lines = [f'  {k}: {v:.4f}' if isinstance(v, float) else f'  {k}: {v}'
             for k, v in hook.metrics.items()]
    print_log('Test metrics:\n' + '\n'.join(lines), logger='current')


if __name__ == '__main__':
    main()
