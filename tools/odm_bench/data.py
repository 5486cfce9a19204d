"""Benchmark data: photographs bundled with scikit-image, in SR layout.

The embedded demo (``tools/demo.py``) and the smoke test must run on a fresh
machine without the shared SR data and without internet. scikit-image ships
a handful of real photographs inside its wheel (``skimage.data``; the files
below are all in its distribution directory, so no download is attempted).
:func:`prepare_skimage_sets` writes them in the layout the repo's dataset
configs read (``docs/data.md``)::

    <root>/<train>/<name>.png                   HR training images
    <root>/<test>/HR/<name>.png                 HR test images (modcropped)
    <root>/<test>/LR_bicubic/X<s>/<name>x<s>.png

LR test images are made like the training LR of the T91 pipeline: mmagic's
``MATLABLikeResize`` (antialiased bicubic, MATLAB ``imresize``-like) and one
rounding to uint8. Grayscale photographs are stored as 3 equal channels (the
metrics are computed on Y anyway). The split is by image: no test image, nor
a near copy of one, is in the training set.
"""
from __future__ import annotations

import hashlib
import json
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence

import numpy as np

__all__ = ['SKIMAGE_TRAIN', 'SKIMAGE_TEST', 'load_skimage',
           'bicubic_downscale', 'prepare_skimage_sets']

#: Training photographs (colour and grayscale, natural scenes and textures).
SKIMAGE_TRAIN = ['astronaut', 'coffee', 'motorcycle_left', 'camera', 'coins',
                 'moon', 'brick', 'gravel']
#: Test photographs (not near copies of any training image).
SKIMAGE_TEST = ['chelsea', 'rocket']


def load_skimage(name: str) -> np.ndarray:
    """Load ``skimage.data.<name>()`` as an (H, W, 3) uint8 RGB array."""
    from skimage import data
    if name == 'motorcycle_left':  # only exposed as a stereo triple
        img = np.asarray(data.stereo_motorcycle()[0])
    else:
        img = np.asarray(getattr(data, name)())
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    if img.shape[-1] == 4:
        img = img[..., :3]
    if img.dtype != np.uint8:
        raise ValueError(f'skimage.data.{name} is {img.dtype}, not uint8')
    return np.ascontiguousarray(img)


def bicubic_downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """MATLAB-like bicubic ``1/scale`` resize of a uint8 HWC image, rounded.

    ``hr`` must have H and W divisible by ``scale``.
    """
    from mmagic.datasets.transforms import MATLABLikeResize
    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f'HR size {h}x{w} is not a multiple of {scale}')
    out = MATLABLikeResize(keys=['img'], output_shape=(h // scale,
                                                       w // scale))(
        dict(img=hr.astype(np.float32)))['img']
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)


def _crop(img: np.ndarray, size: Optional[int]) -> np.ndarray:
    """Centre crop to ``size`` x ``size`` (no-op for None)."""
    if not size:
        return img
    h, w = img.shape[:2]
    top, left = max((h - size) // 2, 0), max((w - size) // 2, 0)
    return img[top:top + size, left:left + size]


def _write_png(path: str, img: np.ndarray) -> None:
    from PIL import Image
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.fromarray(img).save(path)


def prepare_skimage_sets(root: str, scale: int = 4,
                         train: Sequence[str] = tuple(SKIMAGE_TRAIN),
                         test: Sequence[str] = tuple(SKIMAGE_TEST),
                         train_folder: str = 'skimage_train',
                         test_folder: str = 'skimage_test',
                         crop: Optional[int] = None) -> Dict[str, List[str]]:
    """Write the scikit-image photographs in SR layout below ``root``.

    Idempotent: a stamp file records the arguments; an identical second call
    only checks it.

    Args:
        root: Data root to write (created).
        scale: SR factor of the LR test images.
        train, test: ``skimage.data`` names.
        train_folder, test_folder: Folder names below ``root``.
        crop: Centre-crop every image to this square size (tiny smoke data).

    Returns:
        ``{'train': [names], 'test': [names]}``.
    """
    args = dict(scale=scale, train=list(train), test=list(test),
                train_folder=train_folder, test_folder=test_folder, crop=crop)
    key = hashlib.sha1(json.dumps(args, sort_keys=True).encode()).hexdigest()
    stamp = osp.join(root, '.skimage_stamp')
    if osp.isfile(stamp):
        with open(stamp) as f:
            if f.read().strip() == key:
                return {'train': list(train), 'test': list(test)}
    overlap = set(train) & set(test)
    if overlap:
        raise ValueError(f'images in both train and test: {sorted(overlap)}')
    for name in train:
        _write_png(osp.join(root, train_folder, f'{name}.png'),
                   _crop(load_skimage(name), crop))
    for name in test:
        hr = _crop(load_skimage(name), crop)
        h, w = hr.shape[:2]
        hr = hr[:h - h % scale, :w - w % scale]
        _write_png(osp.join(root, test_folder, 'HR', f'{name}.png'), hr)
        _write_png(
            osp.join(root, test_folder, 'LR_bicubic', f'X{scale}',
                     f'{name}x{scale}.png'), bicubic_downscale(hr, scale))
    with open(stamp, 'w') as f:
        f.write(key)
    return {'train': list(train), 'test': list(test)}
