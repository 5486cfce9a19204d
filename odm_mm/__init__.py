"""odm_mm: ODM (Hong & Lee) quantization-aware training for mmagic.

The algorithm layer (quantizers, QuantConv, QuantLinear, the quantized window
attention, swap, losses, gate, calibration, analysis) depends on torch alone. The OpenMMLab glue (registry entries, editor
model, optim wrapper, hook, datasets) is imported here when mmagic is
installed, so that ``custom_imports=dict(imports=['odm_mm'])`` registers every
component. Without mmagic (a bare GPU box, a BasicSR user) the torch-only
modules still import.
"""
from .version import __version__
from . import quantizers, layers, swap  # noqa: F401  (torch-only)
# each file registers its method: the published ODM's weight clipping
# correction ('odm_wcc') and the baselines ('daq', 'ddtb')
from .quantizers import wcc  # noqa: F401,E402
from .quantizers import daq, ddtb  # noqa: F401,E402
from .layers.attention import QuantWindowAttention
from .layers import QuantConv
from .layers.linear import QuantLinear
from .swap import swap_convs

HAS_MMAGIC = False
try:  # the OpenMMLab glue is optional for the torch-only layer
    import mmagic  # noqa: F401
    HAS_MMAGIC = True
except ModuleNotFoundError as err:  # only a missing mmagic is tolerated
    if err.name not in ('mmagic', 'mmengine', 'mmcv'):
        raise
if HAS_MMAGIC:
    from . import registry  # noqa: F401,E402  (registers the glue)
    from . import ddtb_hook  # noqa: F401,E402  (DDTBCalibHook)
    from . import config_scope  # noqa: E402
    config_scope.install()  # 'odm_mm::odm/_base_/odm.py' in _base_

__all__ = ['__version__', 'QuantConv', 'QuantLinear', 'QuantWindowAttention',
           'swap_convs', 'HAS_MMAGIC']
