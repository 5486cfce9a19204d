"""The embedded demo (``make demo``): PAMS vs ODM at W2A2 on the paper's EDSR.

What it does (``tools/demo.py`` is the command line):

1. **Teacher** (:func:`select_teacher`, one line printed with the reason):
   mmagic's official EDSR x4 (64 channels, 16 blocks, DIV2K) when it is in
   the torch hub cache or can be downloaded (one try, short timeout; offline
   fails at once), else the EDSR-baseline x4 trained on T91 that ships in
   ``../shared/models`` (:func:`odm_mm.data_root.get_models_root`), else a
   small EDSR (32 channels, 8 blocks) trained here first
   (:data:`SMALL_TEACHER`, the demo of earlier versions).
2. **Data** (:func:`select_data`): T91 patches for QAT and Set5 + Set14 for
   testing below ``../shared/data`` (:func:`odm_mm.data_root.get_data_root`)
   when present, else photographs bundled with scikit-image
   (:mod:`odm_bench.data`).
3. **Stages**, each in a worker process whose mmengine output goes to
   ``<work_dir>/logs/<stage>.log``: ODM and PAMS W2A2 (the protocol of the
   ``edsr`` benchmark preset: batch 8, 96 px HR patches; 600 iterations) as
   two single-thread workers in parallel (``--w4a4`` adds both at W4A4);
   ``fp32`` (test the teacher and the bicubic baseline) takes the slot of
   the first run to finish (a teacher trained here is trained first, with
   all threads); then ``figures`` (drawn by the last worker to finish).
   The demo's own process only draws one progress bar per stage from the
   workers' :class:`~odm_mm.progress.ProgressFileHook` files and prints the
   table at the end.
4. **Figures**: ``side_by_side.png``, the window of the test images where
   PAMS and ODM W2A2 differ most (:func:`largest_difference_window`), with
   HR, bicubic, FP32, PAMS and ODM crops and their PSNR; and the quantized
   ODM model's feature distributions against its learned ranges (paper
   Fig. 1 and Fig. 3, :mod:`odm_mm.analysis.distribution`).

Work dir layout::

    <work_dir>/plan.json           teacher, data and protocol (a restarted
                                   demo reuses it)
    <work_dir>/logs/<stage>.log    full mmengine output of each worker
    <work_dir>/progress/<stage>.json     a worker's ProgressFileHook state
    <work_dir>/progress/<stage>.threads  threads handed to it (hand-off)
    <work_dir>/fp32/  runs/<run>/  as in the benchmark (result.json when
                                   finished; a restarted demo skips those
                                   runs and resumes the others from their
                                   last checkpoint)
    <work_dir>/side_by_side.png, odm_w2a2_fig1_distribution.png,
    odm_w2a2_fig3_mismatch.png, results.json
"""
from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, fields
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from .jsonio import dump_json as _dump
from .presets import METHODS, Preset, get_preset, run_name

__all__ = ['Teacher', 'select_teacher', 'download_checkpoint',
           'select_data', 'make_plan', 'run_stage', 'stage_finished',
           'Supervisor',
           'largest_difference_window', 'plot_difference_crops',
           'collect_results', 'SMALL_TEACHER', 'DEMO_RUNS', 'W4A4_RUNS']

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO_SCRIPT = osp.join(REPO_ROOT, 'tools', 'demo.py')

#: The runs of the demo, longest first (full ODM's step is ~1.4x PAMS's).
DEMO_RUNS: List[Tuple[str, int]] = [('odm', 2), ('pams', 2)]
#: Added by ``--w4a4`` (about 10 more minutes on 2 cores).
W4A4_RUNS: List[Tuple[str, int]] = [('odm', 4), ('pams', 4)]
#: No pretrained EDSR x4 64ch/16 blocks at hand: train this small FP32 EDSR
#: first (the demo of earlier versions, ~7 min on 2 cores in all).
SMALL_TEACHER = dict(mid_channels=32, num_blocks=8, fp32_iters=1000,
                     fp32_batch=16, qat_iters=100, qat_batch=8, gt_patch=64,
                     fp32_checkpoint=None, log_interval=20, budget_min=8)
#: Data overrides when the SR sets are not there (scikit-image photographs;
#: repeated so that an epoch is hundreds of iterations: mmengine's infinite
#: iterator sleeps 2 s at every epoch end).
SKIMAGE_DATA = dict(data='skimage', test_sets=('skimage',),
                    optional_test_sets=(), sample=('skimage', 'chelsea'),
                    train_repeat=500)
#: Download limits of the official checkpoint (one try).
DOWNLOAD_TIMEOUT_S = 5.0
DOWNLOAD_DEADLINE_S = 120.0


def _ckpt():
    """``odm_mm.checkpoint`` (imported on first use: importing ``odm_mm``
    imports mmagic, seconds that a restarted demo does not need)."""
    from odm_mm import checkpoint
    return checkpoint


def _rel(path: Optional[str]) -> str:
    """``path`` relative to the working directory when that is shorter."""
    if not path:
        return str(path)
    try:
        rel = osp.relpath(path)
    except ValueError:
        return path
    return rel if len(rel) < len(path) else path


# ------------------------------------------------------------------- teacher
@dataclass
class Teacher:
    """The FP32 network the demo quantizes.

    Attributes:
        kind: ``'official'`` (mmagic's DIV2K EDSR x4), ``'shared'`` (the T91
            EDSR-baseline of ``../shared/models``) or ``'train'`` (trained
            by the demo first).
        path: The checkpoint file (None for ``'train'``).
        reason: Why this one (printed).
    """
    kind: str
    path: Optional[str]
    reason: str

    def line(self, preset: Preset) -> str:
        """The ``teacher: ...`` line the demo prints."""
        if self.kind == 'train':
            what = (f'EDSR x{preset.scale} {preset.mid_channels}ch/'
                    f'{preset.num_blocks} blocks trained here first '
                    f'({preset.fp32_iters} iterations)')
        else:
            what = _rel(self.path)
        return f'teacher: {what} ({self.reason})'


def _fits_pretrained(preset: Preset) -> bool:
    return (preset.mid_channels, preset.num_blocks) == (64, 16) and \
        ('EDSRNet', preset.scale) in _ckpt().OFFICIAL_FP32


def download_checkpoint(url: str, dest: str,
                        timeout: float = DOWNLOAD_TIMEOUT_S,
                        deadline: float = DOWNLOAD_DEADLINE_S) -> str:
    """Download ``url`` to ``dest`` once, quietly; returns ``dest``.

    ``timeout`` bounds each network operation (an offline machine fails at
    the name lookup, at once), ``deadline`` the whole transfer. The file is
    written to ``dest + '.part'`` and renamed when complete; a hash prefix
    in the file name (``-<8+ hex>.pth``, as mmagic and torch hub name
    them) is checked against its SHA-256.

    Raises:
        OSError: unreachable, timed out, HTTP error (``urllib.error``).
        ValueError: the SHA-256 does not match the name.
    """
    os.makedirs(osp.dirname(osp.abspath(dest)), exist_ok=True)
    part = dest + '.part'
    end = time.monotonic() + deadline
    sha = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, \
                open(part, 'wb') as f:
            while True:
                chunk = resp.read(1 << 16)
                if not chunk:
                    break
                sha.update(chunk)
                f.write(chunk)
                if time.monotonic() > end:
                    raise TimeoutError(f'download exceeded {deadline:.0f} s')
        m = re.search(r'-([0-9a-f]{8,})\.[a-z]+$', osp.basename(url))
        if m and not sha.hexdigest().startswith(m.group(1)):
            raise ValueError(f'SHA-256 of {url} does not start with '
                             f'{m.group(1)}')
        os.replace(part, dest)
    finally:
        if osp.exists(part):
            os.remove(part)
    return dest


def _why_not(err: BaseException) -> str:
    """A few words on why a download failed."""
    if isinstance(err, urllib.error.HTTPError):
        return f'download failed (HTTP {err.code})'
    reason = getattr(err, 'reason', err)
    if isinstance(reason, (socket.timeout, TimeoutError)) or \
            isinstance(err, (socket.timeout, TimeoutError)):
        return 'download timed out'
    if isinstance(err, ValueError):
        return 'download failed (checksum)'
    if isinstance(reason, (socket.gaierror, ConnectionError, OSError)):
        return 'offline'
    return f'download failed ({type(err).__name__})'


def select_teacher(preset: Preset, allow_download: bool = True,
                   timeout: float = DOWNLOAD_TIMEOUT_S,
                   downloader: Optional[Callable] = None,
                   choice: str = 'auto') -> Teacher:
    """Pick the FP32 teacher for ``preset`` (see the module docstring).

    Args:
        preset: The demo protocol; pretrained teachers need EDSR 64ch/16
            blocks at an upscale factor with official weights.
        allow_download: Try to download the official weights once when they
            are not cached (``--offline``: no).
        timeout: Per-operation network timeout of that try (s).
        downloader: ``downloader(url, dest, timeout)``
            (default :func:`download_checkpoint`; tests replace it).
        choice: ``'auto'`` or force ``'official'`` / ``'shared'`` /
            ``'train'`` (a forced pretrained teacher that is missing raises
            FileNotFoundError).
    """
    if choice == 'train':
        return Teacher('train', None, 'chosen with --teacher train')
    if not _fits_pretrained(preset):
        if choice != 'auto':
            raise ValueError(f'--teacher {choice}: preset {preset.name} is '
                             f'EDSR {preset.mid_channels}ch/'
                             f'{preset.num_blocks} blocks, the pretrained '
                             'teachers are 64ch/16 blocks')
        return Teacher('train', None, f'preset {preset.name}: its '
                       f'{preset.mid_channels}ch/{preset.num_blocks}-block '
                       'network fits no pretrained EDSR x'
                       f'{preset.scale} 64ch/16')
    from odm_mm.data_root import get_models_root
    ck = _ckpt()
    url = ck.OFFICIAL_FP32[('EDSRNet', preset.scale)]
    cached = ck._hub_cache_path(url)
    shared = osp.join(get_models_root(), ck.LOCAL_TEACHERS.get(
        ('EDSRNet', preset.scale), 'edsr_x4c64b16_t91_fp32.pth'))
    if choice in ('auto', 'official'):
        if osp.isfile(cached):
            return Teacher('official', cached, 'official mmagic EDSR '
                           f'x{preset.scale} weights, in the torch hub cache')
        why = 'official mmagic weights not cached'
        if allow_download:
            try:
                (downloader or download_checkpoint)(url, cached, timeout)
                return Teacher('official', cached, 'official mmagic EDSR '
                               f'x{preset.scale} weights, downloaded now to '
                               'the torch hub cache')
            except (OSError, ValueError) as err:
                why += ' and ' + _why_not(err)
        else:
            why += ', download skipped (--offline)'
        if choice == 'official':
            raise FileNotFoundError(f'--teacher official: {why}; put {url} '
                                    f'at {cached}')
    else:
        why = 'chosen with --teacher shared'
    if osp.isfile(shared):
        return Teacher('shared', shared, why)
    if choice == 'shared':
        raise FileNotFoundError(f'--teacher shared: {shared} does not exist '
                                '(ODM_MODELS_ROOT moves the folder)')
    return Teacher('train', None, f'{why}; no {_rel(shared)}')


# ---------------------------------------------------------------------- data
def select_data(preset: Preset, data_root: Optional[str] = None,
                choice: str = 'auto') -> Tuple[Dict, Dict]:
    """Where the demo trains and tests.

    Returns:
        ``(preset overrides, data)`` with ``data = dict(kind, data_root,
        train_folder, test_root, line)``; ``line`` is printed.
    """
    if preset.data not in ('folders', 'skimage'):
        raise ValueError(f'the demo runs on T91 folders or scikit-image '
                         f'photographs, not preset.data={preset.data!r}')
    why = ''
    if choice != 'skimage' and preset.data == 'folders':
        from odm_mm.data_root import get_data_root
        root = osp.abspath(data_root or get_data_root())
        if osp.isdir(osp.join(root, 'T91')) and osp.isdir(
                osp.join(root, preset.test_sets[0], 'HR')):
            sets = tuple(preset.test_sets) + tuple(
                s for s in preset.optional_test_sets
                if osp.isdir(osp.join(root, s, 'HR')))
            return dict(test_sets=sets, optional_test_sets=()), dict(
                kind='folders', data_root=root, train_folder='T91',
                test_root=root,
                line=f'data: T91 (training), {" + ".join(sets)} (test) '
                f'from {_rel(root)}')
        if choice == 'folders':
            raise FileNotFoundError(
                f'--data folders: {root} has no T91/ and '
                f'{preset.test_sets[0]}/HR (docs/data.md)')
        why = f' (no T91 and {preset.test_sets[0]} below {_rel(root)})'
    over = {} if preset.data == 'skimage' else dict(SKIMAGE_DATA)
    return over, dict(kind='skimage', data_root=None,
                      train_folder='skimage_train', test_root=None,
                      line=f'data: photographs bundled with scikit-image, '
                      f'train/test split by image{why}')


# ---------------------------------------------------------------------- plan
def _preset_from(d: Dict) -> Preset:
    """A Preset from its JSON dict (lists back to tuples where due)."""
    kw = {}
    for f in fields(Preset):
        if f.name not in d:
            continue
        v = d[f.name]
        if isinstance(f.default, tuple) and isinstance(v, list):
            v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
        elif f.name == 'runs':
            v = [tuple(x) for x in v]
        kw[f.name] = v
    return Preset(**kw)


def _runs_of(plan: Dict) -> List[str]:
    return [run_name(m, b) for m, b in plan['runs']]


def make_plan(work_dir: str, preset_name: str = 'demo',
              data_root: Optional[str] = None, teacher: str = 'auto',
              data: str = 'auto', offline: bool = False,
              w4a4: bool = False,
              downloader: Optional[Callable] = None,
              overrides: Optional[Dict] = None) -> Tuple[Dict, bool]:
    """Choose teacher, data and runs once; reuse ``plan.json`` afterwards.

    ``overrides`` (``--set``) replace preset fields last (e.g.
    ``qat_iters``). A restarted demo must be given the same options.

    Returns:
        ``(plan, resumed)``.
    """
    path = osp.join(work_dir, 'plan.json')
    args = dict(preset=preset_name, teacher=teacher, data=data, w4a4=w4a4,
                data_root=osp.abspath(data_root) if data_root else None,
                overrides=json.loads(json.dumps(overrides or {})))
    if osp.isfile(path):
        with open(path) as f:
            plan = json.load(f)
        if plan['args'] != args:
            raise SystemExit(
                f'{work_dir} holds a demo started with other options '
                f'({plan["args"]}); pass another --work-dir or delete it.')
        teacher = plan['teacher']['path']
        if teacher and not osp.isfile(teacher):
            raise SystemExit(
                f'the teacher this demo started from, {teacher}, is gone; '
                f'put it back or delete {work_dir} to start over.')
        return plan, True
    preset = get_preset(preset_name)
    over, d = select_data(preset, data_root, data)
    preset = preset.with_overrides(**over)
    t = select_teacher(preset, allow_download=not offline,
                       downloader=downloader, choice=teacher)
    if t.kind == 'train' and _fits_pretrained(preset):
        preset = preset.with_overrides(**SMALL_TEACHER)
    elif t.kind != 'train':
        preset = preset.with_overrides(fp32_checkpoint=t.path)
    runs = list(DEMO_RUNS) + (list(W4A4_RUNS) if w4a4 else [])
    preset = preset.with_overrides(runs=runs, **(overrides or {}))
    plan = dict(args=args, preset=preset.to_dict(), teacher=asdict(t),
                data=d, runs=[list(r) for r in runs])
    plan = json.loads(json.dumps(plan))  # as a restarted demo reads it
    os.makedirs(work_dir, exist_ok=True)
    _dump(path, plan)
    return plan, False


def _load(path: str, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


# -------------------------------------------------------- stages (workers)
def progress_file(work_dir: str, stage: str) -> str:
    """The JSON a stage's ProgressFileHook keeps up to date."""
    return osp.join(work_dir, 'progress', f'{stage}.json')


def threads_file(work_dir: str, stage: str) -> str:
    """The file through which the supervisor hands a worker more threads."""
    return osp.join(work_dir, 'progress', f'{stage}.threads')


def _with_progress(cfg, work_dir: str, stage: str, save_dir: str) -> None:
    imports = list(cfg.custom_imports.get('imports', []))
    if 'odm_mm.progress' not in imports:
        imports.append('odm_mm.progress')
    cfg.custom_imports = dict(imports=imports, allow_failed_imports=False)
    cfg.custom_hooks = list(cfg.get('custom_hooks', [])) + [
        dict(type='ProgressFileHook', path=progress_file(work_dir, stage),
             save_dir=save_dir, threads_file=threads_file(work_dir, stage))]


def _data_dirs(plan: Dict, preset: Preset, work_dir: str) -> Dict:
    d = dict(plan['data'])
    if d['kind'] == 'skimage':
        import fcntl

        from .data import SKIMAGE_TEST, SKIMAGE_TRAIN, prepare_skimage_sets
        root = osp.join(work_dir, 'data')
        os.makedirs(work_dir, exist_ok=True)
        # parallel workers: one writes the images, the others wait for it
        with open(osp.join(work_dir, '.data.lock'), 'w') as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            prepare_skimage_sets(
                root, preset.scale, preset.skimage_train or SKIMAGE_TRAIN,
                preset.skimage_test or SKIMAGE_TEST,
                train_folder=d['train_folder'],
                test_folder=preset.test_sets[0], crop=preset.skimage_crop)
        d.update(data_root=root, test_root=root)
    return d


def _fp32_checkpoint(work_dir: str, plan: Dict) -> str:
    if plan['teacher']['path']:  # bare or editor checkpoints both load
        return plan['teacher']['path']
    fp32_dir = osp.join(work_dir, 'fp32')
    res = _load(osp.join(fp32_dir, 'result.json'), {})
    if res.get('checkpoint'):
        return res['checkpoint']
    with open(osp.join(fp32_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def run_stage(work_dir: str, stage: str) -> None:
    """Run one stage of the plan in this process (a demo worker)."""
    import odm_mm.progress  # noqa: F401  (the glue and ProgressFileHook)
    from mmengine.registry import init_default_scope

    from .configs import fp32_config, qat_config
    from .pipeline import (as_editor_checkpoint, bicubic_metrics, dump_json,
                           run_training, test_only)
    plan = _load(osp.join(work_dir, 'plan.json'))
    preset = _preset_from(plan['preset'])
    d = _data_dirs(plan, preset, work_dir)
    sets = list(preset.test_sets)
    if stage == 'figures':
        make_figures(work_dir, plan, progress_file(work_dir, stage))
        return
    init_default_scope('mmagic')
    if stage == 'fp32':
        fp32_dir = osp.join(work_dir, 'fp32')
        cfg = fp32_config(preset, fp32_dir, d['data_root'],
                          d['train_folder'], d['test_root'], sets)
        _with_progress(cfg, work_dir, stage, osp.join(fp32_dir, 'sr'))
        result = osp.join(fp32_dir, 'result.json')
        if plan['teacher']['path']:
            given = as_editor_checkpoint(
                plan['teacher']['path'],
                osp.join(fp32_dir, 'fp32_editor.pth'))
            test_only(cfg, given, result)
        else:
            run_training(cfg, result)
        bic = osp.join(work_dir, 'bicubic.json')
        if not osp.isfile(bic):
            dump_json(bic, bicubic_metrics(d['test_root'], sets,
                                           preset.scale))
        _figures_if_last(work_dir, plan)
        return
    method, bits = next((m, b) for m, b in plan['runs']
                        if run_name(m, b) == stage)
    run_dir = osp.join(work_dir, 'runs', stage)
    cfg = qat_config(preset, method, bits, run_dir, stage,
                     _fp32_checkpoint(work_dir, plan), d['data_root'],
                     d['train_folder'], d['test_root'], sets)
    _with_progress(cfg, work_dir, stage, osp.join(run_dir, 'sr'))
    run_training(cfg, osp.join(run_dir, 'result.json'))
    _figures_if_last(work_dir, plan)


def stage_finished(work_dir: str, stage: str) -> bool:
    """Whether a stage of the demo has completed (its outputs exist)."""
    if stage == 'fp32':
        return osp.isfile(osp.join(work_dir, 'fp32', 'result.json')) and \
            osp.isfile(osp.join(work_dir, 'bicubic.json'))
    if stage == 'figures':
        return osp.isfile(osp.join(work_dir, 'figures.json'))
    return osp.isfile(osp.join(work_dir, 'runs', stage, 'result.json'))


def _figures_if_last(work_dir: str, plan: Dict) -> None:
    """The worker that finishes the last run also draws the figures.

    Saves starting one more process (seconds of imports). The first worker
    to create ``claims/figures`` does it, with all CPU threads (the others
    are done). A failure here only leaves the figures to the ``figures``
    worker that the demo then starts (and whose log shows the error).
    """
    if stage_finished(work_dir, 'figures') or not all(
            stage_finished(work_dir, s) for s in ['fp32'] + _runs_of(plan)):
        return
    try:
        os.makedirs(osp.join(work_dir, 'claims'), exist_ok=True)
        os.mkdir(osp.join(work_dir, 'claims', 'figures'))
    except FileExistsError:
        return
    import traceback

    import torch
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        make_figures(work_dir, plan, progress_file(work_dir, 'figures'))
    except Exception:  # noqa: BLE001  (the figures worker reports it)
        traceback.print_exc()


# ------------------------------------------------------------------- results
def collect_results(work_dir: str, plan: Dict) -> Dict:
    """The finished stages as a benchmark-shaped results dict."""
    runs = {}
    order = sorted(plan['runs'], key=lambda r: (-r[1], r[0] != 'pams'))
    for m, b in order:
        name = run_name(m, b)
        res = _load(osp.join(work_dir, 'runs', name, 'result.json'))
        if res is not None:
            runs[name] = dict(res, method=m, label=METHODS[m].label, bits=b,
                              tag='', sr_dir=osp.join(work_dir, 'runs',
                                                      name, 'sr'))
    fp32 = _load(osp.join(work_dir, 'fp32', 'result.json'), {})
    if fp32:
        fp32['sr_dir'] = osp.join(work_dir, 'fp32', 'sr')
    return dict(preset=plan['preset'], teacher=plan['teacher'],
                data=plan['data'], fp32=fp32,
                bicubic=_load(osp.join(work_dir, 'bicubic.json'), {}),
                runs=runs)


# ------------------------------------------------------------------- figures
def _y(img):
    """BT.601 luma (16-235) of a uint8 RGB image, as mmagic's ``'Y'``."""
    import numpy as np
    x = img.astype(np.float64)
    return 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] +
                   24.966 * x[..., 2]) / 255.0


def _psnr_y(a, b) -> float:
    import numpy as np
    mse = float(np.mean((_y(a) - _y(b)) ** 2))
    return float('inf') if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def largest_difference_window(hr, a, b, size: int, border: int = 0,
                              stride: int = 1) -> Tuple[int, int, float]:
    """The ``size`` x ``size`` window where ``a`` and ``b`` differ most.

    Compares the squared Y errors against ``hr``: for every window,
    ``d = mean(err_a) - mean(err_b)``; returns ``(top, left, d)`` of the
    window with the largest ``|d|`` (``d > 0``: ``b`` is better there).
    ``border`` pixels at each edge are left out (as the metrics do).
    """
    import numpy as np
    ya, yb, yh = _y(a), _y(b), _y(hr)
    diff = (ya - yh) ** 2 - (yb - yh) ** 2
    h, w = diff.shape
    if border:
        diff = diff[border:h - border, border:w - border]
    hh, ww = diff.shape
    size = max(1, min(size, hh, ww))
    c = np.pad(np.cumsum(np.cumsum(diff, 0), 1), ((1, 0), (1, 0)))
    tot = (c[size:, size:] - c[:-size, size:] - c[size:, :-size] +
           c[:-size, :-size])[::stride, ::stride]
    y, x = np.unravel_index(int(np.argmax(np.abs(tot))), tot.shape)
    return (int(y * stride + border), int(x * stride + border),
            float(tot[y, x] / size ** 2))


def _bicubic(lr, scale: int):
    import numpy as np
    from mmagic.datasets.transforms import MATLABLikeResize
    up = MATLABLikeResize(keys=['img'], scale=scale)(
        dict(img=lr.astype(np.float32)))['img']
    return np.clip(np.floor(up + 0.5), 0, 255).astype(np.uint8)


def _test_pairs(test_root: str, sets: Sequence[str],
                scale: int) -> List[Tuple[str, str, str, str]]:
    """``[(set, name, lr path, hr path)]`` of the demo's test images."""
    out = []
    for s in sets:
        for f in sorted(os.listdir(osp.join(test_root, s, 'HR'))):
            stem, ext = osp.splitext(f)
            out.append((s, stem, osp.join(test_root, s, 'LR_bicubic',
                                          f'X{scale}', f'{stem}x{scale}{ext}'),
                        osp.join(test_root, s, 'HR', f)))
    return out


def plot_difference_crops(results: Dict, test_root: str, path: str,
                          a: str = 'pams_w2a2', b: str = 'odm_w2a2',
                          crop: int = 96,
                          tick: Optional[Callable[[], None]] = None
                          ) -> Optional[Dict]:
    """Side by side where runs ``a`` and ``b`` differ most.

    Searches every test image (the PNGs the runs saved while testing) for
    the ``crop`` window with the largest ``|MSE_a - MSE_b|`` on Y and draws
    it for HR, bicubic, FP32, ``a`` and ``b``, each titled with the Y-PSNR
    of the crop and of the whole image (border = scale), next to the whole
    HR image with the window marked. Returns ``{'path', 'set', 'image',
    'top', 'left', 'size', 'psnr'}`` or None without the needed outputs.
    """
    import numpy as np
    from mmagic.evaluation.metrics.psnr import psnr

    from .pipeline import read_rgb
    runs = results['runs']
    if a not in runs or b not in runs:
        return None
    s = int(results['preset']['scale'])
    best = None
    for set_name, name, lr_path, hr_path in _test_pairs(
            test_root, results['preset']['test_sets'], s):
        pa = osp.join(runs[a]['sr_dir'], set_name, f'{name}.png')
        pb = osp.join(runs[b]['sr_dir'], set_name, f'{name}.png')
        if not (osp.isfile(pa) and osp.isfile(pb)):
            continue
        ia, ib = read_rgb(pa), read_rgb(pb)
        hr = read_rgb(hr_path)[:ia.shape[0], :ia.shape[1]]
        y, x, d = largest_difference_window(hr, ia, ib, crop, border=s,
                                            stride=max(1, crop // 16))
        if best is None or abs(d) > abs(best[-1]):
            best = (set_name, name, lr_path, hr_path, y, x, d)
        if tick:
            tick()
    if best is None:
        return None
    set_name, name, lr_path, hr_path, y, x, d = best
    lr = read_rgb(lr_path)
    hr = read_rgb(hr_path)[:lr.shape[0] * s, :lr.shape[1] * s]
    size = min(crop, hr.shape[0] - 2 * s, hr.shape[1] - 2 * s) \
        if min(hr.shape[:2]) > 2 * s else min(hr.shape[:2])
    panels = [('HR', hr), ('Bicubic', _bicubic(lr, s))]
    fp32 = osp.join(results['fp32'].get('sr_dir', ''), set_name,
                    f'{name}.png')
    if osp.isfile(fp32):
        panels.append(('FP32', read_rgb(fp32)))
    for key in (a, b):
        e = runs[key]
        panels.append((f'{e["label"].replace("EDSR-", "")} '
                       f'W{e["bits"]}A{e["bits"]}',
                       read_rgb(osp.join(e['sr_dir'], set_name,
                                         f'{name}.png'))))
    from .figures import _plt, _save
    plt = _plt()
    n = len(panels) + 1
    fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 2.9),
                             constrained_layout=True)
    for ax in axes:
        ax.axis('off')
    axes[0].imshow(hr)
    axes[0].add_patch(plt.Rectangle((x, y), size, size, fill=False,
                                    ec='red', lw=1.5))
    axes[0].set_title(f'{set_name}/{name}', fontsize=8)
    values = {}
    for ax, (label, img) in zip(axes[1:], panels):
        img = img[:hr.shape[0], :hr.shape[1]]
        win = (slice(y, y + size), slice(x, x + size))
        ax.imshow(img[win], interpolation='nearest')
        if label == 'HR':
            ax.set_title('HR (crop)', fontsize=8)
            continue
        whole = float(psnr(hr.astype(np.float64), img.astype(np.float64),
                           s, 'HWC', 'Y'))
        part = _psnr_y(hr[win], img[win])
        values[label] = dict(crop=part, image=whole)
        ax.set_title(f'{label}\n{part:.2f} dB crop, {whole:.2f} image',
                     fontsize=8)
    fig.suptitle(f'x{s}: the {size} px window of the test images where '
                 f'{panels[-2][0]} and {panels[-1][0]} differ most '
                 '(Y-PSNR)', fontsize=9)
    out = _save(fig, path, plt, dpi=100)
    return dict(path=out, set=set_name, image=name, top=y, left=x,
                size=size, psnr=values)


def make_figures(work_dir: str, plan: Dict, progress: str) -> Dict:
    """The ``figures`` stage: side by side and Fig. 1 / Fig. 3 of ODM."""
    from mmengine.config import Config

    from odm_mm.analysis.distribution import (collect, load_model,
                                              plot_fig1, plot_fig3,
                                              test_images)
    results = collect_results(work_dir, plan)
    preset = results['preset']
    d = _data_dirs(plan, _preset_from(preset), work_dir)
    n_img = len(_test_pairs(d['test_root'], preset['test_sets'],
                            preset['scale']))
    state = dict(stage='figures', fig=[0, n_img + 3])

    def tick(info: Optional[str] = None) -> None:
        state['fig'][0] = min(state['fig'][0] + 1, state['fig'][1])
        if info:
            state['info'] = info
        _dump(progress, state)

    _dump(progress, state)
    out: Dict = {}
    side = plot_difference_crops(results, d['test_root'],
                                 osp.join(work_dir, 'side_by_side.png'),
                                 tick=tick)
    if side:
        out['side_by_side'] = side
    tick('side by side')
    odm = next((n for n in ('odm_w2a2', 'odm_w4a4')
                if n in results['runs']), None)
    if odm:
        run_dir = osp.join(work_dir, 'runs', odm)
        cfg = Config.fromfile(osp.join(run_dir, 'config.py'))
        with open(osp.join(run_dir, 'last_checkpoint')) as f:
            ckpt = f.read().strip()
        model, _ = load_model(cfg, ckpt)
        res = collect(model, test_images(cfg, 3))
        tick('distributions')
        out['fig1'] = plot_fig1(res, model, osp.join(
            work_dir, f'{odm}_fig1_distribution.png'))
        out['fig3'] = plot_fig3(res, osp.join(
            work_dir, f'{odm}_fig3_mismatch.png'))
        out['fig1_layer'] = res['layer']
    state['fig'][0] = state['fig'][1]
    state['stage'] = 'done'
    _dump(progress, state)
    _dump(osp.join(work_dir, 'figures.json'), out)
    return out


# --------------------------------------------------------------- supervisor
class _Lines:
    """Progress for a non-terminal stdout: one line per finished stage, and
    every ``eta_every`` seconds one line per running stage with the time
    left, from its measured rate (:meth:`eta`)."""

    def __init__(self, width: int = 24, eta_every: float = 60.) -> None:
        self.tasks: Dict[str, Dict] = {}
        self.width = width
        self.eta_every = eta_every

    def add(self, key: str, desc: str) -> None:
        self.tasks[key] = dict(desc=desc, done=0, total=None, info='',
                               t0=None, t1=None, printed=False,
                               first=None, said=None)

    def eta(self, key: str) -> Optional[float]:
        """Seconds left for a task: its remaining steps at the rate measured
        since its first reported step (None before two reports)."""
        t = self.tasks[key]
        if not t['total'] or t['first'] is None or t['printed']:
            return None
        t_first, done_first = t['first']
        steps = t['done'] - done_first
        if steps <= 0:
            return None
        rate = (time.monotonic() - t_first) / steps
        return max(0., (t['total'] - t['done']) * rate)

    def _track(self, t: Dict, done: int) -> None:
        now = time.monotonic()
        if t['t0'] is None and (done or t['total']):
            t['t0'] = now
        if t['first'] is None and done > 0:
            t['first'] = (now, done)

    def update(self, key: str, done: int, total: Optional[int],
               info: str = '', finished: bool = False) -> None:
        t = self.tasks[key]
        t.update(done=done, total=total, info=info)
        self._track(t, done)
        if finished and not t['printed']:
            t['t1'] = time.monotonic()
            t['printed'] = True
            el = int(t['t1'] - (t['t0'] or t['t1']))
            count = f'{done}/{total}' if total else ''
            print(f'{t["desc"]:<{self.width}} {count:>9} {el // 60:>3d}:'
                  f'{el % 60:02d}  {info}'.rstrip(), flush=True)
            return
        left = self.eta(key)
        now = time.monotonic()
        since = t['said'] if t['said'] is not None else (t['first'] or
                                                         (now,))[0]
        if left is not None and now - since >= self.eta_every:
            t['said'] = now
            count = f'{done}/{total}'
            print(f'{t["desc"]:<{self.width}} {count:>9}  about '
                  f'{int(left) // 60}:{int(left) % 60:02d} left (measured '
                  'rate)', flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


class _Rich(_Lines):
    """Live progress bars (rich) for a terminal."""

    def __init__(self, width: int = 24) -> None:
        super().__init__(width)
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress,
                                   TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)
        # elapsed, then the time left at the measured rate (kept updated)
        self.progress = Progress(
            TextColumn(f'{{task.description:<{width}}}'),
            BarColumn(bar_width=24), MofNCompleteColumn(),
            TimeElapsedColumn(), TextColumn('left'), TimeRemainingColumn(),
            TextColumn('{task.fields[info]}'))
        self.ids: Dict[str, int] = {}

    def add(self, key: str, desc: str) -> None:
        super().add(key, desc)
        self.ids[key] = self.progress.add_task(desc, total=None, start=False,
                                               info='')

    def update(self, key: str, done: int, total: Optional[int],
               info: str = '', finished: bool = False) -> None:
        t = self.tasks[key]
        tid = self.ids[key]
        if t['t0'] is None and (done or finished or total):
            t['t0'] = time.monotonic()
            self.progress.start_task(tid)
        t.update(done=done, total=total, info=info)
        if finished and not t['printed']:
            t['printed'] = True
            total = total or max(done, 1)
            done = total
        self.progress.update(tid, completed=done, total=total, info=info)
        if finished:
            self.progress.stop_task(tid)

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()


class Supervisor:
    """Run the plan's stages as worker processes; draw their progress.

    Args:
        work_dir: The demo's work dir.
        plan: From :func:`make_plan`.
        workers: Parallel QAT workers (default: 2, or the runs' count).
        threads: CPU threads in all (default ``os.cpu_count()``); each QAT
            worker gets ``threads // workers``, the other stages all.
        live: Draw rich bars (default: when stdout is a terminal).
    """

    def __init__(self, work_dir: str, plan: Dict,
                 workers: Optional[int] = None,
                 threads: Optional[int] = None,
                 live: Optional[bool] = None) -> None:
        self.work_dir = work_dir
        self.plan = plan
        self.runs = _runs_of(plan)
        self.threads = max(1, threads or os.cpu_count() or 1)
        self.workers = max(1, min(workers or 2, len(self.runs)))
        self.live = sys.stdout.isatty() if live is None else live
        self.procs: Dict[str, subprocess.Popen] = {}
        self.failed: Dict[str, int] = {}
        self.skipped: List[str] = []
        os.makedirs(osp.join(work_dir, 'logs'), exist_ok=True)

    # ---------------------------------------------------------------- helpers
    def log(self, stage: str) -> str:
        """The log file of a stage's worker."""
        return osp.join(self.work_dir, 'logs', f'{stage}.log')

    def _result(self, stage: str) -> str:
        if stage == 'fp32':
            return osp.join(self.work_dir, 'fp32', 'result.json')
        if stage == 'figures':
            return osp.join(self.work_dir, 'figures.json')
        return osp.join(self.work_dir, 'runs', stage, 'result.json')

    def _finished(self, stage: str) -> bool:
        return stage_finished(self.work_dir, stage)

    def _label(self, stage: str) -> str:
        if stage == 'fp32':
            return 'FP32'
        m, b = next((m, b) for m, b in self.plan['runs']
                    if run_name(m, b) == stage)
        return f'{METHODS[m].label.replace("EDSR-", "")} W{b}A{b}'

    def _tasks(self, stage: str) -> List[Tuple[str, str]]:
        if stage == 'figures':
            return [('figures', 'figures')]
        if stage == 'fp32':
            if self.plan['teacher']['path']:
                return [('fp32:test', 'FP32 teacher: test')]
            return [('fp32:train', 'FP32 teacher: training'),
                    ('fp32:test', 'FP32 teacher: test')]
        lab = self._label(stage)
        return [(f'{stage}:calib', f'{lab}: calibration'),
                (f'{stage}:train', f'{lab}: QAT'),
                (f'{stage}:test', f'{lab}: test')]

    def _launch(self, stage: str, threads: int) -> subprocess.Popen:
        try:  # a hand-off left by an interrupted demo
            os.remove(threads_file(self.work_dir, stage))
        except FileNotFoundError:
            pass
        env = dict(os.environ, OMP_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads), PYTHONUNBUFFERED='1')
        with open(self.log(stage), 'a') as log:
            log.write(f'\n=== demo worker {stage} ({threads} thread(s)), '
                      f'{time.strftime("%Y-%m-%d %H:%M:%S")} ===\n')
            log.flush()
            return subprocess.Popen(
                [sys.executable, DEMO_SCRIPT, '--worker', stage,
                 '--work-dir', self.work_dir, '--threads', str(threads)],
                stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=REPO_ROOT, start_new_session=True)

    @staticmethod
    def _psnr_info(state: Dict, metrics: Optional[Dict] = None) -> str:
        if metrics:
            vals = {k.rsplit('/', 1)[0]: v for k, v in metrics.items()
                    if k.endswith('/PSNR')}
        else:
            vals = state.get('psnr') or {}
        return '  '.join(f'{k} {v:.2f} dB' for k, v in vals.items())

    def _show(self, ui: _Lines, stage: str, finished: bool) -> None:
        """Update the stage's bars from its progress file."""
        st = _load(progress_file(self.work_dir, stage), {})
        where = st.get('stage')
        if stage == 'figures':
            done, tot = st.get('fig', [0, None])
            ui.update('figures', done, tot, st.get('info', ''),
                      (finished or where == 'done') and
                      self._finished('figures'))
            return
        order = ['start', 'calib', 'train', 'test', 'done']
        pos = order.index(where) if where in order else 0
        # finished: the worker may still draw the figures afterwards
        finished = finished or (where == 'done' and self._finished(stage))
        for key, _ in self._tasks(stage):
            part = key.split(':')[1]
            if part == 'calib':
                done, tot = st.get('calib', [0, None])
                over = pos > 1 or finished
                info = '' if 'calib' in st or not over else \
                    'restored from checkpoint'
                ui.update(key, tot if over and tot else done, tot,
                          info, over)
            elif part == 'train':
                done, tot = st.get('train', [0, None])
                loss = st.get('loss')
                info = f'loss {loss:.4f}' if loss is not None else ''
                ui.update(key, done, tot, info, pos > 2 or finished)
            else:
                done, tot = st.get('test', [0, None])
                res = _load(self._result(stage), {}) if finished else {}
                metrics = st.get('metrics')
                if not metrics and res.get('metrics'):
                    metrics = {f'{k}/PSNR': v['psnr']
                               for k, v in res['metrics'].items()}
                info = self._psnr_info(st, metrics)
                if stage == 'fp32' and where == 'done' and not finished:
                    info += '  (bicubic baseline...)'
                ui.update(key, done, tot, info, finished)

    # -------------------------------------------------------------------- run
    def _poll_figures(self, ui: _Lines) -> None:
        if osp.isfile(progress_file(self.work_dir, 'figures')):
            self._show(ui, 'figures', False)  # drawn by the last worker

    def _group(self, ui: _Lines, stages: List[str], slots: int,
               threads: int) -> None:
        """Run ``stages`` on ``slots`` workers of ``threads`` threads.

        A stage counts as done as soon as its outputs exist (its process
        may still be exiting, or drawing the figures): the next one starts.
        """
        todo = list(stages)
        running: List[str] = []
        while todo or running:
            while todo and len(running) < slots:
                stage = todo.pop(0)
                if self._finished(stage):
                    self._show(ui, stage, True)
                    continue
                self.procs[stage] = self._launch(stage, threads)
                running.append(stage)
            if not running:
                continue
            time.sleep(0.3)
            self._poll_figures(ui)
            before = len(running)
            for stage in list(running):
                rc = self.procs[stage].poll()
                done = self._finished(stage)
                if rc is None and not done:
                    self._show(ui, stage, False)
                    continue
                running.remove(stage)
                if done and rc in (None, 0):
                    self._show(ui, stage, True)
                    continue
                self.failed[stage] = rc
                for key, _ in self._tasks(stage):
                    t = ui.tasks[key]
                    if not t['printed']:
                        ui.update(key, t['done'], t['total'],
                                  f'FAILED (exit {rc})', True)
            if not todo and running and len(running) < before:
                self.share_threads(running)

    def share_threads(self, running: Sequence[str]) -> Dict[str, int]:
        """Split all threads among the ``running`` workers; tell them.

        Called when a worker has finished and none is waiting to start: its
        core would idle until the others end (ODM's step takes ~1.4x PAMS's).
        Each running worker's :class:`~odm_mm.progress.ProgressFileHook`
        picks its new count up before its next iteration.
        """
        if not running:
            return {}
        base, extra = divmod(self.threads, len(running))
        share = {s: max(1, base + (i < extra))
                 for i, s in enumerate(running)}
        for stage, n in share.items():  # atomic: a worker may read it now
            _dump(threads_file(self.work_dir, stage), n)
        return share

    def _wait_all(self, ui: _Lines) -> None:
        """Wait for every worker to exit (one may be drawing the figures)."""
        while any(p.poll() is None for p in self.procs.values()):
            time.sleep(0.3)
            self._poll_figures(ui)
        for stage, p in self.procs.items():
            if p.returncode not in (0, None) and stage not in self.failed:
                self.failed[stage] = p.returncode

    def run(self) -> bool:
        """All stages; returns True when every stage finished."""
        stages = ['fp32'] + self.runs + ['figures']
        self.skipped = [s for s in stages if self._finished(s)]
        width = max(len(d) for s in stages for _, d in self._tasks(s)) + 1
        ui = (_Rich if self.live else _Lines)(width)
        for s in stages:
            for key, desc in self._tasks(s):
                ui.add(key, desc)
        per = max(1, self.threads // self.workers)
        try:
            with ui:
                if self.plan['teacher']['path']:
                    # a given teacher: the QAT runs need only its file, and
                    # its test fills the slot of the first run to finish
                    self._group(ui, self.runs + ['fp32'], self.workers, per)
                else:  # the runs start from the teacher trained here
                    self._group(ui, ['fp32'], 1, self.threads)
                    if 'fp32' not in self.failed:
                        self._group(ui, self.runs, self.workers, per)
                self._wait_all(ui)
                if not self.failed and all(self._finished(r) for r in
                                           ['fp32'] + self.runs):
                    self._group(ui, ['figures'], 1, self.threads)
                    self._wait_all(ui)
        except KeyboardInterrupt:
            self.stop()
            raise
        return not self.failed

    def stop(self) -> None:
        """Terminate the running workers (their process groups)."""
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        end = time.monotonic() + 10
        for p in self.procs.values():
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)

    def tail(self, stage: str, n: int = 6) -> List[str]:
        """The last ``n`` lines of a stage's log."""
        try:
            with open(self.log(stage), errors='replace') as f:
                return [ln.rstrip() for ln in f.readlines()[-n:]]
        except OSError:
            return []
