"""Quiet entry points: third-party noise off, odm_mm's messages kept.

Used by the tools (``train.py``, ``test.py``, ``infer.py``, ``demo.py``)
at their entry points, never by the library: importing ``odm_mm`` changes
no warning filter or logger of the user's program.

* :func:`quiet_third_party` (call it before importing torch/mmagic):
  ignores the import-time deprecation warnings of the OpenMMLab stack's
  dependencies (diffusers, transformers, huggingface_hub, ``torch.jit``,
  ``pkg_resources``, mmengine/mmcv/mmagic's own deprecations). Warnings
  raised by odm_mm, and every other warning, still show.
  ``ODM_WARNINGS=1`` keeps them all.
* :func:`demote_param_logs` (after the imports): mmengine's optimizer
  constructor logs one line per parameter ("teacher.* is skipped since its
  requires_grad=False": the frozen SKT teacher, 70+ lines on EDSR;
  "paramwise_options -- ...:lr=...": 250+ lines); they are logged at
  DEBUG level instead (``log_level='DEBUG'`` shows them), as are the
  dataset's "set5 is not a meta file" notes (mmagic's metainfo strings).
"""
import logging
import os
import re
import warnings

#: Modules whose warnings are import-time noise for an odm_mm user.
NOISY_MODULES = (r'diffusers', r'transformers', r'huggingface_hub',
                 r'torch\.jit', r'torch\.utils\._pytree', r'pkg_resources',
                 r'mmengine', r'mmcv', r'mmagic', r'timm', r'albumentations',
                 r'controlnet_aux', r'mediapipe', r'lpips', r'torchvision',
                 r'google\.protobuf', r'onnx')
#: Messages ignored wherever they come from (they name a dependency).
NOISY_MESSAGES = (r'.*pkg_resources is deprecated',
                  r'.*torch\.jit\.',
                  r'.*`torch\.jit',
                  r'.*declare_namespace',
                  r'.*TorchScript',
                  r'.*The `check_for_updates` argument',
                  r'.*Importing from timm\.models',
                  r'.*torch\.utils\._pytree\._register_pytree_node')
#: mmengine's per-parameter lines, and its dataset's note that a metainfo
#: string (mmagic's ``dataset_type='set5'``) is no file; by module.
DEBUG_LINES = {
    'mmengine.optim.optimizer.default_constructor': re.compile(
        r'.* is skipped since its requires_grad=|paramwise_options -- '),
    'mmengine.dataset.base_dataset': re.compile(
        r'.* is not a meta file, simply parsed as meta information'),
}


def quiet_third_party() -> None:
    """Ignore the dependencies' import-time warnings (see module doc)."""
    if os.environ.get('ODM_WARNINGS'):
        return
    module = r'(%s)(\..*)?$' % '|'.join(NOISY_MODULES)
    warnings.filterwarnings('ignore', module=module)
    for msg in NOISY_MESSAGES:
        warnings.filterwarnings('ignore', message=msg)


def _demote(module, pattern) -> None:
    original = getattr(module.print_log, '__wrapped__', module.print_log)

    def print_log(msg, logger=None, level=logging.INFO):
        if isinstance(msg, str) and pattern.match(msg):
            level = logging.DEBUG
        return original(msg, logger=logger, level=level)

    print_log.__wrapped__ = original
    module.print_log = print_log


def demote_param_logs() -> None:
    """Log mmengine's per-parameter optimizer lines (and its dataset
    metainfo notes) at DEBUG level."""
    import importlib
    for name, pattern in DEBUG_LINES.items():
        _demote(importlib.import_module(name), pattern)
