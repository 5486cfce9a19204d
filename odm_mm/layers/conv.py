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

from .base import QuantInputMixin

__all__ = ['QuantConv']


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
