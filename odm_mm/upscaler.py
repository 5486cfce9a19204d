"""Upscale images with a trained model: checkpoint, artifact or ONNX.

Glue (mmengine/mmagic). :class:`Upscaler` turns an RGB ``uint8`` image into
the upscaled RGB ``uint8`` image, whatever form the model has:

* a training checkpoint (``.pth``): the config's model is built and the
  checkpoint loaded strictly (:func:`~odm_mm.checkpoint_match.
  check_checkpoint_fits`; the FP32 teacher file is not needed), and its
  ``generator`` runs in float32;
* a deployment artifact folder (``manifest.json``, ``tools/deploy/
  export.py``): :func:`odm_mm.deploy.load_runtime`, integer convs;
* an ``.onnx`` file (``export.py --onnx``): onnxruntime, through
  :func:`odm_mm.deploy.onnx_export.ort_session`.

The pixel normalisation is the config's ``data_preprocessor`` (mmagic's
``DataPreprocessor``: ``(x - mean) / std`` in, ``y * std + mean`` out, e.g.
``[0, 255] <-> [0, 1]``), and images are processed tile by tile
(:func:`~odm_mm.tiling.tiled_upscale`) so the memory stays bounded.
"""
from __future__ import annotations

import copy
import os.path as osp
from typing import Callable, Optional

import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope
from torch import Tensor

from .tiling import tiled_upscale

__all__ = ['Upscaler', 'model_kind']


def model_kind(path: str) -> str:
    """``'onnx'``, ``'artifact'`` or ``'checkpoint'`` for a model path."""
    if osp.isdir(path):
        if not osp.isfile(osp.join(path, 'manifest.json')):
            raise FileNotFoundError(
                f'{path} is a folder without manifest.json: not a deployment '
                'artifact of tools/deploy/export.py')
        return 'artifact'
    if not osp.isfile(path):
        raise FileNotFoundError(f'model {path}: no such file or folder')
    return 'onnx' if path.lower().endswith('.onnx') else 'checkpoint'


def _build_model(cfg: Config):
    from mmagic.registry import MODELS
    model_cfg = copy.deepcopy(cfg.model)
    if cfg.get('data_preprocessor') is not None:
        model_cfg.setdefault('data_preprocessor', cfg.data_preprocessor)
    return MODELS.build(model_cfg)


def _onnx_net(path: str) -> Callable[[Tensor], Tensor]:
    from .deploy.onnx_export import ort_session
    session = ort_session(path)
    name = session.get_inputs()[0].name

    def run(x: Tensor) -> Tensor:
        out = session.run(None, {name: x.detach().cpu().numpy()})[0]
        return torch.from_numpy(np.ascontiguousarray(out))
    return run


class Upscaler:
    """An RGB ``uint8`` image in, the upscaled RGB ``uint8`` image out.

    Args:
        config: The model's config (its generator and data preprocessor).
        model: A checkpoint, a deployment artifact folder or an ``.onnx``
            file (:func:`model_kind`).
        tile: LR tile size (0: whole images), see
            :func:`~odm_mm.tiling.tiled_upscale`.
        overlap: LR context pixels around each tile.
        strict: Refuse a checkpoint that does not fit the model.
    """

    def __init__(self, config: Config, model: str, tile: int = 128,
                 overlap: int = 40, strict: bool = True) -> None:
        self.kind = model_kind(model)
        self.tile, self.overlap = tile, overlap
        with DefaultScope.overwrite_default_scope(
                config.get('default_scope', 'mmagic')):
            built = _build_model(config)
        pre = built.data_preprocessor
        self.mean = getattr(pre, 'mean', torch.zeros(3, 1, 1)).float()
        self.std = getattr(pre, 'std', torch.ones(3, 1, 1)).float()
        self.net: Callable[[Tensor], Tensor]
        if self.kind == 'checkpoint':
            from .checkpoint_match import (IGNORED_PREFIXES,
                                           check_checkpoint_fits, read_state)
            state, _ = read_state(model)
            if strict:
                check_checkpoint_fits(built, model, state)
            built.load_state_dict(
                {k: v for k, v in state.items()
                 if not k.startswith(IGNORED_PREFIXES)}, strict=False)
            self.net = built.generator.eval()
        elif self.kind == 'artifact':
            from .deploy import load_runtime
            self.net = load_runtime(model)
        else:
            self.net = _onnx_net(model)
        del built

    def to_input(self, img: np.ndarray) -> Tensor:
        """(H, W, 3) uint8 RGB -> the normalised (1, 3, H, W) batch."""
        if img.ndim != 3 or img.shape[2] != 3:
            raise ValueError(f'expected an (H, W, 3) RGB image, got shape '
                             f'{img.shape}')
        x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)
        return ((x.float() - self.mean.view(-1, 1, 1)) /
                self.std.view(-1, 1, 1))[None]

    def from_output(self, y: Tensor) -> np.ndarray:
        """The network's (1, 3, H, W) output -> (H, W, 3) uint8 RGB."""
        y = y[0].float() * self.std.view(-1, 1, 1) + self.mean.view(-1, 1, 1)
        return y.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()

    def upscale_tensor(self, x: Tensor, tile: Optional[int] = None) -> Tensor:
        """The network's output for a normalised batch, tiled."""
        tile = self.tile if tile is None else tile
        with torch.no_grad():
            return tiled_upscale(self.net, x, tile, self.overlap)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        """Upscale one (H, W, 3) uint8 RGB image."""
        return self.from_output(self.upscale_tensor(self.to_input(img)))
