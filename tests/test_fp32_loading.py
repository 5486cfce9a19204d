"""FP32 teacher loading in one place: files, URLs, the hub cache, and the one
message a user without the official checkpoint or DIV2K gets."""
import copy
import urllib.error

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

import odm_mm  # noqa: F401  (registers)
from conftest import REPO
from mmagic.registry import MODELS
from odm_mm.checkpoint import OFFICIAL_FP32, read_fp32_state
from odm_mm.data_root import merge_cfg_options
from odm_mm.preflight import preflight_check

URL = OFFICIAL_FP32[('EDSRNet', 4)]
GEN = dict(type='EDSRNet', in_channels=3, out_channels=3, mid_channels=8,
           num_blocks=1, upscale_factor=4)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network; an empty torch hub cache in tmp_path."""
    import mmengine.runner.checkpoint as ck

    def refuse(path, *args, **kwargs):
        if str(path).startswith('http'):
            raise urllib.error.URLError('Name or service not known')
        return real(path, *args, **kwargs)

    real = ck._load_checkpoint
    monkeypatch.setattr(ck, '_load_checkpoint', refuse)
    monkeypatch.setattr(torch.hub, 'get_dir', lambda: str(tmp_path / 'hub'))
    return tmp_path / 'hub' / 'checkpoints' / URL.rsplit('/', 1)[1]


def test_unreachable_url_names_the_ways_forward(offline):
    with pytest.raises(FileNotFoundError) as err:
        read_fp32_state(URL, GEN)
    msg = str(err.value)
    assert 'cannot fetch ' + URL in msg and 'Name or service' in msg
    assert str(offline) in msg  # where to put the download
    assert 'model.fp32_checkpoint=PATH' in msg
    assert 'configs/odm/local/edsr_x4_w2a2_t91.py' in msg
    assert 'edsr_x4c64b16_t91_fp32.pth' in msg


def test_url_found_in_the_hub_cache_loads_offline(offline):
    with DefaultScope.overwrite_default_scope('mmagic'):
        gen = MODELS.build(copy.deepcopy(GEN))
    offline.parent.mkdir(parents=True)
    torch.save({'meta': {}, 'state_dict': {
        f'generator.{k}': v for k, v in gen.state_dict().items()}}, offline)
    state = read_fp32_state(URL, GEN)
    assert set(state) == set(gen.state_dict())
    assert torch.equal(state['conv_first.weight'], gen.conv_first.weight)


def test_paper_config_without_checkpoint_and_div2k_is_one_message(
        offline, tmp_path):
    cfg = Config.fromfile(str(REPO / 'configs' / 'odm' / 'edsr_x4_w2a2.py'))
    merge_cfg_options(cfg, {'odm_data_root': str(tmp_path / 'data')})
    with pytest.raises(FileNotFoundError) as err:
        preflight_check(cfg)
    msg = str(err.value)
    assert msg.startswith('(1) model.fp32_checkpoint: cannot fetch')
    assert '| (2) ' in msg and 'DIV2K' in msg
