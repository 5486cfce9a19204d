"""``--resume`` with a torn last checkpoint: one message, nothing written.

A tiny 2-iteration ODM run (:mod:`tiny_odm`) saves ``iter_1.pth`` and
``iter_2.pth``; ``iter_2.pth`` (the file ``last_checkpoint`` names) is then
cut in half, as a run killed while saving leaves it. ``tools/train.py
--resume`` must exit before the Runner is built with one message naming the
torn file, the last intact checkpoint (``iter_1.pth``) and a command; the
work dir must be byte for byte unchanged (no new log folder). The printed
command, run as printed, must resume from iteration 1 and write an intact
``iter_2.pth``.
"""
import os
import runpy
import shlex
import sys

import pytest
import torch

import odm_mm
from odm_mm.resume_check import (checkpoint_problem, intact_checkpoints,
                                 resume_command)

from tiny_odm import (TRAIN_PY, isolated_runs, load, snapshot, train,
                      write_config, write_fp32_checkpoint)

pytestmark = pytest.mark.skipif(not odm_mm.HAS_MMAGIC,
                                reason='needs mmagic')


def _tear(path):
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def test_torn_last_checkpoint_names_intact_one_and_command(
        tmp_path, tiny_data_root):
    fp32 = write_fp32_checkpoint(tmp_path / 'fp32.pth')
    cfg = write_config(tmp_path / 'torn.py', fp32, 'resume_torn',
                       max_iters=2, val_interval=2, ckpt_interval=1)
    work = tmp_path / 'work'
    train(cfg, work, tiny_data_root)
    torn = work / 'iter_2.pth'
    assert (work / 'last_checkpoint').read_text().strip() == str(torn)
    _tear(torn)
    assert checkpoint_problem(str(torn)).startswith('cannot be read')
    before = snapshot(work)

    with pytest.raises(SystemExit) as exc:
        train(cfg, work, tiny_data_root, args=['--resume'])
    msg = str(exc.value.code)
    assert msg.count('\n') == 1  # one message (and the pointer line)
    assert f'the checkpoint {torn} (from {work / "last_checkpoint"}) ' \
        'cannot be read' in msg
    assert f'last intact checkpoint in {work} is {work / "iter_1.pth"}' in msg
    assert snapshot(work) == before  # no log folder, nothing rewritten

    # the printed command, run as printed, resumes from iteration 1
    command = msg.split('resume from it with: ', 1)[1].split('. The ', 1)[0]
    argv = shlex.split(command)
    assert argv[:2] == ['python', str(TRAIN_PY)]
    assert argv[argv.index('--resume') + 1] == str(work / 'iter_1.pth')
    with isolated_runs():
        os.chdir(work.parent)
        sys.argv = argv[1:]
        runpy.run_path(argv[1], run_name='__main__')
    ckpt = load(torn)  # written anew by the resumed run
    assert ckpt['meta']['iter'] == 2
    logs = [p.read_text() for p in work.glob('*/*.log')]
    assert any('resumed epoch: 0, iter: 1' in t for t in logs)
    assert checkpoint_problem(str(torn)) is None


def test_no_intact_checkpoint_left(tmp_path):
    (tmp_path / 'iter_4.pth').write_bytes(b'')
    (tmp_path / 'iter_2.pth').write_bytes(b'PK\x03\x04 torn')
    assert checkpoint_problem(str(tmp_path / 'iter_4.pth')) == \
        'is empty (0 bytes)'
    assert checkpoint_problem(str(tmp_path / 'iter_9.pth')) == \
        'does not exist'
    assert intact_checkpoints(str(tmp_path)) == []


def test_newest_intact_is_by_number_not_listing_order(tmp_path):
    for n in (2, 10, 9):
        torch.save({'meta': {'iter': n}}, tmp_path / f'iter_{n}.pth')
    _tear(tmp_path / 'iter_10.pth')
    (tmp_path / 'best_Set5_PSNR_iter_11.pth').write_bytes(b'')
    assert intact_checkpoints(str(tmp_path)) == [str(tmp_path / 'iter_9.pth')]
    assert intact_checkpoints(str(tmp_path), exclude=[
        str(tmp_path / 'iter_9.pth')]) == [str(tmp_path / 'iter_2.pth')]


@pytest.mark.parametrize('args', [
    ['cfg.py', '--resume'],
    ['cfg.py', '--resume', 'w/iter_4.pth'],
    ['cfg.py', '--resume=w/iter_4.pth'],
])
def test_resume_command_replaces_resume_keeps_the_rest(args):
    argv = ['tools/train.py', *args, '--work-dir', 'my dir', '--cfg-options',
            'a=1', 'b=2']
    assert shlex.split(resume_command(argv, 'my dir/iter_2.pth')) == [
        'python', 'tools/train.py', 'cfg.py', '--work-dir', 'my dir',
        '--resume', 'my dir/iter_2.pth', '--cfg-options', 'a=1', 'b=2']


class _Custom:
    """A class ``weights_only`` refuses: such a file is intact."""


def test_legacy_format_and_refused_globals(tmp_path):
    legacy = tmp_path / 'legacy.pth'
    torch.save({'w': torch.ones(100)}, legacy,
               _use_new_zipfile_serialization=False)
    assert checkpoint_problem(str(legacy)) is None
    _tear(legacy)
    assert checkpoint_problem(str(legacy)).startswith('cannot be read (')
    custom = tmp_path / 'custom.pth'
    torch.save({'obj': _Custom()}, custom)
    assert checkpoint_problem(str(custom)) is None
    _tear(custom)
    assert 'central directory' in checkpoint_problem(str(custom))


def test_resumed_run_forgets_another_runs_best_checkpoint(tmp_path):
    from types import SimpleNamespace

    from mmengine.logging import MessageHub

    from odm_mm.resume_check import KeepSourceRunHook
    hub = MessageHub.get_instance('keep_source_run_test')
    work = tmp_path / 'new'
    work.mkdir()
    hub.update_info('best_ckpt', str(tmp_path / 'old' / 'best_iter_2.pth'))
    hub.update_info('best_ckpt_Set5/PSNR', str(work / 'best_iter_4.pth'))
    hub.update_info('best_score', 30.5)
    KeepSourceRunHook().before_train(SimpleNamespace(
        message_hub=hub, work_dir=str(work)))
    info = hub.runtime_info
    assert 'best_ckpt' not in info  # another run's file: forgotten
    assert info['best_ckpt_Set5/PSNR'] == str(work / 'best_iter_4.pth')
    assert info['best_score'] == 30.5
