# The ODM fragment. A config quantizes a stock mmagic SR config with it:
#
#   _base_ = ['mmagic::edsr/edsr_x4c64b16_1xb16-300k_div2k.py',
#             'odm_mm::odm/_base_/odm.py']   # odm_mm/config_scope.py
#   model = dict(type='ODMEditModel', quant_cfg=dict(w_bits=2, a_bits=2),
#                fp32_checkpoint='path/or/url/of/fp32.pth')
#   optim_wrapper = _base_.odm_optim_wrapper
#   custom_hooks = _base_.odm_custom_hooks
#
# (mmengine forbids two bases defining the same key, so every value that
# replaces a key of the stock config is exported under an `odm_` name and
# assigned in the config itself.) ODMEditModel keeps the stock generator,
# pixel loss and data preprocessor and adds, by default, SKT (Eq. 9, weight
# 1000/255 at mmagic's [0, 1] pixels) and L_V (Eq. 3, lambda_V = 1e-4 for
# EDSR/SRResNet, 1e-5 for RDN: Supplement S1, unchanged at [0, 1]); see
# odm_mm/losses.py and docs/odm_design.md. tools/train.py logs one
# "[odm_mm fragment]" line per stock setting this replaces (model type,
# optimizer, unused model.train_cfg keys, custom hooks; odm_mm/fragment.py),
# and ODMEditModel refuses stock models whose training logic it would drop
# (BasicVSR's fix_iter, a GAN's discriminator).
custom_imports = dict(imports=['odm_mm'], allow_failed_imports=False)

# Quantizer bounds and offsets learn at this multiple of the base lr
# (PAMS/DDTB use 1e-2 for range parameters vs 1e-4 for weights).
odm_range_lr_mult = 100.
odm_paramwise_cfg = dict(
    custom_keys={
        'act_quantizer': dict(lr_mult=odm_range_lr_mult),
        '.shift': dict(lr_mult=odm_range_lr_mult),
        '.scale': dict(lr_mult=odm_range_lr_mult),
    })
# Eq. 5 (mode='plain' gives Eq. 4, the ablation (a)).
odm_optim_wrapper = dict(
    _delete_=True,
    type='CooperativeOptimWrapper',
    mode='cooperative',
    optimizer=dict(type='Adam', lr=1e-4, betas=(0.9, 0.999)),
    paramwise_cfg=odm_paramwise_cfg)
# PAMS: the same optimizer without the gate.
odm_pams_optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='Adam', lr=1e-4, betas=(0.9, 0.999)),
    paramwise_cfg=odm_paramwise_cfg)

# Algorithm 1: percentile bounds, Eq. 6 statistics, top-p offsets (p=0.3).
odm_offset_hook = dict(type='OffsetHook', ratio=0.3, num_batches=8,
                       shift=True, scale=True)
# NaN/Inf losses or weights stop training before they are checkpointed;
# collapsed/inverted quantizer ranges are repaired (odm_mm/guards.py).
odm_guard_hook = dict(type='NumericalGuardHook')
odm_custom_hooks = [
    dict(type='BasicVisualizationHook', interval=1), odm_offset_hook,
    odm_guard_hook
]
# Calibration only (PAMS, quantizer alone, var-reg ablations).
odm_calib_hooks = [
    dict(type='BasicVisualizationHook', interval=1),
    dict(type='OffsetHook', ratio=0.3, num_batches=8, shift=False,
         scale=False), odm_guard_hook
]

# Unselected offsets receive no gradient; DDP must tolerate them.
model_wrapper_cfg = dict(
    type='MMDistributedDataParallel', find_unused_parameters=True)

# The paper's recipe (Sec. 4.1): 60 epochs ~ 60k iterations at batch 8,
# Adam lr 1e-4 halved every 15k iterations.
odm_paper_train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=60000, val_interval=5000)
odm_paper_param_scheduler = dict(
    type='MultiStepLR', by_epoch=False, milestones=[15000, 30000, 45000],
    gamma=0.5)

# ---------------------------------------------------------------------------
# ODM as published (ECCV 2024, arXiv 2307.13337 v2; configs/odm_eccv24/,
# docs/odm_eccv2024.md): weight clipping correction (method 'odm_wcc') and
# the mismatch regulariser L_M with the similarity gate replace L_V, the
# sign gate and the offsets. A config switches to it with:
#
#   model = dict(type='ODMEditModel', quant_cfg=dict(method='odm_wcc', ...),
#                var_loss=None, mismatch_loss='paper')   # lambda_M 1e-5
#   optim_wrapper = _base_.odm24_optim_wrapper
#   custom_hooks = _base_.odm24_custom_hooks
#
# Activation bounds and the clipping factors learn at 10x the base lr.
odm24_range_lr_mult = 10.
odm24_paramwise_cfg = dict(
    custom_keys={
        'act_quantizer': dict(lr_mult=odm24_range_lr_mult),
        'weight_quantizer': dict(lr_mult=odm24_range_lr_mult),
    })
# g_R + (cos(g_R, g_M) + 1) / 2 g_M, one cosine over all parameters
odm24_optim_wrapper = dict(
    _delete_=True,
    type='CooperativeOptimWrapper',
    mode='similarity',
    optimizer=dict(type='Adam', lr=1e-4, betas=(0.9, 0.999)),
    paramwise_cfg=odm24_paramwise_cfg)
# no regulariser (the clipping-correction-only ablation): no gate
odm24_plain_optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='Adam', lr=1e-4, betas=(0.9, 0.999)),
    paramwise_cfg=odm24_paramwise_cfg)
# calibration (percentile bounds, clipping factors) without offsets
odm24_custom_hooks = [
    dict(type='BasicVisualizationHook', interval=1),
    dict(type='OffsetHook', ratio=0.3, num_batches=8, shift=False,
         scale=False), odm_guard_hook
]
