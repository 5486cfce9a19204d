"""Checkpoints: FP32 teacher loading, and ``weights_only``-safe globals.

FP32 loading (the one place): :func:`read_fp32_state` reads the generator
weights of a local file or a URL (mmengine's loader; a URL is looked up in
torch's hub cache first) and turns a missing file or an unreachable URL into
one FileNotFoundError naming the ways forward
(:func:`fp32_checkpoint_hint`); :func:`load_fp32_generator` loads them into a
(possibly swapped) generator, strictly except for the quantizer extras.
:class:`~odm_mm.models.ODMEditModel` and :mod:`odm_mm.preflight` both call
these.

Safe globals: lets ``torch.load(..., weights_only=True)`` read mmengine
checkpoints.

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
import os
import os.path as osp
from typing import Any, Callable, Dict, List, Optional, Tuple, Union
from urllib.parse import urlparse

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from torch import Tensor

from .fullquant import skip_quantizers
from .layers.act_site import act_sites
from .swap import quant_layers

__all__ = ['read_fp32_state', 'load_fp32_generator',
           'check_fp32_checkpoint_file', 'fp32_checkpoint_hint',
           'OFFICIAL_FP32', 'FP32_RECIPES', 'register_safe_globals',
           'mmengine_safe_globals']

# Numeric dtype characters: bool, signed/unsigned ints, floats, complexes.
_NUMERIC_DTYPE_CHARS = '?bBhHiIlLqQefdgFDG'
# Attributes that HistoryBuffer pickles as ``getattr(HistoryBuffer, name)``.
_HISTORY_BUFFER_METHODS = frozenset(['min', 'max', 'current', 'mean'])

SafeGlobal = Union[Callable, type, Tuple[Callable, str]]

#: Our FP32 recipes per generator (``configs/fp32/<name>_x<s>_t91.py``).
FP32_RECIPES = {'EDSRNet': 'edsr', 'RDNNet': 'rdn', 'MSRResNet': 'msrresnet'}
_ZOO = 'https://download.openmmlab.com/mmediting/restorers/'
#: Official mmagic DIV2K checkpoints (the ``Weights:`` of its metafiles).
OFFICIAL_FP32 = {
    ('EDSRNet', 2): _ZOO + 'edsr/edsr_x2c64b16_1x16_300k_div2k_20200604-'
    '19fe95ea.pth',
    ('EDSRNet', 3): _ZOO + 'edsr/edsr_x3c64b16_1x16_300k_div2k_20200608-'
    '36d896f4.pth',
    ('EDSRNet', 4): _ZOO + 'edsr/edsr_x4c64b16_1x16_300k_div2k_20200608-'
    '3c2af8a3.pth',
    ('RDNNet', 2): _ZOO + 'rdn/rdn_x2c64b16_g1_1000k_div2k_20210419-'
    'dc146009.pth',
    ('RDNNet', 3): _ZOO + 'rdn/rdn_x3c64b16_g1_1000k_div2k_20210419-'
    'b93cb6aa.pth',
    ('RDNNet', 4): _ZOO + 'rdn/rdn_x4c64b16_g1_1000k_div2k_20210419-'
    '3577d44f.pth',
    ('MSRResNet', 4): _ZOO + 'srresnet_srgan/msrresnet_x4c64b16_1x16_300k_'
    'div2k_20200521-61556be5.pth',
}
_REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
#: The EDSR-baseline x4 teacher shipped beside the repo (T91, 64ch/16).
LOCAL_TEACHERS = {('EDSRNet', 4): 'edsr_x4c64b16_t91_fp32.pth'}


def fp32_checkpoint_hint(gen_type: Optional[str],
                         scale: Optional[int] = None) -> str:
    """How to obtain an FP32 checkpoint for a generator.

    Args:
        gen_type: Generator class name (``'EDSRNet'`` ...).
        scale: Upscale factor, if known.

    Returns:
        One or two sentences naming our FP32 config and the official mmagic
        checkpoint URL where they exist.
    """
    recipe = FP32_RECIPES.get(gen_type or '')
    cfgs = []
    if recipe:
        scales = [scale] if scale else [2, 3, 4]
        cfgs = [f'configs/fp32/{recipe}_x{s}_t91.py' for s in scales
                if osp.isfile(osp.join(_REPO, 'configs', 'fp32',
                                       f'{recipe}_x{s}_t91.py'))]
    train = (f'train it with `python tools/train.py {cfgs[0]}` (its last '
             'checkpoint is work_dirs/<config name>/iter_<N>.pth)'
             if cfgs else 'train it with the matching configs/fp32/ config')
    url = OFFICIAL_FP32.get((gen_type, scale)) if scale else None
    down = (f'download the official mmagic checkpoint {url}'
            if url else 'download the official mmagic checkpoint (the '
            '"Weights:" URL in mmagic configs/<model>/metafile.yml)')
    return (f'To get one, {train}, or {down}; then set '
            'model.fp32_checkpoint=PATH (a URL works too).')


def _gen_info(generator: Union[dict, torch.nn.Module, None]) -> tuple:
    if isinstance(generator, dict):
        return generator.get('type'), generator.get('upscale_factor')
    if isinstance(generator, torch.nn.Module):
        return (type(generator).__name__,
                getattr(generator, 'upscale_factor', None))
    return None, None


def check_fp32_checkpoint_file(path: Optional[str],
                               generator: Union[dict, torch.nn.Module,
                                                None] = None) -> None:
    """Raise one clear FileNotFoundError if a local checkpoint is missing.

    URLs and mmengine prefixes (``scheme://...``) are left to the loader.

    Args:
        path: ``model.fp32_checkpoint``; None/empty is accepted.
        generator: Generator config or module, for the hint.
    """
    if not path or '://' in str(path) or osp.isfile(str(path)):
        return
    gen_type, scale = _gen_info(generator)
    raise FileNotFoundError(
        f'model.fp32_checkpoint: file {path!r} does not exist (working '
        f'directory {os.getcwd()}). ODM needs the pre-trained FP32 '
        f'{gen_type or "generator"} as student init and teacher. ' +
        fp32_checkpoint_hint(gen_type, scale))


def _generator_state(ckpt: Dict) -> Dict[str, Tensor]:
    """Extract the generator's weights from a checkpoint dict."""
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise ValueError('fp32_checkpoint holds no state dict')
    if any(k.startswith('generator.') for k in state):
        state = {k[len('generator.'):]: v for k, v in state.items()
                 if k.startswith('generator.')}
    return state


def load_fp32_generator(generator: torch.nn.Module,
                        state: Dict[str, Tensor], source: str = '') -> None:
    """Load FP32 weights into a (possibly swapped) generator, strictly.

    The QuantConv / QuantLinear extras (bounds, offsets, flags), skip
    quantizers and activation sites (a placement's sites, the attention
    operands; :mod:`odm_mm.layers.act_site`) may be absent; every other
    key must match. Raises one ValueError naming the first offending keys.
    """
    own = generator.state_dict()
    extra = set()
    for name, m in quant_layers(generator):
        extra.update(f'{name}.{k}' for k in m.state_dict()
                     if k not in ('weight', 'bias'))
    for name, m in skip_quantizers(generator) + act_sites(generator):
        extra.update(f'{name}.{k}' for k in m.state_dict())
    required = set(own) - extra
    missing = sorted(required - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(k for k in required & set(state)
                   if tuple(state[k].shape) != tuple(own[k].shape))
    if missing or unexpected or shape:
        parts = []
        if missing:
            parts.append(f'missing keys {missing[:5]}' +
                         (f' (+{len(missing) - 5} more)'
                          if len(missing) > 5 else ''))
        if unexpected:
            parts.append(f'unexpected keys {unexpected[:5]}' +
                         (f' (+{len(unexpected) - 5} more)'
                          if len(unexpected) > 5 else ''))
        if shape:
            parts.append('shape mismatch ' + ', '.join(
                f'{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}'
                for k in shape[:5]))
        raise ValueError(
            f'FP32 checkpoint {source!r} does not fit the generator '
            f'{type(generator).__name__}: ' + '; '.join(parts) +
            '. Check model.generator (mid_channels, num_blocks, '
            'upscale_factor) against the checkpoint.')
    generator.load_state_dict(state, strict=False)

def _hub_cache_path(url: str) -> str:
    """Where mmengine/torch keep a downloaded checkpoint URL."""
    return osp.join(torch.hub.get_dir(), 'checkpoints',
                    osp.basename(urlparse(url).path))


def _unreachable(url: str, err: Exception, generator) -> FileNotFoundError:
    gen_type, scale = _gen_info(generator)
    cache = _hub_cache_path(url)
    local = LOCAL_TEACHERS.get((gen_type, scale))
    ways = [f'download it to {cache} (mmengine then finds it offline) or '
            'anywhere, and pass --cfg-options model.fp32_checkpoint=PATH']
    if local:
        from .data_root import get_models_root
        ways.append(
            'or quantize the T91 teacher that ships in ../shared/models '
            f'({osp.join(get_models_root(), local)}; ODM_MODELS_ROOT moves '
            'it) with the local CPU recipe: python tools/train.py '
            f'configs/odm/local/edsr_x{scale}_w2a2_t91.py')
    else:
        ways.append(fp32_checkpoint_hint(gen_type, scale))
    return FileNotFoundError(
        f'model.fp32_checkpoint: cannot fetch {url} ({err}), and it is not '
        f'in the torch hub cache. Ways forward: ' + '; '.join(ways) + '.')


def read_fp32_state(path: str, generator=None) -> Dict[str, Tensor]:
    """The generator state dict of an FP32 checkpoint file or URL.

    Args:
        path: ``model.fp32_checkpoint``: a local file, an mmengine URL
            (looked up in torch's hub cache first) or prefix.
        generator: Generator config or module, for the error message.

    Raises:
        FileNotFoundError: one message naming the missing file or the
            unreachable URL and what to do.
    """
    from mmengine.runner.checkpoint import _load_checkpoint
    check_fp32_checkpoint_file(path, generator)
    path = str(path)
    if path.startswith(('http://', 'https://')):
        cached = _hub_cache_path(path)
        if osp.isfile(cached):
            path = cached
        else:
            try:
                ckpt = _load_checkpoint(path, map_location='cpu')
            except OSError as err:  # URLError, HTTPError, socket errors
                raise _unreachable(path, getattr(err, 'reason', err),
                                   generator) from None
            return _generator_state(ckpt)
    return _generator_state(_load_checkpoint(path, map_location='cpu'))




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
