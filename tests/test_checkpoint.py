"""odm_mm.checkpoint: mmengine checkpoints load with weights_only=True."""
import io
import pickle
import uuid

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch import nn
from torch.utils.data import Dataset

import odm_mm.checkpoint  # noqa: F401  (registers the safe globals)


class _ToyModel(BaseModel):

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 1)

    def forward(self, inputs, data_samples=None, mode='tensor'):
        out = self.fc(torch.stack(inputs) if isinstance(inputs, list) else
                      inputs)
        return dict(loss=out.abs().mean()) if mode == 'loss' else out


class _ToyData(Dataset):

    def __len__(self) -> int:
        return 8

    def __getitem__(self, idx):
        return dict(inputs=torch.full((2, ), float(idx)))


def _runner(work_dir, max_iters, **kwargs) -> Runner:
    # A unique experiment name gives each Runner its own MessageHub (the
    # default name is a timestamp, shared by runners built in one second).
    return Runner(
        model=_ToyModel(),
        work_dir=str(work_dir),
        experiment_name=f'toy_{uuid.uuid4().hex}',
        train_dataloader=dict(
            dataset=_ToyData(),
            sampler=dict(type='InfiniteSampler', shuffle=True),
            batch_size=2,
            collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='Adam', lr=1e-3)),
        param_scheduler=dict(
            type='MultiStepLR', by_epoch=False, milestones=[2]),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2,
                            by_epoch=False)),
        **kwargs)


def _save_load(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_runner_checkpoint_loads_weights_only(tmp_path):
    runner = _runner(tmp_path / 'run', max_iters=2)
    runner.train()
    meta = dict(np_f64=np.float64(0.5), np_i64=np.int64(7),
                np_f32=np.float32(1.5), np_bool=np.bool_(True),
                arr=np.arange(4, dtype=np.uint8))
    path = tmp_path / 'ckpt.pth'
    runner.save_checkpoint(str(tmp_path), 'ckpt.pth', meta=meta)

    ckpt = torch.load(path, weights_only=True)
    assert set(ckpt) >= {'meta', 'state_dict', 'message_hub', 'optimizer'}
    buffers = ckpt['message_hub']['log_scalars']
    assert isinstance(buffers['train/loss'], HistoryBuffer)
    assert len(buffers['train/loss'].data[0]) == 2
    assert np.isfinite(buffers['train/loss'].mean())
    assert ckpt['meta']['np_i64'] == 7 and ckpt['meta']['np_bool']
    assert ckpt['meta']['arr'].tolist() == [0, 1, 2, 3]
    assert ckpt['meta']['iter'] == 2


def test_runner_resume_uses_weights_only_load(tmp_path):
    _runner(tmp_path, max_iters=2).train()
    runner = _runner(tmp_path, max_iters=4, resume=True)
    runner.train()  # mmengine's loader: plain torch.load, weights_only=True
    assert runner.iter == 4
    hub = torch.load(tmp_path / 'iter_4.pth', weights_only=True)
    assert len(hub['message_hub']['log_scalars']['train/loss'].data[0]) == 4


@pytest.mark.parametrize('dtype', [
    np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32,
    np.int64, np.uint64, np.float16, np.float32, np.float64, np.complex64
])
def test_numpy_scalars_and_arrays_roundtrip(dtype):
    value = np.ones((2, 3), dtype=dtype)
    out = _save_load(dict(arr=value, scalar=value[0, 0]))
    assert out['arr'].dtype == value.dtype
    assert np.array_equal(out['arr'], value)
    assert out['scalar'] == value[0, 0]


class _Getattr:
    """Pickles as ``getattr(target, name)``."""

    def __init__(self, target, name):
        self.target, self.name = target, name

    def __reduce__(self):
        return getattr, (self.target, self.name)


@pytest.mark.parametrize('target,name', [
    (HistoryBuffer, '__init__'),
    (HistoryBuffer, '__subclasses__'),
    (np.ndarray, 'tofile'),
])
def test_getattr_is_restricted_to_history_buffer_methods(target, name):
    with pytest.raises(pickle.UnpicklingError, match='getattr'):
        _save_load(dict(x=_Getattr(target, name)))


class _Unregistered:
    pass


def test_weights_only_stays_on_for_other_globals():
    with pytest.raises(pickle.UnpicklingError, match='_Unregistered'):
        _save_load(dict(x=_Unregistered()))
