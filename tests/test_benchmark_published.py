"""Benchmark harness for the published ODM rows: the budget curve (one run
tested at several iterations) through the real Runner path, seeding a work
dir from a committed report, and the published tables and targets."""
import copy
import json
import os.path as osp

import pytest

from odm_bench.presets import get_preset
from odm_bench.published import (budget_table, published_diagnostics,
                                 table5_published)
from odm_bench.targets import check_targets


@pytest.fixture(scope='module')
def curve_run(tmp_path_factory):
    from odm_bench.benchmark import Benchmark
    work = tmp_path_factory.mktemp('bench_pub')
    preset = get_preset('smoke').with_overrides(
        fp32_iters=4, qat_iters=4, runs=[('odm24', 2), ('wcc', 2)],
        eval_at=(2,), curve_sets=('skimage',))
    results = Benchmark(preset, str(work)).run()
    return work, preset, results


def test_curve_tests_the_intermediate_checkpoint(curve_run):
    work, preset, res = curve_run
    run = res['runs']['odm24_w2a2']
    assert sorted(run['curve']) == ['2', '4']
    assert run['curve']['4'] == {'skimage': run['metrics']['skimage']}
    point = run['curve']['2']['skimage']
    assert 0 < point['psnr'] < 60
    # the point is the checkpoint of iteration 2, tested on its own
    rdir = osp.join(work, 'runs', 'odm24_w2a2')
    assert osp.isfile(osp.join(rdir, 'iter_2.pth'))  # kept (all ckpts)
    with open(osp.join(rdir, 'curve', 'iter_2.json')) as f:
        assert json.load(f)['metrics']['skimage'] == point
    assert point != run['metrics']['skimage']  # it did train on
    # the learned clipping factors and the gate are in the diagnostics
    t = run['train']
    assert set(t['quantizer_state_end']) == set(t['quantizer_state_start'])
    assert 0.0 < t['gate_weight_mean'] < 1.0
    assert 'gate_weight_mean' not in res['runs']['wcc_w2a2']['train']
    assert run['features'] == dict(var_loss=False, mismatch=True, coop=True,
                                   offsets=False, wcc=True)


def test_published_tables(curve_run):
    _, _, res = curve_run
    t5 = table5_published(res)
    assert 'v2 (e) EDSR-ODM-24' in t5 and 'v2 (c)' in t5
    row = [ln for ln in t5.splitlines() if 'v2 (c)' in ln][0]
    assert row.split('|')[2:5] == [' yes ', ' - ', ' - ']  # WCC only
    assert 'odm24_w2a2' in budget_table(res)
    diag = published_diagnostics(res)
    assert '1.000 (1.00..1.00)' in diag  # gamma starts at 1


def test_seeded_work_dir_keeps_committed_runs(curve_run, tmp_path):
    from odm_bench.benchmark import Benchmark
    from odm_bench.pipeline import dump_json
    from odm_bench.seed import SEEDED_MARK, seed_work_dir
    work, preset, res = curve_run
    report = tmp_path / 'report.json'
    fake = copy.deepcopy(res)
    fake['runs']['wcc_w2a2']['metrics']['skimage']['psnr'] = 12.345
    fake['posthoc'] = {'wcc_w2a2': {'nsr_act': 0.5}}
    dump_json(str(report), fake)
    new = tmp_path / 'work'
    written = seed_work_dir(str(report), str(new))
    assert sorted(written) == ['odm24_w2a2', 'wcc_w2a2']
    assert seed_work_dir(str(report), str(new)) == []  # kept, not redone
    with open(new / 'runs' / 'wcc_w2a2' / 'posthoc.json') as f:
        assert json.load(f) == {'nsr_act': 0.5}
    with open(osp.join(work, 'fp32', 'last_checkpoint')) as f:
        fp32 = f.read().strip()  # the seeded runs' teacher
    collected = Benchmark(preset, str(new), fp32_checkpoint=fp32,
                          collect=True, speed=False).run()
    wcc = collected['runs']['wcc_w2a2']
    assert wcc['metrics']['skimage']['psnr'] == 12.345  # not retrained
    assert wcc[SEEDED_MARK].endswith('report.json')
    assert wcc['label'] == res['runs']['wcc_w2a2']['label']


def test_published_targets():
    def run(v):
        return {'metrics': {'Set5': {'psnr': v}}, 'train': {}}
    res = {'preset': {'test_sets': ['Set5']}, 'fp32': run(30.0),
           'runs': {'odm24_w2a2': run(29.9), 'daq_w2a2': run(29.88),
                    'wcc_w2a2': run(29.9), 'odm_q_w2a2': run(29.77),
                    'odm24_w4a4': run(29.96), 'odm_w4a4': run(29.90)}}
    got = {c['id']: c['passed'] for c in check_targets(res)}
    assert got['T5'] is True          # 29.90 >= 29.88
    assert got['T6'] is False         # +0.13 < +0.2
    assert got['T3*'] is True         # best W4A4 0.04 below FP32
