"""Quantized skip connections for fully quantized networks (Table S2).

Torch-only. In the fully quantized setting (Supplement S2, compared with
FQSR) every convolution is quantized *and* the skip connections carry
``skip_bits`` (8) bit values. For a residual block ``y = x + r(x)`` (mmagic's
``ResidualBlockNoBN`` in EDSR and MSRResNet) the skip branch becomes

    y_q = Q_skip(x) + r(x) = block(x) - x + Q_skip(x)

:func:`quantize_skips` attaches a :class:`SkipQuantizer` to each matching
block as the submodule ``skip_quantizer`` (so the FP32 state-dict keys are
unchanged; the new keys are its bounds) and registers
:func:`_skip_hook` as the block's forward hook, which applies the formula
above to the block's output. The block's ``forward`` itself is not replaced.
``x`` is not modified in place by these blocks (their inplace ReLU acts on
``conv1``'s output), so the hook sees the true block input.

Bounds are Eq. 1 bounds (learnable), initialised by
:func:`odm_mm.calibration.calibrate` from the 1st/99th percentile of the block
inputs like the conv inputs, and excluded from the Eq. 6 offset selection.
The EDSR long skip (``res += x`` in ``EDSRNet.forward``) stays FP32.
"""
from __future__ import annotations

import re
from typing import Any, List, Optional, Sequence

from torch import Tensor, nn

from .quantizers import ActQuantizer

__all__ = ['SkipQuantizer', 'quantize_skips', 'skip_quantizers',
           'SKIP_BLOCK_TYPES']

#: Class names of residual blocks ``y = x + r(x)`` handled by default.
SKIP_BLOCK_TYPES = ('ResidualBlockNoBN', )


class SkipQuantizer(ActQuantizer):
    """Eq. 1 quantizer of a skip connection (default 8 bits).

    Has the same switches as :class:`~odm_mm.layers.QuantConv`
    (``quant_enabled``, ``observer``) so calibration treats both alike.
    """

    def __init__(self, bits: int = 8) -> None:
        super().__init__(bits)
        self.quant_enabled = True
        self.observer: Optional[Any] = None

    def disable_quant(self) -> 'SkipQuantizer':
        """Keep the skip connection in float."""
        self.quant_enabled = False
        return self

    def enable_quant(self) -> 'SkipQuantizer':
        """Quantize the skip connection (default)."""
        self.quant_enabled = True
        return self


def _skip_hook(block: nn.Module, inputs: tuple, output: Tensor) -> Tensor:
    """``block(x) - x + Q_skip(x)``: quantize the identity branch."""
    quant: SkipQuantizer = block.skip_quantizer
    x = inputs[0]
    if quant.observer is not None:
        quant.observer.update(x)
    if not quant.quant_enabled:
        return output
    return output - x + quant(x)


def quantize_skips(model: nn.Module, bits: int = 8,
                   patterns: Optional[Sequence[str]] = None) -> List[str]:
    """Attach skip quantizers to the residual blocks of ``model``.

    Args:
        model: Network to modify in place.
        bits: Skip-connection bit-width (Table S2: 8).
        patterns: Regexes (``re.fullmatch``) of block names; default: every
            module whose class name is in :data:`SKIP_BLOCK_TYPES`.

    Returns:
        Names of the blocks that got a skip quantizer.

    Raises:
        ValueError: if no block matches.
    """
    regexes = [re.compile(p) for p in (patterns or [])]
    names = []
    for name, mod in model.named_modules():
        if hasattr(mod, 'skip_quantizer'):
            continue
        hit = any(r.fullmatch(name) for r in regexes) if regexes else \
            type(mod).__name__ in SKIP_BLOCK_TYPES
        if hit:
            mod.add_module('skip_quantizer', SkipQuantizer(bits))
            mod.register_forward_hook(_skip_hook)
            names.append(name)
    if not names:
        raise ValueError(
            f'quantize_skips: no residual block of {type(model).__name__} '
            f'matches (types {SKIP_BLOCK_TYPES}, patterns '
            f'{[r.pattern for r in regexes]})')
    return names


def skip_quantizers(model: nn.Module) -> List[tuple]:
    """``[(name, SkipQuantizer)]`` of a model, in module order."""
    return [(n, m) for n, m in model.named_modules()
            if isinstance(m, SkipQuantizer)]
