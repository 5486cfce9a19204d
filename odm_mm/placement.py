"""Placements: where a method quantizes activations, beyond conv inputs.

Torch-only. The default placement of odm_mm quantizes the input of every
swapped conv with the conv's own activation quantizer
(:class:`~odm_mm.layers.QuantConv`). Some official codes quantize other
tensors instead: DDTB's EDSR quantizes the two paths of each residual block
(the identity and the residual branch) and the ReLU output, but not the
block input that conv1 reads; its RDN quantizes the input of each residual
dense block (which is also the block's residual) and of every dense layer
after the first, so the dense concatenation carries quantized features. A
:class:`Placement` describes such a layout per generator class; a method
registers its named placements (:func:`register_placement`) and
``quant_cfg.placement`` selects one. :func:`apply_placement` then

* swaps the convs whose *weights* are quantized (:func:`~odm_mm.swap.
  swap_convs`); those of ``conv_inputs`` keep their activation quantizer,
  the others get a :class:`QuantizedInput` (nothing is done to the input,
  which a site upstream quantized or which stays float; it only tells the
  cost count what the conv multiplies);
* attaches :class:`ActSite` modules (the method's activation quantizer,
  built as QuantConv builds it) with forward hooks: ``input_sites``
  quantize a module's input before it runs, ``residual_sites`` quantize both
  paths of a residual block ``y = x + r(x)``: ``y = Q_1(x) + Q_2(r(x))``.

The sites are submodules (``input_site``, ``skip_site``, ``residual_site``)
of the module they act on, so an FP32 checkpoint still loads (the new keys
are the quantizers'), and the hooks read them from the module (no closure):
deep copies of a model quantize with their own sites. Calibration,
complexity and DDTB's choice of dynamic layers treat an :class:`ActSite`
like a quantized conv's input (it has ``act_quantizer``,
``quant_enabled`` and ``observer``).

Residual sites compute ``r(x) = block(x) - x`` from the block's output, as
:mod:`odm_mm.fullquant` does (the block's ``forward`` is not replaced); the
subtraction may differ from the branch output by a rounding of the float
sum (measure zero for the quantized result).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .layers.act_site import ActSite, act_sites
from .layers import QuantConv
from .quantizers import (ActQuantizerBase, IntegerForm, check_bits,
                         quantizer_classes)
from .swap import swap_convs

__all__ = ['Placement', 'PLACEMENTS', 'register_placement',
           'get_placement', 'apply_placement', 'ActSite', 'QuantizedInput',
           'act_sites']

_NO_FORM = ('this conv does not quantize its input itself (a placement '
            'quantizes it upstream, or it stays float); export the model '
            'with the default conv-input placement.')


@dataclass(frozen=True)
class Placement:
    """Where a method quantizes one generator (regexes are matched with
    ``re.fullmatch`` against qualified module names).

    Attributes:
        weights: Convs whose weights are quantized (swapped).
        conv_inputs: Of those, the convs that quantize their own input.
        input_terms: For the other swapped convs, ``{regex: terms}``: how
            many quantized tensors their input sums (1: a site's output,
            2: the sum of two, e.g. EDSR's skip + residual paths; each is
            one integer conv in the cost count), 0: a float input. Unlisted
            ones: 1.
        input_sites: Modules whose input is quantized before they run.
        residual_sites: Residual blocks ``y = x + r(x)`` whose two paths
            are quantized.
        note: One line on the source of the layout.
    """
    weights: Sequence[str]
    conv_inputs: Sequence[str] = ()
    input_terms: Dict[str, int] = field(default_factory=dict)
    input_sites: Sequence[str] = ()
    residual_sites: Sequence[str] = ()
    note: str = ''


#: ``{placement name: {generator class name: Placement}}``.
PLACEMENTS: Dict[str, Dict[str, Placement]] = {}
#: The default: every swapped conv quantizes its own input.
DEFAULT = 'conv_inputs'


def register_placement(name: str, generator: str,
                       placement: Placement) -> None:
    """Add ``placement`` as ``quant_cfg.placement=name`` for generators of
    class ``generator``."""
    if name == DEFAULT:
        raise ValueError(f'{DEFAULT!r} is the default placement (the conv '
                         'inputs); choose another name')
    PLACEMENTS.setdefault(name, {})[generator] = placement


def get_placement(name: str, generator: str) -> Placement:
    """The registered placement, or one clear error naming what exists."""
    if name not in PLACEMENTS:
        raise ValueError(f'quant_cfg.placement must be {DEFAULT!r} or one of '
                         f'{sorted(PLACEMENTS)}, got {name!r}')
    if generator not in PLACEMENTS[name]:
        raise ValueError(f'placement {name!r} is defined for '
                         f'{sorted(PLACEMENTS[name])}, not {generator}')
    return PLACEMENTS[name][generator]


class QuantizedInput(ActQuantizerBase):
    """The activation "quantizer" of a conv that does not quantize its own
    input: identity. ``bits`` is what the conv multiplies (the bit-width of
    the site that quantized the input, 32 for a float input) and
    ``input_terms`` how many quantized tensors the input sums; both are read
    by the cost count only.

    Args:
        bits: Bit-width of the input (32: float).
        input_terms: Quantized tensors summed in the input (>= 1).
    """

    range_values = 0
    has_integer_form = False

    def __init__(self, bits: int = 32, input_terms: int = 1,
                 eps: float = 1e-4, in_channels: Optional[int] = None
                 ) -> None:
        super().__init__(bits, eps, in_channels)
        if isinstance(input_terms, bool) or not isinstance(
                input_terms, int) or input_terms < 1:
            raise ValueError(f'input_terms must be an int >= 1, got '
                             f'{input_terms!r}')
        self.input_terms = input_terms
        self.initialized.fill_(True)  # nothing to calibrate

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return x

    def init_from_range(self, lower: float, upper: float) -> None:
        """Nothing to calibrate."""

    def repair_(self) -> bool:
        """Nothing to repair."""
        return False

    def range_width(self) -> Tensor:
        """NaN: no range of its own (diagnostics skip it)."""
        return torch.tensor(math.nan)

    def integer_form(self, t: Optional[Tensor] = None) -> IntegerForm:
        """Raises ``ValueError``: the input is quantized elsewhere."""
        raise ValueError(_NO_FORM)

    def codes(self, t: Tensor) -> Tensor:  # noqa: D102
        raise ValueError(_NO_FORM)

    def dequantize(self, codes: Tensor, t: Optional[Tensor] = None
                   ) -> Tensor:  # noqa: D102
        raise ValueError(_NO_FORM)

    def extra_repr(self) -> str:  # noqa: D102
        return f'bits={self.bits}, input_terms={self.input_terms}'


def _input_hook(module: nn.Module, inputs: Tuple[Any, ...]) -> Tuple:
    return (module.input_site(inputs[0]), ) + tuple(inputs[1:])


def _residual_hook(block: nn.Module, inputs: Tuple[Any, ...],
                   output: Tensor) -> Tensor:
    x = inputs[0]
    return block.residual_site(output - x) + block.skip_site(x)


def _site_module(model: nn.Module, placement: str, kind: str,
                 mod_name: str) -> Tuple[nn.Module, List[nn.Conv2d]]:
    """A site's module and its convs (which give the channel counts)."""
    mod = model.get_submodule(mod_name)
    convs = [m for m in mod.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError(f'placement {placement!r}: {kind} site {mod_name} '
                         'has no conv to take its channel count from')
    return mod, convs


def _site(method: str, bits: int, channels: int,
          act_cfg: Optional[dict]) -> ActSite:
    act_cls, _ = quantizer_classes(method)
    return ActSite(act_cls(bits, in_channels=channels, **(act_cfg or {})))


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(re.fullmatch(p, name) for p in patterns)


def apply_placement(model: nn.Module, name: str,
                    exclude: Optional[Sequence[str]] = None,
                    **qcfg: Any) -> List[str]:
    """Quantize ``model`` in place with the registered placement ``name``.

    Args:
        model: The generator.
        name: A name of :data:`PLACEMENTS` (its class must be registered).
        exclude: Regexes of convs never to swap.
        **qcfg: :class:`~odm_mm.layers.QuantConv` keyword arguments
            (``method``, ``w_bits``, ``a_bits``, ``act_cfg`` ...).

    Returns:
        The swapped convs, in module order (the sites: :func:`act_sites`).

    Raises:
        ValueError: an unknown placement, or one whose regexes match no
            module of ``model``.
    """
    spec = get_placement(name, type(model).__name__)
    method = qcfg.get('method', 'odm')
    bits = check_bits(qcfg.get('a_bits', 4), 'a_bits')
    act_cfg = qcfg.get('act_cfg')
    modules = dict(model.named_modules())
    targets = {}
    for kind, patterns in (('input', spec.input_sites),
                           ('residual', spec.residual_sites)):
        hits = [n for n in modules if n and _matches(n, patterns)]
        if patterns and not hits:
            raise ValueError(f'placement {name!r}: {kind} sites {patterns} '
                             f'match no module of {type(model).__name__}')
        targets[kind] = hits
    swapped = swap_convs(model, spec.weights, exclude=exclude, **qcfg)
    for conv_name in swapped:
        if _matches(conv_name, spec.conv_inputs):
            continue
        terms = next((t for p, t in spec.input_terms.items()
                      if re.fullmatch(p, conv_name)), 1)
        conv: QuantConv = model.get_submodule(conv_name)
        conv.act_quantizer = QuantizedInput(bits if terms else 32,
                                            max(terms, 1)).to(
                                                conv.weight.device)
    for mod_name in targets['input']:
        mod, convs = _site_module(model, name, 'input', mod_name)
        mod.add_module('input_site', _site(method, bits,
                                           convs[0].in_channels, act_cfg))
        mod.register_forward_pre_hook(_input_hook)
    for mod_name in targets['residual']:
        mod, convs = _site_module(model, name, 'residual', mod_name)
        mod.add_module('skip_site', _site(method, bits, convs[0].in_channels,
                                          act_cfg))
        mod.add_module('residual_site', _site(method, bits,
                                              convs[-1].out_channels,
                                              act_cfg))
        mod.register_forward_hook(_residual_hook)
    device = next(model.parameters()).device
    for _, site in act_sites(model):
        site.to(device)
    return swapped
