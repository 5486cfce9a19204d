"""tools/test.py: strict checkpoints, pre-run checks, nothing overwritten.

A tiny ODM model (tests/tiny_odm.py) is trained for 2 iterations once; then
tools/test.py runs in this process on it and on wrong checkpoints: the FP32
teacher's bare state dict, another network's weights. Each wrong one stops
with one message saying what the checkpoint is, before any file is written;
``--non-strict`` loads it anyway. Testing in the training work dir keeps the
training run's dumped config, and writes no images unless asked.
"""
import runpy
import sys
from pathlib import Path

import pytest
import torch

import odm_mm

from tiny_odm import (REPO, isolated_runs, snapshot, train, write_config,
                      write_fp32_checkpoint)

pytestmark = pytest.mark.skipif(not odm_mm.HAS_MMAGIC, reason='needs mmagic')

TEST_PY = REPO / 'tools' / 'test.py'


def run_tool(script: Path, *args) -> int:
    """``python SCRIPT ARGS`` in this process; returns its exit status (a
    message exit is printed to stderr, as Python would)."""
    with isolated_runs():
        sys.argv = [str(script), *map(str, args)]
        try:
            runpy.run_path(str(script), run_name='__main__')
        except SystemExit as exc:
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
                return 1
            return exc.code or 0
    return 0


def run_test_tool(config: Path, ckpt: Path, data_root: Path,
                  *args: str) -> int:
    """``tools/test.py`` in this process; returns its exit status."""
    return run_tool(TEST_PY, config, ckpt, *args, '--cfg-options',
                    f'odm_data_root={data_root}')


@pytest.fixture(scope='session')
def trained(tmp_path_factory, tiny_data_root):
    """``(config, work_dir, fp32 teacher)`` of a 2-iteration ODM run
    (session-wide: tests/test_infer.py uses it too)."""
    tmp = tmp_path_factory.mktemp('test_tool')
    fp32 = write_fp32_checkpoint(tmp / 'fp32.pth')
    config = write_config(tmp / 'tiny_odm.py', fp32, 'tiny_odm', max_iters=2,
                          val_interval=2, ckpt_interval=2, milestone=1)
    work_dir = tmp / 'work'
    train(config, work_dir, tiny_data_root)
    return config, work_dir, fp32


def test_fp32_teacher_as_checkpoint_is_refused(trained, tiny_data_root,
                                               tmp_path, capsys):
    config, _, fp32 = trained
    bare = tmp_path / 'bare_fp32.pth'
    state = torch.load(fp32, weights_only=True)['state_dict']
    torch.save({k[len('generator.'):]: v for k, v in state.items()}, bare)
    work = tmp_path / 'w'
    code = run_test_tool(config, bare, tiny_data_root, '--work-dir',
                         str(work))
    err = capsys.readouterr().err
    assert code == 1
    assert 'an FP32 EDSRNet state dict (bare generator weights' in err
    assert 'pass it as model.fp32_checkpoint' in err
    assert 'keys of the model are missing' in err
    assert 'Traceback' not in err
    assert not work.exists()  # checked before anything is written


def test_other_network_is_refused(trained, tiny_data_root, tmp_path,
                                  capsys):
    config, _, _ = trained
    from mmagic.models.editors import SRCNNNet
    other = tmp_path / 'srcnn.pth'
    net = SRCNNNet(channels=(3, 8, 4, 3), upscale_factor=4)
    torch.save({'state_dict': {f'generator.{k}': v for k, v in
                               net.state_dict().items()}}, other)
    code = run_test_tool(config, other, tiny_data_root, '--work-dir',
                         str(tmp_path / 'w'))
    err = capsys.readouterr().err
    assert code == 1
    assert 'SRCNNNet mmagic model checkpoint' in err
    assert 'the config builds EDSRNet' in err
    assert 'keys are not in the model' in err


def test_non_strict_loads_anyway(trained, tiny_data_root, tmp_path, capsys):
    config, _, fp32 = trained
    out = tmp_path / 'm.json'
    code = run_test_tool(config, fp32, tiny_data_root, '--non-strict',
                         '--work-dir', str(tmp_path / 'w'), '--out',
                         str(out))
    assert code == 0 and out.is_file()


def test_training_work_dir_keeps_its_config_and_no_images(
        trained, tiny_data_root, capsys):
    config, work_dir, _ = trained
    before = snapshot(work_dir)
    dumped = work_dir / config.name
    assert dumped.is_file()
    code = run_test_tool(config, work_dir / 'iter_2.pth', tiny_data_root,
                         '--work-dir', str(work_dir))
    assert code == 0
    after = snapshot(work_dir)
    assert after[config.name] == before[config.name]
    assert not any(k.endswith('.png') for k in after)
    new = [k for k in after if k not in before]
    assert any(k.endswith(config.name) for k in new)  # in <timestamp>/
    assert 'Set5/PSNR' in capsys.readouterr().out + ''.join(
        v.decode(errors='replace') for k, v in after.items()
        if k.endswith('.log') and k not in before)


def test_save_images_writes_them(trained, tiny_data_root, tmp_path):
    config, work_dir, _ = trained
    work = tmp_path / 'imgs'
    code = run_test_tool(config, work_dir / 'iter_2.pth', tiny_data_root,
                         '--work-dir', str(work), '--save-images')
    assert code == 0
    assert list(work.rglob('*.png'))


def test_corrupt_images_of_all_sets_in_one_message(trained, fresh_data_root,
                                                   tmp_path, capsys):
    config, work_dir, _ = trained
    for rel in ('Set5/HR/img0.png', 'B100/LR_bicubic/X4/img1x4.png'):
        path = fresh_data_root / rel
        data = path.read_bytes()
        path.write_bytes(data[:len(data) // 3])
    work = tmp_path / 'w'
    code = run_test_tool(config, work_dir / 'iter_2.pth', fresh_data_root,
                         '--work-dir', str(work))
    err = capsys.readouterr().err
    assert code == 1
    assert 'Set5/HR/img0.png' in err and 'B100/LR_bicubic/X4/img1x4.png' \
        in err
    assert err.count('ValueError') == 1 and 'Traceback' not in err
    assert not work.exists()


def test_training_preflight_names_corrupt_images_of_all_sets(
        trained, fresh_data_root):
    """tools/train.py's check: T91 and Set5 damaged, one message."""
    from mmengine.config import Config

    from odm_mm.data_root import merge_cfg_options
    from odm_mm.preflight import preflight_check
    config, _, _ = trained
    for rel in ('T91/t1.png', 'Set5/LR_bicubic/X4/img1x4.png'):
        path = fresh_data_root / rel
        path.write_bytes(path.read_bytes()[:100])
    cfg = Config.fromfile(str(config))
    merge_cfg_options(cfg, {'odm_data_root': str(fresh_data_root)})
    with pytest.raises(ValueError) as err:
        preflight_check(cfg)
    msg = str(err.value)
    assert msg.startswith('(1) SR dataset t91') and '| (2) SR dataset set5' \
        in msg
    assert 'T91/t1.png' in msg and 'img1x4.png' in msg


def test_tools_start_without_third_party_warnings(venv_python):
    """diffusers / torch.jit / pkg_resources warnings are filtered at the
    entry points (tools/odm_quiet.py); the usage error is all that shows."""
    import subprocess
    for tool in ('test.py', 'infer.py'):
        proc = subprocess.run([venv_python, str(REPO / 'tools' / tool)],
                              capture_output=True, text=True, timeout=300,
                              cwd=REPO)
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert 'Warning' not in proc.stderr, proc.stderr[:2000]
        assert lines[0].startswith('usage:') and len(lines) <= 6, lines
