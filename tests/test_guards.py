"""NumericalGuardHook: range repair, NaN/Inf stop, last good ckpt kept."""
import math
from types import SimpleNamespace

import pytest
import torch
from mmengine.hooks import Hook
from mmengine.logging import MessageHub
from torch import nn

import odm_mm
from odm_mm.layers import QuantConv

from tiny_odm import load, train, write_config, write_fp32_checkpoint

pytestmark = pytest.mark.skipif(not odm_mm.HAS_MMAGIC,
                                reason='needs mmagic')

if odm_mm.HAS_MMAGIC:
    from mmagic.registry import HOOKS

    from odm_mm import guards
    from odm_mm.guards import NumericalGuardHook

    @HOOKS.register_module(name='_TestPoisonHook', force=True)
    class PoisonHook(Hook):
        """Put NaN into the first conv right before iteration ``at``."""

        priority = 'LOWEST'

        def __init__(self, at: int) -> None:
            self.at = at

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if runner.iter + 1 == self.at:
                model = getattr(runner.model, 'module', runner.model)
                model.generator.conv_first.weight.data.fill_(math.nan)


class _Net(nn.Module):
    """Two quantized convs (ODM and PAMS) with the ODMEditModel interface."""

    def __init__(self) -> None:
        super().__init__()
        self.odm = QuantConv(2, 2, 3, w_bits=2, a_bits=2, method='odm')
        self.pams = QuantConv(2, 2, 3, w_bits=2, a_bits=2, method='pams')

    def quant_layers(self):
        return [('body.0.odm', self.odm), ('body.1.pams', self.pams)]


def _runner(tmp_path, model, it=4, last_ckpt=None):
    hub = MessageHub.get_instance(f'guard_test_{id(model)}_{it}')
    if last_ckpt:
        hub.update_info('last_ckpt', last_ckpt)
    return SimpleNamespace(model=model, iter=it, work_dir=str(tmp_path),
                           message_hub=hub)


@pytest.fixture
def logged(monkeypatch):
    """Messages that odm_mm.guards logs."""
    messages = []
    monkeypatch.setattr(guards, 'print_log',
                        lambda msg, **kw: messages.append(msg))
    return messages


def test_inverted_and_collapsed_ranges_are_repaired(tmp_path, logged):
    net = _Net()
    net.odm.act_quantizer.lower.data.fill_(1.0)
    net.odm.act_quantizer.upper.data.fill_(0.5)
    net.pams.act_quantizer.alpha.data.fill_(-0.2)
    hook = NumericalGuardHook()
    hook.after_train_iter(_runner(tmp_path, net), 4, outputs={
        'loss': torch.tensor(0.5)})
    q = net.odm.act_quantizer
    assert float(q.upper - q.lower) >= q.eps
    assert float(q.upper + q.lower) / 2 == pytest.approx(0.75)
    assert float(net.pams.act_quantizer.alpha) >= net.pams.act_quantizer.eps
    assert len(logged) == 2
    assert "iteration 5" in logged[0] and "'body.0.odm'" in logged[0]
    assert '[1, 0.5]' in logged[0] and 'repaired to' in logged[0]
    assert "'body.1.pams'" in logged[1] and 'alpha=-0.2' in logged[1]
    assert hook.repairs == {'body.0.odm': 1, 'body.1.pams': 1}


def test_healthy_ranges_untouched_and_repeats_rate_limited(tmp_path,
                                                           logged):
    net = _Net()
    net.odm.act_quantizer.init_from_range(-1.0, 2.0)
    hook = NumericalGuardHook()
    runner = _runner(tmp_path, net)
    hook.after_train_iter(runner, 4, outputs={})
    assert logged == [] and hook.repairs == {}
    assert float(net.odm.act_quantizer.lower) == -1.0
    for _ in range(5):  # a range that keeps collapsing
        net.odm.act_quantizer.upper.data.copy_(net.odm.act_quantizer.lower)
        hook.after_train_iter(runner, 4, outputs={})
    assert hook.repairs == {'body.0.odm': 5}
    assert [m.split('repair #')[1][0] for m in logged] == ['1', '2', '4']


def test_nonfinite_loss_stops_naming_iteration_and_checkpoint(tmp_path):
    net = _Net()
    runner = _runner(tmp_path, net, it=6, last_ckpt='/w/iter_6.pth')
    with pytest.raises(FloatingPointError) as err:
        NumericalGuardHook().after_train_iter(runner, 6, outputs={
            'loss': torch.tensor(math.nan), 'loss_pix': torch.tensor(0.1),
            'loss_var': torch.tensor(math.inf)})
    msg = str(err.value)
    assert 'non-finite loss (loss=nan, loss_var=inf)' in msg
    assert 'at iteration 7' in msg and 'NOT saved' in msg
    assert '--resume /w/iter_6.pth' in msg


def test_nonfinite_parameter_stops(tmp_path):
    net = _Net()
    net.pams.weight.data[0, 0, 0, 0] = math.inf
    (tmp_path / 'last_checkpoint').write_text('/w/iter_2.pth')
    with pytest.raises(FloatingPointError,
                       match=r'non-finite parameters \(pams.weight\) at '
                       r'iteration 5.*--resume /w/iter_2.pth'):
        NumericalGuardHook().after_train_iter(_runner(tmp_path, net), 4,
                                              outputs={'loss': 0.3})
    # switched off: no error, and before_train checks the same way
    NumericalGuardHook(check_params=False).after_train_iter(
        _runner(tmp_path, net), 4, outputs={})
    with pytest.raises(FloatingPointError, match='before training'):
        NumericalGuardHook().before_train(_runner(tmp_path, net, it=0))
    # a frozen parameter (the teacher) is only checked before training
    net.pams.weight.requires_grad_(False)
    NumericalGuardHook().after_train_iter(_runner(tmp_path, net), 4,
                                          outputs={})
    with pytest.raises(FloatingPointError, match=r'\(pams.weight\)'):
        NumericalGuardHook().before_train(_runner(tmp_path, net, it=0))


def test_bad_arguments():
    with pytest.raises(TypeError, match='check_loss must be True or False'):
        NumericalGuardHook(check_loss='yes')


def test_nan_run_keeps_last_good_checkpoint(tmp_path, tiny_data_root):
    """tools/train.py: NaN in iteration 2 stops it; iter_1.pth is kept."""
    fp32 = write_fp32_checkpoint(tmp_path / 'fp32.pth')
    cfg = write_config(tmp_path / 'nan.py', fp32, 'guard_nan', max_iters=3,
                       val_interval=10, ckpt_interval=1,
                       extra_hooks=[dict(type='_TestPoisonHook', at=2)])
    work = tmp_path / 'work'
    with pytest.raises(FloatingPointError) as err:
        train(cfg, work, tiny_data_root)
    assert 'non-finite loss' in str(err.value)
    assert_stopped_at_2_keeping_iter_1(str(err.value), work)


def assert_stopped_at_2_keeping_iter_1(msg: str, work) -> None:
    """The guard stopped iteration 2 (poisoned), pointing at the intact
    ``iter_1.pth``, which is all the work dir holds."""
    assert 'at iteration 2' in msg and 'NOT saved' in msg
    assert f'--resume {work / "iter_1.pth"}' in msg
    assert sorted(p.name for p in work.glob('*.pth')) == ['iter_1.pth']
    assert (work / 'last_checkpoint').read_text().strip() == \
        str(work / 'iter_1.pth')
    state = load(work / 'iter_1.pth')['state_dict']
    assert all(bool(torch.isfinite(v).all()) for v in state.values()
               if v.is_floating_point())
