"""QuantLinear: an ``nn.Linear`` with fake-quantized input and weight.

The Linear counterpart of :class:`~odm_mm.layers.QuantConv` (same
quantizers from the same :data:`~odm_mm.quantizers.QUANTIZERS` entry, same
offsets, switches and recorded statistics, :class:`~odm_mm.layers.
QuantInputMixin`), for transformer restorers such as SwinIR whose
``attn.qkv``, ``attn.proj``, ``mlp.fc1`` and ``mlp.fc2`` carry most of the
MACs. Torch-only.

Forward pass::

    x* = (x + S_mu) * S_sigma                  # Eq. 7/8 on the channel axis
    y  = linear(Q_a(x*), Q_w(W)) + bias        # Eq. 1 on input and weight

The channel axis of a token feature. SwinIR's Linear layers see
``(B, N, C)`` tokens (``(B * windows, N, C)`` inside the attention). The
channel axis is the last one, ``C`` (the features a Linear mixes, the axis
of ``in_features``), and the tokens play the role of the pixels: the input
is shown to the activation quantizer, the calibration observer, L_V
(Eq. 2/3) and L_M as the ``(B, C, N, 1)`` map :meth:`QuantLinear.
as_feature_map` returns, so that every per-channel rule written for
``(B, C, H, W)`` conv inputs (DAQ's channel-wise normalisation, Eq. 6's
channel statistics, the offsets' ``(C,)`` vectors) applies to the token's
channels unchanged, and per-tensor rules (ODM, PAMS, sigma of Eq. 2) give
the values they give on the token tensor itself. An input of any rank
``(B, ..., C)`` works (the middle axes are flattened into tokens).

The layer *is* an ``nn.Linear`` holding the very same ``weight``/``bias``
Parameters as the Linear it replaces (:meth:`QuantLinear.from_linear` /
:meth:`QuantLinear.to_linear`), so FP32 checkpoints load unchanged.
Weight quantizers see the ``(out, in)`` weight; the percentile (ODM),
max-abs (PAMS) and clipping-corrected (``odm_wcc``) ranges are per tensor,
as for convolutions.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .base import QuantInputMixin

__all__ = ['QuantLinear']


class QuantLinear(QuantInputMixin, nn.Linear):
    """Linear layer with Eq. 1 quantizers, Eq. 7/8 offsets, Eq. 2 recording.

    Args:
        in_features, out_features, bias: as :class:`torch.nn.Linear`.
        w_bits, a_bits, method, percentile_j, weight_cfg, act_cfg,
            offset_bits, std_mode: as :class:`~odm_mm.layers.QuantConv`.

    Raises:
        ValueError: if the method's activation quantizer cannot quantize
            token features (its class says ``token_features = False``).
    """

    offset_view = (-1, )

    def __init__(self,
                 in_features: int,
                 out_features: int,
                 bias: bool = True,
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
        super().__init__(in_features, out_features, bias, device=device,
                         dtype=dtype)
        self._init_quant(in_features, w_bits, a_bits, method, percentile_j,
                         weight_cfg, offset_bits, std_mode,
                         dict(device=device, dtype=dtype), act_cfg)
        check_token_method(method, type(self.act_quantizer), 'a Linear layer')

    @property
    def in_channels(self) -> int:
        """``in_features`` (the channel axis the offsets and stats use)."""
        return self.in_features

    @property
    def out_channels(self) -> int:
        """``out_features``."""
        return self.out_features

    # ------------------------------------------------------------------ build
    @classmethod
    def from_linear(cls, linear: nn.Linear, **qcfg: Any) -> 'QuantLinear':
        """Build a QuantLinear that shares ``linear.weight`` and ``.bias``."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f'from_linear needs an nn.Linear, got '
                            f'{type(linear).__name__}')
        q = cls(linear.in_features, linear.out_features,
                linear.bias is not None, device=linear.weight.device,
                dtype=linear.weight.dtype, **qcfg)
        q.weight = linear.weight
        q.bias = linear.bias
        q.train(linear.training)
        return q

    def to_linear(self) -> nn.Linear:
        """Return a plain ``nn.Linear`` sharing this layer's weight and bias.

        Raises:
            ValueError: if offsets are enabled and not the identity.
        """
        if self.offsets_active():
            raise ValueError(
                'to_linear: this QuantLinear has enabled, trained '
                'distribution offsets, which a plain Linear cannot represent '
                'exactly; keep the QuantLinear (disable_quant() for float '
                'inference).')
        lin = nn.Linear(self.in_features, self.out_features,
                        self.bias is not None, device=self.weight.device,
                        dtype=self.weight.dtype)
        lin.weight = self.weight
        lin.bias = self.bias
        lin.train(self.training)
        return lin

    # ---------------------------------------------------------------- forward
    def as_feature_map(self, x: Tensor) -> Tensor:
        """``(B, ..., C)`` tokens -> the ``(B, C, N, 1)`` map (module
        docstring)."""
        if x.dim() < 2:
            raise ValueError(f'QuantLinear expects (B, ..., C) inputs, got '
                             f'shape {tuple(x.shape)}')
        return x.reshape(x.shape[0], -1, x.shape[-1]).transpose(
            1, 2).unsqueeze(-1)

    def from_feature_map(self, m: Tensor, like: Tensor) -> Tensor:
        """The ``(B, C, N, 1)`` map back to the input's token layout."""
        return m.squeeze(-1).transpose(1, 2).reshape(like.shape)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return F.linear(self.quantize_input(x), self.quantized_weight(),
                        self.bias)

    def extra_repr(self) -> str:  # noqa: D102
        return super().extra_repr() + self._quant_repr()


def check_token_method(method: str, act_cls: type, where: str) -> None:
    """One message at build time for a method that cannot quantize tokens.

    Activation quantizer classes say so with ``token_features = False`` and
    the reason in ``token_features_why``.
    """
    if getattr(act_cls, 'token_features', True):
        return
    why = getattr(act_cls, 'token_features_why', '')
    raise ValueError(
        f'method {method!r} cannot quantize {where} (token features of a '
        f'transformer): {why or "its activation quantizer says so"}. Keep '
        'these layers FP32 (quant_cfg.patterns / exclude) or use odm, pams '
        'or odm_wcc.')
