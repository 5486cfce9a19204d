"""Calibration inputs and observed layer outputs for deployment exports.

The integer ONNX form (:mod:`odm_mm.deploy.onnx_integer`) needs, for every
quantized conv whose output leaves the integer domain (e.g. the second conv
of an EDSR residual block, whose output is added to the FP32 skip path),
the range of that output to requantize it to 8 bits; the deploy profile
(:mod:`odm_mm.deploy.profile`) needs the input ranges of the layers it
quantizes. Both come from a forward pass of the fake-quant model over
calibration images.

:func:`default_calibration_inputs` gives four scikit-image photographs
(astronaut, chelsea, coffee, rocket; shipped inside scikit-image, no
download) downscaled x4 with area averaging, as RGB tensors in [0, 1]:
natural-image statistics without a dataset on disk. Pass your own LR images
(e.g. a few training patches) where you have them.
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ['default_calibration_inputs', 'observe_ranges',
           'CALIB_PHOTOS', 'lr_hr_pair', 'photo']

#: scikit-image photographs used by :func:`default_calibration_inputs`.
CALIB_PHOTOS = ('astronaut', 'chelsea', 'coffee', 'rocket')


def lr_hr_pair(img: np.ndarray, scale: int) -> Tuple[Tensor, Tensor]:
    """An RGB uint8 ``(H, W, 3)`` image -> ``(lr, hr)`` tensors.

    HR is the image cropped to a multiple of ``scale``; LR its area-average
    downscale. Both ``(1, 3, h, w)`` float32 in [0, 1].
    """
    import cv2
    h, w = img.shape[0] // scale, img.shape[1] // scale
    hr = np.ascontiguousarray(img[:h * scale, :w * scale, :3])
    lr = cv2.resize(hr, (w, h), interpolation=cv2.INTER_AREA)

    def tensor(a: np.ndarray) -> Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).permute(
            2, 0, 1)[None].float() / 255

    return tensor(lr), tensor(hr)


def photo(name: str) -> np.ndarray:
    """A photograph shipped with scikit-image (``skimage.data.<name>``),
    RGB uint8.

    Raises:
        ImportError: without scikit-image, saying what to pass instead.
    """
    try:
        from skimage import data
    except ImportError as err:
        raise ImportError(
            'the default calibration/check photographs need scikit-image; '
            'pass images yourself (calib=[tensor, ...], RGB in [0, 1])'
        ) from err
    return getattr(data, name)()[..., :3]


def default_calibration_inputs(scale: int = 4,
                               photos: Sequence[str] = CALIB_PHOTOS
                               ) -> List[Tensor]:
    """Photographs shipped with scikit-image as LR-like inputs.

    Args:
        scale: Downscaling factor (area averaging) applied to each photo.
        photos: Names of ``skimage.data`` functions.

    Returns:
        ``(1, 3, H, W)`` float32 tensors in [0, 1].

    Raises:
        ImportError: without scikit-image, saying what to pass instead.
    """
    import cv2
    out = []
    for name in photos:  # the whole photograph, area-downscaled
        img = photo(name)
        h, w = img.shape[0] // scale, img.shape[1] // scale
        small = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        out.append(torch.from_numpy(np.ascontiguousarray(small)).permute(
            2, 0, 1)[None].float() / 255)
    return out


def as_batches(calib: Iterable) -> List[Tensor]:
    """A tensor (N, C, H, W) or an iterable of tensors -> list of batches."""
    if isinstance(calib, Tensor):
        return [calib]
    batches = [torch.as_tensor(b) for b in calib]
    if not batches:
        raise ValueError('calibration needs at least one input')
    return batches


@torch.no_grad()
def observe_ranges(model: nn.Module, names: Sequence[str],
                   inputs: Iterable, which: str = 'output'
                   ) -> Dict[str, Tuple[float, float]]:
    """``[min, max]`` of the outputs (or inputs) of the named submodules.

    Recorded in forward hooks at the moment the module returns, i.e.
    before any in-place op downstream (mmagic's ``ReLU(inplace=True)``)
    changes the tensor.

    Args:
        model: The network (run in eval mode, float32, on CPU).
        names: Qualified names of the modules to observe.
        inputs: Calibration inputs (see :func:`as_batches`).
        which: ``'output'`` or ``'input'`` (the first positional input).
    """
    if which not in ('output', 'input'):
        raise ValueError(f"which must be 'output' or 'input', got {which!r}")
    seen: Dict[str, List[float]] = {}

    def hook(name):
        def fn(_module, args, out):
            t = (out if which == 'output' else args[0]).detach()
            lo, hi = float(t.min()), float(t.max())
            old = seen.get(name)
            seen[name] = [lo, hi] if old is None else [min(old[0], lo),
                                                       max(old[1], hi)]
        return fn

    handles = [model.get_submodule(n).register_forward_hook(hook(n))
               for n in names]
    was_training = model.training
    model.eval()
    try:
        for batch in as_batches(inputs):
            model(batch.float())
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    missing = [n for n in names if n not in seen]
    if missing:
        raise ValueError(f'calibration never ran {missing[:3]}')
    return {n: (v[0], v[1]) for n, v in seen.items()}
