"""Deployment of quantized generators (docs/deploy.md).

* :mod:`.export`: the integer artifact (packed weight codes, FP32 rest,
  ``manifest.json``) and the storage figure;
* :mod:`.format`: its on-disk container (NumPy only);
* :mod:`.runtime`: integer reference inference, independent of the training
  modules;
* :mod:`.onnx_export`: ONNX with QuantizeLinear/DequantizeLinear (needs
  ``requirements/deploy.txt``; imported on demand).
"""
from ..analysis.complexity import storage_bits
from .export import ExportResult, export_artifact
from .format import read_artifact
from .runtime import IntegerConv2d, load_runtime

__all__ = ['ExportResult', 'export_artifact', 'storage_bits',
           'read_artifact', 'IntegerConv2d', 'load_runtime']
