"""Lets ``torch.load(..., weights_only=True)`` read mmengine checkpoints.

Since torch 2.6, ``torch.load`` defaults to ``weights_only=True`` and refuses
every global that is not allow-listed. mmengine (0.10.x) calls ``torch.load``
without ``weights_only`` when it resumes or loads a checkpoint, so a
checkpoint written by a :class:`mmengine.runner.Runner` fails with e.g.
``Unsupported global: GLOBAL mmengine.logging.history_buffer.HistoryBuffer``.

Importing this module (``odm_mm`` does so through ``odm_mm.registry``)
allow-lists exactly what such a checkpoint holds besides tensors, and nothing
else; ``weights_only`` stays on:

* ``mmengine.logging.history_buffer.HistoryBuffer`` (the message hub's log
  scalars) and the lookups ``getattr(HistoryBuffer, 'min' | 'max' |
  'current' | 'mean')`` that pickle stores for its statistics methods. The
  lookup is allowed through :func:`_history_buffer_getattr`, which refuses
  any other object or attribute, instead of allow-listing ``builtins.getattr``.
* numpy arrays and scalars (history buffers, numpy scalars in ``meta``):
  ``numpy.ndarray``, ``numpy.dtype``, the numeric dtype classes
  (``numpy.dtypes.Float64DType`` ...), and ``multiarray._reconstruct`` /
  ``multiarray.scalar`` under both their numpy 1 (``numpy.core``) and numpy 2
  (``numpy._core``) paths, so checkpoints move between numpy versions.
"""
import importlib
from typing import Any, Callable, List, Tuple, Union

import numpy as np
import torch
from mmengine.logging import HistoryBuffer

# Numeric dtype characters: bool, signed/unsigned ints, floats, complexes.
_NUMERIC_DTYPE_CHARS = '?bBhHiIlLqQefdgFDG'
# Attributes that HistoryBuffer pickles as ``getattr(HistoryBuffer, name)``.
_HISTORY_BUFFER_METHODS = frozenset(['min', 'max', 'current', 'mean'])

SafeGlobal = Union[Callable, type, Tuple[Callable, str]]


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` restricted to the statistics methods of HistoryBuffer.

    Args:
        obj: The object the pickle asks an attribute of.
        name: The attribute name.

    Returns:
        The unbound method ``HistoryBuffer.<name>``.

    Raises:
        pickle.UnpicklingError: For any other object or attribute name.
    """
    import pickle
    if obj is HistoryBuffer and isinstance(name, str) and (
            name in _HISTORY_BUFFER_METHODS
            or name in HistoryBuffer._statistics_methods):
        return getattr(obj, name)
    raise pickle.UnpicklingError(
        'odm_mm.checkpoint allows getattr only on HistoryBuffer statistics '
        f'methods {sorted(_HISTORY_BUFFER_METHODS)}, got getattr('
        f'{obj!r}, {name!r}). Load untrusted checkpoints with '
        'weights_only=True only.')


def _multiarray_module():
    """Returns numpy's ``multiarray`` module (``numpy._core`` in numpy 2)."""
    try:
        return importlib.import_module('numpy._core.multiarray')
    except ImportError:  # numpy 1.x
        return importlib.import_module('numpy.core.multiarray')


def mmengine_safe_globals() -> List[SafeGlobal]:
    """Lists the globals an mmengine Runner checkpoint needs besides tensors.

    Returns:
        Entries for :func:`torch.serialization.add_safe_globals`: classes,
        and ``(callable, 'full.path')`` tuples for functions whose pickled
        path differs from their ``__module__`` (numpy 1 vs 2, ``getattr``).
    """
    multiarray = _multiarray_module()
    entries: List[SafeGlobal] = [HistoryBuffer, np.ndarray, np.dtype]
    entries += sorted({type(np.dtype(c))
                       for c in _NUMERIC_DTYPE_CHARS},
                      key=lambda t: t.__name__)
    for prefix in ('numpy.core.multiarray', 'numpy._core.multiarray'):
        entries.append((multiarray._reconstruct, f'{prefix}._reconstruct'))
        entries.append((multiarray.scalar, f'{prefix}.scalar'))
    entries.append((_history_buffer_getattr, 'builtins.getattr'))
    return entries


def register_safe_globals() -> None:
    """Allow-lists :func:`mmengine_safe_globals` for ``weights_only`` loads.

    Idempotent; a no-op on torch versions without ``add_safe_globals``.
    """
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:  # torch < 2.4 has no weights_only default to satisfy
        return
    add(mmengine_safe_globals())


register_safe_globals()
