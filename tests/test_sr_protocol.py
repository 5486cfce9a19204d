"""The test protocol: mmagic's Y-PSNR on our pipeline equals a hand count.

A fixed bicubic "generator" is evaluated through the real path (test
fragment dataset and pipeline -> mmagic DataPreprocessor -> BaseEditModel ->
mmagic PSNR metric from the fragment's evaluator) and compared with PSNR on
the BT.601 luma computed here from the files with numpy: this fails if RGB
and BGR get mixed up anywhere, if HR is not cropped top-left to LR*scale or
if the border crop is not ``scale``.
"""
import copy

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope
from torch import nn

import odm_mm
from odm_mm.data_root import merge_cfg_options

from conftest import REPO

pytestmark = pytest.mark.skipif(
    not odm_mm.HAS_MMAGIC, reason='mmagic (with mmcv ops) not importable')

SCALE = 4


class _Bicubic(nn.Module):
    """Parameter-free bicubic x``scale`` upsampler."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x):
        return F.interpolate(
            x, scale_factor=self.scale, mode='bicubic', align_corners=False)


def _y(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB float image in [0, 255] (MATLAB rgb2ycbcr)."""
    return rgb @ np.array([65.481, 128.553, 24.966]) / 255. + 16.


def _reference_psnr(root, name: str) -> float:
    lr = cv2.imread(str(root / 'Set5' / 'LR_bicubic' / f'X{SCALE}' /
                        f'{name}x{SCALE}.png'))[..., ::-1]
    hr = cv2.imread(str(root / 'Set5' / 'HR' / f'{name}.png'))[..., ::-1]
    hr = hr[:lr.shape[0] * SCALE, :lr.shape[1] * SCALE].astype(np.float64)
    x = torch.from_numpy(lr.copy()).permute(2, 0, 1)[None].float() / 255.
    sr = _Bicubic(SCALE)(x)[0].permute(1, 2, 0).numpy().astype(np.float64)
    sr = np.clip(sr * 255., 0, 255)
    b = SCALE
    diff = _y(sr)[b:-b, b:-b] - _y(hr)[b:-b, b:-b]
    return 10. * np.log10(255.**2 / np.mean(diff**2))


def test_y_psnr_matches_hand_computation(tiny_data_root):
    from mmagic.registry import DATASETS, METRICS, MODELS
    init_default_scope('mmagic')
    MODELS.register_module('OdmTestBicubic', module=_Bicubic, force=True)
    cfg = Config.fromfile(
        str(REPO / 'configs' / '_base_' / 'datasets' / f'sr_test_x{SCALE}.py'))
    merge_cfg_options(cfg, dict(odm_data_root=str(tiny_data_root)))
    dataset = DATASETS.build(copy.deepcopy(cfg.odm_sr_test_loaders.Set5
                                           .dataset))
    model = MODELS.build(
        dict(
            type='BaseEditModel',
            generator=dict(type='OdmTestBicubic', scale=SCALE),
            pixel_loss=dict(type='L1Loss'),
            data_preprocessor=dict(
                type='DataPreprocessor', mean=[0., 0., 0.],
                std=[255., 255., 255.])))
    metric_cfg = [
        m for m in cfg.odm_sr_test_evaluators.Set5.metrics
        if m.type == 'PSNR'
    ][0]
    assert metric_cfg.convert_to == 'Y' and metric_cfg.crop_border == SCALE
    metric = METRICS.build(copy.deepcopy(metric_cfg))
    metric.prepare(model, torch.utils.data.DataLoader(dataset))
    for i in range(len(dataset)):
        batch = pseudo_collate([dataset[i]])
        with torch.no_grad():
            outputs = model.test_step(batch)
        metric.process(batch, [o.to_dict() for o in outputs])
    result = metric.evaluate()
    expected = np.mean([
        _reference_psnr(tiny_data_root, dataset.get_data_info(i)['key'])
        for i in range(len(dataset))
    ])
    assert set(result) == {'Set5/PSNR'}
    assert result['Set5/PSNR'] == pytest.approx(expected, abs=1e-3)
