"""What every quantized layer with weights shares (QuantConv, QuantLinear).

Torch-only. :class:`QuantInputMixin` holds the activation and weight
quantizers of a layer, its Eq. 7/8 offsets with their flags, the switches
(``quant_enabled``, ``observer``, ``record_std``, ``mismatch_target``) and
the quantized operand (:meth:`QuantInputMixin.quantize_input`); the layer
class says where its channel axis is. :func:`quantize_offset` (offsets on
their own grid) and :func:`feature_std` (Eq. 2) live here too. The layer
semantics are documented in :mod:`odm_mm.layers.conv`.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn

from ..mismatch import mismatch
from ..quantizers import (act_options, check_bits, fake_quant,
                          quantizer_classes, weight_options)

__all__ = ['QuantInputMixin', 'quantize_offset', 'feature_std', 'STD_MODES']

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


def _sync_flags_hook(module: 'QuantInputMixin', _incompatible_keys) -> None:
    module.sync_offset_flags()


class QuantInputMixin:
    """What a quantized layer with weights shares, whatever its kind.

    Holds the two quantizers, the offsets and their flags, the switches and
    the recorded statistics of :class:`QuantConv` and
    :class:`~odm_mm.layers.linear.QuantLinear`; the layer class says where
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
