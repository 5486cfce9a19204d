"""Feature distributions vs quantization ranges: paper Fig. 1 and Fig. 3.

Usage::

    python tools/analysis/distribution.py CONFIG CHECKPOINT \
        [--layer NAME] [--out DIR] [--images N] [--ratio P] \
        [--cfg-options key=value ...]

CONFIG is an mmagic SR config (FP32, e.g. ``configs/fp32/edsr_x4_t91.py``)
or an ODM/PAMS config (``configs/odm/...``, or the ``config.py`` a benchmark
run dumped next to its checkpoint); CHECKPOINT the matching weights. The
first ``--images`` images of the config's first test set are fed through the
network. Writes ``<out>/fig1_distribution.png`` (per-channel and per-image
distributions of one layer's input feature against its quantization range;
``--layer`` defaults to the layer with the largest M_mu),
``<out>/fig3_mismatch.png`` (M_mu and M_sigma of every quantized layer, the
top-p selection of Eq. 6-8 and three example layers) and
``<out>/distribution.json`` (the statistics).
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
from typing import Optional, Sequence

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command line of the tool."""
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description='Fig. 1 / Fig. 3 of the paper '
                                'for a checkpoint')
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--layer', default=None,
                   help='quantized layer of Fig. 1 (default: largest M_mu)')
    p.add_argument('--out', default='work_dirs/distribution')
    p.add_argument('--images', type=int, default=5,
                   help='test images to feed (default 5)')
    p.add_argument('--ratio', type=float, default=0.3,
                   help='offset ratio p highlighted in Fig. 3')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config keys (odm_data_root=DIR moves the '
                   'data root)')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the analysis; returns the paths written."""
    args = parse_args(argv)
    from mmengine.config import Config
    import odm_mm  # noqa: F401
    from odm_mm.analysis.distribution import (collect, load_model, plot_fig1,
                                           plot_fig3, test_images)
    from odm_mm.data_root import merge_cfg_options
    cfg = Config.fromfile(args.config)
    merge_cfg_options(cfg, args.cfg_options)
    model, quantized = load_model(cfg, args.checkpoint)
    items = test_images(cfg, args.images)
    res = collect(model, items, args.layer)
    os.makedirs(args.out, exist_ok=True)
    out = dict(fig1=plot_fig1(res, model, osp.join(args.out,
                                                   'fig1_distribution.png')),
               fig3=plot_fig3(res, osp.join(args.out, 'fig3_mismatch.png'),
                              args.ratio))
    summary = dict(config=args.config, checkpoint=args.checkpoint,
                   quantized=quantized, layer=res['layer'],
                   images=[n for n, _ in items],
                   layers={n: s.to_dict() for n, s in res['stats'].items()})
    out['json'] = osp.join(args.out, 'distribution.json')
    with open(out['json'], 'w') as f:
        json.dump(summary, f, indent=1)
    print(f'{"layer":<20}{"M_mu":>10}{"M_sigma":>10}{"P1":>9}{"P99":>9}')
    for n, s in res['stats'].items():
        mark = '  <- Fig. 1' if n == res['layer'] else ''
        print(f'{n:<20}{s.m_mu:>10.4f}{s.m_sigma:>10.4f}{s.lower:>9.3f}'
              f'{s.upper:>9.3f}{mark}')
    for k, v in out.items():
        print(f'{k}: {v}')
    return out


if __name__ == '__main__':
    main()
