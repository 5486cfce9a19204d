"""One cooperative step on 2 gloo processes x batch B == 1 process x 2B."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.testing import assert_close

from test_odm_model import batch, fp32_ckpt, sample_std_model, sgd_wrapper


def _free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _worker(rank, world, port, ckpt, out):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        from mmengine.logging import MessageHub
        from mmengine.model import MMDistributedDataParallel
        data = batch(4)
        model = sample_std_model(ckpt, data)
        ddp = MMDistributedDataParallel(module=model,
                                        find_unused_parameters=True)
        wrapper = sgd_wrapper(model)
        half = dict(inputs=data['inputs'][2 * rank:2 * rank + 2],
                    data_samples=data['data_samples'][2 * rank:2 * rank + 2])
        ddp.train_step(half, wrapper)
        ratio = MessageHub.get_current_instance().get_scalar(
            'train/conflict_ratio').current()
        torch.save({'params': [p.detach() for p in
                               model.generator.parameters()],
                    'ratio': ratio}, os.path.join(out, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()



def test_cooperative_step_ddp_equals_single_process(tmp_path):
    _, ckpt = fp32_ckpt(tmp_path)
    mp.spawn(_worker, args=(2, _free_port(), ckpt, str(tmp_path)), nprocs=2,
             join=True)
    # single process, full batch
    data = batch(4)
    model = sample_std_model(ckpt, data)
    wrapper = sgd_wrapper(model)
    model.train_step(data, wrapper)
    r0 = torch.load(tmp_path / 'rank0.pt')
    r1 = torch.load(tmp_path / 'rank1.pt')
    for a, b, ref in zip(r0['params'], r1['params'],
                         model.generator.parameters()):
        assert_close(a, b, atol=0, rtol=0)  # ranks agree exactly
        assert_close(a, ref.detach(), rtol=1e-4, atol=1e-6)
    assert r0['ratio'] == r1['ratio']
    assert r0['ratio'] == pytest.approx(wrapper.last_conflict_ratio,
                                        abs=2e-3)
