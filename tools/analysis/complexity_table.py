"""Complexity table of EDSR / RDN / SRResNet x4 at 32/4/3/2 bits.

Produces the tables of ``docs/complexity.md``::

    python tools/analysis/complexity_table.py            # markdown tables
    python tools/analysis/complexity_table.py --json out.json

Models: mmagic's ``EDSRNet`` (EDSR-baseline), ``RDNNet`` and ``MSRResNet``
(x4, 64 channels, 16 blocks) with the swap presets of :mod:`odm_mm.swap`
(``w_bits = a_bits = bits``, method ``'odm'``), and :class:`PaperSRResNet`,
the SRResNet the paper (and PAMS/DAQ/DDTB) evaluate: BN in the residual
blocks, PReLU, 9x9 head/tail convs, bias-free convs. It is defined here as a
reference for the complexity figures only (it is not an mmagic model).
A second table shows the offset overhead under the readings discussed in the
doc, a third the DAQ and DDTB baselines at W2A2 (docs/complexity.md, "DAQ"
and "DDTB"). Needs mmagic for the mmagic models; ``PaperSRResNet`` is
torch-only.
"""
from __future__ import annotations

import argparse
import json
import os.path as osp
import sys
from typing import Callable, Dict, List, Optional, Sequence

from torch import Tensor, nn

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

from odm_mm.analysis import count_complexity  # noqa: E402
from odm_mm.swap import quant_convs, swap_convs  # noqa: E402

# Paper figures (storage K, BitOPs T): Table 4 (EDSR), Table S3 (RDN,
# SRResNet); the 2-bit rows are PAMS (same network as ODM without offsets).
PAPER = {
    'EDSRNet': {32: (1517.6, 527.1), 2: (411.7, 215.1)},
    'RDNNet': {32: (22271.1, 6032.9), 2: (1715.9, 236.6)},
    'PaperSRResNet': {32: (1546.8, 588.8), 2: (440.9, 276.9)},
}
PAPER_ODM = {'EDSRNet': 411.7 + 0.08, 'RDNNet': 1727.9,
             'PaperSRResNet': 441.4}
SRRESNET_BODY = [r'residual\.\d+\.conv[12]']


class _PaperResBlock(nn.Module):
    """conv-BN-PReLU-conv-BN + identity (SRGAN / PAMS SRResNet block)."""

    def __init__(self, c: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.PReLU()
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return x + self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))


class PaperSRResNet(nn.Module):
    """SRResNet as evaluated in the paper (x4): 1,546,771 parameters."""

    def __init__(self, c: int = 64, num_blocks: int = 16) -> None:
        super().__init__()
        self.conv_input = nn.Conv2d(3, c, 9, 1, 4, bias=False)
        self.relu = nn.PReLU()
        self.residual = nn.Sequential(
            *[_PaperResBlock(c) for _ in range(num_blocks)])
        self.conv_mid = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn_mid = nn.BatchNorm2d(c)
        up: List[nn.Module] = []
        for _ in range(2):
            up += [nn.Conv2d(c, 4 * c, 3, 1, 1, bias=False),
                   nn.PixelShuffle(2), nn.PReLU()]
        self.upscale = nn.Sequential(*up)
        self.conv_output = nn.Conv2d(c, 3, 9, 1, 4, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        x = self.relu(self.conv_input(x))
        x = x + self.bn_mid(self.conv_mid(self.residual(x)))
        return self.conv_output(self.upscale(x))


def build(name: str) -> nn.Module:
    """A fresh FP32 x4 model by name (mmagic imported lazily)."""
    if name == 'PaperSRResNet':
        return PaperSRResNet()
    from mmagic.models.editors import EDSRNet, MSRResNet, RDNNet
    if name == 'EDSRNet':
        return EDSRNet(3, 3, mid_channels=64, num_blocks=16,
                       upscale_factor=4)
    if name == 'RDNNet':
        return RDNNet(3, 3, mid_channels=64, num_blocks=16, upscale_factor=4,
                      num_layers=8, channel_growth=64)
    if name == 'MSRResNet':
        return MSRResNet(3, 3, mid_channels=64, num_blocks=16,
                         upscale_factor=4)
    raise ValueError(f'unknown model {name!r}')


def quantize(model: nn.Module, bits: int, method: str = 'odm') -> nn.Module:
    """Swap the body convs (preset) to ``bits``; 32 leaves the model FP32."""
    if bits < 32:
        patterns = SRRESNET_BODY if isinstance(model, PaperSRResNet) else None
        swap_convs(model, patterns=patterns, w_bits=bits, a_bits=bits,
                   method=method)
    return model


def enable_offsets(model: nn.Module, n_shift: Optional[int],
                   n_scale: Optional[int]) -> int:
    """Enable shift on the first ``n_shift`` and scale on the first
    ``n_scale`` quantized convs (``None`` = all); returns the vector count.

    Only the channel counts matter for the complexity, not which layers.
    """
    convs = [m for _, m in quant_convs(model)]
    n_shift = len(convs) if n_shift is None else n_shift
    n_scale = len(convs) if n_scale is None else n_scale
    for i, m in enumerate(convs):
        m.set_offsets(shift=i < n_shift, scale=i < n_scale)
    return min(n_shift, len(convs)) + min(n_scale, len(convs))


def main_table(names: Sequence[str], bits_list: Sequence[int]) -> List[Dict]:
    """Storage/BitOPs of every model at every bit-width."""
    rows = []
    for name in names:
        for bits in bits_list:
            rep = count_complexity(quantize(build(name), bits))
            ref = PAPER.get(name, {}).get(bits)
            rows.append(dict(model=name, bits=bits,
                             storage_k=round(rep.storage_k, 3),
                             bitops_t=round(rep.bitops_t, 3),
                             paper_storage_k=ref[0] if ref else None,
                             paper_bitops_t=ref[1] if ref else None))
    return rows


OFFSET_CASES: Dict[str, Callable[[int], tuple]] = {
    # label -> f(number of quantized convs) = (n_shift, n_scale)
    '10 vectors (5 shift + 5 scale)': lambda n: (5, 5),
    'top-30% shift + top-30% scale (literal Eq. 6)':
        lambda n: (round(0.3 * n), round(0.3 * n)),
    'shift + scale on every quantized conv': lambda n: (None, None),
}


def offset_table(names: Sequence[str]) -> List[Dict]:
    """W2A2 ODM overhead of the offsets under the three readings."""
    rows = []
    for name in names:
        base = count_complexity(quantize(build(name), 2))
        for label, fn in OFFSET_CASES.items():
            model = quantize(build(name), 2)
            n = len(quant_convs(model))
            vectors = enable_offsets(model, *fn(n))
            rep = count_complexity(model)
            rows.append(dict(
                model=name, case=label, vectors=vectors,
                storage_k=round(rep.storage_k, 3),
                offset_storage_k=round(rep.offset_storage_k, 3),
                offset_bitops_t=round(rep.offset_bitops_t, 4),
                storage_pct=round(100 * rep.offset_storage_k /
                                  base.storage_k, 3),
                bitops_pct=round(100 * rep.offset_bitops_t / base.bitops_t,
                                 4),
                paper_odm_storage_k=PAPER_ODM.get(name)))
    return rows


# Table 4 / S3 rows of the baselines (storage K, BitOPs T) and the official
# DDTB dynamic ratios (run.sh: EDSR 0.3, RDN 0.5, SRResNet 0.1)
PAPER_BASELINES = {
    ('EDSRNet', 'daq'): (411.7, 216.1), ('EDSRNet', 'ddtb'): (413.4, 215.1),
    ('RDNNet', 'daq'): (1715.9, 287.7), ('RDNNet', 'ddtb'): (1769.7, 236.6),
    ('PaperSRResNet', 'daq'): (440.9, 279.0),
    ('PaperSRResNet', 'ddtb'): (442.3, 276.9),
}
DDTB_RATIO = {'EDSRNet': 0.3, 'RDNNet': 0.5, 'MSRResNet': 0.1,
              'PaperSRResNet': 0.1}


def _daq_cases(name: str):
    """DAQ as built: the branch of every layer is decided per call (the
    official ``x.min() == 0``), which the probe records."""
    model = quantize(build(name), 2, 'daq')
    count_complexity(model, probe_size=4)  # the probe sets the branches
    n = sum(m.act_quantizer._nonneg for _, m in quant_convs(model))
    yield f'{n} post-ReLU inputs', model


def _ddtb_cases(name: str):
    """``int(n * ratio)`` dynamic layers; which ones is chosen from data,
    so for RDN (layer widths 64..1024) the narrowest and the widest."""
    orders = ['any'] if name != 'RDNNet' else ['narrowest', 'widest']
    for order in orders:
        model = quantize(build(name), 2, 'ddtb')
        convs = [m for _, m in quant_convs(model)]
        k = int(len(convs) * DDTB_RATIO[name])
        ranked = sorted(convs, key=lambda m: m.in_channels,
                        reverse=order == 'widest')
        for m in ranked[:k]:
            m.act_quantizer.set_dynamic(True)
        yield f'{k} of {len(convs)} gates ({order})', model


def baseline_table(names: Sequence[str]) -> List[Dict]:
    """W2A2 DAQ and DDTB against the paper's rows."""
    rows = []
    for name in names:
        for method, cases in (('daq', _daq_cases), ('ddtb', _ddtb_cases)):
            ref = PAPER_BASELINES.get((name, method))
            for label, model in cases(name):
                rep = count_complexity(model, probe_size=4)
                rows.append(dict(
                    model=name, method=method, case=label,
                    storage_k=round(rep.storage_k, 3),
                    paper_storage_k=ref[0] if ref else None,
                    bitops_t=round(rep.bitops_t, 3),
                    paper_bitops_t=ref[1] if ref else None,
                    quantizer_bitops_t=round(rep.quantizer_bitops_t, 4)))
    return rows


# Table 4 (EDSR-baseline x4, W2A2): storage K, BitOPs T of the paper
PAPER_TABLE4 = {'PAMS': (411.7, 215.1), 'ODM': (411.7, 215.1),
                'DAQ': (411.7, 216.1), 'DDTB': (413.4, 215.1)}


def _edsr_methods():
    """EDSR-baseline W2A2 as each method quantizes it (label, paper key,
    model): the framework's preset for all, DDTB also in its official
    placement, DDTB's gates by the nominal choice (``int(n x 0.3)``)."""
    from odm_mm.ddtb_hook import DDTBCalibHook
    from odm_mm.placement import apply_placement
    yield 'FP32', None, build('EDSRNet')
    yield 'PAMS', 'PAMS', quantize(build('EDSRNet'), 2, 'pams')
    odm = quantize(build('EDSRNet'), 2, 'odm')
    enable_offsets(odm, 5, 5)  # Table 5's +0.08K: 10 offset vectors
    yield 'ODM (10 offset vectors)', 'ODM', odm
    yield 'DAQ (daq, unclipped post-ReLU)', 'DAQ', quantize(
        build('EDSRNet'), 2, 'daq')
    yield 'DAQ (daq_clip)', 'DAQ', quantize(build('EDSRNet'), 2, 'daq_clip')
    hook = DDTBCalibHook(dynamic_ratio=0.3)
    ddtb = quantize(build('EDSRNet'), 2, 'ddtb')
    hook.nominal_choice(ddtb)
    yield 'DDTB (conv inputs, 9 of 32 gates)', 'DDTB', ddtb
    off = build('EDSRNet')
    apply_placement(off, 'ddtb_official', method='ddtb', w_bits=2, a_bits=2)
    hook.nominal_choice(off)
    yield 'DDTB (official placement, 14 of 48 gates)', 'DDTB', off


def convention_table() -> List[Dict]:
    """Table 4 recomputed under the one convention of docs/complexity.md
    (every stored float incl. weight ranges; run-time work of the
    quantizers; a sum of k quantized tensors as k integer convs)."""
    rows = []
    for label, key, model in _edsr_methods():
        rep = count_complexity(model, probe_size=4, count_weight_ranges=True)
        ref = PAPER_TABLE4.get(key) if key else PAPER['EDSRNet'][32]
        rows.append(dict(method=label, storage_k=round(rep.storage_k, 3),
                         paper_storage_k=ref[0],
                         bitops_t=round(rep.bitops_t, 3),
                         paper_bitops_t=ref[1],
                         quantizer_bitops_t=round(rep.quantizer_bitops_t,
                                                  4)))
    return rows


def to_markdown(rows: List[Dict], keys: Sequence[str]) -> str:
    """A markdown table of ``rows`` restricted to ``keys``."""
    out = ['| ' + ' | '.join(keys) + ' |',
           '|' + '---|' * len(keys)]
    for r in rows:
        out.append('| ' + ' | '.join(
            '-' if r[k] is None else str(r[k]) for k in keys) + ' |')
    return '\n'.join(out)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, List[Dict]]:
    """Print both tables (markdown) and optionally write them as JSON."""
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--models', nargs='+', default=[
        'EDSRNet', 'RDNNet', 'MSRResNet', 'PaperSRResNet'])
    p.add_argument('--bits', nargs='+', type=int, default=[32, 4, 3, 2])
    p.add_argument('--json', default=None, help='write the tables as JSON')
    args = p.parse_args(argv)
    tables = dict(complexity=main_table(args.models, args.bits),
                  offsets=offset_table(args.models),
                  baselines=baseline_table(args.models),
                  convention=convention_table())
    print(to_markdown(tables['complexity'], [
        'model', 'bits', 'storage_k', 'paper_storage_k', 'bitops_t',
        'paper_bitops_t']))
    print()
    print(to_markdown(tables['offsets'], [
        'model', 'case', 'vectors', 'storage_k', 'offset_storage_k',
        'storage_pct', 'offset_bitops_t', 'bitops_pct',
        'paper_odm_storage_k']))
    print()
    print(to_markdown(tables['baselines'], [
        'model', 'method', 'case', 'storage_k', 'paper_storage_k',
        'bitops_t', 'paper_bitops_t', 'quantizer_bitops_t']))
    print()
    print(to_markdown(tables['convention'], [
        'method', 'storage_k', 'paper_storage_k', 'bitops_t',
        'paper_bitops_t', 'quantizer_bitops_t']))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(tables, f, indent=2)
    return tables


if __name__ == '__main__':
    main()
