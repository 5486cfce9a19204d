"""The quantizer interface: every registered method owns its integer form,
calibration and cost; a new method is one class pair + one table entry."""
import pytest
import torch
from torch import nn
from torch.testing import assert_close

from odm_mm.analysis.complexity import storage_bits
from odm_mm.calibration import calibrate_model
from odm_mm.layers import QuantConv
from odm_mm.quantizers import (QUANTIZERS, ActQuantizerBase, IntegerForm,
                               WeightQuantizer, eq1_codes, eq1_dequantize,
                               eq1_integer_form, fake_quant, quantizer_classes,
                               register_quantizer)


class FixedRangeActQuantizer(ActQuantizerBase):
    """Toy method: Eq. 1 over a range frozen at calibration (min/max of the
    1st/99th percentiles), no learnable parameter; stored as 2 floats."""

    def __init__(self, bits, eps=1e-4, in_channels=None):
        super().__init__(bits, eps, in_channels)
        self.register_buffer('lo', torch.tensor(0.0))
        self.register_buffer('hi', torch.tensor(1.0))

    def init_from_range(self, lower, upper):
        self.lo.fill_(float(lower))
        self.hi.fill_(max(float(upper), float(lower) + self.eps))
        self.initialized.fill_(True)

    def range_width(self):
        return self.hi - self.lo

    def repair_(self):
        return False

    def forward(self, x):
        return fake_quant(x, self.lo, self.hi, self.bits)

    def integer_form(self, t=None):
        return eq1_integer_form(self.lo, self.hi, self.bits,
                         dict(lower=self.lo, upper=self.hi))

    def _codes(self, x):
        return eq1_codes(x, self.lo, self.hi, self.bits)

    def _dequantize(self, codes):
        return eq1_dequantize(codes, self.lo, self.hi, self.bits)


@pytest.fixture
def toy_method():
    register_quantizer('toy_fixed', FixedRangeActQuantizer, WeightQuantizer)
    yield 'toy_fixed'
    QUANTIZERS.pop('toy_fixed')


def _calibrated(method, bits):
    torch.manual_seed(0)
    conv = QuantConv(4, 4, 3, padding=1, w_bits=bits, a_bits=bits,
                     method=method)
    x = torch.randn(2, 4, 8, 8) * 2 + 0.5
    calibrate_model(nn.Sequential(conv), [x], shift=False, scale=False)
    return conv, x


@pytest.mark.parametrize('bits', [1, 2, 3, 4, 8])
def test_every_method_integer_form_reproduces_forward(bits):
    for method in sorted(QUANTIZERS):
        conv, x = _calibrated(method, bits)
        for q, t in ((conv.act_quantizer, x),
                     (conv.weight_quantizer, conv.weight.detach())):
            codes = q.codes(t)
            # exact: the integer codes give back the fake-quant values
            assert_close(q.dequantize(codes, t), q(t).detach(), atol=0,
                         rtol=0)
            assert torch.equal(codes, codes.round())
            if not q.has_integer_form:  # run-time range (DAQ): one error
                with pytest.raises(ValueError, match='integer form'):
                    q.integer_form(t)
                continue
            form = q.integer_form(t)
            assert isinstance(form, IntegerForm)
            assert codes.min() >= 0 and codes.max() <= form.levels - 1
            assert 2**form.code_bits >= form.levels
            # and the affine description agrees to rounding
            assert_close(form.offset + (codes - form.zero) * form.scale,
                         q(t).detach(), atol=1e-5, rtol=1e-5)
            assert len(form.params) == q.range_values


def test_unknown_method_is_one_clear_error():
    with pytest.raises(ValueError, match="method must be one of"):
        QuantConv(1, 1, 1, method='nope')
    with pytest.raises(ValueError, match='odm'):
        quantizer_classes('nope')
    with pytest.raises(TypeError, match='ActQuantizerBase'):
        register_quantizer('bad', nn.Identity, WeightQuantizer)


def test_bits_live_in_the_quantizers():
    conv = QuantConv(2, 2, 1, w_bits=3, a_bits=5)
    assert (conv.w_bits, conv.a_bits) == (3, 5)
    assert conv.weight_quantizer.bits == 3 and conv.act_quantizer.bits == 5


def test_a_new_method_is_one_table_entry(toy_method, tmp_path):
    conv, x = _calibrated(toy_method, 2)
    q = conv.act_quantizer
    assert isinstance(q, FixedRangeActQuantizer) and bool(q.initialized)
    # calibrated by the interface (init_from_stats: the percentiles)
    assert q.lo.item() < 0 < q.hi.item()
    y = conv(x)
    ref = nn.functional.conv2d(fake_quant(x, q.lo, q.hi, 2),
                               conv.weight_quantizer(conv.weight),
                               conv.bias, padding=1)
    assert_close(y, ref, atol=0, rtol=0)
    # the complexity tool counts its two range floats like ODM's
    net = nn.Sequential(conv)
    assert storage_bits(net, count_weight_ranges=True) == \
        storage_bits(net) + 2 * 32
    # the exporter writes it generically; the independent runtime refuses a
    # method it has no integer formulas for, with one message
    from odm_mm.deploy.export import export_artifact
    from odm_mm.deploy.runtime import load_runtime
    export_artifact(net, str(tmp_path))
    with pytest.raises(ValueError, match='toy_fixed'):
        load_runtime(str(tmp_path), generator=nn.Sequential(
            nn.Conv2d(4, 4, 3, padding=1)))
