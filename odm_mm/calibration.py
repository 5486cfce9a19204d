"""Calibration: percentile range init (Sec. 3.1) and Eq. 6 layer selection.

Torch-only. Algorithm 1, first lines: feed calibration batches through the
*FP32* network (every :class:`~odm_mm.layers.QuantConv` /
:class:`~odm_mm.layers.linear.QuantLinear` with quantization switched off,
offsets at the identity), and per quantized layer measure on the tensor it
quantizes (a Linear's ``(B, N, C)`` tokens as the ``(B, C, N, 1)`` map of
:meth:`~odm_mm.layers.linear.QuantLinear.as_feature_map`: channel
statistics are over the token channels):

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

Options that are not in the paper (measured in docs/benchmarks.md):

* ``offset_init='stats'`` (:func:`init_offsets_from_stats`): instead of the
  identity, start the selected offsets at the values that equalise the
  channels, ``S_mu = mean_c(mu_c) - mu_c`` and ``S_sigma = mean_c(sigma_c) /
  sigma_c``, snapped to their own ``offset_bits`` grid, and compensate them
  in the conv (``W[:, c] /= S_sigma[c]``, ``b -= sum_{c,k} W[:, c, k]
  S_mu[c]``), so the network computes the same function at step 0 except at
  the zero-padded border pixels; the bounds are then measured again on the
  offset features (second FP32 pass, :func:`calibrate_model`).
* ``offset_policy='one'`` (:func:`select_offsets`): a layer chosen for both
  offsets keeps only the one whose M ranks higher among the layers (fewer
  offset vectors, closer to the paper's +0.08K storage).
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Optional,
                    Tuple)

import torch
from torch import Tensor, nn

from .layers.act_site import ActSite
from .fullquant import SkipQuantizer
from .layers import QuantConv, QuantInputMixin, quantize_offset
from .layers.linear import QuantLinear
from .quantizers import percentile_range

__all__ = ['LayerStats', 'FeatureObserver', 'observe', 'calibrate',
           'select_top_p', 'select_offsets', 'apply_calibration',
           'init_offsets_from_stats', 'calibrate_model',
           'quantization_error', 'weight_noise_to_signal',
           'QuantErrorObserver', 'offset_table',
           'OFFSET_INITS', 'OFFSET_POLICIES']

OFFSET_INITS = ('identity', 'stats')
OFFSET_POLICIES = ('both', 'one')


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
    ch_mean: List[float] = field(default_factory=list)
    ch_std: List[float] = field(default_factory=list)

    def to_dict(self, per_channel: bool = False) -> Dict:
        """Plain dict (JSON / checkpoint meta); the per-channel lists only
        with ``per_channel`` (they serve the offset init, not the table)."""
        out = asdict(self)
        if not per_channel:
            out.pop('ch_mean')
            out.pop('ch_std')
        return out


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
            channels=int(mean.numel()), ch_mean=mean.tolist(),
            ch_std=std.tolist())


@contextlib.contextmanager
def observe(convs: List[Tuple[str, QuantConv]], percentile_j: float = 1.0,
            fp32: bool = True, observers: Optional[Dict[str, Any]] = None
            ) -> Iterator[Dict[str, Any]]:
    """Attach observers (and optionally switch quantization off) for a pass.

    Args:
        convs: ``[(name, layer)]`` to observe.
        percentile_j: j of the :class:`FeatureObserver` percentile range.
        fp32: Switch quantization off while observing.
        observers: ``{name: observer}`` to attach instead of new
            :class:`FeatureObserver` s (anything with ``update(x)``, e.g.
            :class:`QuantErrorObserver`).

    Restores each layer's quantization switch and removes the observers on
    exit, also when an exception is raised.
    """
    if observers is None:
        observers = {name: FeatureObserver(percentile_j)
                     for name, _ in convs}
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

    Measures every QuantConv / QuantLinear input, every activation site
    (:class:`~odm_mm.layers.act_site.ActSite`: a placement's sites, the attention
    matmul operands) and every skip connection quantized by
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
             if isinstance(m, (QuantConv, QuantLinear, ActSite,
                               SkipQuantizer))]
    if not convs:
        raise ValueError('calibrate: the model has no quantized layer')
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


def _ranks(values: List[float]) -> List[float]:
    """Fractional rank of each value in (0, 1] (1 = largest)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    for pos, i in enumerate(order):
        out[i] = (pos + 1) / len(values)
    return out


def select_offsets(m_mu: List[float], m_sigma: List[float], ratio: float,
                   shift: bool = True, scale: bool = True,
                   policy: str = 'both') -> Tuple[List[bool], List[bool]]:
    """Algorithm 1's choice: shift on top-p by M_mu, scale on top-p by M_sigma.

    Args:
        m_mu, m_sigma: Eq. 6 per layer.
        ratio: Offset ratio p.
        shift, scale: Whether each kind is used at all.
        policy: ``'both'`` (the paper: a layer may get both) or ``'one'``
            (a layer chosen for both keeps the kind whose M ranks higher;
            ties keep the scale).
    """
    if policy not in OFFSET_POLICIES:
        raise ValueError(f'offset policy must be one of {OFFSET_POLICIES}, '
                         f'got {policy!r}')
    n = len(m_mu)
    sel_mu = select_top_p(m_mu, ratio) if shift else [False] * n
    sel_sig = select_top_p(m_sigma, ratio) if scale else [False] * n
    if policy == 'one':
        r_mu, r_sig = _ranks(m_mu), _ranks(m_sigma)
        for i in range(n):
            if sel_mu[i] and sel_sig[i]:
                sel_mu[i] = r_mu[i] > r_sig[i]
                sel_sig[i] = not sel_mu[i]
    return sel_mu, sel_sig


@torch.no_grad()
def apply_calibration(model: nn.Module, stats: Dict[str, LayerStats],
                      ratio: float = 0.3, shift: bool = True,
                      scale: bool = True, init_bounds: bool = True,
                      policy: str = 'both') -> None:
    """Initialise bounds and enable the selected offsets, in place.

    Also records the choice in ``stats`` (``shift``/``scale`` fields).
    Quantization points without weights (skip connections,
    :mod:`odm_mm.fullquant`; activation sites, :mod:`odm_mm.layers.act_site`: a
    placement's sites and the attention matmul operands) get their range
    (``init_from_stats``) and take no part in the offset selection. The
    offsets start at the identity (see :func:`init_offsets_from_stats` for
    the alternative).
    """
    skips = [n for n in stats
             if not isinstance(model.get_submodule(n), QuantInputMixin)]
    if init_bounds:
        for name in skips:
            model.get_submodule(name).init_from_stats(stats[name])
    names = [n for n in stats if n not in skips]
    sel_mu, sel_sig = select_offsets([stats[n].m_mu for n in names],
                                     [stats[n].m_sigma for n in names],
                                     ratio, shift, scale, policy)
    for name, s_mu, s_sig in zip(names, sel_mu, sel_sig):
        conv = model.get_submodule(name)
        st = stats[name]
        if init_bounds:
            conv.act_quantizer.init_from_stats(st)
            conv.weight_quantizer.init_from_weight(conv.weight)
        conv.shift.data.zero_()
        conv.scale.data.fill_(1.0)
        conv.set_offsets(s_mu, s_sig)
        st.shift, st.scale = s_mu, s_sig


@torch.no_grad()
def init_offsets_from_stats(conv: QuantInputMixin, st: LayerStats,
                            min_std_frac: float = 0.05) -> None:
    """Start enabled offsets at the channel-equalising values (see module
    docstring) and compensate them in ``conv``'s weight and bias.

    Args:
        conv: A QuantConv or QuantLinear whose offsets were enabled by
            :func:`apply_calibration` (still at the identity).
        st: Its FP32 statistics (``ch_mean``, ``ch_std``).
        min_std_frac: sigma_c is clamped to at least this fraction of the
            mean sigma before ``S_sigma = mean / sigma_c`` (dead channels).
    """
    shift_on, scale_on = conv._flags
    if not (shift_on or scale_on):
        return
    if len(st.ch_mean) != conv.in_channels:
        raise ValueError('init_offsets_from_stats: statistics of '
                         f'{len(st.ch_mean)} channels for a conv with '
                         f'{conv.in_channels} inputs')
    dev, dt = conv.weight.device, conv.weight.dtype
    mu = torch.tensor(st.ch_mean, device=dev, dtype=torch.float64)
    sd = torch.tensor(st.ch_std, device=dev, dtype=torch.float64)
    w0 = conv.weight.detach().clone()
    if shift_on:
        if conv.bias is None:
            raise ValueError('init_offsets_from_stats: a shift offset needs '
                             'a conv bias to compensate it')
        s_mu = quantize_offset((mu.mean() - mu).to(dt), conv.offset_bits)
        conv.shift.data.copy_(s_mu)
        w_in = w0.flatten(2).sum(dim=2) if w0.dim() > 2 else w0
        conv.bias.data.sub_((w_in * s_mu.view(1, -1)).sum(1))
    if scale_on:
        sd = sd.clamp_min(min_std_frac * float(sd.mean()))
        s_sig = quantize_offset((sd.mean() / sd).to(dt), conv.offset_bits)
        conv.scale.data.copy_(s_sig)
        conv.weight.data.div_(s_sig.view(1, -1, *[1] * (w0.dim() - 2)))


def calibrate_model(model: nn.Module, batches: List,
                    forward: Callable[[nn.Module, object], object] = None,
                    ratio: float = 0.3, shift: bool = True,
                    scale: bool = True, percentile_j: float = 1.0,
                    offset_init: str = 'identity',
                    policy: str = 'both') -> Dict[str, LayerStats]:
    """Algorithm 1's calibration in one call: measure, choose, initialise.

    With ``offset_init='stats'`` the offsets are set from the statistics
    and compensated (:func:`init_offsets_from_stats`), then the bounds are
    measured again on the offset features. Returns the statistics of the
    first pass with the choice recorded.
    """
    if offset_init not in OFFSET_INITS:
        raise ValueError(f'offset_init must be one of {OFFSET_INITS}, got '
                         f'{offset_init!r}')
    stats = calibrate(model, batches, forward, percentile_j)
    apply_calibration(model, stats, ratio, shift, scale, policy=policy)
    if offset_init == 'stats' and any(s.shift or s.scale
                                      for s in stats.values()):
        for name, st in stats.items():
            conv = model.get_submodule(name)
            if isinstance(conv, QuantInputMixin):
                init_offsets_from_stats(conv, st)
        again = calibrate(model, batches, forward, percentile_j)
        for name, st in again.items():
            conv = model.get_submodule(name)
            if isinstance(conv, QuantInputMixin):
                conv.act_quantizer.init_from_stats(st)
            else:
                conv.init_from_stats(st)
    return stats


class QuantErrorObserver:
    """Accumulates ``||Q(x) - x||^2`` and the variance of ``x`` for one
    QuantConv (attach as its ``observer``)."""

    def __init__(self, conv: QuantConv) -> None:
        self.conv = conv
        self.err = self.sum = self.sq = 0.0
        self.count = 0

    @torch.no_grad()
    def update(self, x: Tensor) -> None:  # noqa: D102
        x = x.detach()
        self.err += float((self.conv.act_quantizer(x) - x).double()
                          .pow(2).sum())
        self.sum += float(x.double().sum())
        self.sq += float(x.double().pow(2).sum())
        self.count += x.numel()

    def relative(self) -> float:
        """``MSE / var(x)`` (quantization noise-to-signal)."""
        var = self.sq / self.count - (self.sum / self.count) ** 2
        return (self.err / self.count) / var if var > 0 else 0.0


@torch.no_grad()
def quantization_error(model: nn.Module, batches: Iterable,
                       forward: Callable[[nn.Module, object], object] = None
                       ) -> Dict[str, Dict[str, float]]:
    """Per-layer quantization noise-to-signal of activations and weights.

    Runs ``batches`` through the *quantized* network (errors compound as in
    training) and returns ``{layer: {'act': MSE(Q(x), x) / var(x),
    'weight': MSE(Q(W), W) / var(W)}}``, ``x`` being the (offset) feature
    the layer quantizes.
    """
    convs = [(n, m) for n, m in model.named_modules()
             if isinstance(m, QuantInputMixin)]
    forward = forward or (lambda mdl, b: mdl(b))
    observers = {n: QuantErrorObserver(m) for n, m in convs}
    was_training = model.training
    model.eval()
    try:
        with observe(convs, fp32=False, observers=observers):
            for batch in batches:
                forward(model, batch)
    finally:
        model.train(was_training)
    return {name: dict(act=observers[name].relative(),
                       weight=weight_noise_to_signal(m.weight_quantizer,
                                                     m.weight))
            for name, m in convs}


@torch.no_grad()
def weight_noise_to_signal(quantizer: nn.Module, w: Tensor) -> float:
    """``MSE(Q(W), W) / var(W)`` of a weight under its quantizer (0 for a
    constant weight)."""
    w = w.detach()
    w_err = (quantizer(w) - w).double().pow(2).mean()
    w_var = w.double().var(unbiased=False)
    return float(w_err / w_var) if w_var > 0 else 0.0


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
