"""The quantizer family: the interface, the table and one file per method.

Torch-only. :mod:`.base` holds the interface (:class:`Quantizer`,
:class:`ActQuantizerBase`), Eq. 1 and the method table
:data:`QUANTIZERS` with ``'odm'`` and ``'pams'``; each other method is one
file that registers itself when imported (:func:`register_quantizer`):

* :mod:`.wcc`: ``'odm_wcc'``, the published ODM's weight clipping
  correction;
* :mod:`.daq`: ``'daq'`` (DAQ, dynamic per-image channel-wise ranges);
* :mod:`.ddtb`: ``'ddtb'`` (DDTB, dual trainable bounds and a dynamic gate,
  with its official placement).

``import odm_mm`` imports all of them. Everything of :mod:`.base` is
re-exported here, so ``from odm_mm.quantizers import fake_quant`` keeps
working.
"""
from .base import *  # noqa: F401,F403
from .base import __all__  # noqa: F401
