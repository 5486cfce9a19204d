# Published ODM (ECCV 2024) on msrresnet x4: the seed's paper recipe
# (configs/odm/_base_/paper_msrresnet_x4.py: DIV2K, batch 8, 60k iterations, Adam
# 1e-4 halved every 15k, Set5/Set14/B100/Urban100) with the published
# method: weight clipping correction, cooperative mismatch regularisation
# (similarity gate), no L_V, no offsets; bounds and clipping factors at 10x
# the base lr. The bit-width configs set only quant_cfg.
_base_ = ['../../odm/_base_/paper_msrresnet_x4.py']

model = dict(
    quant_cfg=dict(method='odm_wcc'), var_loss=None, mismatch_loss='paper')
optim_wrapper = _base_.odm24_optim_wrapper
custom_hooks = _base_.odm24_custom_hooks
