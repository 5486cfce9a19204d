"""ActSite: an activation quantization point that is not a layer's input.

Torch-only. Used where a tensor is quantized outside a
:class:`~odm_mm.layers.QuantConv` / :class:`~odm_mm.layers.linear.
QuantLinear`: the sites of a placement (:mod:`odm_mm.placement`, e.g.
DDTB's quantized skip and residual paths) and the operands of the
attention matmuls (:class:`~odm_mm.layers.attention.QuantAct`). Calibration,
checkpoint loading, the guards, the DDP broadcast and the cost count treat
every site alike: it has ``act_quantizer``, ``quant_enabled`` and
``observer`` like a quantized layer's input, and takes no part in the
offset selection.
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

from torch import Tensor, nn

from ..quantizers import ActQuantizerBase

__all__ = ['ActSite', 'act_sites']


class ActSite(nn.Module):
    """An activation quantizer outside a layer with weights.

    Has the switches of :class:`~odm_mm.layers.QuantConv` that calibration
    and the cost count use: ``act_quantizer``, ``quant_enabled``,
    ``observer`` (``update(x)`` with every input).

    Args:
        act_quantizer: The method's activation quantizer.
    """

    def __init__(self, act_quantizer: ActQuantizerBase) -> None:
        super().__init__()
        self.act_quantizer = act_quantizer
        self.quant_enabled = True
        self.observer: Optional[Any] = None

    @property
    def a_bits(self) -> int:
        """Bit-width of the quantized tensor."""
        return self.act_quantizer.bits

    def enable_quant(self) -> 'ActSite':
        """Quantize (default)."""
        self.quant_enabled = True
        return self

    def disable_quant(self) -> 'ActSite':
        """Pass the tensor through in float."""
        self.quant_enabled = False
        return self

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        if self.observer is not None:
            self.observer.update(x)
        if not self.quant_enabled:
            self.act_quantizer.note_input(x)
            return x
        return self.act_quantizer(x)

    def init_from_stats(self, stats: Any) -> None:
        """Calibration: the quantizer's own rule."""
        self.act_quantizer.init_from_stats(stats)


def act_sites(model: nn.Module) -> List[Tuple[str, ActSite]]:
    """``[(name, ActSite)]`` of a model (sites and attention operands), in
    module order."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, ActSite)]
