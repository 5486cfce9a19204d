"""Benchmark presets and the methods compared (paper Tables 1 and 5).

A :class:`Preset` fixes everything a benchmark run depends on: the data, the
FP32 generator, both training schedules, the seed and which
``(method, bits)`` runs are trained. Every QAT run of a preset starts from the
same FP32 checkpoint and sees the same patches in the same order (same seed,
same pipeline), so differences between runs come from the method alone.

Methods (:data:`METHODS`): each one IS a config file of ``configs/`` (the
recipe a user trains); the benchmark takes from it what defines the method
(``model.quant_cfg.method``, ``model.var_loss`` on/off, ``model.skt_loss``,
``optim_wrapper``, the ``OffsetHook`` of ``custom_hooks``) and puts it in
the preset's protocol (data, network size, schedule, seed, bit-width):

=============  ===============================================  ==========
key            config                                           Table 5
=============  ===============================================  ==========
``pams``       ``configs/pams/edsr_x4_w2a2.py``                 PAMS
``odm_q``      ``configs/odm/ablation/edsr_x4_w2a2_quant_only.py``  -
``var_plain``  ``configs/odm/ablation/edsr_x4_w2a2_a_varreg.py``    (a)
``var_coop``   ``configs/odm/ablation/edsr_x4_w2a2_b_coop_varreg.py``  (b)
``offsets``    ``configs/odm/ablation/edsr_x4_w2a2_c_offsets.py``   (c)
``odm``        ``configs/odm/edsr_x4_w2a2.py``                  EDSR-ODM
``daq``        ``configs/daq/edsr_x4_w2a2.py``                  (Table 1)
``ddtb``       ``configs/ddtb/edsr_x4_w2a2.py``                 (Table 1)
``daq_free``   ``configs/daq/edsr_x4_w2a2.py``, no QAT          (Table 1)
``daq_std8``   ``configs/daq/edsr_x4_w2a2_std8.py``             -
``ddtb_off``   ``configs/ddtb/edsr_x4_w2a2_official.py``        (Table 1)
``ddtb_place`` ``configs/ddtb/edsr_x4_w2a2_placement.py``       -
``mr_coop``    ``configs/odm_eccv24/ablation/..._b_coop_mr.py``   v2 (b)
``wcc``        ``configs/odm_eccv24/ablation/..._c_wcc.py``       v2 (c)
``wcc_mr_plain`` ``configs/odm_eccv24/ablation/..._d_wcc_naive_mr.py``  v2 (d)
``odm24``      ``configs/odm_eccv24/edsr_x4_w2a2.py``           v2 (e)
=============  ===============================================  ==========

``odm24`` and the ``v2`` rows are the published version of ODM (ECCV 2024,
arXiv 2307.13337 v2): weight clipping correction and the cooperative
mismatch regulariser instead of the seed's L_V and offsets.

All of them use L1 + SKT (PAMS and ODM both train with SKT, Eq. 9);
``odm_q`` isolates the quantizer change from PAMS.
"""
from __future__ import annotations

import ast
import copy
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Tuple

__all__ = ['Method', 'METHODS', 'Preset', 'PRESETS', 'get_preset',
           'run_name', 'parse_overrides', 'network_label']


@dataclass(frozen=True)
class Method:
    """One QAT recipe of the tables: a config file and how to label it.

    Attributes:
        key: Short name used in run names and the JSON.
        label: Row label in the tables.
        config: The recipe (repo-relative config path).
        ablation: Table 5 marker, e.g. ``'(a)'``.
        qat: False for a training-free method: the run calibrates nothing
            and trains nothing, it tests the FP32 checkpoint with the
            method's quantizers (``tools/test.py CONFIG FP32.pth``; DAQ
            without QAT, as its paper reports it).
    """
    key: str
    label: str
    config: str
    ablation: str = ''
    qat: bool = True


_AB = 'configs/odm/ablation/edsr_x4_w2a2_'
_AB24 = 'configs/odm_eccv24/ablation/edsr_x4_w2a2_'
METHODS: Dict[str, Method] = {m.key: m for m in [
    Method('pams', 'EDSR-PAMS', 'configs/pams/edsr_x4_w2a2.py'),
    Method('odm_q', 'ODM quantizer only', _AB + 'quant_only.py'),
    Method('var_plain', 'Var. reg. (Eq. 4)', _AB + 'a_varreg.py', '(a)'),
    Method('var_coop', 'Coop. var. reg. (Eq. 5)', _AB + 'b_coop_varreg.py',
           '(b)'),
    Method('offsets', 'Dist. offsets', _AB + 'c_offsets.py', '(c)'),
    Method('odm', 'EDSR-ODM', 'configs/odm/edsr_x4_w2a2.py'),
    Method('daq', 'EDSR-DAQ', 'configs/daq/edsr_x4_w2a2.py'),
    Method('daq_clip', 'EDSR-DAQ (clipped)',
           'configs/daq/edsr_x4_w2a2_clip.py'),
    Method('ddtb', 'EDSR-DDTB', 'configs/ddtb/edsr_x4_w2a2.py'),
    # as their authors ran them (issue #18): DAQ without QAT (its paper's
    # setting), DAQ with 8-bit sigmas (its EDSR-full script), DDTB with the
    # official placement (skip and residual paths quantized)
    Method('daq_free', 'EDSR-DAQ training-free',
           'configs/daq/edsr_x4_w2a2.py', qat=False),
    Method('daq_std8', 'EDSR-DAQ 8-bit sigmas',
           'configs/daq/edsr_x4_w2a2_std8.py'),
    Method('ddtb_off', 'EDSR-DDTB official (placement + first stage)',
           'configs/ddtb/edsr_x4_w2a2_official.py'),
    # the official placement alone (no first stage, gate starting at 1)
    Method('ddtb_place', 'EDSR-DDTB official placement only',
           'configs/ddtb/edsr_x4_w2a2_placement.py'),
    # the published version (ECCV 2024), its Table 5 rows
    Method('mr_coop', 'ODM-24 coop. mismatch reg.', _AB24 + 'b_coop_mr.py',
           'v2 (b)'),
    Method('wcc', 'ODM-24 weight clipping corr.', _AB24 + 'c_wcc.py',
           'v2 (c)'),
    Method('wcc_mr_plain', 'ODM-24 WCC + naive mismatch reg.',
           _AB24 + 'd_wcc_naive_mr.py', 'v2 (d)'),
    Method('odm24', 'EDSR-ODM-24 (ECCV 2024)',
           'configs/odm_eccv24/edsr_x4_w2a2.py', 'v2 (e)'),
]}

ABLATION = ['pams', 'var_plain', 'var_coop', 'offsets', 'odm']


def run_name(method: str, bits: int, tag: str = '') -> str:
    """``'<method>_w<b>a<b>[_<tag>]'``."""
    return f'{method}_w{bits}a{bits}' + (f'_{tag}' if tag else '')


@dataclass
class Preset:
    """Everything one benchmark protocol depends on.

    Attributes:
        name: Preset name (``--preset``).
        description: One line for the report.
        data: ``'folders'`` (T91 + benchmark sets below the data root),
            ``'div2k'`` (mmagic DIV2K sub-images + benchmark sets) or
            ``'skimage'`` (photographs bundled with scikit-image).
        fp32_base: FP32 config (repo-relative) that stage 1 trains.
        qat_bases: ODM config(s) of stage 2 (several are merged in order).
        fp32_from_config: Quantize the ``model.fp32_checkpoint`` of the ODM
            config (the official EDSR weights for ``paper``) instead of
            training stage 1 (``--fp32-checkpoint`` overrides both).
        mid_channels, num_blocks: EDSRNet size.
        scale: Upscaling factor (the configs are x4).
        fp32_iters, fp32_batch, fp32_lr: Stage 1 schedule (MultiStepLR,
            halved at ``fp32_milestones`` fractions of the run).
        qat_iters, qat_batch, qat_lr: Stage 2 schedule (halved at
            ``qat_milestones`` fractions, paper: every quarter).
        range_lr_mult: If set, the lr multiplier of every ``custom_keys``
            entry of the method's optimizer (quantizer ranges, offsets);
            None keeps each method config's own.
        lambda_v: Weight of L_V.
        recalib_interval, recalib_momentum: OffsetHook options.
        gt_patch: HR training patch size (px).
        runs: ``[(method key, bits), ...]`` of stage 2.
        sweep: Extra runs ``(method, bits, tag, overrides)`` (co-adaptation
            sweep; overrides are Preset field values).
        test_sets: Benchmark sets of stage 3.
        calib_batches: OffsetHook calibration batches.
        num_workers: Train dataloader workers.
        log_interval: LoggerHook interval (iterations).
        seed: Seed of every run.
        budget_min: Wall-time budget the preset is sized for (report only).
        sample: ``(test set, image name)`` shown side by side.
        skimage_train, skimage_test, skimage_crop: scikit-image photographs
            of the ``'skimage'`` data (empty: the defaults of
            :mod:`odm_bench.data`) and an optional centre crop.
        train_repeat: Repeat the training set this many times per epoch
            (mmengine ``RepeatDataset``; for sets smaller than a batch).
        fp32_checkpoint: Quantize this FP32 file (no stage 1 training);
            a name without a folder is looked up in
            :func:`odm_mm.data_root.get_models_root`.
        optional_test_sets: Also tested when the data root has them.
        lambda_v_norm: ``VarianceRegLoss.normalize`` (``'none'``/
            ``'range'``).
        offset_init, offset_policy: OffsetHook options.
        skt_feature: ``(module, 'input'|'output')`` of the SKT tap (None:
            the model's default).
        lambda_m: Weight of the mismatch regulariser L_M of the published
            (ECCV 2024) recipe, for methods whose config has one.
        eval_at: Also test the checkpoints of these iterations (below
            ``qat_iters``) on ``curve_sets``: one run, several budgets (the
            budget curve; the schedule is the run's own, i.e. its lr
            milestones are fractions of ``qat_iters``).
        curve_sets: Test sets of the ``eval_at`` checkpoints.
        wcc_gamma_init: If set, ``quant_cfg.gamma_init`` of methods with
            weight clipping correction (``'one'`` or ``'mse'``).
        mismatch_target: If set, ``MismatchRegLoss.target`` (``'ste'``,
            ``'detach'``) of methods with L_M.
        gate_mode: If set, the ``CooperativeOptimWrapper.mode`` of methods
            that use it (e.g. ``'similarity_tensor'``).
        model_name: The network's name in the tables (method labels say
            ``EDSR-PAMS``, ``EDSR-ODM``; ``'EDSR'`` is replaced by it).
        targets: Which targets the report checks
            (:data:`~odm_bench.targets.TARGET_SETS`: ``'edsr'`` the paper's
            EDSR claims, ``'swinir'`` the transformer issue's).
        generator: If set, keyword arguments merged into
            ``model.generator`` of both stages instead of the EDSRNet size
            fields (``mid_channels``, ``num_blocks``, ``scale``): the size
            of another generator family, e.g. SwinIRNet's ``embed_dim``,
            ``depths``, ``num_heads``, ``img_size``.
    """
    name: str
    description: str
    data: str = 'folders'
    fp32_base: str = 'configs/fp32/edsr_x4_t91.py'
    qat_bases: Tuple[str, ...] = ('configs/odm/local/edsr_x4_w2a2_t91.py',)
    fp32_from_config: bool = False
    mid_channels: int = 32
    num_blocks: int = 8
    scale: int = 4
    fp32_iters: int = 3000
    fp32_batch: int = 16
    fp32_lr: float = 1e-3
    fp32_milestones: Tuple[float, ...] = (0.6, 0.85)
    qat_iters: int = 500
    qat_batch: int = 8
    qat_lr: float = 1e-4
    qat_milestones: Tuple[float, ...] = (0.25, 0.5, 0.75)
    range_lr_mult: Optional[float] = None
    lambda_v: float = 1e-4
    recalib_interval: int = 0
    recalib_momentum: float = 0.1
    gt_patch: int = 96
    runs: List[Tuple[str, int]] = field(default_factory=list)
    sweep: List[Tuple[str, int, str, dict]] = field(default_factory=list)
    test_sets: Tuple[str, ...] = ('Set5', 'Set14', 'B100')
    calib_batches: int = 8
    num_workers: int = 0
    log_interval: int = 50
    seed: int = 0
    budget_min: Optional[float] = None
    sample: Tuple[str, str] = ('Set14', 'zebra')
    skimage_train: Tuple[str, ...] = ()
    skimage_test: Tuple[str, ...] = ()
    skimage_crop: Optional[int] = None
    train_repeat: int = 1
    fp32_checkpoint: Optional[str] = None
    optional_test_sets: Tuple[str, ...] = ()
    lambda_v_norm: str = 'none'
    offset_init: str = 'identity'
    offset_policy: str = 'both'
    skt_feature: Optional[Tuple[str, str]] = None
    lambda_m: float = 1e-5
    wcc_gamma_init: Optional[str] = None
    mismatch_target: Optional[str] = None
    gate_mode: Optional[str] = None
    eval_at: Tuple[int, ...] = ()
    curve_sets: Tuple[str, ...] = ('Set5', 'Set14')
    generator: Optional[dict] = None
    targets: str = 'edsr'
    model_name: str = 'EDSR'

    def to_dict(self) -> dict:
        """JSON-friendly dict of every field."""
        return asdict(self)

    def with_overrides(self, **kw) -> 'Preset':
        """A copy with some fields replaced (unknown names raise)."""
        unknown = set(kw) - set(self.to_dict())
        if unknown:
            raise KeyError(f'unknown preset fields {sorted(unknown)}')
        new = copy.deepcopy(self)
        for k, v in kw.items():
            setattr(new, k, v)
        return new


def _all(bits: int, methods: List[str]) -> List[Tuple[str, int]]:
    return [(m, bits) for m in methods]


# Table 5 at W2A2 (+ the quantizer alone), PAMS vs ODM at W4A4.
_QUICK_RUNS = (_all(2, ['pams', 'odm_q', 'var_plain', 'var_coop', 'offsets',
                        'odm'])
               + _all(4, ['pams', 'odm']))

# EDSR-baseline sweep (issue: make L_V / offsets pay off, or show why not):
# a shorter budget than the headline runs, tested on Set5 and Set14.
_S = dict(qat_iters=150, test_sets=('Set5', 'Set14'), optional_test_sets=())
_EDSR_SWEEP: List[Tuple[str, int, str, dict]] = [
    ('odm_q', 2, 's150', dict(_S)),  # the control at the sweep budget
    ('odm', 2, 's150', dict(_S)),
    ('var_coop', 2, 'lv1e-2', dict(_S, lambda_v=1e-2)),
    ('var_plain', 2, 'lv1e-2', dict(_S, lambda_v=1e-2)),
    ('odm', 2, 'offstats', dict(_S, offset_init='stats')),
    ('offsets', 2, 'offstats', dict(_S, offset_init='stats')),
    ('var_coop', 2, 'lvrange1e-2', dict(_S, lambda_v=1e-2,
                                        lambda_v_norm='range')),
    ('odm_q', 2, 'sktpre', dict(_S, skt_feature=('conv_after_body',
                                                 'output'))),
    ('var_coop', 2, 'lv3e-2', dict(_S, lambda_v=3e-2)),
    ('var_plain', 2, 'lv3e-2', dict(_S, lambda_v=3e-2)),
    ('odm', 2, 'rlr1', dict(_S, range_lr_mult=1.0)),
    ('odm', 2, 'one', dict(_S, offset_policy='one')),
    ('var_coop', 2, 'lvrange1e-1', dict(_S, lambda_v=1e-1,
                                        lambda_v_norm='range')),
    ('var_coop', 2, 'lv1e-3', dict(_S, lambda_v=1e-3)),
    ('var_plain', 2, 'lv1e-3', dict(_S, lambda_v=1e-3)),
    ('var_coop', 2, 'lv3e-3', dict(_S, lambda_v=3e-3)),
    ('var_plain', 2, 'lv3e-3', dict(_S, lambda_v=3e-3)),
] + [
    # budget curve (issue: do the ordering and the gaps settle with
    # budget?): one 1200-iteration run each, tested at 150/300/600/1200
    (m, 2, 'b1200', dict(qat_iters=1200, eval_at=(150, 300, 600),
                         test_sets=('Set5', 'Set14'),
                         optional_test_sets=()))
    for m in ('pams', 'daq', 'odm_q', 'odm', 'odm24')
] + [
    ('odm24', 2, 'b1200rlr100', dict(qat_iters=1200, eval_at=(150, 300, 600),
                                     test_sets=('Set5', 'Set14'),
                                     optional_test_sets=(),
                                     range_lr_mult=100.0)),
] + [
    # what separates the published rows from the quantizer alone (150 it,
    # against odm_q_w2a2_s150): the weight quantizer and its init at the
    # quantizer alone's range lr (100x), the full recipe at 100x, and the
    # readings the text leaves open (cosine per tensor, L_M target detach)
    ('wcc', 2, 'rlr100', dict(_S, range_lr_mult=100.0)),
    ('wcc', 2, 'gmse_rlr100', dict(_S, wcc_gamma_init='mse',
                                   range_lr_mult=100.0)),
    ('odm24', 2, 'rlr100', dict(_S, range_lr_mult=100.0)),
    ('odm24', 2, 'tensorcos_rlr100', dict(_S, gate_mode='similarity_tensor',
                                          range_lr_mult=100.0)),
    ('odm24', 2, 'mdetach_rlr100', dict(_S, mismatch_target='detach',
                                        range_lr_mult=100.0)),
]

PRESETS: Dict[str, Preset] = {
    'smoke': Preset(
        name='smoke', data='skimage',
        description='seconds-long plumbing check (tests): tiny EDSR, a few '
        'iterations on scikit-image crops',
        mid_channels=8, num_blocks=2, fp32_iters=6, fp32_batch=2,
        qat_iters=3, qat_batch=2, gt_patch=32, calib_batches=1,
        runs=[('pams', 2), ('odm', 2), ('odm', 4)], test_sets=('skimage',),
        log_interval=1, budget_min=1, sample=('skimage', 'chelsea'),
        skimage_train=('astronaut', 'coffee'), skimage_test=('chelsea',),
        skimage_crop=64, train_repeat=50),
    'demo': Preset(
        name='demo',
        description="embedded demo (make demo): the paper's EDSR-baseline "
        '(64ch/16 blocks) x4 from a pretrained teacher (official mmagic '
        'weights, else ../shared/models), PAMS vs ODM W2A2 with the edsr '
        'protocol (QAT 600 it x 8, 96 px T91 patches; T91 repeated 10x '
        'per epoch: mmengine pauses 2 s at every epoch end), Set5 + Set14; '
        'tools/odm_bench/demo.py falls back to scikit-image photographs '
        'and a small teacher trained first',
        fp32_checkpoint='edsr_x4c64b16_t91_fp32.pth',
        mid_channels=64, num_blocks=16, qat_iters=600, qat_batch=8,
        gt_patch=96, log_interval=25, runs=[('pams', 2), ('odm', 2)],
        test_sets=('Set5',), optional_test_sets=('Set14',), budget_min=15,
        sample=('Set5', 'butterfly'), train_repeat=10),
    'quick': Preset(
        name='quick',
        description='reduced scale for 2 CPU cores: EDSR 32ch/8 blocks, '
        'T91 64 px patches (FP32 600 it x 16, QAT 200 it x 8), '
        'Set5/Set14/B100',
        fp32_iters=600, fp32_batch=16, qat_iters=200, qat_batch=8,
        gt_patch=64, runs=_QUICK_RUNS, budget_min=45),
    'paper': Preset(
        name='paper', data='div2k',
        description="the paper's recipe for a GPU: EDSR-baseline "
        '(64ch/16 blocks) on DIV2K, QAT 60k iterations (60 x 1000), batch 8',
        fp32_base='configs/fp32/edsr_x4_div2k.py',
        qat_bases=('configs/odm/edsr_x4_w2a2.py',), fp32_from_config=True,
        mid_channels=64, num_blocks=16, fp32_iters=300000, fp32_batch=16,
        fp32_lr=1e-4, fp32_milestones=(2 / 3,), qat_iters=60000,
        qat_batch=8, gt_patch=192, num_workers=8, log_interval=100,
        runs=(_all(4, ['pams', 'odm']) + _all(3, ['pams', 'odm'])
              + _all(2, ['pams', 'var_plain', 'var_coop', 'offsets',
                         'odm'])),
        test_sets=('Set5', 'Set14', 'B100', 'Urban100')),
    'edsr': Preset(
        name='edsr',
        description="the paper's EDSR-baseline (64ch/16 blocks) x4: the "
        'FP32 teacher trained on T91 (../shared/models, no stage 1), QAT '
        '300 it x 8 on T91 96 px HR patches, Set5/Set14/B100 (+Urban100 '
        'when present)',
        fp32_checkpoint='edsr_x4c64b16_t91_fp32.pth',
        mid_channels=64, num_blocks=16, qat_iters=300, qat_batch=8,
        gt_patch=96, log_interval=25,
        runs=(_all(2, ['pams', 'odm_q', 'var_plain', 'var_coop', 'offsets',
                       'odm'])
              + _all(4, ['pams', 'odm_q', 'odm'])
              + _all(2, ['daq', 'daq_clip', 'ddtb'])
              + _all(4, ['daq', 'ddtb'])
              + _all(2, ['wcc', 'mr_coop', 'wcc_mr_plain', 'odm24'])
              + _all(4, ['wcc', 'odm24'])
              + _all(2, ['daq_free', 'daq_std8', 'ddtb_off', 'ddtb_place'])
              + _all(4, ['daq_free', 'daq_std8', 'ddtb_off'])),
        sweep=_EDSR_SWEEP, optional_test_sets=('Urban100',),
        budget_min=150),
    'swinir': Preset(
        name='swinir',
        description='SwinIR x4 (transformer restorer) sized for 2 CPU '
        'cores: embed 32, 2 RSTBs x 2 blocks, 4 heads, window 8, mlp ratio '
        '2, pixelshuffledirect; FP32 teacher trained here on T91 (5000 it x '
        '16, 96 px HR patches), QAT 300 it x 8 of every RSTB (convs, '
        'Linears, both attention matmuls), Set5/Set14/B100',
        fp32_base='configs/fp32/swinir_light_x4_t91.py',
        qat_bases=('configs/odm/local/swinir_light_x4_w2a2_t91.py',),
        generator=dict(embed_dim=32, depths=[2, 2], num_heads=[4, 4],
                       window_size=8, mlp_ratio=2, img_size=24, upscale=4,
                       upsampler='pixelshuffledirect'),
        fp32_iters=5000, fp32_batch=16, fp32_lr=1e-3, qat_iters=300,
        qat_batch=8, qat_lr=1e-4, gt_patch=96, log_interval=25,
        num_workers=1,  # the on-the-fly bicubic LR costs as much as a step
        targets='swinir', model_name='SwinIR',
        runs=(_all(4, ['pams', 'odm_q', 'odm', 'odm24'])
              + _all(2, ['pams', 'odm_q', 'odm', 'odm24'])),
        budget_min=150, sample=('Set14', 'zebra')),
}


def network_label(preset: dict) -> str:
    """One phrase naming the preset's generator and its size."""
    g = preset.get('generator')
    if not g:
        return (f'EDSR x{preset["scale"]} ({preset["mid_channels"]}ch/'
                f'{preset["num_blocks"]} blocks)')
    if 'embed_dim' in g:
        return (f'SwinIR x{g.get("upscale", preset["scale"])} (embed '
                f'{g["embed_dim"]}, {len(g["depths"])} RSTBs x '
                f'{g["depths"][0]} blocks, {g["num_heads"][0]} heads, window '
                f'{g.get("window_size", 8)})')
    return ', '.join(f'{k}={v}' for k, v in g.items())


def get_preset(name: str) -> Preset:
    """A fresh copy of the named preset."""
    if name not in PRESETS:
        raise KeyError(f'unknown preset {name!r}; choose from '
                       f'{sorted(PRESETS)}')
    return copy.deepcopy(PRESETS[name])


def parse_overrides(items: List[str]) -> dict:
    """``['a=1', 'b=(1, 2)']`` -> ``{'a': 1, 'b': (1, 2)}``."""
    out = {}
    for item in items:
        key, _, val = item.partition('=')
        if not _:
            raise SystemExit(f'--set expects FIELD=VALUE, got {item!r}')
        try:
            out[key] = ast.literal_eval(val)
        except (ValueError, SyntaxError):
            out[key] = val
    return out
