"""Weight quantization noise-to-signal of a checkpoint's quantized convs
under the seed's and the published weight ranges (no training).

For every weight the swap would quantize (EDSR: the 32 ResBlock convs) it
prints the mean ``MSE(Q(W), W) / var(W)`` of:

* ``seed``: ODM v1, Eq. 1 over ``[P_j(W), P_{100-j}(W)]`` (method ``odm``);
* ``wcc gamma=G``: the published clipping correction, Eq. 1 over
  ``+-G P_{100-j}(abs W)`` (method ``odm_wcc``) at each ``--gamma``;
* ``wcc gamma=mse``: the MSE-optimal factor of each layer (the
  ``gamma_init='mse'`` option), with the range of factors found.

Torch-only (reads a bare generator or mmagic checkpoint)::

    python tools/analysis/weight_clip.py ../shared/models/edsr_x4c64b16_t91_fp32.pth
"""
from __future__ import annotations

import argparse
import os.path as osp
import re
import statistics
import sys
from typing import Dict, List, Sequence

import torch

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

from odm_mm.calibration import weight_noise_to_signal  # noqa: E402
from odm_mm.quantizers import WeightQuantizer  # noqa: E402
from odm_mm.quantizers.wcc import WCCWeightQuantizer  # noqa: E402


def weight_table(weights: Sequence[torch.Tensor], bits: int,
                 gammas: Sequence[float] = (1.0, 0.95)) -> Dict[str, float]:
    """Mean NSR per weight range (module docstring) and the MSE factors."""
    out = {'seed': statistics.fmean(weight_noise_to_signal(WeightQuantizer(bits), w)
                                    for w in weights)}
    for g in gammas:
        q = WCCWeightQuantizer(bits)
        q.gamma.data.fill_(g)
        out[f'wcc gamma={g:g}'] = statistics.fmean(weight_noise_to_signal(q, w)
                                                   for w in weights)
    nsr, fac = [], []
    for w in weights:
        q = WCCWeightQuantizer(bits, gamma_init='mse')
        q.init_from_weight(w)
        fac.append(float(q.gamma.detach()))
        nsr.append(weight_noise_to_signal(q, w))
    out['wcc gamma=mse'] = statistics.fmean(nsr)
    out['mse gamma min'], out['mse gamma mean'], out['mse gamma max'] = (
        min(fac), statistics.fmean(fac), max(fac))
    return out


def main(argv: List[str] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('checkpoint')
    p.add_argument('--pattern', default=r'(generator\.)?body\.\d+\.conv\d\.'
                   r'weight', help='regex of the quantized weights')
    p.add_argument('--bits', type=int, nargs='+', default=[2, 3, 4])
    p.add_argument('--gamma', type=float, nargs='+', default=[1.0, 0.95])
    args = p.parse_args(argv)
    ckpt = torch.load(args.checkpoint, map_location='cpu', weights_only=True)
    state = ckpt.get('state_dict', ckpt)
    weights = [v.float() for k, v in state.items()
               if re.fullmatch(args.pattern, k)]
    if not weights:
        raise SystemExit(f'no weight of {args.checkpoint} matches '
                         f'{args.pattern!r}')
    print(f'{len(weights)} weights; mean weight NSR = MSE(Q(W), W) / var(W)')
    rows = {b: weight_table(weights, b, args.gamma) for b in args.bits}
    keys = list(next(iter(rows.values())))
    print('| bits | ' + ' | '.join(keys) + ' |')
    print('|---|' + '---|' * len(keys))
    for b, r in rows.items():
        print(f'| W{b} | ' + ' | '.join(f'{r[k]:.4f}' if 'gamma m' not in k
                                        else f'{r[k]:.2f}' for k in keys)
              + ' |')


if __name__ == '__main__':
    main()
