# Published ODM (ECCV 2024) on edsr x4, the local CPU-sized T91 recipe
# of configs/odm/_base_/t91_edsr_x4.py (teacher from ../shared/models or
# --cfg-options model.fp32_checkpoint=PATH).
_base_ = ['../../odm/_base_/t91_edsr_x4.py']

model = dict(
    quant_cfg=dict(method='odm_wcc'), var_loss=None, mismatch_loss='paper')
optim_wrapper = _base_.odm24_optim_wrapper
custom_hooks = _base_.odm24_custom_hooks
