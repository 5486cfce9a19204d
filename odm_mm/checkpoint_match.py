"""Does a checkpoint fit the model a config builds? One message if not.

Glue (mmengine checkpoints). mmengine's ``Runner.load_checkpoint`` (what
``load_from`` uses, and so ``tools/test.py``) loads non-strictly: a
checkpoint of another network, or the FP32 teacher passed where the trained
quantized model belongs, loads "fine" and tests at 10-13 dB, its only trace
being mmengine's missing/unexpected-key lines in the log.
:func:`check_checkpoint_fits` compares the keys and shapes first and raises
one ``ValueError`` that names a few missing and unexpected keys and says
what the checkpoint looks like (:func:`describe_state`), e.g. "an FP32
EDSRNet state dict (bare generator weights): pass it as
model.fp32_checkpoint".

The frozen FP32 ``teacher`` of :class:`~odm_mm.models.ODMEditModel` (SKT's
reference, unused at test time) is left out of the comparison.
"""
from __future__ import annotations

import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

__all__ = ['read_state', 'describe_state', 'guess_generator',
           'check_checkpoint_fits', 'IGNORED_PREFIXES']

#: Parts of a model state dict that a test does not need.
IGNORED_PREFIXES = ('teacher.',)
#: ``(generator class, key fragments that all occur in its state dict)``,
#: most specific first.
SIGNATURES: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ('SwinIRNet', ('patch_embed', 'layers.0.')),
    ('RRDBNet', ('body.0.rdb1.', 'conv_body.')),
    ('RDNNet', ('sfe1.', 'gff.')),
    ('MSRResNet', ('trunk_net.', 'conv_hr.')),
    ('EDSRNet', ('conv_first.', 'body.0.conv1.', 'conv_after_body.')),
    ('SRCNNNet', ('conv1.', 'conv3.')),
    ('BasicVSRNet', ('spynet.',)),
)
_SHOWN = 3  # keys named per list


def read_state(path: str) -> Tuple[Dict[str, Tensor], dict]:
    """``(state_dict, meta)`` of a checkpoint file or URL.

    Raises:
        FileNotFoundError: no such local file.
        ValueError: the file is not a readable checkpoint.
    """
    from mmengine.runner.checkpoint import _load_checkpoint
    if not str(path).startswith(('http://', 'https://')) and \
            not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint {path}: no such file')
    try:
        ckpt = _load_checkpoint(str(path), map_location='cpu')
    except Exception as err:  # pickle, zip and torch errors vary
        raise ValueError(f'checkpoint {path} is not a readable PyTorch '
                         f'checkpoint ({type(err).__name__}: '
                         f'{str(err)[:200]})') from None
    if not isinstance(ckpt, dict):
        raise ValueError(f'checkpoint {path} holds a {type(ckpt).__name__}, '
                         'not a state dict')
    state = ckpt.get('state_dict', ckpt)
    meta = ckpt.get('meta') if isinstance(ckpt.get('meta'), dict) else {}
    state = {(k[len('module.'):] if k.startswith('module.') else k): v
             for k, v in state.items() if isinstance(v, Tensor)}
    if not state:
        raise ValueError(f'checkpoint {path} holds no tensors')
    return state, meta


def guess_generator(keys: Sequence[str]) -> Optional[str]:
    """The generator class whose key pattern ``keys`` show, or None."""
    joined = '\n'.join(keys)
    for name, parts in SIGNATURES:
        if all(p in joined for p in parts):
            return name
    return None


def _split(state: Dict[str, Tensor]) -> Tuple[Dict[str, Tensor], bool]:
    """Generator keys without the ``generator.`` prefix; was it there?"""
    if any(k.startswith('generator.') for k in state):
        return {k[len('generator.'):]: v for k, v in state.items()
                if k.startswith('generator.')}, True
    return state, False


def _is_quantized(keys: Sequence[str]) -> bool:
    return any('quantizer' in k for k in keys)


def describe_state(state: Dict[str, Tensor]) -> str:
    """What a checkpoint holds, in words: FP32/quantized, network, form.

    Example: ``'an FP32 EDSRNet state dict (bare generator weights, 64
    channels)'``.
    """
    gen, wrapped = _split(state)
    arch = guess_generator(list(gen)) or 'unknown network'
    kind = 'quantized' if _is_quantized(list(gen)) else 'FP32'
    first = gen.get('conv_first.weight', gen.get('sfe1.weight'))
    width = f', {first.shape[0]} channels' if first is not None and \
        first.dim() == 4 else ''
    form = ('mmagic model checkpoint (generator.* keys' if wrapped
            else 'state dict (bare generator weights')
    article = 'an' if kind == 'FP32' else 'a'
    return f'{article} {kind} {arch} {form}{width})'


def _hint(model_keys: List[str], state: Dict[str, Tensor]) -> str:
    gen, _ = _split(state)
    own_gen = [k[len('generator.'):] for k in model_keys
               if k.startswith('generator.')]
    arch, own_arch = guess_generator(list(gen)), guess_generator(own_gen)
    if not any(k.startswith('generator.') for k in state) and {
            f'generator.{k}' for k in state} == set(model_keys):
        return ("it holds the generator's weights without the 'generator.' "
                'prefix of an mmagic model checkpoint: save it as '
                "{'state_dict': {'generator.' + key: value}}, or pass it as "
                'model.fp32_checkpoint')
    if arch and own_arch and arch != own_arch:
        return (f'the config builds {own_arch}: test it with the config it '
                'was trained with')
    if _is_quantized(own_gen) and not _is_quantized(list(gen)):
        return ('it is FP32 weights, not a trained quantized model: pass it '
                'as model.fp32_checkpoint (e.g. --cfg-options '
                'model.fp32_checkpoint=PATH) and train, or test it with its '
                'FP32 config (configs/fp32/)')
    if _is_quantized(list(gen)) and not _is_quantized(own_gen):
        return ('it is a quantized model and the config an FP32 one: test '
                'it with the config it was trained with')
    return ('it was trained with another config (generator size, '
            'quant_cfg.method, placement or bits): test it with that config')


def _names(keys: List[str]) -> str:
    more = len(keys) - _SHOWN
    return ', '.join(keys[:_SHOWN]) + (f' (+{more} more)' if more > 0 else '')


def check_checkpoint_fits(model: torch.nn.Module, path: str,
                          state: Optional[Dict[str, Tensor]] = None) -> None:
    """Raise one ValueError unless ``path`` loads strictly into ``model``.

    Keys under :data:`IGNORED_PREFIXES` (the SKT teacher) are not compared.

    Args:
        model: The model the config builds (e.g. an ODMEditModel).
        path: The checkpoint (named in the message; read if ``state`` is
            None).
        state: Its state dict, if already read.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, or missing/unexpected keys or other shapes:
            a few of each, what the checkpoint is and what to do.
    """
    if state is None:
        state, _ = read_state(path)
    own = {k: v for k, v in model.state_dict().items()
           if not k.startswith(IGNORED_PREFIXES)}
    theirs = {k: v for k, v in state.items()
              if not k.startswith(IGNORED_PREFIXES)}
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    shapes = sorted(k for k in set(own) & set(theirs)
                    if tuple(own[k].shape) != tuple(theirs[k].shape))
    if not (missing or unexpected or shapes):
        return
    parts = []
    if missing:
        parts.append(f'{len(missing)} keys of the model are missing '
                     f'({_names(missing)})')
    if unexpected:
        parts.append(f'{len(unexpected)} keys are not in the model '
                     f'({_names(unexpected)})')
    if shapes:
        parts.append(f'{len(shapes)} tensors have other shapes (' + ', '.join(
            f'{k}: {tuple(theirs[k].shape)} vs {tuple(own[k].shape)}'
            for k in shapes[:_SHOWN]) + ')')
    gen, _ = _split(own)
    what = ('quantized ' if _is_quantized(list(gen)) else 'FP32 ') + (
        guess_generator(list(gen)) or 'generator')
    raise ValueError(
        f'checkpoint {path} does not fit the model of this config '
        f'({type(model).__name__}, {what}): ' + '; '.join(parts) +
        f'. The checkpoint is {describe_state(state)}; '
        f'{_hint(list(own), state)}. (--non-strict loads what fits '
        'anyway.)')
