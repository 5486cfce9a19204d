"""Checks a deployed model against the fake-quant one on real images.

A random input says little: the integer ONNX form and the fake-quant model
agree to ~1e-7 on a 32x32 noise patch, but differ by up to a few 1e-2 on a
photograph, where many activations sit at rounding boundaries of the
low-bit grids and the 8-bit requantisation of conv outputs that return to
float adds its own rounding (docs/deploy.md). :func:`check_images` gives
real images: Set5 (LR bicubic + HR) when the data root holds it, else
photographs shipped with scikit-image, downscaled here (area averaging)
as LR with the photograph as HR. :func:`compare` prints what a user needs
to trust an export: the largest ``|difference|`` and the Y-PSNR of both
models against HR.

Y-PSNR follows the package's protocol (mmagic's ``PSNR`` with
``convert_to='Y'``: BT.601 Y of 8-bit RGB, ``crop_border = scale``).
Torch/NumPy only.
"""
from __future__ import annotations

import glob
import math
import os.path as osp
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from ..data_root import get_data_root
from .calib import lr_hr_pair, photo

__all__ = ['CheckImage', 'check_images', 'y_psnr', 'compare',
           'CheckResult', 'onnx_callable', 'format_results', 'tensor_fn',
           'read_rgb', 'test_set_images']


@dataclass
class CheckImage:
    """An LR input and its HR reference (``(1, 3, H, W)`` RGB in [0, 1])."""

    name: str
    lr: Tensor
    hr: Tensor


def read_rgb(path: str) -> Tensor:
    """An image file as a ``(1, 3, H, W)`` RGB tensor in [0, 1]."""
    import cv2
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f'cannot read image {path}')
    img = np.ascontiguousarray(img[..., ::-1])
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255


def test_set_images(root: str, test_set: str, scale: int,
                    stems: Optional[Sequence[str]] = None
                    ) -> List[CheckImage]:
    """HR/LR pairs of a benchmark folder (``<set>/HR/<stem>.png`` with
    ``<set>/LR_bicubic/X<s>/<stem>x<s>.png``, docs/data.md).

    Args:
        root: The data root.
        test_set: E.g. ``'Set5'``.
        scale: Upscaling factor.
        stems: Which images (all HR images with an LR partner if None).

    Returns:
        The pairs; empty if any requested pair is missing.
    """
    if stems is None:
        stems = [osp.splitext(osp.basename(p))[0] for p in sorted(
            glob.glob(osp.join(root, test_set, 'HR', '*.png')))]
    out = []
    for stem in stems:
        lr = osp.join(root, test_set, 'LR_bicubic', f'X{scale}',
                      f'{stem}x{scale}.png')
        hr = osp.join(root, test_set, 'HR', f'{stem}.png')
        if not (osp.isfile(lr) and osp.isfile(hr)):
            return []
        out.append(CheckImage(f'{test_set}/{stem}', read_rgb(lr),
                              read_rgb(hr)))
    return out


def _photos(scale: int, names: Sequence[str]) -> List[CheckImage]:
    return [CheckImage(f'skimage/{name}', *lr_hr_pair(photo(name), scale))
            for name in names]


def check_images(scale: int, data_root: Optional[str] = None,
                 set5: Sequence[str] = ('baby', 'butterfly'),
                 photos: Sequence[str] = ('astronaut', 'coffee')
                 ) -> List[CheckImage]:
    """Real check images: Set5 under ``data_root`` if there, else photos.

    Args:
        scale: Upscaling factor of the model.
        data_root: Folder holding ``Set5/`` (default: the package's data
            root, ``ODM_DATA_ROOT`` or ``../shared/data``).
        set5: Set5 image names to use.
        photos: ``skimage.data`` photographs used without Set5.
    """
    if data_root is None:
        data_root = get_data_root()
    return (test_set_images(data_root, 'Set5', scale, set5) or
            _photos(scale, photos))


def _y(img: Tensor) -> np.ndarray:
    x = (img.detach().double().clamp(0, 1) * 255).round()[0].numpy()
    return 16.0 + (65.481 * x[0] + 128.553 * x[1] + 24.966 * x[2]) / 255.0


def y_psnr(sr: Tensor, hr: Tensor, crop: int) -> float:
    """Y-PSNR (dB) of an RGB [0, 1] output against HR, ``crop`` border
    pixels removed (HR is cropped to the output size first)."""
    hr = hr[..., :sr.shape[-2], :sr.shape[-1]]
    a, b = _y(sr), _y(hr)
    if crop:
        a, b = a[crop:-crop, crop:-crop], b[crop:-crop, crop:-crop]
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@dataclass
class CheckResult:
    """One image: largest ``|deployed - fake-quant|`` and both PSNRs."""

    name: str
    max_diff: float
    psnr_ref: float
    psnr_deployed: float

    @property
    def psnr_delta(self) -> float:
        """Deployed minus fake-quant Y-PSNR (dB)."""
        return self.psnr_deployed - self.psnr_ref


@torch.no_grad()
def compare(reference: Callable[[Tensor], Tensor],
            deployed: Callable[[Tensor], Tensor],
            images: Sequence[CheckImage], scale: int) -> List[CheckResult]:
    """Run both models on each image.

    Args:
        reference: The fake-quant generator (or any callable on tensors).
        deployed: The deployed model as a callable on tensors (e.g.
            :func:`onnx_callable`).
        images: From :func:`check_images`.
        scale: Upscaling factor (the PSNR border crop).
    """
    out = []
    for img in images:
        ref = reference(img.lr).float()
        dep = deployed(img.lr).float()
        out.append(CheckResult(img.name, float((dep - ref).abs().max()),
                               y_psnr(ref, img.hr, scale),
                               y_psnr(dep, img.hr, scale)))
    return out


def onnx_callable(session) -> Callable[[Tensor], Tensor]:
    """An onnxruntime session as a callable ``Tensor -> Tensor``."""
    name = session.get_inputs()[0].name

    def run(x: Tensor) -> Tensor:
        y = session.run(None, {name: x.detach().float().numpy()})[0]
        return torch.from_numpy(y)

    return run


def format_results(results: Sequence[CheckResult], label: str) -> str:
    """One line per image, then the mean PSNR difference."""
    lines = [f'{label} vs fake-quant on {len(results)} real image(s):']
    for r in results:
        lines.append(f'  {r.name}: max |diff| = {r.max_diff:.3g}, Y-PSNR '
                     f'{r.psnr_deployed:.3f} dB (fake-quant '
                     f'{r.psnr_ref:.3f}, diff {r.psnr_delta:+.4f})')
    if results:
        mean = sum(r.psnr_delta for r in results) / len(results)
        lines.append(f'  mean PSNR difference {mean:+.4f} dB')
    return '\n'.join(lines)


def tensor_fn(module: torch.nn.Module) -> Callable[[Tensor], Tensor]:
    """``module`` in eval mode as a callable."""
    module.eval()
    return lambda x: module(x)

