# Published ODM (ECCV 2024) on RDN x4 (lambda_M 1e-6), the local CPU-sized T91 recipe
# (LR made on the fly, configs/_base_/datasets/t91_x4.py; Set5/Set14/B100).
# No shared teacher exists for this network: train one with
#   python tools/train.py configs/fp32/rdn_x4_t91.py
# (its last checkpoint is the default below) or point
# --cfg-options model.fp32_checkpoint=PATH at any mmagic checkpoint of it.
_base_ = [
    'mmagic::rdn/rdn_x4c64b16_1xb16-1000k_div2k.py',
    '../../_base_/datasets/t91_x4.py',
    '../../odm/_base_/odm.py',
]
max_iters = 2000

model = dict(
    type='ODMEditModel',
    quant_cfg=dict(w_bits=4, a_bits=4, method='odm_wcc'),
    fp32_checkpoint='./work_dirs/rdn_x4_t91/iter_500.pth',
    var_loss=None,
    mismatch_loss='paper')
optim_wrapper = _base_.odm24_optim_wrapper
custom_hooks = _base_.odm24_custom_hooks

train_dataloader = dict(
    num_workers=2,
    batch_size=8,
    dataset=dict(_delete_=True, **_base_.odm_t91_dataset))
val_dataloader = dict(_delete_=True, **_base_.odm_val_dataloader)
val_evaluator = dict(_delete_=True, **_base_.odm_val_evaluator)
val_cfg = dict(type='MultiValLoop')
test_dataloader = _base_.odm_test_dataloader
test_evaluator = _base_.odm_test_evaluator
test_cfg = dict(type='MultiTestLoop')

train_cfg = dict(max_iters=max_iters, val_interval=max_iters // 4)
param_scheduler = dict(_delete_=True, type='MultiStepLR', by_epoch=False,
                       milestones=[max_iters // 2], gamma=0.5)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_iters // 4, out_dir=None, max_keep_ckpts=2,
                    save_best='Set5/PSNR', rule='greater'))
