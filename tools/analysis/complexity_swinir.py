"""Complexity of SwinIR-light x4 at FP32 / W4A4 / W2A2, split by kind.

Produces the table of ``docs/swinir.md``::

    python tools/analysis/complexity_swinir.py            # markdown table
    python tools/analysis/complexity_swinir.py --json out.json

Model: mmagic's ``SwinIRNet`` as configured by
``swinir_x4s64w8d4e60`` (embed 60, depths 4 x 6, heads 6, window 8, mlp
ratio 2, pixelshuffledirect), quantized with the ``SwinIRNet`` swap preset
of :mod:`odm_mm.swap` (every RSTB: convs, Linears, both attention matmuls;
``w_bits = a_bits = bits``, method ``'odm'``), counted by
:func:`odm_mm.analysis.count_complexity` for one 1920 x 1080 output
(LR 480 x 270): storage, MACs and BitOPs, per kind (conv / Linear / matmul
/ other parameters). Needs mmagic.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

from odm_mm.analysis.complexity import (KIND_FAMILY,  # noqa: E402
                                        count_complexity)
from odm_mm.swap import swap_convs  # noqa: E402

LIGHT = dict(img_size=64, embed_dim=60, depths=[6, 6, 6, 6],
             num_heads=[6, 6, 6, 6], window_size=8, mlp_ratio=2, upscale=4,
             upsampler='pixelshuffledirect', resi_connection='1conv')
FAMILIES = ('conv', 'linear', 'matmul')


def build(bits: int, kwargs: Optional[dict] = None):
    """SwinIR (light by default), quantized at ``bits`` unless 32."""
    from mmagic.models.editors.swinir.swinir_net import SwinIRNet
    net = SwinIRNet(**(kwargs or LIGHT))
    if bits < 32:
        swap_convs(net, w_bits=bits, a_bits=bits, method='odm')
    return net


def row(bits: int, kwargs: Optional[dict] = None) -> Dict:
    """One table row: totals and the per-kind split."""
    rep = count_complexity(build(bits, kwargs).eval())
    split = {f: dict(macs=0, bitops=0, storage_bits=0) for f in FAMILIES}
    other = 0
    for r in rep.layers:
        fam = KIND_FAMILY.get(r.kind)
        if fam is None:
            other += r.storage_bits
            continue
        for key in ('macs', 'bitops', 'storage_bits'):
            split[fam][key] += getattr(r, key)
    return dict(bits=bits, storage_k=rep.storage_bits / 32e3,
                gmacs=rep.macs / 1e9, bitops_t=rep.bitops / 1e12,
                split=split, other_storage_k=other / 32e3)


def to_markdown(rows: List[Dict]) -> str:
    """Markdown table of :func:`row` results."""
    head = ('| bits | storage (K) | GMACs | BitOPs (T) | MACs conv / Linear '
            '/ matmul | BitOPs conv / Linear / matmul (T) | storage conv / '
            'Linear / matmul + other (K) |')
    lines = [head, '|' + '---|' * 7]
    for r in rows:
        s = r['split']
        mac = sum(s[f]['macs'] for f in FAMILIES)
        lines.append(
            f'| {"FP32" if r["bits"] == 32 else "W%dA%d" % (r["bits"], r["bits"])}'
            f' | {r["storage_k"]:.1f} | {r["gmacs"]:.1f} | '
            f'{r["bitops_t"]:.2f} | ' + ' / '.join(
                f'{100 * s[f]["macs"] / mac:.1f}%' for f in FAMILIES) +
            ' | ' + ' / '.join(f'{s[f]["bitops"] / 1e12:.2f}'
                               for f in FAMILIES) +
            ' | ' + ' / '.join(f'{s[f]["storage_bits"] / 32e3:.1f}'
                               for f in FAMILIES) +
            f' + {r["other_storage_k"]:.1f} |')
    return '\n'.join(lines)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict]:
    """Print (and optionally write) the table."""
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--bits', nargs='+', type=int, default=[32, 4, 2])
    p.add_argument('--json', default=None, help='write the rows as JSON')
    args = p.parse_args(argv)
    rows = [row(b) for b in args.bits]
    print(to_markdown(rows))  # noqa: T201 (a tool)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=1)
    return rows


if __name__ == '__main__':
    main()
