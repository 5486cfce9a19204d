"""Pre-run check of the checkpoint that ``--resume`` would load.

Glue (mmengine). ``tools/train.py CONFIG --resume`` resumes from the file
that ``<work_dir>/last_checkpoint`` names, ``--resume PATH`` from ``PATH``.
When that file is torn (a run killed while ``torch.save`` wrote it, a full
disk, a partial copy), mmengine only finds out inside ``runner.train()``:
after it has created a new ``<work_dir>/<timestamp>/`` log folder, with
PyTorch's "PytorchStreamReader failed reading zip archive" traceback.

:func:`check_resume_or_exit` runs before the Runner is built. If the
checkpoint to resume from cannot be read it exits with one message naming
the damaged file, the last intact checkpoint of the work dir (``iter_<N>`` /
``epoch_<N>``, by ``N``, not by file time or listing order) and the exact
command that resumes from it. It reads files only: nothing in the work dir
is written, moved or deleted. A resumed run also gets
:class:`KeepSourceRunHook`, so it never deletes another run's best
checkpoint.

What "cannot be read" means: the file is missing or empty, or
``torch.load(..., weights_only=True)`` fails on it for any reason other
than a global that ``weights_only`` refuses (such a file is intact; mmengine
decides what to do with it). Zip checkpoints (every ``torch.save`` since
torch 1.6) are opened memory-mapped, so the check costs little memory; a
truncated zip lacks its central directory and fails here. Bytes flipped
inside a tensor's data are not detected.
"""
from __future__ import annotations

import os
import os.path as osp
import pickle
import re
import shlex
import sys
import zipfile
from typing import List, Optional, Sequence

import torch
from mmengine.config import Config

__all__ = ['checkpoint_problem', 'intact_checkpoints', 'resume_target',
           'resume_command', 'check_resume', 'check_resume_or_exit',
           'KeepSourceRunHook']

_NUMBERED = re.compile(r'^(iter|epoch)_(\d+)\.pth$')


def checkpoint_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot be loaded as a checkpoint, or None if it can.

    Args:
        path: A local checkpoint file.

    Returns:
        A short reason (``'does not exist'``, ``'is empty (0 bytes)'``,
        ``'cannot be read (RuntimeError: ...)'``), or None for a readable
        checkpoint.
    """
    if not osp.isfile(path):
        return 'does not exist'
    size = osp.getsize(path)
    if size == 0:
        return 'is empty (0 bytes)'
    mmap = zipfile.is_zipfile(path)
    try:
        torch.load(path, map_location='cpu', weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if 'Unsupported global' in str(err):
            return None  # readable; a global weights_only refuses
        return f'cannot be read ({_reason(err)}; {size} bytes)'
    except Exception as err:  # noqa: BLE001  torch raises many types here
        return f'cannot be read ({_reason(err)}; {size} bytes)'
    return None


def _reason(err: BaseException) -> str:
    """``Type: first sentence`` of an error (torch's messages run on)."""
    text = str(err).strip().splitlines()
    first = text[0].split('. ')[0].rstrip('.') if text else ''
    return f'{type(err).__name__}: {first}' if first else \
        type(err).__name__


def intact_checkpoints(work_dir: str,
                       exclude: Sequence[str] = ()) -> List[str]:
    """Readable ``iter_<N>.pth`` / ``epoch_<N>.pth`` files, newest first.

    Newest means largest ``N`` (iteration checkpoints before epoch ones of
    the same number never occur in one work dir). Files are probed from
    the newest down; the search stops at the first readable one, so the list
    holds at most one path.

    Args:
        work_dir: The run's work dir.
        exclude: Paths not to consider (the damaged file).

    Returns:
        ``[path]`` of the newest readable numbered checkpoint, or ``[]``.
    """
    if not osp.isdir(work_dir):
        return []
    skip = {osp.realpath(p) for p in exclude}
    numbered = []
    for name in os.listdir(work_dir):
        match = _NUMBERED.match(name)
        path = osp.join(work_dir, name)
        if match and osp.realpath(path) not in skip:
            numbered.append((int(match.group(2)), name, path))
    for _, _, path in sorted(numbered, reverse=True):
        if checkpoint_problem(path) is None:
            return [path]
    return []


def resume_target(cfg: Config) -> Optional[str]:
    """The checkpoint a Runner built from ``cfg`` would resume from.

    Mirrors ``mmengine.runner.Runner.load_or_resume``: with ``resume`` and
    ``load_from`` the file ``load_from``; with ``resume`` alone the path in
    ``<work_dir>/last_checkpoint`` (None when that file is absent: the run
    then starts from scratch); without ``resume`` None.
    """
    if not cfg.get('resume', False):
        return None
    if cfg.get('load_from'):
        return str(cfg.load_from)
    marker = osp.join(str(cfg.work_dir), 'last_checkpoint')
    if not osp.isfile(marker):
        return None
    with open(marker) as f:
        path = f.read().strip()
    return path or None


def resume_command(argv: Sequence[str], checkpoint: str) -> str:
    """``argv`` (a ``tools/train.py`` command line) resuming from a file.

    Replaces ``--resume`` (alone or with a path) by ``--resume CHECKPOINT``
    and keeps every other argument.

    Args:
        argv: ``sys.argv`` of ``tools/train.py`` (script first).
        checkpoint: The checkpoint to resume from.

    Returns:
        A shell command line (``python tools/train.py ...``).
    """
    args = list(argv[1:])
    out: List[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == '--resume':
            nxt = args[i + 1] if i + 1 < len(args) else None
            i += 2 if nxt is not None and not nxt.startswith('-') else 1
            continue
        if arg.startswith('--resume='):
            i += 1
            continue
        out.append(arg)
        i += 1
    # before --cfg-options (whose values run to the next option), else last
    at = out.index('--cfg-options') if '--cfg-options' in out else len(out)
    out[at:at] = ['--resume', checkpoint]
    return shlex.join(['python', argv[0], *out])


def check_resume(cfg: Config, argv: Optional[Sequence[str]] = None) -> None:
    """Raise one FileNotFoundError if the resume checkpoint is damaged.

    Args:
        cfg: The merged training config (``work_dir``, ``resume``,
            ``load_from`` set as ``tools/train.py`` sets them).
        argv: The command line, for the command in the message (default
            ``sys.argv``).

    Raises:
        FileNotFoundError: The checkpoint ``--resume`` would load is missing
            or unreadable; the message names it, the last intact checkpoint
            of the work dir and the command that resumes from that one.
    """
    target = resume_target(cfg)
    if target is None or '://' in target:
        return
    problem = checkpoint_problem(target)
    if problem is None:
        return
    work_dir = str(cfg.work_dir)
    argv = list(sys.argv if argv is None else argv)
    intact = intact_checkpoints(work_dir, exclude=[target])
    source = ('--resume PATH' if cfg.get('load_from') else
              f'{osp.join(work_dir, "last_checkpoint")}')
    msg = (f'cannot resume: the checkpoint {target} (from {source}) '
           f'{problem}. ')
    if intact:
        launcher = cfg.get('launcher', 'none')
        how = (f'resume from it with: {resume_command(argv, intact[0])}'
               if launcher == 'none' else
               f'resume from it by passing --resume {intact[0]} to the same '
               'launcher command (tools/dist_train.sh ...)')
        msg += (f'The last intact checkpoint in {work_dir} is {intact[0]}; '
                f'{how}. The resumed run writes its later checkpoints anew '
                f'(also {osp.basename(target)}, if it reaches that '
                'iteration): copy the damaged file elsewhere first if you '
                'want to keep it.')
    else:
        msg += (f'No intact iter_<N>.pth / epoch_<N>.pth is left in '
                f'{work_dir}: start again without --resume (a new '
                '--work-dir keeps these files).')
    msg += ' Nothing in the work dir was changed.'
    raise FileNotFoundError(msg)


def check_resume_or_exit(cfg: Config,
                         argv: Optional[Sequence[str]] = None) -> None:
    """:func:`check_resume`, then :class:`KeepSourceRunHook` when resuming.

    A damaged checkpoint exits (``SystemExit``, status 1) with
    ``FileNotFoundError: <message>``, without traceback, before anything is
    written. A resumed run gets :class:`KeepSourceRunHook` appended to
    ``cfg.custom_hooks``.

    Args:
        cfg: The merged training config (``custom_hooks`` may change).
        argv: The command line (default ``sys.argv``).
    """
    try:
        check_resume(cfg, argv)
    except FileNotFoundError as err:
        raise SystemExit(f'{type(err).__name__}: {err}\n[odm_mm pre-run '
                         'check: see docs/troubleshooting.md]') from None
    if cfg.get('resume', False):
        cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
            dict(type='KeepSourceRunHook')]


def _inside(path: str, folder: str) -> bool:
    path, folder = osp.realpath(path), osp.realpath(folder)
    return osp.commonpath([path, folder]) == folder


try:
    from mmengine.hooks import Hook
    from mmengine.logging import print_log
    from mmagic.registry import HOOKS
except ImportError:  # torch-only: no Runner, nothing to protect
    HOOKS = None

if HOOKS is not None:

    @HOOKS.register_module()
    class KeepSourceRunHook(Hook):
        """A resumed run never deletes the best checkpoint of another run.

        mmengine's CheckpointHook restores the path of the best checkpoint
        (``best_ckpt`` in the message hub) from the checkpoint it resumes
        from, and deletes that file when it saves a better one. After
        ``--resume other_dir/iter_N.pth --work-dir new_dir`` that is a file
        of the other run. Before CheckpointHook reads it (priority
        ``VERY_HIGH``, ``before_train``), this hook forgets a best path that
        lies outside the work dir, with one log line; the best score is
        kept, so a new best is still only saved when it beats it.
        """

        priority = 'VERY_HIGH'

        def before_train(self, runner) -> None:
            """Drop ``best_ckpt*`` entries that point outside the work dir."""
            info = runner.message_hub.runtime_info
            for key in [k for k in info if k.startswith('best_ckpt')]:
                path = info[key]
                if path and not _inside(str(path), runner.work_dir):
                    del info[key]
                    print_log(f'Resumed from another work dir: its best '
                              f'checkpoint {path} is left alone (this run '
                              f'saves its own best in {runner.work_dir}).',
                              logger='current')
