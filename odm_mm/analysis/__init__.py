"""Analysis tools (torch-only): model complexity (storage, MACs, BitOPs)."""
from .complexity import (ComplexityReport, LayerComplexity, count_complexity,
                         is_quant_conv, storage_bits)

__all__ = ['ComplexityReport', 'LayerComplexity', 'count_complexity',
           'is_quant_conv', 'storage_bits']
