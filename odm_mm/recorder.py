"""QATRecorderHook: per-iteration step time, losses and the diagnostics.

Glue (mmengine). Add ``dict(type='QATRecorderHook')`` to ``custom_hooks`` to
keep what explains a QAT run (``tools/benchmark.py`` does): numbers the
LoggerHook only prints as window averages: the time of every ``train_step`` (forward, backward and
update, without data loading; ODM vs PAMS cost; also as process CPU time,
which other jobs on a shared machine disturb much less), the Eq. 5
conflict ratio of every update (Fig. 2, read from
:attr:`~odm_mm.optim.CooperativeOptimWrapper.last_conflict_ratio`), the
losses, and every ``bound_interval`` iterations the mean width of the
activation ranges (do the learned bounds follow the features that L_V
shrinks? The mean sigma of those features is
``loss_var / lambda_V / layers``). It also keeps the metrics of the test
epoch (mmagic's ``MultiTestLoop.run`` returns None). The training records
are written to ``<work_dir>/<out_file>`` as JSON after training (and every
``flush_interval`` iterations, so an interrupted run keeps them).
"""
from __future__ import annotations

import json
import os.path as osp
import time
from typing import Dict, List, Optional

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmagic.registry import HOOKS

from .layers.act_site import act_sites

__all__ = ['QATRecorderHook']


@HOOKS.register_module()
class QATRecorderHook(Hook):
    """Record step time, losses, conflict ratio and range widths.

    Args:
        out_file: JSON file name in the runner's work dir.
        bound_interval: Record bound widths every this many iterations
            (0: never).
        flush_interval: Also write the JSON every this many iterations.
    """

    priority = 'VERY_HIGH'  # timer starts before and stops before others

    def __init__(self, out_file: str = 'bench_log.json',
                 bound_interval: int = 10, flush_interval: int = 100) -> None:
        self.out_file = out_file
        self.bound_interval = bound_interval
        self.flush_interval = flush_interval
        self.records: List[Dict] = []
        self.test_metrics: Optional[Dict] = None
        self._t0: Optional[float] = None
        self._train_start: Optional[float] = None
        self.layer_widths_start: Optional[Dict[str, float]] = None
        self.layer_widths_end: Optional[Dict[str, float]] = None
        self.quantizer_state_start: Optional[Dict[str, Dict]] = None
        self.quantizer_state_end: Optional[Dict[str, Dict]] = None

    @staticmethod
    def _model(runner):
        m = runner.model
        return m.module if is_model_wrapper(m) else m

    def before_train(self, runner) -> None:  # noqa: D102
        path = osp.join(runner.work_dir, self.out_file)
        if runner.iter > 0 and osp.isfile(path):  # resumed: keep the past
            with open(path) as f:
                self.records = [r for r in json.load(f)['iters']
                                if r['iter'] <= runner.iter]
        self._train_start = time.perf_counter()

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch=None) -> None:  # noqa: D102
        if self.layer_widths_start is None:
            self._record_start_widths(runner)
        self._t0 = time.perf_counter()
        self._c0 = time.process_time()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs=None) -> None:  # noqa: D102
        rec: Dict = {'iter': runner.iter + 1,
                     'step_s': time.perf_counter() - self._t0,
                     'step_cpu_s': time.process_time() - self._c0}
        for k, v in (outputs or {}).items():
            if isinstance(v, torch.Tensor) and v.numel() == 1:
                rec[k] = float(v.detach())
        gs = getattr(runner.optim_wrapper, 'last_gate_stats', None)
        if gs is not None:
            rec.update(conflict_ratio=gs.conflict_ratio,
                       grad_ratio=gs.grad_ratio, gate_weight=gs.weight,
                       dominant_frac=gs.dominant / gs.total
                       if gs.total else 0.0)
        if self.bound_interval and \
                self.every_n_train_iters(runner, self.bound_interval):
            rec.update(self._bounds(runner))
        self.records.append(rec)
        if self.flush_interval and \
                self.every_n_train_iters(runner, self.flush_interval):
            self._dump(runner)

    def _widths(self, runner) -> Dict[str, float]:
        model = self._model(runner)
        layers = model.quant_layers() if hasattr(model, 'quant_layers') \
            else []
        if hasattr(model, 'generator'):  # a placement's sites too
            layers = layers + act_sites(model.generator)
        widths = {n: float(m.act_quantizer.range_width().detach())
                  for n, m in layers}
        # convs that leave their input alone (a placement's QuantizedInput)
        # have no range of their own: NaN, left out
        return {n: w for n, w in widths.items() if w == w}

    def _bounds(self, runner) -> Dict[str, float]:
        """Mean activation range width."""
        widths = list(self._widths(runner).values())
        return {'range_width': sum(widths) / len(widths)} if widths else {}

    def _record_start_widths(self, runner) -> None:
        """Per-layer widths right after calibration (OffsetHook ran)."""
        self.layer_widths_start = self._widths(runner)
        self.quantizer_state_start = self._states(runner)

    def _states(self, runner) -> Dict[str, Dict[str, float]]:
        """The quantizers' learned scalars per layer (``summary()``, e.g.
        the weight clipping factor), keyed ``'act.<k>'``/``'weight.<k>'``;
        layers without any are left out."""
        model = self._model(runner)
        layers = model.quant_layers() if hasattr(model, 'quant_layers') \
            else []
        out = {}
        for n, m in layers:
            st = {f'{side}.{k}': v for side, q in
                  (('act', m.act_quantizer), ('weight', m.weight_quantizer))
                  for k, v in q.summary().items()}
            if st:
                out[n] = st
        return out

    def after_train(self, runner) -> None:  # noqa: D102
        self.layer_widths_end = self._widths(runner)
        self.quantizer_state_end = self._states(runner)
        self._dump(runner)

    def after_test_epoch(self, runner, metrics=None) -> None:
        """Keep the test metrics (mmagic's MultiTestLoop returns None)."""
        self.test_metrics = dict(metrics or {})

    def _dump(self, runner) -> None:
        wall = time.perf_counter() - self._train_start \
            if self._train_start else None
        with open(osp.join(runner.work_dir, self.out_file), 'w') as f:
            json.dump({'wall_s_this_session': wall, 'iters': self.records,
                       'quant_error_step0':
                       runner.message_hub.get_info('odm_quant_error'),
                       'layer_widths_start': self.layer_widths_start,
                       'layer_widths_end': self.layer_widths_end,
                       'quantizer_state_start': self.quantizer_state_start,
                       'quantizer_state_end': self.quantizer_state_end}, f)
