"""ProgressFileHook: a run's progress as JSON, for another process to show.

Glue (mmengine). ``make demo`` runs every stage in a worker process whose
console output goes to a log file; the demo's own process draws one progress
bar per stage from the file this hook keeps up to date (atomic rewrite, at
most every ``interval_s`` seconds and at every stage change)::

    {"stage": "calib" | "train" | "test" | "done",
     "calib": [done, total],             # OffsetHook's calibration passes
     "train": [iter, max_iters], "loss": 0.0312,
     "test": [images done, total], "psnr": {"Set5": 29.1, ...},  # running
     "metrics": {"Set5/PSNR": ..., ...}}  # when the test epoch is over

Calibration (``OffsetHook.before_train``) is followed by counting the
forward calls of the data preprocessor and the generator until the first
training iteration (``OffsetHook`` draws ``num_batches`` batches, measures
them, then measures the quantization error on them: 3 x ``num_batches``
calls; 4 x with ``offset_init='stats'``). The running test PSNR is the mean
of what mmagic's ``PSNR`` metrics of the current test set have recorded so
far (the numbers of the final table, image by image).

With ``threads_file`` the process that reads the progress can also hand this
run more CPU threads while it trains or tests: when the file holds a
positive integer different from ``torch.get_num_threads()``, the hook calls
``torch.set_num_threads`` with it before the next iteration (the file is
read at most every ``interval_s`` seconds). ``make demo`` runs PAMS and ODM
as two single-thread workers and gives the second core to the one still
running when the other is done.

With ``save_dir`` every test prediction is also written as an 8-bit RGB PNG
``<save_dir>/<set>/<image>.png`` (``<set>`` is the folder above the HR
image's folder; mmagic's ``DataPreprocessor.destruct`` hands 3-channel
predictions over in BGR order, they are stored as RGB), e.g. to compare two
models crop by crop afterwards.

Usage (``custom_imports`` must import this module)::

    custom_imports = dict(imports=['odm_mm', 'odm_mm.progress'])
    custom_hooks = [dict(type='ProgressFileHook', path='progress.json')]
"""
from __future__ import annotations

import json
import os
import os.path as osp
import time
from typing import Dict, List, Optional

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from mmagic.registry import HOOKS

__all__ = ['ProgressFileHook', 'read_progress']


def read_progress(path: str) -> Dict:
    """The last state a :class:`ProgressFileHook` wrote ({} if none yet)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


@HOOKS.register_module()
class ProgressFileHook(Hook):
    """Keep ``path`` (JSON) up to date with the run's stage and counters.

    Args:
        path: The JSON file (relative paths are below the work dir).
        save_dir: Also save every test prediction below this folder.
        interval_s: Minimum seconds between two rewrites within a stage
            (and between two reads of ``threads_file``).
        threads_file: A text file with the number of CPU threads this run
            may use from now on (read before train and test iterations;
            absent, empty or invalid: nothing changes).
    """

    priority = 'VERY_HIGH'  # before OffsetHook's calibration (HIGH)

    def __init__(self, path: str = 'progress.json',
                 save_dir: Optional[str] = None,
                 interval_s: float = 0.5,
                 threads_file: Optional[str] = None) -> None:
        self.path = path
        self.save_dir = save_dir
        self.interval_s = interval_s
        self.threads_file = threads_file
        self._threads_read = float('-inf')
        self.state: Dict = {'stage': 'start'}
        self._last = 0.0
        self._handles: List = []

    # ---------------------------------------------------------------- output
    def _file(self, runner) -> str:
        return self.path if osp.isabs(self.path) else \
            osp.join(runner.work_dir, self.path)

    def _write(self, runner, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        path = self._file(runner)
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
        tmp = f'{path}.{os.getpid()}.tmp'
        with open(tmp, 'w') as f:
            json.dump(self.state, f)
        os.replace(tmp, path)

    @staticmethod
    def _model(runner):
        m = runner.model
        return m.module if is_model_wrapper(m) else m

    def _apply_threads(self) -> None:
        """Take the thread count of ``threads_file`` if it changed."""
        now = time.monotonic()
        if not self.threads_file or now - self._threads_read < \
                self.interval_s:
            return
        self._threads_read = now
        try:
            with open(self.threads_file) as f:
                n = int(f.read().strip())
        except (OSError, ValueError):
            return
        if n >= 1 and n != torch.get_num_threads():
            print_log(f'ProgressFileHook: {torch.get_num_threads()} -> {n} '
                      f'CPU threads ({self.threads_file})', logger='current')
            torch.set_num_threads(n)
            self.state['threads'] = n

    # ----------------------------------------------------------- calibration
    def _calibration_passes(self, runner) -> int:
        model = self._model(runner)
        if not hasattr(model, 'quant_layers'):
            return 0
        if all(bool(m.act_quantizer.initialized)
               for _, m in model.quant_layers()):
            return 0  # restored from a checkpoint: OffsetHook skips it
        for h in runner.hooks:  # OffsetHook and its subclasses
            if callable(getattr(h, 'calibration_passes', None)):
                return int(h.calibration_passes(runner))
        return 0

    def before_train(self, runner) -> None:  # noqa: D102
        total = self._calibration_passes(runner)
        self.state.update(train=[runner.iter, runner.max_iters])
        if total:
            self.state.update(stage='calib', calib=[0, total])
            model = self._model(runner)

            def count(*_):
                done, tot = self.state['calib']
                self.state['calib'] = [min(done + 1, tot), tot]
                self._write(runner)

            self._handles = [
                model.data_preprocessor.register_forward_hook(count),
                model.generator.register_forward_hook(count)]
        else:
            self.state.update(stage='train')
        self._write(runner, force=True)

    def _end_calibration(self, runner) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        if 'calib' in self.state:
            tot = self.state['calib'][1]
            self.state['calib'] = [tot, tot]
        self.state['stage'] = 'train'
        self._write(runner, force=True)

    # -------------------------------------------------------------- training
    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:  # noqa: D102
        if self.state.get('stage') == 'calib':
            self._end_calibration(runner)
        self._apply_threads()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:  # noqa: D102
        self.state['train'] = [runner.iter + 1, runner.max_iters]
        loss = (outputs or {}).get('loss')
        if isinstance(loss, torch.Tensor) and loss.numel() == 1:
            self.state['loss'] = float(loss.detach())
        self._write(runner, force=runner.iter + 1 == runner.max_iters)

    def after_train(self, runner) -> None:  # noqa: D102
        if self.state.get('stage') == 'calib':
            self._end_calibration(runner)
        self.state['train'] = [runner.iter, runner.max_iters]
        self._write(runner, force=True)

    # --------------------------------------------------------------- testing
    def before_test_epoch(self, runner) -> None:  # noqa: D102
        loop = runner.test_loop
        loaders = getattr(loop, 'dataloaders', None) or \
            [getattr(loop, 'dataloader')]
        self.state.update(stage='test', psnr={},
                          test=[0, sum(len(dl) for dl in loaders)])
        self._write(runner, force=True)

    def before_test_iter(self, runner, batch_idx: int,
                         data_batch=None) -> None:  # noqa: D102
        self._apply_threads()

    def after_test_iter(self, runner, batch_idx: int, data_batch=None,
                        outputs=None) -> None:  # noqa: D102
        done, total = self.state['test']
        self.state['test'] = [done + 1, total]
        evaluator = getattr(runner.test_loop, 'evaluator', None)
        for m in getattr(evaluator, 'metrics', []):
            if type(m).__name__ == 'PSNR' and getattr(m, 'results', None):
                vals = [r['PSNR'] for r in m.results if 'PSNR' in r]
                if vals:
                    self.state['psnr'][m.prefix or 'test'] = \
                        float(np.mean(vals))
        if self.save_dir:
            for sample in outputs or []:
                self._save(sample)
        self._write(runner)

    def _save(self, sample) -> None:
        from PIL import Image
        pred = sample.output.pred_img
        if pred.dim() == 4:
            pred = pred[0]
        gt_path = sample.metainfo.get('gt_path') or \
            sample.metainfo.get('img_path')
        if not gt_path:
            return
        name = osp.splitext(osp.basename(gt_path))[0]
        group = osp.basename(osp.dirname(osp.dirname(gt_path))) or 'test'
        out = osp.join(self.save_dir, group, f'{name}.png')
        os.makedirs(osp.dirname(out), exist_ok=True)
        img = pred.detach().float().clamp(0, 255).round().byte()
        img = img.permute(1, 2, 0).cpu().numpy()
        if img.shape[-1] == 3:  # mmagic's destruct() returns BGR
            img = img[..., ::-1]
        elif img.shape[-1] == 1:
            img = img[..., 0]
        Image.fromarray(np.ascontiguousarray(img)).save(out)

    def after_test_epoch(self, runner, metrics=None) -> None:  # noqa: D102
        self.state.update(stage='done', metrics={
            k: float(v) for k, v in (metrics or {}).items()
            if isinstance(v, (int, float, np.floating))})
        self._write(runner, force=True)
