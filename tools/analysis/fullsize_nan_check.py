"""Full-size EDSR at W2A2: do ODM, PAMS, DAQ and DDTB stay finite?

Issue 23: users of DDTB report NaN on the full-size EDSR (mmagic's
``edsr_x4c256b32`` shape: 256 channels, 32 residual blocks, res_scale 0.1).
This script trains, for each method, the repository's own W2A2 config
(``configs/<method>/edsr_x4_w2a2.py``) with the generator widened to that
shape, from a *randomly initialised* FP32 teacher (seeded; none of the
shipped teachers has this shape), on T91 patches (the local recipe's
pipeline, ``configs/_base_/datasets/t91_x4.py``) for ``--iters`` iterations,
through ``tools/train.py`` (preflight, calibration hooks, NumericalGuardHook
as configured). ``--methods ddtb_official`` runs
``configs/ddtb/edsr_x4_w2a2_official.py`` (the authors' placement) too.

A run passes if it finishes with finite losses and weights, or if
NumericalGuardHook stopped it with a message that names the iteration (and
the layers or loss). A run that logs a non-finite loss without being
stopped, or dies any other way, fails. One line per method is printed and
the whole result is written to ``<work-root>/fullsize_nan_check.json``.

Example (about 1-2 h on 2 CPU cores for the four methods)::

    OMP_NUM_THREADS=1 nohup python tools/analysis/fullsize_nan_check.py \\
        --work-root /tmp/fullsize --iters 40 > /tmp/fullsize.log 2>&1 &
"""
import argparse
import json
import math
import os
import os.path as osp
import re
import subprocess
import sys
import time
from typing import Dict, List

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO)

#: method -> its W2A2 EDSR x4 config; ``ddtb_official``: DDTB as its authors
#: placed it (quantized skip/residual paths, first stage, official gate init)
CONFIGS = {'odm': 'odm/edsr_x4_w2a2.py', 'pams': 'pams/edsr_x4_w2a2.py',
           'daq': 'daq/edsr_x4_w2a2.py', 'ddtb': 'ddtb/edsr_x4_w2a2.py',
           'ddtb_official': 'ddtb/edsr_x4_w2a2_official.py'}
METHODS = ('odm', 'pams', 'daq', 'ddtb')
#: mmagic's edsr_x4c256b32_1xb16-300k_div2k generator, x4.
FULL_EDSR = dict(mid_channels=256, num_blocks=32, res_scale=0.1)


def write_teacher(path: str, seed: int) -> str:
    """Save a random full-size EDSR x4 as an mmagic checkpoint."""
    import torch
    from mmagic.registry import MODELS

    import odm_mm  # noqa: F401  (registers)
    torch.manual_seed(seed)
    gen = MODELS.build(dict(type='EDSRNet', in_channels=3, out_channels=3,
                            upscale_factor=4, rgb_mean=[0.4488, 0.4371,
                                                        0.4040],
                            rgb_std=[1.0, 1.0, 1.0], **FULL_EDSR))
    torch.save({'meta': {}, 'state_dict': {
        f'generator.{k}': v for k, v in gen.state_dict().items()}}, path)
    return path


def write_config(method: str, out: str, teacher: str, args) -> str:
    """The method's W2A2 config at full size, short, on T91; dumped."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(REPO, 'configs', CONFIGS[method]))
    t91 = Config.fromfile(osp.join(REPO, 'configs', '_base_', 'datasets',
                                   't91_x4.py'))
    patch = args.patch
    dataset = t91.odm_t91_dataset
    dataset.min_gt_size = patch
    for step in dataset.pipeline:
        if step['type'] == 'Crop':
            step['crop_size'] = (patch, patch)
        if step['type'] == 'MATLABLikeResize':
            step['output_shape'] = (patch // 4, patch // 4)
    cfg.experiment_name = f'fullsize_{method}'
    cfg.model.generator.update(FULL_EDSR)
    cfg.model.fp32_checkpoint = teacher
    cfg.train_dataloader = dict(
        batch_size=args.batch, num_workers=0, persistent_workers=False,
        sampler=dict(type='InfiniteSampler', shuffle=True),
        dataset=dataset)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=args.iters,
                         val_interval=args.iters + 1)
    for key in ('val_cfg', 'val_dataloader', 'val_evaluator', 'test_cfg',
                'test_dataloader', 'test_evaluator'):
        cfg[key] = None
    cfg.param_scheduler = None
    cfg.randomness = dict(seed=args.seed)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.default_hooks.checkpoint = dict(
        type='CheckpointHook', interval=args.iters // 2, max_keep_ckpts=1,
        save_best=None, save_optimizer=False)
    for hook in cfg.custom_hooks:
        if hook['type'] in ('OffsetHook', 'DDTBCalibHook'):
            hook['num_batches'] = args.calib_batches
        if hook['type'] == 'DDTBCalibHook':
            hook['dynamic_batches'] = args.calib_batches
    path = osp.join(out, f'{method}.py')
    cfg.dump(path)
    return path


_ITER = re.compile(r'Iter\(train\) \[\s*(\d+)/\d+\].*?\bloss: (\S+)')


def judge(log: str, returncode: int) -> Dict:
    """Classify one run from its output (see the module docstring)."""
    losses = [(int(i), float(v)) for i, v in _ITER.findall(log)]
    bad = [(i, v) for i, v in losses if not math.isfinite(v)]
    guard = re.search(r'NumericalGuardHook: (.*?)training stopped', log)
    res = dict(returncode=returncode, iterations_logged=len(losses),
               last_loss=losses[-1] if losses else None,
               nonfinite_logged=bad[:5])
    if guard:
        res['verdict'] = 'stopped by NumericalGuardHook'
        res['guard'] = guard.group(1).strip()
        res['ok'] = bool(re.search(r'iteration \d+', res['guard']))
    elif returncode == 0 and not bad:
        res['verdict'] = 'finite'
        res['ok'] = True
    else:
        res['verdict'] = ('non-finite loss logged, not stopped' if bad else
                          'crashed')
        res['ok'] = False
        res['tail'] = log[-3000:]
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-root', required=True)
    parser.add_argument('--methods', nargs='+', default=list(METHODS),
                        choices=sorted(CONFIGS))
    parser.add_argument('--iters', type=int, default=40)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--patch', type=int, default=48,
                        help='HR patch px (LR = patch / 4)')
    parser.add_argument('--calib-batches', type=int, default=2)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--data-root', default=osp.join(
        osp.dirname(REPO), 'shared', 'data'))
    args = parser.parse_args()
    os.makedirs(args.work_root, exist_ok=True)
    teacher = write_teacher(osp.join(args.work_root, 'teacher_c256b32.pth'),
                            args.seed)
    results: List[Dict] = []
    for method in args.methods:
        cfg = write_config(method, args.work_root, teacher, args)
        start = time.time()
        proc = subprocess.run(
            [sys.executable, osp.join(REPO, 'tools', 'train.py'), cfg,
             '--work-dir', osp.join(args.work_root, method),
             '--cfg-options', f'odm_data_root={args.data_root}'],
            capture_output=True, text=True, cwd=args.work_root)
        log = proc.stdout + proc.stderr
        with open(osp.join(args.work_root, f'{method}.out'), 'w') as f:
            f.write(log)
        res = dict(method=method, seconds=round(time.time() - start),
                   **judge(log, proc.returncode))
        results.append(res)
        print(json.dumps({k: v for k, v in res.items() if k != 'tail'}),
              flush=True)
    summary = dict(shape=FULL_EDSR, w_bits=2, a_bits=2, iters=args.iters,
                   batch=args.batch, patch=args.patch,
                   calib_batches=args.calib_batches, seed=args.seed,
                   threads=os.environ.get('OMP_NUM_THREADS'),
                   results=results)
    with open(osp.join(args.work_root, 'fullsize_nan_check.json'), 'w') as f:
        json.dump(summary, f, indent=1)
    sys.exit(0 if all(r['ok'] for r in results) else 1)


if __name__ == '__main__':
    main()
