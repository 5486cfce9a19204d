"""The real ../shared/data passes SRFolderDataset's checks at x2/x3/x4.

Skipped when the folder is absent. Builds the datasets of the test
fragments (pairing, LR == floor(HR / s), every PNG verified) and T91.
"""
import copy

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope

import odm_mm
from odm_mm.data_root import merge_cfg_options

from conftest import REPO

pytestmark = pytest.mark.skipif(
    not odm_mm.HAS_MMAGIC, reason='mmagic (with mmcv ops) not importable')

EXPECTED = dict(Set5=5, Set14=14, B100=100)


def _cfg(scale, root):
    cfg = Config.fromfile(
        str(REPO / 'configs' / '_base_' / 'datasets' / f't91_x{scale}.py'))
    merge_cfg_options(cfg, dict(odm_data_root=str(root)))
    return cfg


@pytest.mark.parametrize('scale', [2, 3, 4])
def test_real_test_sets(scale, shared_data_root):
    from mmagic.registry import DATASETS
    init_default_scope('mmagic')
    cfg = _cfg(scale, shared_data_root)
    for name, count in EXPECTED.items():
        dataset = DATASETS.build(
            copy.deepcopy(cfg.odm_sr_test_loaders[name].dataset))
        assert len(dataset) == count


def test_real_bridge_is_loaded_as_rgb(shared_data_root):
    from mmagic.registry import DATASETS
    init_default_scope('mmagic')
    cfg = _cfg(4, shared_data_root)
    dataset = DATASETS.build(
        copy.deepcopy(cfg.odm_sr_test_loaders['Set14'].dataset))
    idx = [dataset.get_data_info(i)['key']
           for i in range(len(dataset))].index('bridge')
    item = dataset[idx]
    assert tuple(item['inputs'].shape) == (3, 128, 128)
    assert tuple(item['data_samples'].gt_img.shape) == (3, 512, 512)


def test_real_t91(shared_data_root):
    from mmagic.registry import DATASETS
    init_default_scope('mmagic')
    cfg = _cfg(4, shared_data_root)
    dataset = DATASETS.build(copy.deepcopy(cfg.odm_t91_dataset))
    assert len(dataset) == 90  # the 78 px image is below the 96 px patch
