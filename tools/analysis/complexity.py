"""Storage size, MACs and BitOPs of a config's generator (paper Table 4/S3).

Usage::

    python tools/analysis/complexity.py CONFIG [CHECKPOINT] \
        [--hr-shape 1920x1080] [--scale N] [--lr-shape 3x270x480] \
        [--out report.json] [--generator-only] [--weight-ranges] \
        [--rows N] [--cfg-options key=value ...]

``CONFIG`` is a file path or ``mmagic::edsr/edsr_x4c64b16_1xb16-300k_div2k.py``
(resolved in mmagic's installed ``.mim/configs``). The model is built with
mmagic's registry after ``import odm_mm`` (so ``ODMEditModel`` configs build
their quantized generator) and ``model.generator`` is analysed. With a
checkpoint, its state dict is loaded first so that the enabled offsets
(``*.shift_enabled``/``*.scale_enabled``) and trained values are counted; the
bit-widths come from the config. ``--generator-only`` builds only
``cfg.model.generator`` (for configs whose losses need downloads, e.g.
perceptual losses); checkpoint keys are then stripped of ``generator.``.

The conventions are those of :mod:`odm_mm.analysis.complexity` (see
``docs/complexity.md``); ``--hr-shape`` is ``WIDTHxHEIGHT`` like the paper's
"1920 x 1080".
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
from typing import List, Optional, Sequence, Tuple

from mmengine.config import Config, DictAction
from mmengine.logging import print_log

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))


def parse_shape(text: str, n: int) -> Tuple[int, ...]:
    """Parse ``'1920x1080'`` (n=2) or ``'3x270x480'`` (n=3) into ints."""
    parts = text.lower().replace('*', 'x').split('x')
    if len(parts) != n or not all(p.strip().isdigit() for p in parts):
        raise argparse.ArgumentTypeError(
            f'expected {n} integers separated by "x", got {text!r}')
    return tuple(int(p) for p in parts)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command line of the tool."""
    p = argparse.ArgumentParser(
        description='Storage size (K), MACs and BitOPs (T) of a generator')
    p.add_argument('config', help='config file or mmagic::relative/path.py')
    p.add_argument('checkpoint', nargs='?', default=None,
                   help='checkpoint whose state dict is loaded first')
    p.add_argument('--hr-shape', type=lambda s: parse_shape(s, 2),
                   default=(1920, 1080), metavar='WxH',
                   help='output size to generate (default 1920x1080)')
    p.add_argument('--lr-shape', type=lambda s: parse_shape(s, 3),
                   default=None, metavar='CxHxW',
                   help='explicit LR input shape (overrides --hr-shape)')
    p.add_argument('--scale', type=int, default=None,
                   help='upscale factor (default: measured on the model)')
    p.add_argument('--probe-size', type=int, default=8,
                   help='side of the probe input; 0 runs at full size')
    p.add_argument('--weight-ranges', action='store_true',
                   help='also store each quantized layer\'s weight range')
    p.add_argument('--generator-only', action='store_true',
                   help='build only cfg.model.generator')
    p.add_argument('--rows', type=int, default=None,
                   help='print at most this many layer rows')
    p.add_argument('--out', default=None, help='write the report as JSON')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override config entries, key=value')
    return p.parse_args(argv)


def resolve_config(path: str) -> str:
    """Return a file path for ``path`` (``pkg::rel/path.py`` supported)."""
    if osp.exists(path) or '::' not in path:
        return path
    from mmengine.utils import get_installed_path
    pkg, rel = path.split('::', 1)
    root = get_installed_path(pkg)
    for cand in (osp.join(root, '.mim', 'configs', rel),
                 osp.join(root, 'configs', rel)):
        if osp.exists(cand):
            return cand
    raise FileNotFoundError(f'{path}: not found under {root}')


def build_generator(cfg: Config, checkpoint: Optional[str] = None,
                    generator_only: bool = False):
    """Build ``cfg.model`` (or its generator) and return the generator."""
    import odm_mm  # noqa: F401  (registers ODMEditModel & co.)
    from mmagic.registry import MODELS
    from mmagic.utils import register_all_modules
    from mmengine.runner import load_checkpoint

    register_all_modules(init_default_scope=True)
    if generator_only:
        model = MODELS.build(cfg.model.generator)
        revise: List[Tuple[str, str]] = [(r'^generator\.', '')]
    else:
        model = MODELS.build(cfg.model)
        revise = []
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, map_location='cpu',
                        strict=False, revise_keys=revise or [(r'^module\.',
                                                              '')])
    generator = model if generator_only else getattr(model, 'generator',
                                                     model)
    return generator.cpu()


def _nominal_choices(cfg: Config, generator) -> None:
    """Without a checkpoint, let calibration hooks that choose layers from
    data (``nominal_choice``, e.g. DDTB's dynamic gates) make their nominal
    choice, so the count has the structure training would give."""
    from mmagic.registry import HOOKS
    for h in cfg.get('custom_hooks') or []:
        cls = HOOKS.get(h.get('type')) if isinstance(h, dict) else None
        if cls is not None and hasattr(cls, 'nominal_choice'):
            note = HOOKS.build(dict(h)).nominal_choice(generator)
            print_log(note, logger='current')


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Run the tool; returns the report as a dict."""
    args = parse_args(argv)
    from odm_mm.analysis import count_complexity
    cfg = Config.fromfile(resolve_config(args.config))
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    generator = build_generator(cfg, args.checkpoint, args.generator_only)
    if args.checkpoint is None:
        _nominal_choices(cfg, generator)
    width, height = args.hr_shape
    report = count_complexity(
        generator, lr_shape=args.lr_shape, hr_size=(height, width),
        scale=args.scale, probe_size=args.probe_size or None,
        count_weight_ranges=args.weight_ranges)
    print_log(report.format_table(max_rows=args.rows), logger='current')
    result = report.to_dict()
    result.update(config=args.config, checkpoint=args.checkpoint)
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(result, f, indent=2)
        print_log(f'wrote {args.out}', logger='current')
    return result


if __name__ == '__main__':
    main()
