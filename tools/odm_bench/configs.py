"""mmengine configs of the benchmark runs, built from the repo's configs.

Stage 1 trains ``preset.fp32_base`` (e.g. ``configs/fp32/edsr_x4_t91.py``);
stage 2 builds every run from two configs of the repo: the preset's protocol
``preset.qat_bases`` (e.g. ``configs/odm/local/edsr_x4_w2a2_t91.py``: data,
pipeline, test sets) and the method's own config
(:data:`~odm_bench.presets.METHODS`, e.g.
``configs/odm/ablation/edsr_x4_w2a2_a_varreg.py``), from which it takes
what defines the method (:func:`method_parts`). It then sets only what the
protocol fixes: generator size, schedule, seed, bit-width, data location,
test sets, and the preset's experiment knobs (lambda_V, range lr, offset
options, SKT tap). The final config of every run is dumped next
to its checkpoints (``<work_dir>/config.py``), so any number of the report
can be reproduced with ``tools/train.py <that file>``.

Several files in ``qat_bases`` are parsed one by one and merged in order
with mmengine's ``_merge_a_into_b`` (``_delete_`` honoured), since mmengine
refuses ``_base_`` lists whose files define the same keys.
"""
from __future__ import annotations

import copy
import math
import os.path as osp
from typing import Dict, Optional, Sequence

from mmengine.config import Config, ConfigDict

from odm_mm.quantizers import weight_options

from .presets import METHODS, Preset

__all__ = ['REPO_ROOT', 'load_composed', 'fp32_config', 'qat_config',
           'method_parts', 'method_features', 'set_test_sets',
           'set_patch_size', 'curve_points']

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def _abs(path: str) -> str:
    return path if osp.isabs(path) else osp.join(REPO_ROOT, path)


def load_composed(bases: Sequence[str]) -> Config:
    """Parse ``bases`` in order and merge each into the previous ones."""
    cfg = Config.fromfile(_abs(bases[0]))
    for path in bases[1:]:
        frag = Config.fromfile(_abs(path))
        merged = Config._merge_a_into_b(frag._cfg_dict.to_dict(),
                                        cfg._cfg_dict.to_dict())
        cfg = Config(merged, filename=cfg.filename)
    return cfg


def _test_loader(cfg: Config, name: str, root: str, scale: int,
                 workers: int = 0) -> Dict:
    """A test dataloader for set ``name`` from the config's Set5 template."""
    loaders = cfg.get('odm_sr_test_loaders')
    if loaders and name in loaders:
        loader = copy.deepcopy(loaders[name])
    else:
        if not loaders:
            raise KeyError('the config has no odm_sr_test_loaders (from '
                           'configs/_base_/datasets/sr_test_x*.py)')
        loader = copy.deepcopy(loaders[sorted(loaders)[0]])
        loader['dataset']['metainfo'] = dict(dataset_type=name.lower(),
                                             task_name='sisr')
        loader['dataset']['data_prefix'] = dict(
            img=f'{name}/LR_bicubic/X{scale}', gt=f'{name}/HR')
    loader['dataset']['data_root'] = root
    loader['num_workers'] = workers
    loader['persistent_workers'] = False
    return loader


def _test_evaluator(cfg: Config, name: str, scale: int) -> Dict:
    evals = cfg.get('odm_sr_test_evaluators') or {}
    if name in evals:
        return copy.deepcopy(evals[name])
    return dict(type='Evaluator', metrics=[
        dict(type=m, crop_border=scale, convert_to='Y', prefix=name)
        for m in ('PSNR', 'SSIM')])


def set_test_sets(cfg: Config, names: Sequence[str], root: str,
                  scale: int, workers: int = 0) -> None:
    """Test on ``names`` (one loader + Y-PSNR/SSIM evaluator per set)."""
    cfg.test_dataloader = [_test_loader(cfg, n, root, scale, workers)
                           for n in names]
    cfg.test_evaluator = [_test_evaluator(cfg, n, scale) for n in names]
    cfg.test_cfg = dict(type='MultiTestLoop')


def set_patch_size(pipeline: list, gt_patch: int, scale: int) -> None:
    """Set the HR patch size of a training pipeline in place."""
    for t in pipeline:
        if t['type'] == 'Crop':
            t['crop_size'] = (gt_patch, gt_patch)
        elif t['type'] == 'PairedRandomCrop':
            t['gt_patch_size'] = gt_patch
        elif t['type'] == 'MATLABLikeResize' and 'output_shape' in t:
            t['output_shape'] = (gt_patch // scale, gt_patch // scale)


def _common(cfg: Config, preset: Preset, work_dir: str, name: str,
            iters: int, batch: int, lr: float, milestones: Sequence[float],
            data_root: Optional[str], train_folder: Optional[str],
            ckpt_interval: int) -> None:
    """Settings shared by stage 1 and stage 2."""
    cfg.work_dir = work_dir
    cfg.experiment_name = name
    cfg.randomness = dict(seed=preset.seed, diff_rank_seed=False,
                          deterministic=False)
    gen = cfg.model.generator
    if preset.generator is not None:  # another family (e.g. SwinIRNet)
        gen.update(copy.deepcopy(preset.generator))
    else:  # EDSRNet
        gen.mid_channels = preset.mid_channels
        gen.num_blocks = preset.num_blocks
        gen.upscale_factor = preset.scale
    loader = cfg.train_dataloader
    loader.batch_size = batch
    loader.num_workers = preset.num_workers
    loader.persistent_workers = preset.num_workers > 0
    # DefaultSampler (reshuffled every epoch by mmengine's infinite iterator)
    # instead of the configs' InfiniteSampler. Needed while OffsetHook drew
    # its calibration batches from the train dataloader (that closed the
    # shared index generator of an InfiniteSampler: StopIteration); kept
    # since, so that the committed docs/benchmarks.* numbers reproduce with
    # the same sample order.
    loader.sampler = dict(type='DefaultSampler', shuffle=True)
    ds = loader.dataset
    if data_root is not None:
        ds.data_root = data_root if preset.data != 'div2k' else \
            osp.join(data_root, 'DIV2K')
    if train_folder is not None:
        ds.data_prefix = dict(gt=train_folder)
    if preset.gt_patch:
        set_patch_size(ds.pipeline, preset.gt_patch, preset.scale)
        if 'min_gt_size' in ds:
            ds.min_gt_size = preset.gt_patch
    if preset.train_repeat > 1:  # a few images: >= 1 full batch per epoch
        loader.dataset = dict(type='RepeatDataset',
                              times=preset.train_repeat, dataset=ds)
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=iters,
                         val_interval=iters + 1)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.optim_wrapper.optimizer.lr = lr
    cfg.param_scheduler = dict(
        type='MultiStepLR', by_epoch=False, gamma=0.5,
        milestones=sorted({max(1, int(round(f * iters)))
                           for f in milestones if 0 < f < 1}) or [iters + 1])
    hooks = cfg.default_hooks
    hooks.logger = dict(type='LoggerHook', interval=preset.log_interval)
    hooks.checkpoint = dict(type='CheckpointHook', interval=ckpt_interval,
                            by_epoch=False, out_dir=None, max_keep_ckpts=1,
                            save_optimizer=True, save_last=True)
    cfg.log_processor = dict(type='LogProcessor', by_epoch=False,
                             window_size=preset.log_interval)
    cfg.visualizer = dict(type='ConcatImageVisualizer',
                          vis_backends=[dict(type='LocalVisBackend')],
                          fn_key='gt_path',
                          img_keys=['gt_img', 'input', 'pred_img'],
                          bgr2rgb=True)
    imports = list(cfg.get('custom_imports', {}).get('imports', []))
    if 'odm_mm' not in imports:
        imports.append('odm_mm')
    cfg.custom_imports = dict(imports=imports, allow_failed_imports=False)
    cfg.load_from = None
    cfg.resume = False


def method_parts(config: str) -> Dict:
    """What defines a method in its config file.

    Returns:
        ``quant_method`` (``model.quant_cfg.method``, default ``'odm'``),
        ``weight_cfg`` / ``act_cfg`` (``model.quant_cfg.*``: options of
        the method's weight / activation quantizer), ``placement``
        (``model.quant_cfg.placement``, None: the conv inputs), ``var_loss`` / ``skt_loss``
        (``model.*``, ``'paper'`` when the config does not set them),
        ``mismatch_loss`` (``model.mismatch_loss``, None when not set),
        ``optim_wrapper`` and ``offset_hook``
        (its ``OffsetHook``, or a subclass such as ``DDTBCalibHook``, of
        ``custom_hooks``).
    """
    from mmagic.registry import HOOKS
    from odm_mm.hooks import OffsetHook
    cfg = Config.fromfile(_abs(config))
    model = cfg.model

    def calibrates(h) -> bool:
        cls = HOOKS.get(h.get('type'))
        return isinstance(cls, type) and issubclass(cls, OffsetHook)

    hooks = [dict(h) for h in cfg.get('custom_hooks', []) if calibrates(h)]
    if len(hooks) != 1:
        raise ValueError(f'{config}: expected one OffsetHook (or subclass) '
                         f'in custom_hooks, found {len(hooks)}')
    qcfg = model.get('quant_cfg', {})
    return dict(quant_method=qcfg.get('method', 'odm'),
                weight_cfg=dict(qcfg.get('weight_cfg', {})),
                act_cfg=dict(qcfg.get('act_cfg', {})),
                placement=qcfg.get('placement'),
                var_loss=model.get('var_loss', 'paper'),
                mismatch_loss=copy.deepcopy(model.get('mismatch_loss')),
                skt_loss=model.get('skt_loss', 'paper'),
                optim_wrapper=copy.deepcopy(cfg.optim_wrapper.to_dict()),
                offset_hook=hooks[0])


def method_features(config: str) -> Dict[str, bool]:
    """Table 5's columns of a method config: ``var_loss``, ``coop``
    (a gate: Eq. 5's sign test or the published cosine weight),
    ``offsets`` (Eq. 7/8), ``mismatch`` (L_M of the published version) and
    ``wcc`` (weight clipping correction: a learnable weight range)."""
    from mmagic.registry import HOOKS
    from odm_mm.quantizers import quantizer_classes
    p = method_parts(config)
    ow = p['optim_wrapper']
    var = p['var_loss'] is not None
    mis = p['mismatch_loss'] is not None
    hook = HOOKS.build(copy.deepcopy(p['offset_hook']))
    _, weight_cls = quantizer_classes(p['quant_method'])
    return dict(var_loss=var, mismatch=mis,
                coop=(var or mis)
                and ow.get('type') == 'CooperativeOptimWrapper'
                and ow.get('mode', 'cooperative') != 'plain',
                offsets=bool(hook.shift or hook.scale),
                wcc=bool(getattr(weight_cls, 'learnable_range', False)))


def curve_points(preset: Preset) -> list:
    """The ``eval_at`` iterations below ``qat_iters`` (sorted)."""
    return sorted({int(i) for i in preset.eval_at
                   if 0 < int(i) < preset.qat_iters})


def _ckpt_interval(iters: int) -> int:
    return max(1, min(iters, max(iters // 5, 100)))


def fp32_config(preset: Preset, work_dir: str, data_root: Optional[str],
                train_folder: Optional[str], test_root: Optional[str],
                test_sets: Sequence[str]) -> Config:
    """Stage 1: the FP32 EDSR config of the preset."""
    cfg = load_composed([preset.fp32_base])
    _common(cfg, preset, work_dir, 'fp32', preset.fp32_iters,
            preset.fp32_batch, preset.fp32_lr, preset.fp32_milestones,
            data_root, train_folder, _ckpt_interval(preset.fp32_iters))
    cfg.custom_hooks = [dict(type='QATRecorderHook', bound_interval=0)]
    set_test_sets(cfg, test_sets, test_root or cfg.odm_data_root,
                  preset.scale, min(preset.num_workers, 2))
    return cfg


def qat_config(preset: Preset, method: str, bits: int, work_dir: str,
               name: str, fp32_checkpoint: str, data_root: Optional[str],
               train_folder: Optional[str], test_root: Optional[str],
               test_sets: Sequence[str]) -> Config:
    """Stage 2: one QAT run (``method`` key of METHODS, W``bits``A``bits``)."""
    parts = method_parts(METHODS[method].config)
    cfg = load_composed(list(preset.qat_bases))
    if cfg.model.get('type') != 'ODMEditModel':
        raise ValueError(f'{preset.qat_bases} do not build an ODMEditModel '
                         '(use an ODM config, e.g. configs/odm/local/'
                         'edsr_x4_w2a2_t91.py)')
    _common(cfg, preset, work_dir, name, preset.qat_iters, preset.qat_batch,
            preset.qat_lr, preset.qat_milestones, data_root, train_folder,
            _ckpt_interval(preset.qat_iters))
    if curve_points(preset):  # keep the checkpoints the curve tests
        cfg.default_hooks.checkpoint.update(
            interval=math.gcd(*curve_points(preset), preset.qat_iters),
            max_keep_ckpts=-1)
    model = cfg.model
    model.quant_cfg.update(w_bits=bits, a_bits=bits,
                           method=parts['quant_method'])
    weight_cfg = dict(parts['weight_cfg'])
    if preset.wcc_gamma_init is not None and \
            'gamma_init' in weight_options(parts['quant_method']):
        weight_cfg['gamma_init'] = preset.wcc_gamma_init
    model.quant_cfg.pop('weight_cfg', None)
    if weight_cfg:
        model.quant_cfg.weight_cfg = weight_cfg
    for key in ('act_cfg', 'placement'):
        model.quant_cfg.pop(key, None)
        if parts[key]:
            model.quant_cfg[key] = copy.deepcopy(parts[key])
    mis = parts['mismatch_loss']
    if mis == 'paper':  # the preset's lambda_M replaces the paper's
        mis = dict(type='MismatchRegLoss')
    model.mismatch_loss = dict(mis, loss_weight=preset.lambda_m) \
        if mis is not None else None
    if mis is not None and preset.mismatch_target is not None:
        model.mismatch_loss['target'] = preset.mismatch_target
    model.fp32_checkpoint = fp32_checkpoint
    model.skt_loss = parts['skt_loss']
    model.var_loss = dict(type='VarianceRegLoss',
                          loss_weight=preset.lambda_v,
                          normalize=preset.lambda_v_norm) \
        if parts['var_loss'] is not None else None
    if preset.skt_feature is not None:
        model.feature_module, model.feature_tap = preset.skt_feature
    new_ow = ConfigDict(parts['optim_wrapper'])
    new_ow.pop('_delete_', None)
    new_ow.optimizer = dict(new_ow.optimizer, lr=preset.qat_lr)
    if preset.gate_mode is not None and \
            new_ow.get('type') == 'CooperativeOptimWrapper':
        new_ow.mode = preset.gate_mode
    if preset.range_lr_mult is not None:
        keys = new_ow.get('paramwise_cfg', {}).get('custom_keys', {})
        new_ow.paramwise_cfg = dict(custom_keys={
            k: dict(v, lr_mult=preset.range_lr_mult)
            for k, v in keys.items()})
    cfg.optim_wrapper = new_ow
    offset = dict(parts['offset_hook'])
    offset.update(num_batches=preset.calib_batches,
                  recalib_interval=preset.recalib_interval,
                  recalib_momentum=preset.recalib_momentum,
                  offset_init=preset.offset_init,
                  offset_policy=preset.offset_policy)
    hooks = [h for h in cfg.get('custom_hooks', [])
             if h['type'] not in ('BasicVisualizationHook', 'OffsetHook',
                                  'QATRecorderHook',
                                  parts['offset_hook']['type'])]
    hooks.append(offset)
    hooks.append(dict(type='QATRecorderHook'))
    cfg.custom_hooks = hooks
    set_test_sets(cfg, test_sets, test_root or cfg.odm_data_root,
                  preset.scale, min(preset.num_workers, 2))
    return cfg
