"""tools/compare_benchmarks.py: reproduction check of benchmark results."""
import json
import os.path as osp
import subprocess
import sys

import pytest

from odm_bench.compare import compare, format_rows, psnr_table

REPO = osp.abspath(osp.join(osp.dirname(__file__), '..'))


def _res(fp32, runs):
    m = lambda d: {k: {'psnr': v, 'ssim': 0.5} for k, v in d.items()}  # noqa
    return {'fp32': {'metrics': m(fp32)},
            'runs': {n: {'metrics': m(d)} for n, d in runs.items()}}


REF = _res({'Set5': 30.0, 'Set14': 27.0},
           {'pams_w2a2': {'Set5': 29.0, 'Set14': 26.5}})


def test_psnr_table_and_rows():
    assert psnr_table(REF) == {'fp32': {'Set5': 30.0, 'Set14': 27.0},
                               'pams_w2a2': {'Set5': 29.0, 'Set14': 26.5}}
    a = _res({'Set5': 30.004, 'Set14': 27.0},
             {'pams_w2a2': {'Set5': 29.011, 'Set14': 26.5}})
    b = _res({'Set5': 29.995, 'Set14': 27.0}, {})
    rows = {(r.run, r.test_set): r for r in compare(REF, [a, b], 0.01)}
    assert rows['fp32', 'Set5'].status == 'ok'
    assert rows['fp32', 'Set5'].max_abs_diff == pytest.approx(0.005)
    assert rows['pams_w2a2', 'Set5'].status == 'missing'  # b lacks it
    rows = {(r.run, r.test_set): r for r in compare(REF, [a], 0.01)}
    assert rows['pams_w2a2', 'Set5'].status == 'DIFF'
    assert rows['pams_w2a2', 'Set5'].max_abs_diff == pytest.approx(0.011)
    assert rows['pams_w2a2', 'Set14'].status == 'ok'
    text = format_rows(list(rows.values()), ['a'])
    assert '| pams_w2a2 | Set5 | 29.000 | 29.011 | 0.011 | DIFF |' in text
    assert '3/4 within 0.01 dB' in text
    with pytest.raises(ValueError):
        compare(REF, [])


def test_cli_strict_exit_status(tmp_path):
    ref, same, off = (tmp_path / n for n in ('r.json', 's.json', 'o.json'))
    ref.write_text(json.dumps(REF))
    same.write_text(json.dumps(REF))
    off.write_text(json.dumps(_res({'Set5': 30.1, 'Set14': 27.0}, {
        'pams_w2a2': {'Set5': 29.0, 'Set14': 26.5}})))
    tool = osp.join(REPO, 'tools', 'compare_benchmarks.py')

    def run(*args):
        return subprocess.run([sys.executable, tool, *map(str, args)],
                              capture_output=True, text=True)

    ok = run(ref, same, '--strict')
    assert ok.returncode == 0 and '4/4 within' in ok.stdout
    bad = run(ref, same, off, '--strict', '--labels', 'x', 'y')
    assert bad.returncode == 1 and '| fp32 | Set5 | 30.000 | 30.000 | ' \
        '30.100 | 0.100 | DIFF |' in bad.stdout
    assert run(ref, off).returncode == 0  # not strict: report only
    err = run(ref, tmp_path / 'none.json')
    assert err.returncode == 2 and 'cannot read results JSON' in err.stderr
