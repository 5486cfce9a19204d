"""SRFolderDataset checks, the T91 / test pipelines and the ToUint8 transform.

Datasets are built from the real config fragments
(configs/_base_/datasets/t91_x4.py, which includes sr_test_x4.py) pointed at
the tiny generated data root with ``--cfg-options odm_data_root=...``
semantics (``odm_mm.data_root.merge_cfg_options``).
"""
import copy
from pathlib import Path

import cv2
import numpy as np
import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

import odm_mm
from odm_mm.data_root import merge_cfg_options

from conftest import HR_SHAPE, REPO, write_pair

pytestmark = pytest.mark.skipif(
    not odm_mm.HAS_MMAGIC, reason='mmagic (with mmcv ops) not importable')

FRAGMENT = REPO / 'configs' / '_base_' / 'datasets' / 't91_x4.py'


def _cfg(root: Path) -> Config:
    cfg = Config.fromfile(str(FRAGMENT))
    merge_cfg_options(cfg, dict(odm_data_root=str(root)))
    return cfg


def _build(dataset_cfg):
    from mmagic.registry import DATASETS
    init_default_scope('mmagic')
    return DATASETS.build(copy.deepcopy(dataset_cfg))


def test_test_sets_pair_crop_and_load_rgb(tiny_data_root):
    cfg = _cfg(tiny_data_root)
    for name in ('Set5', 'Set14', 'B100'):
        dataset = _build(cfg.odm_sr_test_loaders[name].dataset)
        assert len(dataset) == 2
        for i in range(2):
            sample = dataset[i]['data_samples']
            lr, hr = dataset[i]['inputs'], sample.gt_img
            h, w = HR_SHAPE[0] // 4, HR_SHAPE[1] // 4
            assert tuple(lr.shape) == (3, h, w)  # gray bridge-like -> RGB
            assert tuple(hr.shape) == (3, h * 4, w * 4)  # top-left ModCrop
    # The cropped HR is the top-left corner of the stored HR.
    hr_file = cv2.imread(str(tiny_data_root / 'Set5' / 'HR' / 'img0.png'))
    dataset = _build(cfg.odm_sr_test_loaders['Set5'].dataset)
    idx = [dataset.get_data_info(i)['key']
           for i in range(len(dataset))].index('img0')
    gt = dataset[idx]['data_samples'].gt_img.numpy().transpose(1, 2, 0)
    assert np.array_equal(gt[..., ::-1], hr_file[:gt.shape[0], :gt.shape[1]])


def test_missing_set_fails_only_when_built_with_clear_message(
        tiny_data_root):
    cfg = _cfg(tiny_data_root)  # parses although Urban100 is absent
    assert len(cfg.odm_test_dataloader_urban) == 4
    with pytest.raises(FileNotFoundError) as err:
        _build(cfg.odm_sr_test_loaders['Urban100'].dataset)
    msg = str(err.value)
    assert str(tiny_data_root / 'Urban100') in msg
    assert 'Urban100/LR_bicubic/X4/<name>x4.png' in msg
    assert 'Urban100/HR/<name>.png' in msg
    assert 'ODM_DATA_ROOT' in msg


def test_missing_data_root_named(tmp_path):
    cfg = _cfg(tmp_path / 'nowhere')
    with pytest.raises(FileNotFoundError, match='nowhere'):
        _build(cfg.odm_sr_test_loaders['Set5'].dataset)


def test_unpaired_files_are_listed(fresh_data_root):
    cfg = _cfg(fresh_data_root)
    (fresh_data_root / 'Set5' / 'HR' / 'img1.png').unlink()
    hr = cv2.imread(str(fresh_data_root / 'Set14' / 'HR' / 'img0.png'))
    cv2.imwrite(str(fresh_data_root / 'Set14' / 'HR' / 'extra.png'), hr)
    with pytest.raises(FileNotFoundError, match=r'img1\.png is missing'):
        _build(cfg.odm_sr_test_loaders['Set5'].dataset)
    with pytest.raises(FileNotFoundError,
                       match=r'extra\.png has no img partner'):
        _build(cfg.odm_sr_test_loaders['Set14'].dataset)


def test_corrupt_image_named(fresh_data_root):
    cfg = _cfg(fresh_data_root)
    path = fresh_data_root / 'B100' / 'LR_bicubic' / 'X4' / 'img0x4.png'
    path.write_bytes(path.read_bytes()[:60])  # truncated PNG
    with pytest.raises(ValueError, match='img0x4.png'):
        _build(cfg.odm_sr_test_loaders['B100'].dataset)


def test_lr_of_wrong_scale_rejected(fresh_data_root):
    cfg = _cfg(fresh_data_root)
    hr = cv2.imread(str(fresh_data_root / 'Set5' / 'HR' / 'img0.png'))
    # an x3 LR stored in the X4 folder
    lr = cv2.resize(hr, (hr.shape[1] // 3, hr.shape[0] // 3))
    cv2.imwrite(
        str(fresh_data_root / 'Set5' / 'LR_bicubic' / 'X4' / 'img0x4.png'),
        lr)
    with pytest.raises(ValueError, match=r'not floor\(HR / 4\)'):
        _build(cfg.odm_sr_test_loaders['Set5'].dataset)


def test_t91_skips_small_images_and_makes_matlab_lr(tiny_data_root,
                                                    monkeypatch):
    from mmagic.datasets.transforms import MATLABLikeResize
    import odm_mm.datasets as ds
    logged = []
    monkeypatch.setattr(ds, 'print_log', lambda msg, **kw: logged.append(msg))
    cfg = _cfg(tiny_data_root)
    dataset = _build(cfg.odm_t91_dataset)
    assert len(dataset) == 3  # the 40 px image is smaller than 96 px
    assert any('skipped 1 of 4' in m for m in logged)
    np.random.seed(0)
    item = dataset[0]
    lr = item['inputs'].numpy().transpose(1, 2, 0)
    hr = item['data_samples'].gt_img.numpy().transpose(1, 2, 0)
    assert hr.shape == (96, 96, 3) and lr.shape == (24, 24, 3)
    assert lr.dtype == np.uint8
    ref = MATLABLikeResize(keys=['x'], output_shape=(24, 24))._resize(hr)
    assert np.array_equal(lr, np.clip(np.floor(ref + 0.5), 0, 255))
    assert item['data_samples'].metainfo['img_channel_order'] == 'rgb'


def test_t91_all_images_too_small(fresh_data_root):
    cfg = _cfg(fresh_data_root)
    dataset_cfg = copy.deepcopy(cfg.odm_t91_dataset)
    dataset_cfg.min_gt_size = 1000
    with pytest.raises(ValueError, match='all 4 HR images are smaller'):
        _build(dataset_cfg)


def test_scale_folder_mismatch_in_new_set(tmp_path):
    """A set with HR and LR of another scale only: LR folder missing."""
    write_pair(tmp_path, 'Set5', 'a', np.zeros((40, 40, 3), np.uint8),
               scales=(2, ))
    cfg = _cfg(tmp_path)
    with pytest.raises(FileNotFoundError, match='LR_bicubic/X4 does not'):
        _build(cfg.odm_sr_test_loaders['Set5'].dataset)


def test_to_uint8_rounds_half_up_and_clips():
    from odm_mm.transforms import ToUint8
    img = np.array([[0.49, 0.5, 1.5, 254.6, -3.0, 300.0]])
    out = ToUint8(keys=['img'])(dict(img=img, lst=[img]))['img']
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 1, 2, 255, 0, 255]]
    with pytest.raises(ValueError):
        ToUint8(keys='img')
    with pytest.raises(KeyError, match="'gt'"):
        ToUint8(keys=['gt'])(dict(img=img))
