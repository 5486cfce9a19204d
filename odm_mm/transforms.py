"""``ToUint8``: round float images to uint8, as stored LR files are.

Used after mmagic's ``MATLABLikeResize`` when LR images are made on the fly
from HR patches (the T91 training set). ``MATLABLikeResize`` returns float64
values (its uint8 branch never runs: it casts to float32 first), while the
benchmark LR files are uint8 made by MATLAB ``imresize``; rounding here
(half away from zero, i.e. MATLAB ``round`` for values >= 0) and clipping to
[0, 255] gives training inputs the same value grid as test inputs.
"""
from typing import List, Sequence

import numpy as np
from mmcv.transforms import BaseTransform

from mmagic.registry import TRANSFORMS


@TRANSFORMS.register_module()
class ToUint8(BaseTransform):
    """Rounds (half up) and clips images to uint8.

    Modified keys are the ones in ``keys``; each value is an ndarray or a
    list of ndarrays.

    Args:
        keys: Keys of the images to convert.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        if isinstance(keys, str) or not keys:
            raise ValueError(
                f'keys must be a non-empty list of str, got {keys!r}')
        self.keys: List[str] = list(keys)

    @staticmethod
    def _convert(img: np.ndarray) -> np.ndarray:
        if not isinstance(img, np.ndarray):
            raise TypeError(f'ToUint8 expects np.ndarray, got {type(img)}')
        if img.dtype == np.uint8:
            return img
        return np.clip(np.floor(img + 0.5), 0, 255).astype(np.uint8)

    def transform(self, results: dict) -> dict:
        """Converts ``results[key]`` for every key in ``self.keys``.

        Args:
            results: The pipeline's results dict.

        Returns:
            The same dict with uint8 images.
        """
        for key in self.keys:
            if key not in results:
                raise KeyError(f'ToUint8: key {key!r} not in results '
                               f'(keys: {sorted(results)})')
            value = results[key]
            if isinstance(value, list):
                results[key] = [self._convert(v) for v in value]
            else:
                results[key] = self._convert(value)
        return results

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(keys={self.keys})'
