"""The benchmark protocol: FP32 -> QAT runs -> test -> results JSON.

:class:`Benchmark` runs the three stages of a :class:`~odm_bench.presets.
Preset` in ``work_dir``::

    <work_dir>/data/            (scikit-image presets: the generated sets)
    <work_dir>/bicubic.json     bicubic baseline on the test sets
    <work_dir>/fp32/            stage 1 (Runner work dir, result.json)
    <work_dir>/fp32_controls.json  FP32 re-tested outside the Runner, and
                                with its residual body removed
    <work_dir>/runs/<name>/     stage 2+3 per run (result.json)
    <work_dir>/step_times.json  train-step times of all runs, interleaved
    <work_dir>/results.json     everything, for the report

Stage 1 trains ONE FP32 generator (or tests a given checkpoint); every run of
stage 2 starts from it with the same seed, data and iterations. Finished
stages are skipped when the benchmark is started again.
"""
from __future__ import annotations

import copy
import os
import os.path as osp
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.logging import print_log
from mmengine.registry import init_default_scope

from odm_mm.data_root import get_data_root, get_models_root
from .configs import (curve_points, fp32_config, load_composed,
                      method_features, qat_config, set_test_sets)
from .data import SKIMAGE_TEST, SKIMAGE_TRAIN, prepare_skimage_sets
from .pipeline import (as_editor_checkpoint, bicubic_metrics,
                       body_controls, dump_json,
                       interleaved_step_times, load_json, machine_info,
                       read_rgb, run_training, super_resolve, test_only)
from .presets import METHODS, Preset, run_name

__all__ = ['Benchmark', 'SWEEPS']

#: Co-adaptation sweep (``--sweep``): ways to let the ranges follow the
#: features that L_V shrinks, on full ODM W2A2, tested on Set5 and Set14
#: only (B100 is most of the test time). ``(method, bits, tag, preset
#: overrides)``.
_SWEEP_SETS = dict(test_sets=('Set5', 'Set14'))
SWEEPS: List[Tuple[str, int, str, dict]] = [
    ('odm', 2, 'rlr1000', dict(range_lr_mult=1000.0, **_SWEEP_SETS)),
    ('odm', 2, 'recal10', dict(recalib_interval=10, recalib_momentum=0.1,
                               **_SWEEP_SETS)),
    ('odm', 2, 'lv1e-3', dict(lambda_v=1e-3, **_SWEEP_SETS)),
    ('odm', 2, 'rlr10', dict(range_lr_mult=10.0, **_SWEEP_SETS)),
]


def _models_file(name: Optional[str]) -> Optional[str]:
    """A preset's FP32 file: as given, or below the models root."""
    if not name:
        return None
    path = name if osp.dirname(name) else osp.join(get_models_root(), name)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'FP32 checkpoint {path} not found. The EDSR-baseline teacher '
            'ships in ../shared/models (set ODM_MODELS_ROOT to its folder), '
            'or pass --fp32-checkpoint FILE (any mmagic EDSR x4 64ch/16 '
            'blocks checkpoint).')
    return path


class Benchmark:
    """Run one preset end to end.

    Args:
        preset: The protocol.
        work_dir: Output folder (created).
        data_root: SR data root (``T91``, ``Set5`` ... or ``DIV2K`` below
            it); default ``$ODM_DATA_ROOT`` / ``../shared/data``. Unused by
            scikit-image presets.
        fp32_checkpoint: Skip stage 1 and quantize this checkpoint.
        only: Run only these run names (default: all of the preset).
        sweep: Also run :data:`SWEEPS` (or ``preset.sweep`` if set).
        speed: Measure interleaved step times at the end (off for worker
            processes that share the preset's runs with ``only``).
        collect: Train nothing new: gather the runs that have finished
            (several workers, then one collecting call).
    """

    def __init__(self, preset: Preset, work_dir: str,
                 data_root: Optional[str] = None,
                 fp32_checkpoint: Optional[str] = None,
                 only: Optional[Sequence[str]] = None,
                 sweep: bool = False, speed: bool = True,
                 collect: bool = False) -> None:
        self.preset = preset
        self.speed = speed
        self.collect = collect
        self.work_dir = osp.abspath(work_dir)
        self.data_root = data_root
        self.fp32_checkpoint = fp32_checkpoint
        self.only = set(only) if only else None
        self.sweep = sweep
        os.makedirs(self.work_dir, exist_ok=True)

    # ------------------------------------------------------------------ data
    def test_sets(self, preset: Preset, root: str) -> Tuple[str, ...]:
        """The preset's test sets plus its optional ones found below root."""
        return tuple(preset.test_sets) + tuple(
            s for s in preset.optional_test_sets
            if s not in preset.test_sets and osp.isdir(osp.join(root, s)))

    def data(self) -> Dict[str, Optional[str]]:
        """Where stage 1/2 train and stage 3 tests (generated if needed)."""
        p = self.preset
        if p.data == 'skimage':
            root = osp.join(self.work_dir, 'data')
            prepare_skimage_sets(
                root, p.scale, p.skimage_train or SKIMAGE_TRAIN,
                p.skimage_test or SKIMAGE_TEST, train_folder='skimage_train',
                test_folder=p.test_sets[0], crop=p.skimage_crop)
            return dict(data_root=root, train_folder='skimage_train',
                        test_root=root)
        root = osp.abspath(self.data_root or get_data_root())
        if not osp.isdir(root):
            raise FileNotFoundError(
                f'SR data root {root} does not exist; pass --data-root or set '
                'ODM_DATA_ROOT (docs/data.md).')
        return dict(data_root=root,
                    train_folder='T91' if p.data == 'folders' else None,
                    test_root=root)

    def run_list(self) -> List[Tuple[str, str, int, str, Preset]]:
        """``[(name, method, bits, tag, preset), ...]`` of stage 2."""
        out = [(run_name(m, b), m, b, '', self.preset)
               for m, b in self.preset.runs]
        if self.sweep:
            for m, b, tag, over in (self.preset.sweep or SWEEPS):
                out.append((run_name(m, b, tag), m, b, tag,
                            self.preset.with_overrides(**over)))
        if self.only is not None:
            out = [r for r in out if r[0] in self.only]
        return out

    def _sample(self, d: Dict) -> Tuple[str, str]:
        name, img = self.preset.sample
        s = self.preset.scale
        return (osp.join(d['test_root'], name, 'LR_bicubic', f'X{s}',
                         f'{img}x{s}.png'),
                osp.join(d['test_root'], name, 'HR', f'{img}.png'))

    def _after(self, run_dir: str, lr_path: str):
        def save(model, result):
            from PIL import Image
            if not osp.isfile(lr_path):
                return {}
            out = osp.join(run_dir, 'sample_sr.png')
            Image.fromarray(super_resolve(model, read_rgb(lr_path))).save(out)
            return {'sample_sr': out}
        return save

    def curve(self, cfg, preset: Preset, run_dir: str, final: Dict,
              test_root: str) -> Dict[str, Dict]:
        """The budget curve of a run: its ``eval_at`` checkpoints tested on
        ``curve_sets`` (``{iteration: metrics}``, the last one from the
        run's own test). Each point is cached in ``<run>/curve/``."""
        out: Dict[str, Dict] = {}
        for it in curve_points(preset):
            ckpt = osp.join(run_dir, f'iter_{it}.pth')
            point = osp.join(run_dir, 'curve', f'iter_{it}.json')
            if not osp.isfile(point) and not osp.isfile(ckpt):
                raise FileNotFoundError(
                    f'budget curve: {ckpt} is missing (the run was trained '
                    'without eval_at checkpoints); delete its result.json '
                    'to train it again')
            tcfg = copy.deepcopy(cfg)
            tcfg.work_dir = osp.join(run_dir, 'curve', f'iter_{it}')
            set_test_sets(tcfg, list(preset.curve_sets), test_root,
                          preset.scale)
            out[str(it)] = test_only(tcfg, ckpt, point)['metrics']
        out[str(preset.qat_iters)] = {
            k: v for k, v in final['metrics'].items()
            if k in preset.curve_sets}
        return out

    # ---------------------------------------------------------------- stages
    def run(self) -> Dict:
        """All stages; returns (and writes) ``results.json``."""
        t0 = time.perf_counter()
        info = machine_info()
        p = self.preset
        d = self.data()
        lr_path, hr_path = self._sample(d)
        bic_path = osp.join(self.work_dir, 'bicubic.json')
        if not osp.isfile(bic_path):
            dump_json(bic_path, bicubic_metrics(d['test_root'],
                                                list(p.test_sets), p.scale))
        bicubic = load_json(bic_path)
        print_log(f'[bench] stage 1/3: FP32 ({p.fp32_iters} iterations)',
                  logger='current')
        fp32_dir = osp.join(self.work_dir, 'fp32')
        cfg = fp32_config(p, fp32_dir, d['data_root'], d['train_folder'],
                          d['test_root'], self.test_sets(p, d['test_root']))
        result_path = osp.join(fp32_dir, 'result.json')
        given = self.fp32_checkpoint or _models_file(p.fp32_checkpoint)
        if not given and p.fp32_from_config:
            given = load_composed(list(p.qat_bases)).model.fp32_checkpoint
        if given:
            given = as_editor_checkpoint(
                given, osp.join(fp32_dir, 'fp32_editor.pth'))
            fp32 = test_only(cfg, given, result_path,
                             self._after(fp32_dir, lr_path))
            ckpt = given
        else:
            fp32 = run_training(cfg, result_path,
                                self._after(fp32_dir, lr_path))
            with open(osp.join(fp32_dir, 'last_checkpoint')) as f:
                ckpt = f.read().strip()
        ctrl_path = osp.join(self.work_dir, 'fp32_controls.json')
        if not osp.isfile(ctrl_path):
            init_default_scope('mmagic')
            dump_json(ctrl_path, body_controls(cfg, ckpt, d['test_root'],
                                               list(p.test_sets), p.scale))
        controls = load_json(ctrl_path)
        runs: Dict[str, Dict] = {}
        todo = self.run_list()
        for i, (name, method, bits, tag, preset) in enumerate(todo):
            run_dir = osp.join(self.work_dir, 'runs', name)
            if self.collect and not osp.isfile(
                    osp.join(run_dir, 'result.json')):
                print_log(f'[bench] {name}: not run (collect only)',
                          logger='current')
                continue
            print_log(f'[bench] stage 2-3: run {i + 1}/{len(todo)} {name} '
                      f'({preset.qat_iters} iterations)', logger='current')
            cfg = qat_config(preset, method, bits, run_dir, name, ckpt,
                             d['data_root'], d['train_folder'],
                             d['test_root'],
                             self.test_sets(preset, d['test_root']))
            if METHODS[method].qat:
                res = run_training(cfg, osp.join(run_dir, 'result.json'),
                                   self._after(run_dir, lr_path))
            else:  # training-free: the FP32 checkpoint, quantized
                cfg.work_dir = run_dir
                res = test_only(cfg, ckpt, osp.join(run_dir, 'result.json'),
                                self._after(run_dir, lr_path))
                res = dict(res, training_free=True)
            if curve_points(preset) and 'curve' not in res:  # (seeded)
                res = dict(res, curve=self.curve(cfg, preset, run_dir, res,
                                                 d['test_root']))
            m = METHODS[method]
            runs[name] = dict(res, method=method, label=m.label.replace('EDSR', p.model_name), bits=bits,
                              tag=tag, ablation=m.ablation,
                              config=m.config,
                              features=method_features(m.config),
                              overrides={k: v for k, v in preset.to_dict()
                                         .items() if v != p.to_dict()[k]})
        speed_path = osp.join(self.work_dir, 'step_times.json')
        plain = {n: osp.join(self.work_dir, 'runs', n) for n, r in
                 runs.items()
                 if not r['tag'] and not r.get('training_free')}
        speed = load_json(speed_path) if osp.isfile(speed_path) else {}
        if self.speed and plain and set(plain) - set(speed):
            print_log('[bench] interleaved step-time measurement of '
                      f'{len(plain)} runs', logger='current')
            speed = interleaved_step_times(
                plain, osp.join(self.work_dir, 'speed'))
            dump_json(speed_path, speed)
        wall = {n: sum(r['wall_s'].values()) for n, r in runs.items()}
        cpu = sum(sum(r.get('cpu_s', {}).values())
                  for r in list(runs.values()) + [fp32])
        results = dict(
            preset=p.to_dict(), command=' '.join(sys.argv),
            machine=dict(info, load_avg_1min_end=os.getloadavg()[0]),
            seed=p.seed, bicubic=bicubic, fp32=fp32,
            fp32_checkpoint=ckpt, fp32_controls=controls, runs=runs,
            step_times=speed,
            sample=dict(set=p.sample[0], image=p.sample[1], lr=lr_path,
                        hr=hr_path),
            wall_s=dict(fp32=sum(fp32['wall_s'].values()), runs=wall,
                        total_recorded=sum(fp32['wall_s'].values()) +
                        sum(wall.values()),
                        this_session=time.perf_counter() - t0),
            cpu_s=dict(total_recorded=cpu))
        dump_json(osp.join(self.work_dir, 'results.json'), results)
        return results
