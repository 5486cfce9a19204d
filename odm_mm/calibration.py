"""Calibration: percentile range init (Sec. 3.1) and Eq. 6 layer selection.

Torch-only. Algorithm 1, first lines: feed calibration batches through the
*FP32* network (every :class:`~odm_mm.layers.QuantConv` with quantization
switched off, offsets at the identity), and per quantized layer measure on the
tensor it quantizes:

* the 1st and 99th percentile (``j``-th / ``100-j``-th), averaged over the
  batches -> initial ``alpha_l``, ``alpha_u`` (ODM); the per-sample max |x|
  averaged over the batches -> initial ``alpha`` (PAMS);
* channel-wise mean ``mu_c`` and std ``sigma_c`` over all calibration pixels
  (exact, accumulated in float64), and Eq. 6:
  ``M_mu = sigma(mu_c)``, ``M_sigma = sigma(sigma_c)``.

Then :func:`select_top_p` picks the layers whose M is at or above the
``100(1-p)``-th percentile (linear interpolation) of all layers' M. Using
``>=`` makes ``p = 1`` select every layer; for distinct values it equals the
paper's "greater than".

Choice: all statistics come from one FP32 pass (the paper's pre-trained
network P), so every layer is calibrated on the same inputs.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Iterable, Iterator, List, Tuple

import torch
from torch import Tensor, nn

from .fullquant import SkipQuantizer
from .layers import QuantConv
from .quantizers import percentile_range

__all__ = ['LayerStats', 'FeatureObserver', 'observe', 'calibrate',
           'select_top_p', 'apply_calibration', 'offset_table']


@dataclass
class LayerStats:
    """Calibration statistics of one quantized layer."""
    lower: float
    upper: float
    absmax: float
    m_mu: float
    m_sigma: float
    channels: int
    shift: bool = False
    scale: bool = False

    def to_dict(self) -> Dict:
        """Plain dict (JSON / checkpoint meta)."""
        return asdict(self)


class FeatureObserver:
    """Accumulates the statistics of the tensors a QuantConv quantizes."""

    def __init__(self, percentile_j: float = 1.0) -> None:
        self.percentile_j = percentile_j
        self.batches = 0
        self.lo_sum = 0.0
        self.hi_sum = 0.0
        self.absmax_sum = 0.0
        self.count = 0
        self.ch_sum: Tensor = torch.zeros(0, dtype=torch.float64)
        self.ch_sqsum: Tensor = torch.zeros(0, dtype=torch.float64)

    @torch.no_grad()
    def update(self, x: Tensor) -> None:
        """Add one batch ``x`` of shape (B, C, H, W)."""
        x = x.detach()
        lo, hi = percentile_range(x, self.percentile_j)
        self.lo_sum += float(lo)
        self.hi_sum += float(hi)
        self.absmax_sum += float(x.abs().flatten(1).amax(dim=1).mean())
        xd = x.transpose(0, 1).reshape(x.shape[1], -1).double()
        if self.ch_sum.numel() == 0:
            self.ch_sum = torch.zeros(x.shape[1], dtype=torch.float64)
            self.ch_sqsum = torch.zeros(x.shape[1], dtype=torch.float64)
        self.ch_sum += xd.sum(dim=1).cpu()
        self.ch_sqsum += xd.pow(2).sum(dim=1).cpu()
        self.count += xd.shape[1]
        self.batches += 1

    def stats(self) -> LayerStats:
        """Averages over the batches seen and Eq. 6."""
        if self.batches == 0:
            raise RuntimeError('FeatureObserver saw no data: the layer was '
                               'never called during calibration')
        mean = self.ch_sum / self.count
        var = (self.ch_sqsum / self.count - mean.pow(2)).clamp_min(0)
        std = var.sqrt()
        n = self.batches
        return LayerStats(
            lower=self.lo_sum / n, upper=self.hi_sum / n,
            absmax=self.absmax_sum / n,
            m_mu=float(mean.std()) if mean.numel() > 1 else 0.0,
            m_sigma=float(std.std()) if std.numel() > 1 else 0.0,
            channels=int(mean.numel()))


@contextlib.contextmanager
def observe(convs: List[Tuple[str, QuantConv]], percentile_j: float = 1.0,
            fp32: bool = True) -> Iterator[Dict[str, FeatureObserver]]:
    """Attach observers (and optionally switch quantization off) for a pass.

    Restores each layer's quantization switch and removes the observers on
    exit, also when an exception is raised.
    """
    observers = {name: FeatureObserver(percentile_j) for name, _ in convs}
    saved = [(m, m.quant_enabled) for _, m in convs]
    try:
        for name, m in convs:
            m.observer = observers[name]
            if fp32:
                m.disable_quant()
        yield observers
    finally:
        for m, enabled in saved:
            m.observer = None
            m.quant_enabled = enabled


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable,
              forward: Callable[[nn.Module, object], object] = None,
              percentile_j: float = 1.0) -> Dict[str, LayerStats]:
    """Run ``batches`` through the FP32 model and measure every quantizer.

    Measures every QuantConv input and every skip connection quantized by
    :func:`odm_mm.fullquant.quantize_skips`.

    Args:
        model: Network containing QuantConv layers.
        batches: Iterable of inputs (tensors by default).
        forward: ``forward(model, batch)``; default ``model(batch)``.
        percentile_j: j of the percentile range.

    Returns:
        ``{layer name: LayerStats}`` in module order.
    """
    convs = [(n, m) for n, m in model.named_modules()
             if isinstance(m, (QuantConv, SkipQuantizer))]
    if not convs:
        raise ValueError('calibrate: the model has no QuantConv layer')
    forward = forward or (lambda mdl, b: mdl(b))
    was_training = model.training
    model.eval()
    try:
        with observe(convs, percentile_j) as observers:
            seen = 0
            for batch in batches:
                forward(model, batch)
                seen += 1
            if seen == 0:
                raise ValueError('calibrate: no calibration batch was given')
    finally:
        model.train(was_training)
    return {name: observers[name].stats() for name, _ in convs}


def select_top_p(values: List[float], p: float) -> List[bool]:
    """Eq. 6-8 selection: ``v >= percentile_{100(1-p)}(values)``.

    Args:
        values: M_mu (or M_sigma) of every layer.
        p: Offset ratio in (0, 1].
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f'offset ratio p must be in (0, 1], got {p}')
    if not values:
        return []
    t = torch.tensor(values, dtype=torch.float64)
    thr = torch.quantile(t, 1.0 - p)
    return [bool(v >= thr) for v in t]


@torch.no_grad()
def apply_calibration(model: nn.Module, stats: Dict[str, LayerStats],
                      ratio: float = 0.3, shift: bool = True,
                      scale: bool = True, init_bounds: bool = True) -> None:
    """Initialise bounds and enable the selected offsets, in place.

    Also records the choice in ``stats`` (``shift``/``scale`` fields).
    Skip-connection quantizers (:mod:`odm_mm.fullquant`) get their bounds
    and take no part in the offset selection.
    """
    skips = [n for n in stats
             if isinstance(model.get_submodule(n), SkipQuantizer)]
    if init_bounds:
        for name in skips:
            model.get_submodule(name).init_from_range(stats[name].lower,
                                                      stats[name].upper)
    names = [n for n in stats if n not in skips]
    sel_mu = select_top_p([stats[n].m_mu for n in names], ratio) if shift \
        else [False] * len(names)
    sel_sig = select_top_p([stats[n].m_sigma for n in names], ratio) \
        if scale else [False] * len(names)
    for name, s_mu, s_sig in zip(names, sel_mu, sel_sig):
        conv = model.get_submodule(name)
        st = stats[name]
        if init_bounds:
            if conv.method == 'pams':
                conv.act_quantizer.init_from_range(-st.absmax, st.absmax)
            else:
                conv.act_quantizer.init_from_range(st.lower, st.upper)
        conv.shift.data.zero_()
        conv.scale.data.fill_(1.0)
        conv.set_offsets(s_mu, s_sig)
        st.shift, st.scale = s_mu, s_sig


def offset_table(stats: Dict[str, LayerStats]) -> str:
    """A fixed-width text table of layers, M_mu, M_sigma and the choice."""
    rows = [f'{"layer":<32} {"M_mu":>10} {"M_sigma":>10} {"lower":>9} '
            f'{"upper":>9} shift scale']
    for name, st in stats.items():
        rows.append(f'{name:<32} {st.m_mu:>10.5f} {st.m_sigma:>10.5f} '
                    f'{st.lower:>9.4f} {st.upper:>9.4f} '
                    f'{"yes" if st.shift else "-":>5} '
                    f'{"yes" if st.scale else "-":>5}')
    n_shift = sum(st.shift for st in stats.values())
    n_scale = sum(st.scale for st in stats.values())
    rows.append(f'{len(stats)} quantized layers, shift offsets on {n_shift}, '
                f'scale offsets on {n_scale}')
    return '\n'.join(rows)
