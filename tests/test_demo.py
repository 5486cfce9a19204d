"""The embedded demo (tools/demo.py, odm_bench.demo).

* which teacher it quantizes: official mmagic weights (cached, or downloaded
  in one try), the T91 teacher of ../shared/models, or one trained first;
  with monkeypatched hub cache / models folder / downloader, no network;
* the window search of the side-by-side figure;
* ``tools/demo.py --smoke`` end to end (tiny network, a few iterations, the
  same worker processes as ``make demo``): short output with the table
  rows, the PNGs, and a restart that trains nothing again.
"""
import json
import os
import os.path as osp
import re
import socket
import subprocess
import sys
import time
import urllib.error

import numpy as np
import pytest

from odm_bench import demo
from odm_bench.presets import get_preset
from odm_mm.checkpoint import OFFICIAL_FP32, _hub_cache_path

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..'))
URL = OFFICIAL_FP32[('EDSRNet', 4)]


@pytest.fixture
def places(tmp_path, monkeypatch):
    """Empty torch hub cache and models folder; returns their paths."""
    import torch
    hub, models = tmp_path / 'hub', tmp_path / 'models'
    models.mkdir()
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(hub))
    monkeypatch.setenv('ODM_MODELS_ROOT', str(models))
    return dict(cache=_hub_cache_path(URL),
                shared=str(models / 'edsr_x4c64b16_t91_fp32.pth'))


def _offline(url, dest, timeout):
    raise urllib.error.URLError(socket.gaierror(-2, 'Name or service not '
                                                'known'))


def _touch(path):
    os.makedirs(osp.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(b'weights')


def test_teacher_official_when_cached(places):
    _touch(places['cache'])
    t = demo.select_teacher(get_preset('demo'), downloader=_offline)
    assert (t.kind, t.path) == ('official', places['cache'])
    assert 'torch hub cache' in t.reason


def test_teacher_official_downloaded_once(places):
    calls = []

    def fetch(url, dest, timeout):
        calls.append((url, timeout))
        _touch(dest)

    t = demo.select_teacher(get_preset('demo'), downloader=fetch)
    assert (t.kind, t.path) == ('official', places['cache'])
    assert calls == [(URL, demo.DOWNLOAD_TIMEOUT_S)]
    assert 'downloaded' in t.reason


def test_teacher_shared_when_offline(places):
    _touch(places['shared'])
    t = demo.select_teacher(get_preset('demo'), downloader=_offline)
    assert (t.kind, t.path) == ('shared', places['shared'])
    assert t.reason == 'official mmagic weights not cached and offline'
    line = t.line(get_preset('demo'))
    assert line.startswith('teacher: ') and line.endswith(
        '(official mmagic weights not cached and offline)')
    t = demo.select_teacher(get_preset('demo'), allow_download=False)
    assert t.kind == 'shared' and '--offline' in t.reason


def test_teacher_trained_when_nothing_is_there(places):
    t = demo.select_teacher(get_preset('demo'), downloader=_offline)
    assert t.kind == 'train' and t.path is None
    assert 'offline' in t.reason and 'no ' in t.reason
    # a tiny network fits no pretrained teacher: nothing is even looked up
    t = demo.select_teacher(get_preset('smoke'), downloader=None)
    assert t.kind == 'train' and 'smoke' in t.reason


def test_real_downloader_fails_fast_and_quietly(places, monkeypatch, capfd):
    tries = []

    def refuse(url, timeout=None, **kw):
        tries.append((url, timeout))
        raise urllib.error.URLError(socket.gaierror(-2, 'no DNS'))

    def no_sleep(seconds):
        raise AssertionError(f'slept {seconds} s before giving up')

    monkeypatch.setattr(demo.urllib.request, 'urlopen', refuse)
    monkeypatch.setattr(time, 'sleep', no_sleep)
    t = demo.select_teacher(get_preset('demo'))
    # fast = one try, with the short timeout, no waiting (not a wall clock)
    assert tries == [(URL, demo.DOWNLOAD_TIMEOUT_S)]
    assert t.kind == 'train' and 'offline' in t.reason
    assert not osp.exists(places['cache'])
    assert not osp.exists(places['cache'] + '.part')
    out, err = capfd.readouterr()
    assert out == '' and err == ''


def test_download_checks_the_hash_in_the_name(tmp_path):
    import hashlib
    data = b'pretend weights'
    sha = hashlib.sha256(data).hexdigest()
    good = tmp_path / f'edsr-{sha[:8]}.pth'
    bad = tmp_path / 'edsr-0badc0de.pth'
    for f in (good, bad):
        f.write_bytes(data)
    dest = str(tmp_path / 'cache' / 'ok.pth')
    assert demo.download_checkpoint(good.as_uri(), dest) == dest
    assert open(dest, 'rb').read() == data
    dest = str(tmp_path / 'cache' / 'bad.pth')
    with pytest.raises(ValueError):
        demo.download_checkpoint(bad.as_uri(), dest)
    assert not osp.exists(dest) and not osp.exists(dest + '.part')
    assert demo._why_not(ValueError('x')) == 'download failed (checksum)'


def test_plan_applies_teacher_and_data(places, tmp_path):
    _touch(places['shared'])
    plan, resumed = demo.make_plan(str(tmp_path / 'w'), 'demo',
                                   data_root=str(tmp_path / 'none'),
                                   downloader=_offline)
    assert not resumed and plan['teacher']['kind'] == 'shared'
    p = plan['preset']
    assert (p['mid_channels'], p['num_blocks']) == (64, 16)
    assert plan['data']['kind'] == 'skimage'  # no T91 below data_root
    assert p['test_sets'] == ['skimage']
    again, resumed = demo.make_plan(str(tmp_path / 'w'), 'demo',
                                    data_root=str(tmp_path / 'none'),
                                    downloader=_offline)
    assert resumed and again == plan
    os.remove(places['shared'])  # nothing left: the small teacher
    plan, _ = demo.make_plan(str(tmp_path / 'w2'), 'demo',
                             data_root=str(tmp_path / 'none'),
                             downloader=_offline)
    assert plan['teacher']['kind'] == 'train'
    assert plan['preset']['mid_channels'] == 32


def test_largest_difference_window():
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    a, b = hr.copy(), hr.copy()
    a[30:40, 50:60] = 255 - a[30:40, 50:60]  # run a is wrong here only
    y, x, d = demo.largest_difference_window(hr, a, b, 10, border=4)
    assert (y, x) == (30, 50) and d > 0
    y, x, d = demo.largest_difference_window(hr, b, a, 10, border=4)
    assert (y, x) == (30, 50) and d < 0


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
    work = str(tmp_path_factory.mktemp('demo'))
    cmd = [sys.executable, osp.join(REPO, 'tools', 'demo.py'), '--smoke',
           '--work-dir', work]
    t0 = time.monotonic()
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.monotonic() - t0
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    return work, first, second, wall


def test_smoke_demo_output(smoke_run):
    work, first, _, wall = smoke_run
    assert first.returncode == 0, first.stdout + first.stderr
    lines = (first.stdout + first.stderr).splitlines()
    assert len(lines) < 60, '\n'.join(lines)
    assert first.stderr == ''
    text = first.stdout
    assert lines[1].startswith('teacher: ') and 'trained here' in lines[1]
    for row in ('FP32 ', 'Bicubic ', 'EDSR-PAMS ', 'EDSR-ODM '):
        assert any(ln.startswith(row) for ln in lines), row
    for bar in ('FP32 teacher: training', 'PAMS W2A2: calibration',
                'ODM W2A2: QAT', 'ODM W2A2: test', 'figures'):
        assert any(ln.startswith(bar) for ln in lines), bar
    assert 'W2A2: ODM - PAMS = ' in text
    for name in ('side_by_side.png', 'odm_w2a2_fig1_distribution.png',
                 'odm_w2a2_fig3_mismatch.png'):
        path = osp.join(work, name)
        assert osp.isfile(path) and 0 < osp.getsize(path) < 500 * 1024
        assert name in text
    # the mmengine logs went to files
    assert 'mmengine - INFO' not in text
    for stage in ('fp32', 'pams_w2a2', 'odm_w2a2'):  # figures: by the last
        assert osp.getsize(osp.join(work, 'logs', f'{stage}.log')) > 0
    res = json.load(open(osp.join(work, 'results.json')))
    assert set(res['runs']) == {'pams_w2a2', 'odm_w2a2'}
    side = res['figures']['side_by_side']
    assert set(side['psnr']) == {'Bicubic', 'FP32', 'PAMS W2A2',
                                 'ODM W2A2'}
    # the saved predictions are RGB: their PSNR is the Runner's
    assert side['psnr']['ODM W2A2']['image'] == pytest.approx(
        res['runs']['odm_w2a2']['metrics']['skimage']['psnr'], abs=0.05)
    print(f'smoke demo: {wall:.1f} s')


def test_smoke_demo_restart_trains_nothing(smoke_run):
    work, first, second, _ = smoke_run
    assert second.returncode == 0, second.stdout + second.stderr
    assert '[resumed]' in second.stdout.splitlines()[1]
    last = second.stdout.splitlines()[-1]
    assert 'skipped finished: ' in last
    assert set(last.split('skipped finished: ')[1].rstrip(')').split(
        ', ')) == {'fp32', 'pams_w2a2', 'odm_w2a2', 'figures'}
    table = [ln for ln in first.stdout.splitlines()
             if ln.startswith('EDSR-')]
    assert table == [ln for ln in second.stdout.splitlines()
                     if ln.startswith('EDSR-')]


def test_progress_hook_takes_threads_from_file(tmp_path):
    """The worker side of the thread hand-off (odm_mm.progress)."""
    import torch

    from odm_mm.progress import ProgressFileHook
    path = tmp_path / 'run.threads'
    hook = ProgressFileHook(str(tmp_path / 'p.json'), interval_s=0,
                            threads_file=str(path))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        hook.before_train_iter(None, 0)  # no file yet: nothing changes
        assert torch.get_num_threads() == 1
        for bad in ['', 'two', '0', '-3']:
            path.write_text(bad)
            hook.before_test_iter(None, 0)
            assert torch.get_num_threads() == 1, bad
        path.write_text('2\n')
        hook.before_train_iter(None, 0)
        assert torch.get_num_threads() == 2 and hook.state['threads'] == 2
        hook.interval_s = 3600  # read at most every interval_s seconds
        path.write_text('1')
        hook.before_train_iter(None, 0)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_supervisor_shares_freed_threads(tmp_path):
    """The supervisor side: all threads split among the running workers."""
    sup = demo.Supervisor(str(tmp_path), {'runs': [['pams', 2], ['odm', 2]]},
                          threads=5, live=False)
    assert sup.share_threads(['odm_w2a2']) == {'odm_w2a2': 5}
    assert sup.share_threads(['a', 'b']) == {'a': 3, 'b': 2}
    with open(demo.threads_file(str(tmp_path), 'b')) as f:
        assert f.read() == '2'
    sup.threads = 1
    assert sup.share_threads(['a', 'b']) == {'a': 1, 'b': 1}
    assert sup.share_threads([]) == {}


def test_progress_lines_print_time_left_at_the_measured_rate(monkeypatch,
                                                              capsys):
    """The demo's promise: time left from the measured step time, kept
    updated (non-terminal output, once a minute; the terminal bars have
    rich's time-remaining column)."""
    clock = [100.0]
    monkeypatch.setattr(demo.time, 'monotonic', lambda: clock[0])
    ui = demo._Lines(width=10, eta_every=60)
    ui.add('odm:train', 'ODM QAT')
    ui.update('odm:train', 0, 600)
    ui.update('odm:train', 1, 600)  # first step seen at t=100
    assert ui.eta('odm:train') is None
    clock[0] = 120.0
    ui.update('odm:train', 11, 600)  # 10 steps in 20 s: 2 s/step
    assert ui.eta('odm:train') == pytest.approx(589 * 2.0)
    assert 'left' not in capsys.readouterr().out  # not a minute yet
    clock[0] = 170.0
    ui.update('odm:train', 36, 600)  # 35 steps in 70 s
    assert re.search(r'ODM QAT +36/600 +about 18:48 left',
                     capsys.readouterr().out)
    clock[0] = 200.0
    ui.update('odm:train', 41, 600)  # said 30 s ago: quiet
    assert 'left' not in capsys.readouterr().out
    clock[0] = 240.0
    ui.update('odm:train', 51, 600)  # 50 steps in 140 s: 2.8 s/step
    assert 'about 25:37 left' in capsys.readouterr().out
    ui.update('odm:train', 600, 600, finished=True)
    assert ui.eta('odm:train') is None
