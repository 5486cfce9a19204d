"""Targets of the reduced-scale reproduction and their checks.

Each target compares two entries of the benchmark ``results`` (runs by
name, ``'fp32'``) on every test set (PSNR) or by train-step time.
"""
from __future__ import annotations

from typing import Dict, List, Optional

__all__ = ['TARGETS', 'SWINIR_TARGETS', 'TARGET_SETS', 'check_targets',
           'targets_md']

#: (id, description, kind, a, b, threshold): ``a - b >= threshold`` for
#: kind 'gain' (``a`` may be a list of runs: the best of them per test set),
#: ``b - a <= threshold`` for 'gap', ``a / b <= threshold`` for 'ratio'
#: (median step time).
TARGETS = [
    ('T1', 'ODM W2A2 >= PAMS W2A2 + 1.0 dB', 'gain', 'odm_w2a2',
     'pams_w2a2', 1.0),
    ('T2', 'best ODM-family setting W2A2 ((a), (b), (c) or full ODM) >= '
     'ODM quantizer alone W2A2 + 0.2 dB', 'gain',
     ['var_plain_w2a2', 'var_coop_w2a2', 'offsets_w2a2', 'odm_w2a2'],
     'odm_q_w2a2', 0.2),
    ('T3', 'ODM W4A4 within 0.05 dB of FP32', 'gap', 'odm_w4a4', 'fp32',
     0.05),
    ('T4', 'ODM step time <= 1.5 x PAMS (W2A2; judged on CPU time when '
     'recorded)', 'ratio', 'odm_w2a2',
     'pams_w2a2', 1.5),
    # ODM's published version (ECCV 2024)
    ('T5', 'published ODM W2A2 >= DAQ W2A2 (static beats dynamic)', 'gain',
     'odm24_w2a2', 'daq_w2a2', 0.0),
    ('T6', 'weight clipping correction alone W2A2 >= ODM quantizer alone '
     'W2A2 + 0.2 dB', 'gain', 'wcc_w2a2', 'odm_q_w2a2', 0.2),
    ('T3*', 'best ODM recipe W4A4 (seed, quantizer alone, WCC or published) '
     'within 0.05 dB of FP32', 'gap',
     ['odm_w4a4', 'odm_q_w4a4', 'wcc_w4a4', 'odm24_w4a4'], 'fp32', 0.05),
    ('T4*', 'published ODM step time <= 1.5 x PAMS (W2A2; CPU time when '
     'recorded)', 'ratio', 'odm24_w2a2', 'pams_w2a2', 1.5),
]

#: Targets of the SwinIR preset (issue: transformer restorers); an optional
#: 7th element restricts a target to some test sets.
SWINIR_TARGETS = [
    ('S1', 'SwinIR ODM W4A4 within 0.3 dB of its FP32 teacher on Set5',
     'gap', 'odm_w4a4', 'fp32', 0.3, ('Set5', )),
    ('S2', 'SwinIR ODM W2A2 >= PAMS W2A2 on every set', 'gain', 'odm_w2a2',
     'pams_w2a2', 0.0),
    ('S2*', 'best ODM recipe W2A2 (seed, quantizer alone or published) >= '
     'PAMS W2A2 on every set', 'gain',
     ['odm_w2a2', 'odm_q_w2a2', 'odm24_w2a2'], 'pams_w2a2', 0.0),
]

#: ``Preset.targets`` -> its targets.
TARGET_SETS = {'edsr': TARGETS, 'swinir': SWINIR_TARGETS}


def _entry(results: Dict, name: str) -> Optional[Dict]:
    if name == 'fp32':
        return results.get('fp32')
    if name == 'bicubic':
        return {'metrics': results.get('bicubic', {})}
    return results.get('runs', {}).get(name)


def _sets(results: Dict) -> List[str]:
    return list(results['preset']['test_sets'])


def check_targets(results: Dict) -> List[Dict]:
    """Evaluate :data:`TARGETS` on every test set (missing runs skipped)."""
    out = []
    table = TARGET_SETS[results['preset'].get('targets', 'edsr')]
    for tid, text, kind, a, b, thr, *only in table:
        sets = [s for s in _sets(results) if not only or s in only[0]]
        if isinstance(a, list):  # the best of several runs, per test set
            found = [x for x in (_entry(results, n) for n in a) if x]
            ea = dict(metrics={
                s: max((x['metrics'][s] for x in found
                        if s in x['metrics']), key=lambda m: m['psnr'])
                for s in sets
                if any(s in x['metrics'] for x in found)}) if found \
                else None
        else:
            ea = _entry(results, a)
        eb = _entry(results, b)
        if ea is None or eb is None:
            continue
        if kind == 'ratio':
            per = {}
            speed = results.get('step_times', {})
            for key, lab in (('step_s_median', 'wall'),
                             ('step_cpu_s_median', 'CPU')):
                sa = speed.get(a, ea['train']).get(key)
                sb = speed.get(b, eb['train']).get(key)
                if sa and sb:
                    per[lab] = sa / sb
            if per:
                out.append(dict(id=tid, target=text, per_set=per,
                                passed=per.get('CPU', per.get('wall')) <=
                                thr))
            continue
        per = {}
        for s in sets:
            pa = ea['metrics'].get(s, {}).get('psnr')
            pb = eb['metrics'].get(s, {}).get('psnr')
            if pa is None or pb is None:
                continue
            per[s] = pa - pb
        ok = {s: (v >= thr if kind == 'gain' else -v <= thr)
              for s, v in per.items()}
        out.append(dict(id=tid, target=text, per_set=per, passed_per_set=ok,
                        passed=all(ok.values()) if ok else False))
    return out


def _pct(v: float) -> str:
    return f'{v:+.3f}'


def targets_md(checks: List[Dict]) -> str:
    """Markdown list of the target checks."""
    lines = []
    for c in checks:
        per = ', '.join(f'{s}: {v:.2f}x' if s in ('wall', 'CPU') else
                        f'{s}: {_pct(v)}' for s, v in c['per_set'].items())
        state = 'met' if c['passed'] else 'MISSED'
        if not c['passed'] and c.get('passed_per_set'):
            ok = [s for s, p in c['passed_per_set'].items() if p]
            if ok:
                state = f'met on {", ".join(ok)} only'
        lines.append(f'* **{c["id"]}** {c["target"]}: {per} -> **{state}**')
    return '\n'.join(lines)
