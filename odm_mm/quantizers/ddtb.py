"""DDTB baseline: dynamic dual trainable bounds (Zhong et al., ECCV 2022),
registered as method ``'ddtb'``.

Torch-only. Follows the official code (github.com/zysxmu/DDTB,
``model/quant_ops.py``, ``main_limitrange_incremental.py``); the choices are
listed in ``docs/baselines.md``.

Quantizer (:func:`ddtb_fake_quant`, asymmetric with a rounded zero point)
over ``[l, u]``, ``n = 2^b - 1``::

    f = n / (u - l);  z = Int(f l) + 2^(b-1)
    Q(x) = (Int(f clip(x, l, u) - z) + z) / f

the multiples of ``(u - l) / n`` in ``[l, u]``; ``Int`` is
:func:`~odm_mm.quantizers.round_ste`. Activations (:class:`DDTBActQuantizer`):
trainable ``l, u`` per layer; on the *dynamic* layers (:func:`select_dynamic`:
the top ``dynamic_ratio`` by ``var(batch max) + var(batch min)``) a gate
(:class:`DDTBGate`) sets ``u_n = a_n u``, ``l_n = b_n l`` per image. Weights
(:class:`DDTBWeightQuantizer`): the same grid over ``[P_j, P_{100-j}]`` of
the weights (official j = 1; RDN min/max, j = 0), no gradient into the range.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# _clip: x gets the gradient on [lo, hi], the bound that clips outside it
from ..placement import Placement, register_placement
from .base import (ActQuantizer, ActQuantizerBase, IntegerForm,
                         PAMSWeightQuantizer, WeightQuantizer, _clip,
                         register_quantizer, round_ste)

__all__ = ['ddtb_fake_quant', 'ddtb_codes', 'ddtb_dequantize',
           'ddtb_integer_form', 'gate_act_quant', 'DDTBGate',
           'DDTBActQuantizer', 'DDTBWeightQuantizer', 'dynamic_scores',
           'select_dynamic']

#: DDTBGate ``init`` choices.
GATE_INITS = ('zero', 'official')

_NO_FORM = ('DDTB scales the activation bounds of this layer per image with '
            'its dynamic gate; the clip range and step change with every '
            'input, so it has no static integer form to export.')


def _scale_zero(lo: Tensor, hi: Tensor, bits: int) -> Tuple[Tensor, Tensor]:
    f = (2**bits - 1) / (hi - lo)
    return f, round_ste(f * lo) + 2**(bits - 1)


def ddtb_fake_quant(x: Tensor, lo: Tensor, hi: Tensor, bits: int) -> Tensor:
    """``(Int(f clip(x, l, u) - z) + z) / f`` (module docstring)."""
    f, z = _scale_zero(lo, hi, bits)
    return (round_ste(f * _clip(x, lo, hi) - z) + z) / f


def ddtb_codes(x: Tensor, lo: Tensor, hi: Tensor, bits: int) -> Tensor:
    """Codes ``Int(f clip(x) - z) + 2^(b-1)`` in ``[0, 2^b - 1]``."""
    f, z = _scale_zero(lo, hi, bits)
    return torch.round(f * _clip(x, lo, hi) - z) + 2**(bits - 1)


def ddtb_dequantize(codes: Tensor, lo: Tensor, hi: Tensor,
                    bits: int) -> Tensor:
    """Values of :func:`ddtb_codes`, computed as the forward pass does."""
    f, z = _scale_zero(lo, hi, bits)
    return ((codes - 2**(bits - 1)) + z) / f


def ddtb_integer_form(lo: Tensor, hi: Tensor, bits: int,
                      params: Dict[str, Tensor]) -> IntegerForm:
    """``t_q = Int(f l) / f + code / f``: scale 1/f, offset Int(f l)/f."""
    f, _ = _scale_zero(lo, hi, bits)
    return IntegerForm(scale=1 / f, offset=torch.round(f * lo) / f, zero=0,
                       levels=2**bits, clip_lo=lo, clip_hi=hi, params=params)


def gate_act_quant(a: Tensor, bits: int) -> Tensor:
    """The gate's activation quantizer (official ``quant_activation``): the
    grid over [min, max] of the whole batch tensor, *without* gradient to
    ``a`` (as official); a constant tensor is returned unchanged."""
    a = a.detach()
    lo, hi = a.min(), a.max()
    same = hi <= lo
    hi = torch.where(same, lo + 1, hi)
    return torch.where(same, a, ddtb_fake_quant(a, lo, hi, bits))


class DDTBGate(nn.Module):
    """Dynamic gate: ``2 sigmoid(W2 q(relu(BN(W1 q(avgpool(x))))))``.

    Official ``atten_c``: average pool of the detached input, 2-bit
    activation quantizer, 1x1 conv C -> 32 (2-bit max|w| weights), BN, ReLU,
    activation quantizer, 1x1 conv 32 -> 2, here as matrix products on the
    pooled ``(N, C)``. ``weight2`` starts at 0 (identity scale 1).

    Args:
        in_channels: C, channels of the quantized feature.
        hidden: Hidden width (official: 32).
        bits: Bit-width of the gate's weights and activations (official: 2).
        init: ``'zero'``: ``weight2 = 0`` (scale 1 from the start);
            ``'official'``: uniform +-1/sqrt(hidden) like the first conv
            (the official ``QuantConv2d.reset_parameters``; its first stage
            then pulls the logits to 0).
    """

    def __init__(self, in_channels: int, hidden: int = 32,
                 bits: int = 2, init: str = 'zero') -> None:
        super().__init__()
        if init not in GATE_INITS:
            raise ValueError(f'DDTB gate init must be one of {GATE_INITS}, '
                             f'got {init!r}')
        self.in_channels, self.hidden, self.bits = in_channels, hidden, bits
        bound = 1.0 / math.sqrt(in_channels)  # the official conv init
        self.weight1 = nn.Parameter(
            torch.empty(hidden, in_channels).uniform_(-bound, bound))
        self.bn = nn.BatchNorm1d(hidden)
        self.weight2 = nn.Parameter(torch.zeros(2, hidden))
        if init == 'official':
            bound2 = 1.0 / math.sqrt(hidden)
            self.weight2.data.uniform_(-bound2, bound2)
        self.wq1 = PAMSWeightQuantizer(bits)
        self.wq2 = PAMSWeightQuantizer(bits)

    def logits(self, x: Tensor) -> Tensor:
        """``(N, 2)`` logits of the scales (official ``atten_c`` output)."""
        ctx = x.detach().mean((2, 3))
        h = F.linear(gate_act_quant(ctx, self.bits), self.wq1(self.weight1))
        h = F.relu(self.bn(h))
        return F.linear(gate_act_quant(h, self.bits), self.wq2(self.weight2))

    def forward(self, x: Tensor) -> Tensor:
        """``(N, 2)`` scales ``(a_n, b_n)`` of the upper and lower bound."""
        return 2 * torch.sigmoid(self.logits(x))


class DDTBActQuantizer(ActQuantizerBase):
    """DDTB activation quantizer: dual trainable bounds + dynamic gate.

    ``QuantConv`` builds it with the conv's ``in_channels``, from which the
    gate is built here (before any optimizer or checkpoint sees it). Every
    layer has a gate (as official); it is used and stored only where
    ``dynamic``.

    Args:
        bits: Activation bit-width (1..8).
        eps: Minimum range width (collapsed ranges are repaired).
        in_channels: Channels of the quantized feature (without it, call
            :meth:`build_gate` before use).
        gate_bits: Bit-width of the gate (official: 2).
        gate_hidden: Hidden width of the gate (official: 32).
        gate_init: :class:`DDTBGate` ``init`` (``'zero'``: scale 1 from
            the start; ``'official'``: a random last layer, for runs with
            the first stage).

    Attributes:
        first_stage: While True (set by ``DDTBCalibHook`` for the first
            iterations, the official "incremental" epochs), a dynamic layer
            computes its gate but quantizes with the static bounds, and
            :meth:`aux_loss` is ``MSE(logits, 0)`` of the last call (the
            official extra loss pulling the gate to scale 1).
    """

    def __init__(self, bits: int, eps: float = 1e-4,
                 in_channels: Optional[int] = None, gate_bits: int = 2,
                 gate_hidden: int = 32, gate_init: str = 'zero') -> None:
        super().__init__(bits, eps, in_channels)
        if gate_init not in GATE_INITS:
            raise ValueError(f'DDTB gate_init must be one of {GATE_INITS}, '
                             f'got {gate_init!r}')
        self.gate_init = gate_init
        self.first_stage = False
        self._logits: Optional[Tensor] = None
        # official placeholder +-10 at [0, 255] pixels; set at calibration
        self.lower = nn.Parameter(torch.tensor(-10 / 255))
        self.upper = nn.Parameter(torch.tensor(10 / 255))
        self.gate_bits, self.gate_hidden = gate_bits, gate_hidden
        self.gate: Optional[DDTBGate] = None
        self.register_buffer('dynamic', torch.tensor(False))
        self._dynamic = False  # python mirror: no device sync in forward
        if in_channels is not None:
            self.build_gate(in_channels)

    def build_gate(self, in_channels: int) -> None:
        """Create the gate for ``in_channels`` (once)."""
        if self.gate is not None:
            if self.gate.in_channels != in_channels:
                raise ValueError(f'DDTB gate built for {self.gate.in_channels}'
                                 f' channels, not {in_channels}')
            return
        self.gate = DDTBGate(in_channels, self.gate_hidden, self.gate_bits,
                             self.gate_init).to(self.lower.device)

    # ------------------------------------------------------------ switches
    @property
    def has_integer_form(self) -> bool:  # type: ignore[override]
        """Static layers only."""
        return not self._dynamic

    @torch.no_grad()
    def set_dynamic(self, flag: bool) -> None:
        """Use (and store) the gate on this layer or not."""
        if flag and self.gate is None:
            raise ValueError('DDTB: this quantizer has no gate (build_gate or '
                             'attach it to a conv first)')
        self.dynamic.fill_(bool(flag))
        self._dynamic = bool(flag)

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._dynamic = bool(self.dynamic)

    # ---------------------------------------------------------- calibration
    @torch.no_grad()
    def init_from_range(self, lower: float, upper: float) -> None:
        """``l, u`` = the calibration percentiles (official: P_1 / P_99,
        RDN P_5 / P_95)."""
        lo, up = float(lower), float(upper)
        if not up - lo >= self.eps:
            mid = (lo + up) / 2
            lo, up = mid - self.eps, mid + self.eps
        self.lower.data.fill_(lo)
        self.upper.data.fill_(up)
        self.initialized.fill_(True)

    # the same rules as ODM's two bounds: ``u - l < eps`` is widened around
    # the middle; the width is ``u - l`` (static bounds, with gradient)
    repair_ = ActQuantizer.repair_
    range_width = ActQuantizer.range_width

    # -------------------------------------------------------------- forward
    def bounds(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """``(l, u)``: the static bounds, or per image ``(N, 1, 1, 1)``
        ``(b_n l, a_n u)`` on a dynamic layer (``u_n >= l_n + eps``)."""
        if not self._dynamic:
            return self.lower, self.upper
        s = self.gate(x)
        lo = (s[:, 1] * self.lower).view(-1, 1, 1, 1)
        hi = (s[:, 0] * self.upper).view(-1, 1, 1, 1)
        return lo, torch.maximum(hi, lo + self.eps)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        if self._dynamic and self.first_stage:
            # official first stage: the gate runs (its logits are pulled to
            # 0 by aux_loss), the static bounds quantize
            self._logits = self.gate.logits(x)
            return ddtb_fake_quant(x, self.lower, self.upper, self.bits)
        return ddtb_fake_quant(x, *self.bounds(x), self.bits)

    def aux_loss(self) -> Optional[Tensor]:
        """First stage: ``MSE(logits, 0)`` of the last call (then cleared);
        otherwise None."""
        logits, self._logits = self._logits, None
        if logits is None:
            return None
        return logits.pow(2).mean()

    def integer_form(self, t: Optional[Tensor] = None) -> IntegerForm:
        """Static layers: the DDTB grid over ``[l, u]``; dynamic layers
        raise ``ValueError`` (per-image bounds)."""
        if self._dynamic:
            raise ValueError(_NO_FORM)
        lo, hi = self.lower.detach(), self.upper.detach()
        return ddtb_integer_form(lo, hi, self.bits, dict(lower=lo, upper=hi))

    def _bounds_frozen(self, t: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """:meth:`bounds` without side effects: the gate's BatchNorm uses
        its running statistics and does not update them (a read-out must
        not change the model, whatever its train/eval mode)."""
        if not self._dynamic:
            return self.lower, self.upper
        bn = self.gate.bn
        was = bn.training
        bn.eval()
        try:
            return self.bounds(t)
        finally:
            bn.train(was)

    @torch.no_grad()
    def codes(self, t: Tensor) -> Tensor:
        """Codes of ``t`` (dynamic layers: with the bounds of each image;
        the gate's BN in eval mode, see :meth:`_bounds_frozen`)."""
        return ddtb_codes(t.detach(), *self._bounds_frozen(t), self.bits)

    def dequantize(self, codes: Tensor, t: Optional[Tensor] = None
                   ) -> Tensor:
        """Values of ``codes``; dynamic layers need ``t`` (the gate)."""
        if self._dynamic and t is None:
            raise ValueError(_NO_FORM + ' dequantize needs the input tensor.')
        with torch.no_grad():
            return ddtb_dequantize(codes, *self._bounds_frozen(t), self.bits)

    # ---------------------------------------------------------------- cost
    def param_storage_bits(self, name: str) -> int:
        """Bounds at 32 bits; the gate only on dynamic layers: its two
        weight matrices at ``gate_bits``, BN affine at 32 (the running
        statistics fold into it)."""
        if not name.startswith('gate.'):
            return 32
        if not self._dynamic:
            return 0
        return self.gate_bits if name.startswith('gate.weight') else 32

    def extra_range_values(self) -> int:
        """Dynamic layers: the max|w| of the gate's two weight matrices."""
        if not self._dynamic:
            return 0
        return self.gate.wq1.range_values + self.gate.wq2.range_values

    def runtime_bitops_terms(self, input_shape: Tuple[int, ...]
                             ) -> List[Tuple[int, int, int]]:
        """Dynamic layers: the average pool (one 32-bit add per input
        element) and the gate's two matrix products (2 ops per MAC at
        ``gate_bits``); BN, ReLU, sigmoid and the two bound products (a few
        per image) are not counted."""
        if not self._dynamic:
            return []
        macs = self.gate_hidden * (int(input_shape[0]) + 2)
        return [(math.prod(int(s) for s in input_shape), 32, 32),
                (2 * macs, self.gate_bits, self.gate_bits)]

    def extra_repr(self) -> str:  # noqa: D102
        return f'bits={self.bits}, dynamic={self._dynamic}'


class DDTBWeightQuantizer(WeightQuantizer):
    """DDTB grid over ``[P_j(W), P_{100-j}(W)]`` (linear interpolation,
    as ``np.percentile``; j = 0: min/max). Built like ODM's
    :class:`~odm_mm.quantizers.WeightQuantizer`
    (``bits``, ``percentile_j``; official j: 1 for EDSR/SRResNet, 0 for RDN),
    with DDTB's percentile and grid.
    """

    _MAX_ELEMS = 1 << 24  # torch.quantile's limit; larger: strided sample

    def weight_range(self, w: Tensor) -> Tuple[Tensor, Tensor]:
        """``(P_j, P_{100-j})`` of the weights, no gradient; a constant
        tensor gets a width of 1e-8."""
        flat = w.detach().reshape(-1)
        if flat.dtype not in (torch.float32, torch.float64):
            flat = flat.float()
        if flat.numel() > self._MAX_ELEMS:
            flat = flat[::math.ceil(flat.numel() / self._MAX_ELEMS)]
        q = torch.tensor([self.percentile_j / 100,
                          1 - self.percentile_j / 100], dtype=flat.dtype,
                         device=flat.device)
        lo, hi = torch.quantile(flat, q).to(w.dtype)
        return lo, torch.maximum(hi, lo + 1e-8)

    def forward(self, w: Tensor) -> Tensor:  # noqa: D102
        lo, hi = self.weight_range(w)
        return ddtb_fake_quant(w, lo, hi, self.bits)

    def integer_form(self, t: Optional[Tensor] = None) -> IntegerForm:
        """The DDTB grid over the percentile range of ``t``."""
        lo, hi = self.weight_range(t)
        return ddtb_integer_form(lo, hi, self.bits, dict(lower=lo, upper=hi))

    def codes(self, t: Tensor) -> Tensor:  # noqa: D102
        return ddtb_codes(t.detach(), *self.weight_range(t), self.bits)

    def dequantize(self, codes: Tensor, t: Optional[Tensor] = None
                   ) -> Tensor:  # noqa: D102
        return ddtb_dequantize(codes, *self.weight_range(t), self.bits)


# ------------------------------------------------- choice of dynamic layers
def _ddtb_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules()
            if isinstance(getattr(m, 'act_quantizer', None),
                          DDTBActQuantizer) and hasattr(m, 'quant_enabled')]


class _MaxMinObserver:
    """Per-call max and min of the input (official ``fp_max_list``)."""

    def __init__(self) -> None:
        self.values: List[Tuple[float, float]] = []

    def update(self, x: Tensor) -> None:  # noqa: D102
        self.values.append((float(x.max()), float(x.min())))

    def score(self) -> float:
        """``var(max) + var(min)`` (population variance, ``np.var``)."""
        v = torch.tensor(self.values, dtype=torch.float64)
        return float(v.var(0, unbiased=False).sum())


@torch.no_grad()
def dynamic_scores(model: nn.Module, batches: Iterable,
                   forward: Optional[Callable[[nn.Module, Any], Any]] = None
                   ) -> Dict[str, float]:
    """DDTB's dynamic intensity of every DDTB layer: the FP32 network
    (quantization switched off, eval mode) runs ``batches`` and each layer
    scores ``var(batch max) + var(batch min)`` of its input."""
    layers = _ddtb_layers(model)
    if not layers:
        raise ValueError('dynamic_scores: the model has no DDTB layer')
    forward = forward or (lambda mdl, b: mdl(b))
    obs = {n: _MaxMinObserver() for n, _ in layers}
    saved = [(m, m.quant_enabled, getattr(m, 'observer', None))
             for m in model.modules()
             if hasattr(m, 'quant_enabled') and hasattr(m, 'act_quantizer')]
    was_training = model.training
    model.eval()
    try:
        for m, _, _ in saved:
            m.quant_enabled = False
        for name, m in layers:
            m.observer = obs[name]
        for batch in batches:
            forward(model, batch)
    finally:
        for m, enabled, observer in saved:
            m.quant_enabled, m.observer = enabled, observer
        model.train(was_training)
    return {n: o.score() for n, o in obs.items()}


@torch.no_grad()
def select_dynamic(model: nn.Module, scores: Dict[str, float],
                   ratio: float) -> List[str]:
    """Make the ``int(n * ratio)`` layers with the highest score dynamic
    (the official rule, ties in module order) and every other DDTB layer
    static; returns the dynamic names."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f'dynamic ratio must be in [0, 1], got {ratio}')
    layers = dict(_ddtb_layers(model))
    if set(scores) - set(layers):
        raise ValueError('select_dynamic: no DDTB layer '
                         f'{sorted(set(scores) - set(layers))}')
    order = sorted(scores, key=lambda n: -scores[n])
    chosen = order[:int(len(order) * ratio)]
    for name, m in layers.items():
        m.act_quantizer.set_dynamic(name in chosen)
    return [n for n in layers if n in chosen]


register_quantizer('ddtb', DDTBActQuantizer, DDTBWeightQuantizer)

# ------------------------------------------------- the official placements
#: ``quant_cfg.placement='ddtb_official'``: where the official DDTB code
#: quantizes (``model/edsr.py``, ``model/rdn.py``).
#:
#: EDSR (``DDTB_ResBlock``): per ResBlock the identity path
#: (``quant_act1``), the ReLU output before conv2 (``quant_act2``) and the
#: residual branch output (``quant_act3``), i.e. 3 x 16 = 48 quantizers and
#: int(48 x 0.3) = 14 gates. conv1 reads the block input unquantized: the
#: head output for block 0 (float), the sum of the two quantized paths of
#: the previous block for the others (2 quantized terms).
#:
#: RDN (``DDTB_RDB``, ``DDTB_RDN``): the RDB input (``act1``; the quantized
#: tensor is also the block's residual), the input of every dense layer but
#: the first (its ``act``; the concatenation carries the quantized
#: features), the LFF input (``act2``) and the 1x1 GFF input (``act``);
#: the 3x3 GFF conv reads a float input. Every dense/LFF/GFF weight is
#: quantized (min/max, ``configs/ddtb/rdn_*``).
DDTB_OFFICIAL = 'ddtb_official'
register_placement(DDTB_OFFICIAL, 'EDSRNet', Placement(
    weights=[r'body\.\d+\.conv[12]'],
    conv_inputs=[r'body\.\d+\.conv2'],
    input_terms={r'body\.0\.conv1': 0, r'body\.\d+\.conv1': 2},
    residual_sites=[r'body\.\d+'],
    note='zysxmu/DDTB model/edsr.py DDTB_ResBlock'))
register_placement(DDTB_OFFICIAL, 'RDNNet', Placement(
    weights=[r'rdbs\.\d+\.layers\.\d+\.conv', r'rdbs\.\d+\.lff',
             r'gff\.\d+'],
    conv_inputs=[r'rdbs\.\d+\.lff', r'gff\.0'],
    input_terms={r'gff\.1': 0},
    input_sites=[r'rdbs\.\d+', r'rdbs\.\d+\.layers\.[1-9]\d*'],
    note='zysxmu/DDTB model/rdn.py DDTB_RDB, DDTB_RDN'))
