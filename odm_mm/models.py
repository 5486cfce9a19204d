"""ODMEditModel: mmagic editor that trains a quantized SR generator.

Glue (mmagic/mmengine). Ties the torch-only pieces together:

* builds the generator from the stock mmagic config, keeps a frozen FP32
  ``teacher`` copy for SKT, swaps the convs of the high-level feature
  extractor for :class:`~odm_mm.layers.QuantConv` (:func:`~odm_mm.swap.
  swap_convs`);
* loads the FP32 checkpoint in :meth:`init_weights` -- the Runner calls it
  right before training, so mmengine's weight initialisation never
  overwrites the pretrained weights -- into student and teacher, accepting
  mmagic/mmengine checkpoints (``state_dict`` with ``generator.`` keys) and
  bare generator state dicts, with one clear error listing mismatched keys;
* returns ``loss_pix`` (L1), ``loss_skt`` (Eq. 9) and ``loss_var`` (Eq. 3);
  :meth:`parse_losses` hands L_R and L_V separately
  (:class:`~odm_mm.gate.LossParts`) to
  :class:`~odm_mm.optim.CooperativeOptimWrapper` (Eq. 5 / Eq. 4).

The SKT feature is taken at ``feature_module`` -- its input
(``feature_tap='input'``) or its output (``'output'``) -- and cloned there
(EDSR adds the long skip in place, so a stored reference would change).
Defaults per generator (:data:`FEATURE_MODULES`): EDSR the input of
``upsample``, i.e. the body output *after* the long skip ``res += x``, which
is the feature PAMS's EDSR returns for SKT (``res = body(x); res += x;
return tail(res), res``; ODM follows PAMS for SKT); RDN the output of
``gff``; MSRResNet the output of ``trunk_net``. ``feature_module=
'conv_after_body', feature_tap='output'`` gives the body end before the
skip (the default of odm_mm <= 0.1; the EDSR-baseline benchmark measures
both, docs/benchmarks.md).
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from mmengine.logging import print_log
from torch import Tensor

from mmagic.models.base_models import BaseEditModel
from mmagic.registry import MODELS

from .fragment import refuse_lost_training_logic
from .gate import LossParts
from .fullquant import quantize_skips
from .layers import QuantInputMixin
from .quantizers import Quantizer, check_bits
from .losses import PAPER_LAMBDA_V, PAPER_SKT_WEIGHT_01
from .mismatch import PAPER_LAMBDA_M
from .checkpoint import load_fp32_generator, read_fp32_state
from .placement import DEFAULT as DEFAULT_PLACEMENT, apply_placement
from .swap import quant_layers, swap_convs

__all__ = ['ODMEditModel', 'FEATURE_MODULES', 'load_fp32_generator']

#: Default SKT tap per generator: ``(module name, 'input' | 'output')``.
FEATURE_MODULES = {
    'EDSRNet': ('upsample', 'input'),
    'RDNNet': ('gff', 'output'),
    'MSRResNet': ('trunk_net', 'output'),
    # RRDBNet adds its long skip right before interpolating, so no module
    # sees the sum: the body end before the skip (as for SRCNN's last
    # quantized conv)
    'RRDBNet': ('conv_body', 'output'),
    'SRCNNNet': ('conv2', 'output'),
    # as EDSR: the body output after the long skip (SwinIR adds it out of
    # place, ``conv_after_body(features) + x``), a (B, C, H, W) map
    'SwinIRNet': ('upsample', 'input'),
}
FEATURE_TAPS = ('input', 'output')
QUANT_KEYS = ('w_bits', 'a_bits', 'method', 'percentile_j', 'weight_cfg',
              'act_cfg', 'offset_bits', 'std_mode')
#: Regularisation losses: handed to the optim wrapper apart from L_R.
REG_LOSSES = ('loss_var', 'loss_mismatch')
OTHER_QUANT_KEYS = ('patterns', 'mode', 'exclude', 'skip_bits', 'placement')


def _grab_feature(module: torch.nn.Module, _inputs, output: Tensor) -> None:
    """Forward hook: keep a copy of the SKT feature while capturing.

    A clone, because e.g. EDSR adds the long skip in place afterwards. The
    flag lives on the module (no closure over the model), so deep copies of
    the model capture into their own modules.
    """
    if getattr(module, 'odm_capture', False):
        module.odm_feature = output.clone()


def _grab_input(module: torch.nn.Module, inputs) -> None:
    """Forward pre-hook: the same as :func:`_grab_feature` for the input."""
    _grab_feature(module, None, inputs[0])


@MODELS.register_module()
class ODMEditModel(BaseEditModel):
    """Quantization-aware training of an mmagic SR generator (ODM / PAMS).

    Args:
        generator: Config of the FP32 generator (a stock mmagic one).
        pixel_loss: Config of L1 (``L1Loss``).
        quant_cfg: ``w_bits``, ``a_bits`` (default 4/4), ``method``
            (``'odm'``/``'pams'``), ``patterns`` (regexes, default preset per
            generator), ``mode`` (``'body'``/``'full'``), ``exclude``,
            ``percentile_j``, ``offset_bits``, ``std_mode``, ``skip_bits``
            (e.g. 8 with ``mode='full'``: fully quantized network of Table
            S2, see :mod:`odm_mm.fullquant`), ``act_cfg`` / ``weight_cfg``
            (options of the method's quantizers, e.g. DAQ's
            ``sigma_bits``), ``placement`` (``'conv_inputs'``, default, or
            a placement the method registered, e.g. ``'ddtb_official'``:
            :mod:`odm_mm.placement`).
        fp32_checkpoint: Path/URL of the FP32 checkpoint (student init and
            teacher). Loaded in :meth:`init_weights`.
        skt_loss: Config of ``SKTLoss``; ``'paper'`` (default) = weight
            1000/255 (the paper's 1000 at [0, 1] pixels); None = no SKT and
            no teacher.
        var_loss: Config of ``VarianceRegLoss``; ``'paper'`` (default) =
            lambda_V of Supplement S1 for the generator (1e-4 EDSR/SRResNet,
            1e-5 RDN, 1e-4 otherwise); None = no L_V.
        mismatch_loss: Config of ``MismatchRegLoss`` (the published
            version's L_M, :mod:`odm_mm.mismatch`); ``'paper'`` = its
            lambda_M for the generator (1e-5 EDSR/SRResNet, 1e-6 RDN);
            None (default) = no L_M. With L_V too, both are summed into the
            one regularisation term the gate sees.
        feature_module: Module where SKT takes its feature (default per
            generator, :data:`FEATURE_MODULES`).
        feature_tap: ``'input'`` or ``'output'`` of ``feature_module``
            (default per generator; ``'output'`` for a ``feature_module``
            given without a tap).
        train_cfg, test_cfg, init_cfg, data_preprocessor: as BaseEditModel.
        **stock: Other keys of the stock model config; any (e.g. a GAN
            restorer's ``discriminator``), like a ``train_cfg`` with training
            logic (BasicVSR's ``fix_iter``), is refused with one ValueError
            naming what would be lost (:mod:`odm_mm.fragment`).
    """

    def __init__(self,
                 generator: dict,
                 pixel_loss: dict,
                 quant_cfg: Optional[dict] = None,
                 fp32_checkpoint: Optional[str] = None,
                 skt_loss: Union[dict, str, None] = 'paper',
                 var_loss: Union[dict, str, None] = 'paper',
                 mismatch_loss: Union[dict, str, None] = None,
                 feature_module: Optional[str] = None,
                 feature_tap: Optional[str] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 **stock: Any) -> None:
        # a stock model's keys ODMEditModel has no use for (a GAN's
        # discriminator, BasicVSR's fix_iter): one refusal naming them
        refuse_lost_training_logic(train_cfg, stock)
        super().__init__(generator, pixel_loss, train_cfg, test_cfg,
                         init_cfg, data_preprocessor)
        quant_cfg = dict(quant_cfg or {})
        unknown = set(quant_cfg) - set(QUANT_KEYS) - set(OTHER_QUANT_KEYS)
        if unknown:
            raise ValueError(f'quant_cfg has unknown keys {sorted(unknown)}; '
                             f'allowed: {sorted(QUANT_KEYS + OTHER_QUANT_KEYS)}')
        self.fp32_checkpoint = fp32_checkpoint
        gen_name = type(self.generator).__name__
        default_module, default_tap = FEATURE_MODULES.get(gen_name,
                                                          (None, 'output'))
        self.feature_module = feature_module or default_module
        self.feature_tap = feature_tap or (
            default_tap if feature_module is None else 'output')
        if self.feature_tap not in FEATURE_TAPS:
            raise ValueError(f'feature_tap must be one of {FEATURE_TAPS}, '
                             f'got {feature_tap!r}')
        if skt_loss == 'paper':
            skt_loss = dict(type='SKTLoss', loss_weight=PAPER_SKT_WEIGHT_01)
        if var_loss == 'paper':
            var_loss = dict(type='VarianceRegLoss',
                            loss_weight=PAPER_LAMBDA_V.get(gen_name, 1e-4))
        if mismatch_loss == 'paper':
            mismatch_loss = dict(type='MismatchRegLoss',
                                 loss_weight=PAPER_LAMBDA_M.get(gen_name,
                                                                1e-5))
        for key, val in (('skt_loss', skt_loss), ('var_loss', var_loss),
                         ('mismatch_loss', mismatch_loss)):
            if val is not None and not isinstance(val, dict):
                raise ValueError(f"{key} must be a config dict, 'paper' or "
                                 f'None, got {val!r}')
        self.skt_loss = MODELS.build(skt_loss) if skt_loss else None
        self.var_loss = MODELS.build(var_loss) if var_loss else None
        self.mismatch_loss = MODELS.build(mismatch_loss) \
            if mismatch_loss else None
        if self.skt_loss is not None and self.feature_module is None:
            raise ValueError(f'SKT needs feature_module for {gen_name} (the '
                             'name of the last module of the body)')
        self.teacher = None
        if self.skt_loss is not None:
            self.teacher = copy.deepcopy(self.generator)
            self.teacher.requires_grad_(False)
            self.teacher.eval()
        qcfg = {k: quant_cfg[k] for k in QUANT_KEYS if k in quant_cfg}
        if self.var_loss is not None:
            qcfg.setdefault('std_mode', self.var_loss.std_mode)
        placement = quant_cfg.get('placement') or DEFAULT_PLACEMENT
        if placement != DEFAULT_PLACEMENT:
            given = [k for k in ('patterns', 'mode') if k in quant_cfg]
            if given:
                raise ValueError(f'quant_cfg.placement={placement!r} says '
                                 'which convs are quantized; do not set '
                                 f'quant_cfg {given} with it')
            self.quantized_layers: List[str] = apply_placement(
                self.generator, placement, quant_cfg.get('exclude'), **qcfg)
        else:
            self.quantized_layers = swap_convs(
                self.generator, quant_cfg.get('patterns'),
                quant_cfg.get('mode', 'body'), quant_cfg.get('exclude'),
                **qcfg)
        self.skip_layers: List[str] = []
        if quant_cfg.get('skip_bits') is not None:
            self.skip_layers = quantize_skips(
                self.generator, check_bits(quant_cfg['skip_bits'],
                                           'skip_bits'))
        for _, m in quant_layers(self.generator):
            m.record_std = self.var_loss is not None
            if self.mismatch_loss is not None:
                m.mismatch_target = self.mismatch_loss.target
        if self.skt_loss is not None:
            for net in (self.generator, self.teacher):
                mod = self._feature_module(net)
                if self.feature_tap == 'input':
                    mod.register_forward_pre_hook(_grab_input)
                else:
                    mod.register_forward_hook(_grab_feature)

    # ------------------------------------------------------------ internals
    def _feature_module(self, net: torch.nn.Module) -> torch.nn.Module:
        try:
            return net.get_submodule(self.feature_module)
        except AttributeError as err:
            raise ValueError(
                f'feature_module {self.feature_module!r} is not a module of '
                f'{type(net).__name__}') from err

    def train(self, mode: bool = True) -> 'ODMEditModel':
        """Set train/eval mode; the teacher always stays in eval mode."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def init_weights(self) -> None:
        """mmengine init, then the FP32 checkpoint into student and teacher."""
        super().init_weights()
        if not self.fp32_checkpoint:
            print_log('ODMEditModel: no fp32_checkpoint given, quantizing a '
                      'randomly initialised generator (set '
                      'model.fp32_checkpoint, or load_from / --resume).',
                      logger='current', level=30)
            return
        state = read_fp32_state(self.fp32_checkpoint, self.generator)
        load_fp32_generator(self.generator, state, self.fp32_checkpoint)
        if self.teacher is not None:
            load_fp32_generator(self.teacher, state, self.fp32_checkpoint)
        print_log(f'ODMEditModel: loaded FP32 weights from '
                  f'{self.fp32_checkpoint} ({len(self.quantized_layers)} '
                  'quantized layers)', logger='current')

    # -------------------------------------------------------------- losses
    def forward_train(self, inputs: Tensor, data_samples=None,
                      **kwargs) -> Dict[str, Tensor]:
        """L1, SKT (Eq. 9) and L_V (Eq. 3) of one batch."""
        if self.skt_loss is None:
            sr = self.generator(inputs, **kwargs)
            losses = {'loss_pix': self.pixel_loss(sr, data_samples.gt_img)}
        else:
            mods = [self._feature_module(n)
                    for n in (self.generator, self.teacher)]
            try:
                for m in mods:
                    m.odm_capture = True
                sr = self.generator(inputs, **kwargs)
                with torch.no_grad():
                    self.teacher(inputs, **kwargs)
                losses = {
                    'loss_pix': self.pixel_loss(sr, data_samples.gt_img),
                    'loss_skt': self.skt_loss(mods[0].odm_feature,
                                              mods[1].odm_feature)
                }
            finally:
                for m in mods:
                    m.odm_capture = False
                    m.odm_feature = None
        aux = [a for q in self.generator.modules()
               if isinstance(q, Quantizer)
               for a in [q.aux_loss()] if a is not None]
        if aux:  # e.g. DDTB's first stage: mean over its gates
            losses['loss_quant_aux'] = sum(aux) / len(aux)
        if self.var_loss is not None:
            stds, widths = [], []
            for _, m in quant_layers(self.generator):
                if m.feature_std is not None:
                    stds.append(m.feature_std)
                    widths.append(m.act_quantizer.range_width().detach())
                    m.feature_std = None
            losses['loss_var'] = self.var_loss(stds, widths)
        if self.mismatch_loss is not None:
            terms = []
            for _, m in quant_layers(self.generator):
                if m.feature_mismatch is not None:
                    terms.append(m.feature_mismatch)
                    m.feature_mismatch = None
            losses['loss_mismatch'] = self.mismatch_loss(terms)
        return losses

    def parse_losses(self, losses: Dict[str, Tensor]
                     ) -> Tuple[object, Dict[str, Tensor]]:
        """Sum the losses; with L_V or L_M, return ``LossParts(L_R, reg,
        exclude)`` (``exclude``: the quantizers' reg-free parameters, e.g.
        the weight clipping factors)."""
        total, log_vars = super().parse_losses(losses)
        regs = [losses[k] for k in REG_LOSSES if k in losses]
        if not regs:
            return total, log_vars
        recon = sum(v for k, v in losses.items()
                    if 'loss' in k and k not in REG_LOSSES)
        return LossParts(recon, sum(regs), self.reg_free_parameters()), \
            log_vars

    def reg_free_parameters(self) -> Tuple[Tensor, ...]:
        """Parameters of the quantizers that learn from L_R alone."""
        return tuple(p for _, m in quant_layers(self.generator)
                     for q in (m.act_quantizer, m.weight_quantizer)
                     for p in q.reg_free_parameters())

    def check_optim_wrapper(self, optim_wrapper) -> None:
        """Raise if ``optim_wrapper`` cannot take L_R and L_V separately.

        Called by :meth:`train_step` and, for the DDP path that bypasses it,
        by :class:`~odm_mm.hooks.OffsetHook` before training.
        """
        from .optim import CooperativeOptimWrapper
        has_reg = self.var_loss is not None or self.mismatch_loss is not None
        if has_reg and not isinstance(optim_wrapper,
                                      CooperativeOptimWrapper):
            which = 'var_loss' if self.var_loss is not None \
                else 'mismatch_loss'
            raise TypeError(
                f'ODMEditModel with {which} needs optim_wrapper.type='
                "'CooperativeOptimWrapper' (mode='cooperative' for Eq. 5, "
                "'similarity' for the published gate, 'plain' for Eq. 4); "
                f'got {type(optim_wrapper).__name__}')

    def train_step(self, data, optim_wrapper) -> Dict[str, Tensor]:
        """BaseModel.train_step, after checking the wrapper can take L_V."""
        self.check_optim_wrapper(optim_wrapper)
        return super().train_step(data, optim_wrapper)

    def quant_layers(self) -> List[Tuple[str, QuantInputMixin]]:
        """``[(name, QuantConv | QuantLinear)]`` of the student generator."""
        return quant_layers(self.generator)
