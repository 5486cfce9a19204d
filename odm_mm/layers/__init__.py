"""The quantized layers: one file per kind, all torch-only.

* :mod:`.base`: :class:`QuantInputMixin`, what every quantized layer with
  weights shares (quantizers, Eq. 7/8 offsets, switches, the quantized
  operand), :func:`quantize_offset`, :func:`feature_std` (Eq. 2);
* :mod:`.conv`: :class:`QuantConv` (an ``nn.Conv2d``);
* :mod:`.linear`: :class:`QuantLinear` (an ``nn.Linear`` on token
  features, channel axis last);
* :mod:`.act_site`: :class:`ActSite`, an activation quantization point
  that is no layer's input (a placement's sites, the attention operands);
* :mod:`.attention`: :class:`QuantWindowAttention`, a Swin window attention
  whose two matmuls take quantized operands (:class:`QuantAct`).

Everything is re-exported here (``from odm_mm.layers import QuantConv``).
"""
from .base import STD_MODES, QuantInputMixin, feature_std, quantize_offset
from .conv import QuantConv
from .linear import QuantLinear, check_token_method
from .act_site import ActSite, act_sites
from .attention import (ATTENTION_TYPES, QuantAct, QuantWindowAttention,
                        is_window_attention, quant_acts)

__all__ = ['STD_MODES', 'QuantInputMixin', 'feature_std', 'quantize_offset',
           'QuantConv', 'QuantLinear', 'check_token_method', 'ActSite',
           'act_sites', 'ATTENTION_TYPES', 'QuantAct', 'QuantWindowAttention',
           'is_window_attention', 'quant_acts']
