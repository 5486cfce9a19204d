"""QuantConv: an ``nn.Conv2d`` with fake-quantized input and weight.

Implements, per convolution, paper Eq. 1 (quantizer), Eq. 7/8 (channel-wise
distribution offsets) and records sigma(x_i) for Eq. 2-3 (variance
regularisation). Torch-only.

Forward pass of a quantized layer::

    x* = (x + S_mu) * S_sigma            # offsets, only where enabled (Eq. 7/8)
    y  = conv(Q_a(x*), Q_w(W)) + bias    # Eq. 1 on activation and weight

Documented choices:

* The layer *is* an ``nn.Conv2d`` (subclass) holding the very same
  ``weight``/``bias`` Parameters as the conv it replaces, so the state-dict
  keys of the FP32 network are unchanged: an FP32 mmagic checkpoint loads into
  the swapped model as is, the extra keys are the quantizer bounds, offsets
  and their flags.
* Offsets ``S_mu`` (zeros) and ``S_sigma`` (ones) exist on every layer with
  their final shape ``(C_in,)``; buffers ``shift_enabled``/``scale_enabled``
  say whether they are used (chosen by Eq. 6, see :mod:`odm_mm.calibration`).
  Both the choice and the values travel in checkpoints. They are initialised
  to the identity so that enabling them does not change the pretrained
  network's function (the 1st/99th percentile bounds measured on the FP32
  network stay valid); training then moves them. When both are enabled on a
  layer the shift is applied first.
* Offsets are quantized to ``offset_bits`` (default 4) with Eq. 1 over their
  own [min, max] (no gradient into that range; STE for the values). A constant
  vector (e.g. the identity at initialisation) is kept exactly.
* With quantization switched off (:meth:`disable_quant`) the layer computes
  ``conv(x*, W) + bias`` with float offsets: identical to the source conv as
  long as the offsets are the identity.
* ``feature_std`` (sigma of x*, the tensor that is quantized) is stored on
  the module during training when ``record_std`` is set, and
  ``feature_mismatch`` (M(x*) of the published version's mismatch
  regulariser, :func:`odm_mm.mismatch.mismatch`, from the very ``Q_a(x*)``
  the conv uses) when ``mismatch_target`` is set. This is done here
  rather than in a forward hook because mmagic blocks use ``ReLU(inplace)``
  and ``res += x`` which mutate tensors hooks would see.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from .mismatch import mismatch
from .quantizers import (act_options, check_bits, fake_quant,
                         quantizer_classes, weight_options)

__all__ = ['QuantConv', 'QuantInputMixin', 'quantize_offset', 'feature_std']

STD_MODES = ('tensor', 'sample')


def quantize_offset(s: Tensor, bits: int) -> Tensor:
    """Quantize an offset vector with Eq. 1 over its own [min, max].

    ``bits == 32`` returns ``s`` unchanged; a constant vector is returned as
    is (one stored value represents it exactly).
    """
    if bits >= 32:
        return s
    lo, hi = s.detach().min(), s.detach().max()
    # constant vector: widen the range to step 1, so that Eq. 1 gives
    # Int(0) * 1 + lo = s exactly (tensor ops only, no host sync)
    hi = torch.where(hi > lo, hi, lo + (2**bits - 1))
    return fake_quant(s, lo, hi, bits)


def feature_std(x: Tensor, mode: str = 'tensor') -> Tensor:
    """Eq. 2, ``M(x) = sigma(x)``.

    ``'tensor'``: std over all elements of the (B, C, H, W) feature;
    ``'sample'``: std over (C, H, W) of each sample, averaged over the batch.
    Both use the unbiased estimator of :func:`torch.std`.
    """
    if mode == 'tensor':
        return x.std()
    if mode == 'sample':
        return x.flatten(1).std(dim=1).mean()
    raise ValueError(f"std mode must be one of {STD_MODES}, got {mode!r}")


def _sync_flags_hook(module: 'QuantConv', _incompatible_keys) -> None:
    module.sync_offset_flags()


class QuantInputMixin:
    """What a quantized layer with weights shares, whatever its kind.

    Holds the two quantizers, the offsets and their flags, the switches and
    the recorded statistics of :class:`QuantConv` and
    :class:`~odm_mm.layers_linear.QuantLinear`; the layer class says where
    its channel axis is (:attr:`offset_view`) and how its input is seen as a
    ``(B, C, H, W)`` feature map by the activation quantizer, the
    calibration observer, L_V and L_M (:meth:`as_feature_map`). Call
    :meth:`_init_quant` at the end of ``__init__``.
    """

    #: Shape the (C,) offsets take to broadcast over the layer's input.
    offset_view: tuple = (1, -1, 1, 1)

    def _init_quant(self, in_channels: int, w_bits: int, a_bits: int,
                    method: str, percentile_j: float,
                    weight_cfg: Optional[dict], offset_bits: int,
                    std_mode: str, factory: dict,
                    act_cfg: Optional[dict] = None) -> None:
        check_bits(offset_bits, 'offset_bits')
        act_cls, weight_cls = quantizer_classes(method)
        if std_mode not in STD_MODES:
            raise ValueError(f'std_mode must be one of {STD_MODES}, got '
                             f'{std_mode!r}')
        self.method = method
        self.offset_bits, self.std_mode = offset_bits, std_mode
        act_cfg = dict(act_cfg or {})
        for key, cfg, allowed, cls in (
                ('act_cfg', act_cfg, act_options(method), act_cls),
                ('weight_cfg', dict(weight_cfg or {}),
                 weight_options(method), weight_cls)):
            unknown = sorted(set(cfg) - set(allowed))
            if unknown:
                kind = 'activation' if key == 'act_cfg' else 'weight'
                raise ValueError(
                    f'{key} {unknown} is not an option of the {kind} '
                    f'quantizer of method {method!r} ({cls.__name__}); it '
                    f'takes {allowed or "no options"}')
        self.act_quantizer = act_cls(a_bits, in_channels=in_channels,
                                     **act_cfg)
        weight_cfg = dict(weight_cfg or {})
        self.weight_quantizer = weight_cls(w_bits, percentile_j=percentile_j,
                                           **weight_cfg)
        self.shift = nn.Parameter(torch.zeros(in_channels, **factory))
        self.scale = nn.Parameter(torch.ones(in_channels, **factory))
        self.register_buffer('shift_enabled', torch.tensor(False))
        self.register_buffer('scale_enabled', torch.tensor(False))
        # python copies of the two flags: reading a CUDA buffer in forward
        # would synchronise the device at every layer
        self._flags = (False, False)
        self.register_load_state_dict_post_hook(_sync_flags_hook)
        self.quant_enabled = True
        self.record_std = False
        self.feature_std: Optional[Tensor] = None
        self.mismatch_target: Optional[str] = None
        self.feature_mismatch: Optional[Tensor] = None
        self.observer: Optional[Any] = None

    @property
    def w_bits(self) -> int:
        """Weight bit-width (held by the weight quantizer)."""
        return self.weight_quantizer.bits

    @property
    def a_bits(self) -> int:
        """Activation bit-width (held by the activation quantizer)."""
        return self.act_quantizer.bits

    # -------------------------------------------------------------- switches
    def enable_quant(self):
        """Quantize input and weight in the forward pass (default)."""
        self.quant_enabled = True
        return self

    def disable_quant(self):
        """Run as a float layer (offsets still applied, unquantized)."""
        self.quant_enabled = False
        return self

    @torch.no_grad()
    def set_offsets(self, shift: bool, scale: bool) -> None:
        """Enable/disable the shift (Eq. 7) and scale (Eq. 8) offsets."""
        self.shift_enabled.fill_(bool(shift))
        self.scale_enabled.fill_(bool(scale))
        self._flags = (bool(shift), bool(scale))

    def sync_offset_flags(self) -> None:
        """Refresh the python copies after the buffers changed in place
        (``load_state_dict`` does this automatically)."""
        self._flags = (bool(self.shift_enabled), bool(self.scale_enabled))

    def offsets_active(self) -> bool:
        """True if an enabled offset differs from the identity."""
        return bool((self.shift_enabled and bool(self.shift.ne(0).any()))
                    or (self.scale_enabled and bool(self.scale.ne(1).any())))

    # ---------------------------------------------------------------- forward
    def apply_offsets(self, x: Tensor) -> Tensor:
        """Eq. 7 then Eq. 8 on the channel axis, where enabled."""
        bits = self.offset_bits if self.quant_enabled else 32
        shift, scale = self._flags
        if shift:
            x = x + quantize_offset(self.shift, bits).view(self.offset_view)
        if scale:
            x = x * quantize_offset(self.scale, bits).view(self.offset_view)
        return x

    def as_feature_map(self, x: Tensor) -> Tensor:
        """The input as the ``(B, C, H, W)`` map the quantizer sees."""
        return x

    def from_feature_map(self, m: Tensor, like: Tensor) -> Tensor:
        """Inverse of :meth:`as_feature_map` (``like``: the input)."""
        return m

    def quantize_input(self, x: Tensor) -> Tensor:
        """Offsets, statistics and ``Q_a``: the operand of the layer."""
        x = self.apply_offsets(x)
        fmap = self.as_feature_map(x)
        if self.observer is not None:
            self.observer.update(fmap)
        if self.record_std and self.training:
            self.feature_std = feature_std(fmap, self.std_mode)
        if not self.quant_enabled:
            self.act_quantizer.note_input(fmap)
            return x
        q = self.act_quantizer(fmap)
        if self.mismatch_target is not None and self.training:
            self.feature_mismatch = mismatch(fmap, q, self.act_quantizer,
                                             self.mismatch_target)
        return self.from_feature_map(q, x)

    def quantized_weight(self) -> Tensor:
        """``Q_w(W)`` (``W`` itself with quantization switched off)."""
        if not self.quant_enabled:
            return self.weight
        return self.weight_quantizer(self.weight)

    def _quant_repr(self) -> str:
        return (f', method={self.method}, w_bits={self.w_bits}, '
                f'a_bits={self.a_bits}, offset_bits={self.offset_bits}')


class QuantConv(QuantInputMixin, nn.Conv2d):
    """Conv2d with Eq. 1 quantizers, Eq. 7/8 offsets and Eq. 2 recording.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation,
            groups, bias, padding_mode: as :class:`torch.nn.Conv2d`.
        w_bits: Weight bit-width (1..8).
        a_bits: Activation (input feature) bit-width (1..8).
        method: A name of :data:`odm_mm.quantizers.QUANTIZERS`: ``'odm'``
            (two learnable bounds, percentile weight range), ``'pams'``
            (symmetric learnable max-scale, max-abs weights) or a registered
            one. The bit-widths live in the quantizers (``w_bits`` and
            ``a_bits`` read them).
        percentile_j: j for the percentile weight range of ``'odm'``.
        weight_cfg: Further keyword arguments of the method's weight
            quantizer (e.g. ``gamma_init`` of ``'odm_wcc'``).
        act_cfg: Further keyword arguments of the method's activation
            quantizer (e.g. ``sigma_bits`` of ``'daq'``).
        offset_bits: Bit-width of S_mu and S_sigma (paper: 4; 32 = float).
        std_mode: ``'tensor'`` or ``'sample'``, see :func:`feature_std`.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: Any,
                 stride: Any = 1,
                 padding: Any = 0,
                 dilation: Any = 1,
                 groups: int = 1,
                 bias: bool = True,
                 padding_mode: str = 'zeros',
                 *,
                 w_bits: int = 4,
                 a_bits: int = 4,
                 method: str = 'odm',
                 percentile_j: float = 1.0,
                 weight_cfg: Optional[dict] = None,
                 act_cfg: Optional[dict] = None,
                 offset_bits: int = 4,
                 std_mode: str = 'tensor',
                 device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride,
                         padding, dilation, groups, bias, padding_mode,
                         device=device, dtype=dtype)
        self._init_quant(in_channels, w_bits, a_bits, method, percentile_j,
                         weight_cfg, offset_bits, std_mode,
                         dict(device=device, dtype=dtype), act_cfg)

    # ------------------------------------------------------------------ build
    @classmethod
    def from_conv(cls, conv: nn.Conv2d, **qcfg: Any) -> 'QuantConv':
        """Build a QuantConv that shares ``conv.weight`` and ``conv.bias``."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f'from_conv needs an nn.Conv2d, got '
                            f'{type(conv).__name__}')
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size,
                conv.stride, conv.padding, conv.dilation, conv.groups,
                conv.bias is not None, conv.padding_mode,
                device=conv.weight.device, dtype=conv.weight.dtype, **qcfg)
        q.weight = conv.weight
        q.bias = conv.bias
        q.train(conv.training)
        return q

    def to_conv(self) -> nn.Conv2d:
        """Return a plain ``nn.Conv2d`` sharing this layer's weight and bias.

        Raises:
            ValueError: if offsets are enabled and not the identity (they
                cannot be folded exactly into a zero-padded convolution).
        """
        if self.offsets_active():
            raise ValueError(
                'to_conv: this QuantConv has enabled, trained distribution '
                'offsets, which a plain Conv2d cannot represent exactly; '
                'keep the QuantConv (disable_quant() for float inference).')
        conv = nn.Conv2d(self.in_channels, self.out_channels,
                         self.kernel_size, self.stride, self.padding,
                         self.dilation, self.groups, self.bias is not None,
                         self.padding_mode, device=self.weight.device,
                         dtype=self.weight.dtype)
        conv.weight = self.weight
        conv.bias = self.bias
        conv.train(self.training)
        return conv

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self._conv_forward(self.quantize_input(x),
                                  self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:  # noqa: D102
        return super().extra_repr() + self._quant_repr()
