"""Smoke run of the benchmark / demo machinery (tools/benchmark.py).

One tiny protocol (EDSR 8ch/2 blocks, a few iterations on 64 px crops of
scikit-image photographs) through the real Runner path: FP32 -> PAMS and ODM
W2A2 -> test -> report, then a restart that must skip every finished run,
then the Fig. 1 / Fig. 3 tool on the checkpoints it produced.
"""
import json
import math
import os
import os.path as osp
import sys

import pytest

from odm_bench.presets import get_preset
from odm_bench.report import check_targets

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..'))


def _finite(x):
    return isinstance(x, (int, float)) and math.isfinite(x)


@pytest.fixture(scope='module')
def smoke(tmp_path_factory):
    from odm_bench.benchmark import Benchmark
    work = tmp_path_factory.mktemp('bench')
    preset = get_preset('smoke').with_overrides(
        fp32_iters=4, qat_iters=2, runs=[('pams', 2), ('odm', 2)])
    results = Benchmark(preset, str(work)).run()
    return work, preset, results


def test_results_structure_and_finite_numbers(smoke):
    work, preset, res = smoke
    assert set(res['runs']) == {'pams_w2a2', 'odm_w2a2'}
    for entry in [res['fp32']] + list(res['runs'].values()):
        m = entry['metrics']['skimage']
        assert _finite(m['psnr']) and 0 < m['psnr'] < 60
        assert _finite(m['ssim']) and -1 <= m['ssim'] <= 1
        c = entry['complexity']
        assert c['storage_k'] > 0 and c['bitops_t'] > 0
    odm, pams = res['runs']['odm_w2a2'], res['runs']['pams_w2a2']
    # quantized body: smaller and cheaper than FP32; ODM pays for offsets
    assert pams['complexity']['storage_bits'] < \
        res['fp32']['complexity']['storage_bits']
    assert odm['complexity']['offset_vectors'] > 0
    assert pams['complexity']['offset_vectors'] == 0
    assert any(o['shift'] or o['scale'] for o in odm['offsets'].values())
    # Eq. 5 conflict ratio recorded for every ODM update, PAMS has none
    ratios = odm['train']['conflict_ratio']
    assert len(ratios) == preset.qat_iters
    assert all(0.0 <= r <= 1.0 for _, r in ratios)
    assert 'conflict_ratio' not in pams['train']
    assert odm['train']['step_s_median'] > 0
    assert _finite(res['bicubic']['skimage']['psnr'])
    assert osp.isfile(odm['sample_sr'])
    with open(osp.join(work, 'results.json')) as f:
        assert json.load(f)['runs']['odm_w2a2']['bits'] == 2


def test_restart_skips_finished_runs(smoke):
    from odm_bench.benchmark import Benchmark
    work, preset, res = smoke
    path = osp.join(work, 'runs', 'odm_w2a2', 'result.json')
    # an old, known mtime: a rewrite would set the current time (no
    # dependence on the file system's timestamp granularity)
    os.utime(path, ns=(10**18, 10**18))
    again = Benchmark(preset, str(work)).run()
    assert os.stat(path).st_mtime_ns == 10**18
    assert again['runs']['odm_w2a2']['metrics'] == \
        res['runs']['odm_w2a2']['metrics']


def test_report_files(smoke, tmp_path):
    from odm_bench.report import write_report
    _, _, res = smoke
    out = write_report(res, str(tmp_path), repo_root=REPO)
    for key in ('md', 'json', 'psnr_vs_bits', 'conflict_ratio',
                'side_by_side'):
        assert osp.isfile(out[key]) and osp.getsize(out[key]) > 0
        if key not in ('md', 'json'):
            assert osp.getsize(out[key]) < 500 * 1024
    text = open(out['md']).read()
    assert 'EDSR-PAMS' in text and 'EDSR-ODM' in text
    data = json.load(open(out['json']))
    assert {t['id'] for t in data['targets']} >= {'T1', 'T4'}


def test_distribution_tool(smoke, tmp_path):
    sys.path.insert(0, osp.join(REPO, 'tools', 'analysis'))
    import distribution
    work, _, _ = smoke
    run = osp.join(work, 'runs', 'odm_w2a2')
    with open(osp.join(run, 'last_checkpoint')) as f:
        ckpt = f.read().strip()
    out = distribution.main([osp.join(run, 'config.py'), ckpt, '--out',
                             str(tmp_path), '--images', '1'])
    stats = json.load(open(out['json']))
    assert stats['quantized'] is True
    assert len(stats['layers']) == 4
    assert all(_finite(v['m_mu']) and v['m_mu'] >= 0
               for v in stats['layers'].values())
    assert osp.isfile(out['fig1']) and osp.isfile(out['fig3'])


def _fake(psnr):
    run = lambda p, step=1.0: dict(  # noqa: E731
        metrics={'Set5': {'psnr': p, 'ssim': 0.8}},
        train={'step_s_median': step})
    return dict(preset=dict(test_sets=['Set5']), fp32=run(psnr['fp32']),
                runs={k: run(v, 1.6 if k == 'odm_w2a2' else 1.0)
                      for k, v in psnr.items() if k != 'fp32'})


def test_target_checks_pass_and_fail():
    ok = {c['id']: c['passed'] for c in check_targets(_fake(dict(
        fp32=30.0, pams_w2a2=28.0, odm_q_w2a2=28.9, odm_w2a2=29.2,
        odm_w4a4=29.96)))}
    # T3* (best ODM recipe at W4A4) sees odm_w4a4 as its only candidate
    assert ok == {'T1': True, 'T2': True, 'T3': True, 'T4': False,
                  'T3*': True}
    ok = {c['id']: c['passed'] for c in check_targets(_fake(dict(
        fp32=30.0, pams_w2a2=28.5, odm_q_w2a2=29.1, odm_w2a2=29.2,
        odm_w4a4=29.9)))}
    assert ok == {'T1': False, 'T2': False, 'T3': False, 'T4': False,
                  'T3*': False}


def test_training_free_method_tests_the_fp32_checkpoint(smoke):
    """``Method.qat=False`` (DAQ without QAT): the run trains nothing and
    tests the FP32 checkpoint with the method's quantizers."""
    from mmengine.config import Config
    from odm_bench.benchmark import Benchmark
    from odm_bench.presets import METHODS
    work, preset, res = smoke
    assert not METHODS['daq_free'].qat
    out = Benchmark(preset.with_overrides(runs=[('daq_free', 2)]),
                    str(work)).run()
    run = out['runs']['daq_free_w2a2']
    assert run['training_free'] and run['train'] == {}
    assert run['checkpoint'] == res['fp32_checkpoint']
    run_dir = osp.join(work, 'runs', 'daq_free_w2a2')
    assert not [f for f in os.listdir(run_dir) if f.endswith('.pth')]
    cfg = Config.fromfile(osp.join(run_dir, 'config.py'))
    assert cfg.model.quant_cfg.method == 'daq'
    # quantized: not the FP32 result
    assert run['metrics']['skimage']['psnr'] != \
        res['fp32']['metrics']['skimage']['psnr']
    assert run['complexity']['quantizer_bitops_t'] > 0
