"""Result containers of :func:`odm_mm.analysis.count_complexity`.

Torch-free dataclasses: one :class:`LayerComplexity` row per counted module
and a :class:`ComplexityReport` with totals in the paper's units (storage in
K = bits / 32 / 1000, BitOPs in T = 1e12), ``to_dict`` for JSON and
``format_table`` for logs.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

__all__ = ['LayerComplexity', 'ComplexityReport', 'FP_BITS']

FP_BITS = 32


@dataclass
class LayerComplexity:
    """Complexity of one module (a conv, or a module owning parameters).

    Attributes:
        name: Qualified module name (``''`` for the root).
        type: Class name.
        kind: ``'conv'``, ``'qconv'`` (quantized conv), ``'linear'``,
            ``'skip'`` (bit-width aware elementwise op) or ``'params'``.
        params: Stored values (weights, bias, quantizer bounds, enabled
            offsets).
        storage_bits: Their size in bits.
        macs: Multiply-accumulates at the target resolution.
        bitops: Bit operations at the target resolution (offsets included).
        w_bits: Weight bit-width of the MACs (32 for float layers).
        a_bits: Input activation bit-width of the MACs.
        offset_vectors: Enabled offset vectors (shift + scale).
        offset_storage_bits: Part of ``storage_bits`` due to offsets.
        offset_bitops: Part of ``bitops`` due to offsets.
        quantizer_bitops: Part of ``bitops`` due to the activation
            quantizer's run-time work (``runtime_bitops_terms``: DAQ's
            statistics, DDTB's gate).
        calls: Forward calls seen during the probe.
        out_shape: (C, H, W) of the last call's output at the target size.
    """

    name: str
    type: str
    kind: str
    params: int = 0
    storage_bits: int = 0
    macs: int = 0
    bitops: int = 0
    w_bits: int = FP_BITS
    a_bits: int = FP_BITS
    offset_vectors: int = 0
    offset_storage_bits: int = 0
    offset_bitops: int = 0
    quantizer_bitops: int = 0
    calls: int = 0
    out_shape: Tuple[int, ...] = ()


@dataclass
class ComplexityReport:
    """Per-layer rows and totals; see :func:`count_complexity`."""

    model: str
    lr_shape: Tuple[int, int, int]
    out_shape: Tuple[int, ...]
    layers: List[LayerComplexity] = field(default_factory=list)

    def _sum(self, key: str) -> int:
        return sum(getattr(r, key) for r in self.layers)

    @property
    def params(self) -> int:
        """Stored values (FP32 model: its parameter count)."""
        return self._sum('params')

    @property
    def storage_bits(self) -> int:
        """Storage size in bits."""
        return self._sum('storage_bits')

    @property
    def storage_k(self) -> float:
        """Storage size in K (thousands of 32-bit values), as in the paper."""
        return self.storage_bits / FP_BITS / 1e3

    @property
    def macs(self) -> int:
        """Multiply-accumulates at the target resolution."""
        return self._sum('macs')

    @property
    def bitops(self) -> int:
        """Bit operations at the target resolution."""
        return self._sum('bitops')

    @property
    def bitops_t(self) -> float:
        """BitOPs in T (1e12), as in the paper."""
        return self.bitops / 1e12

    @property
    def offset_storage_k(self) -> float:
        """Offset share of the storage, in K."""
        return self._sum('offset_storage_bits') / FP_BITS / 1e3

    @property
    def offset_bitops_t(self) -> float:
        """Offset share of the BitOPs, in T."""
        return self._sum('offset_bitops') / 1e12

    @property
    def quantizer_bitops_t(self) -> float:
        """Share of the quantizers' run-time work in the BitOPs, in T."""
        return self._sum('quantizer_bitops') / 1e12

    def totals(self) -> Dict[str, Any]:
        """Totals as a flat dict (JSON friendly)."""
        return dict(
            model=self.model, lr_shape=list(self.lr_shape),
            out_shape=list(self.out_shape), params=self.params,
            storage_bits=self.storage_bits,
            storage_k=round(self.storage_k, 4), macs=self.macs,
            gmacs=round(self.macs / 1e9, 4), bitops=self.bitops,
            bitops_t=round(self.bitops_t, 4),
            offset_vectors=self._sum('offset_vectors'),
            offset_storage_k=round(self.offset_storage_k, 4),
            offset_bitops_t=round(self.offset_bitops_t, 6),
            quantizer_bitops_t=round(self.quantizer_bitops_t, 6))

    def to_dict(self, layers: bool = True) -> Dict[str, Any]:
        """Totals plus (optionally) one dict per layer."""
        out = self.totals()
        if layers:
            out['layers'] = [asdict(r) for r in self.layers]
            for row in out['layers']:
                row['out_shape'] = list(row['out_shape'])
        return out

    def format_table(self, max_rows: Optional[int] = None) -> str:
        """A fixed-width text table of the rows and the totals."""
        head = (f"{'layer':<32} {'type':<16} {'bits':>7} {'params':>9} "
                f"{'stor. K':>9} {'GMACs':>9} {'BitOPs T':>10} {'off.':>4}")
        lines = [f'{self.model}: LR input {tuple(self.lr_shape)} -> output '
                 f'{tuple(self.out_shape)}', head, '-' * len(head)]
        rows = self.layers if max_rows is None else self.layers[:max_rows]
        for r in rows:
            bits = f'w{r.w_bits}a{r.a_bits}' if r.kind != 'params' else '-'
            lines.append(
                f'{(r.name or "<root>")[:32]:<32} {r.type[:16]:<16} '
                f'{bits:>7} {r.params:>9} '
                f'{r.storage_bits / FP_BITS / 1e3:>9.2f} '
                f'{r.macs / 1e9:>9.2f} {r.bitops / 1e12:>10.4f} '
                f'{r.offset_vectors:>4}')
        if max_rows is not None and len(self.layers) > max_rows:
            lines.append(f'... {len(self.layers) - max_rows} more rows')
        lines.append('-' * len(head))
        lines.append(
            f"{'total':<32} {'':<16} {'':>7} {self.params:>9} "
            f'{self.storage_k:>9.1f} {self.macs / 1e9:>9.1f} '
            f'{self.bitops_t:>10.1f} {self._sum("offset_vectors"):>4}')
        extra = (f', quantizer run-time {self.quantizer_bitops_t:.4f}T'
                 if self._sum('quantizer_bitops') else '')
        lines.append(f'storage {self.storage_k:.1f}K (offsets '
                     f'{self.offset_storage_k:.2f}K), BitOPs '
                     f'{self.bitops_t:.1f}T (offsets '
                     f'{self.offset_bitops_t:.4f}T{extra})')
        return '\n'.join(lines)
