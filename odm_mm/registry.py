"""Registers odm_mm's OpenMMLab components into mmagic's registries.

Imported by :mod:`odm_mm` when mmagic is installed. Each glue module
registers its classes on import (``mmagic.registry.MODELS``, ``HOOKS``,
``OPTIM_WRAPPERS``, ``DATASETS``, ``TRANSFORMS``).
"""
from mmagic.registry import MODELS

from .layers.attention import QuantWindowAttention
from .layers import QuantConv
from .layers.linear import QuantLinear
from .losses import SKTLoss, VarianceRegLoss
from .mismatch import MismatchRegLoss

MODELS.register_module(name='QuantConv', module=QuantConv, force=True)
MODELS.register_module(name='QuantLinear', module=QuantLinear, force=True)
MODELS.register_module(name='QuantWindowAttention',
                       module=QuantWindowAttention, force=True)
MODELS.register_module(name='VarianceRegLoss', module=VarianceRegLoss,
                       force=True)
MODELS.register_module(name='SKTLoss', module=SKTLoss, force=True)
MODELS.register_module(name='MismatchRegLoss', module=MismatchRegLoss,
                       force=True)

from . import hooks, models, optim  # noqa: F401,E402
from . import checkpoint  # noqa: F401,E402  (weights_only-safe globals)
from . import datasets  # noqa: F401,E402  (SRFolderDataset)
from . import transforms  # noqa: F401,E402  (ToUint8)
from . import guards  # noqa: F401,E402  (NumericalGuardHook)
from . import recorder  # noqa: F401,E402  (QATRecorderHook)
