# ODM on SwinIR x4, local CPU-sized recipe on T91 (LR made on the fly,
# configs/_base_/datasets/t91_x4.py), tested on Set5/Set14/B100. The
# generator is SwinIR-light (mmagic swinir_x4s64w8d4e60); there is no
# shipped SwinIR teacher: train one with
#   tools/train.py configs/fp32/swinir_light_x4_t91.py
# and pass --cfg-options model.fp32_checkpoint=work_dirs/
# swinir_light_x4_t91/iter_2000.pth (or the official DIV2K weights; the
# benchmark preset `swinir` trains and uses a smaller one).
_base_ = [
    'mmagic::swinir/swinir_x4s64w8d4e60_8xb4-lr2e-4-500k_div2k.py',
    '../../_base_/datasets/t91_x4.py',
    './odm.py',
]
max_iters = 2000
img_size = 24  # LR patch px of the 96 px T91 patches (3 x 3 windows of 8)

model = dict(
    type='ODMEditModel',
    generator=dict(img_size=img_size),
    quant_cfg=dict(w_bits=4, a_bits=4, method='odm'),
    fp32_checkpoint='work_dirs/swinir_light_x4_t91/iter_2000.pth',
    var_loss=dict(type='VarianceRegLoss', loss_weight=0.0001))
optim_wrapper = _base_.odm_optim_wrapper
custom_hooks = _base_.odm_custom_hooks

train_dataloader = dict(
    num_workers=2,
    batch_size=8,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(_delete_=True, **_base_.odm_t91_dataset))
val_dataloader = dict(_delete_=True, **_base_.odm_val_dataloader)
val_evaluator = dict(_delete_=True, **_base_.odm_val_evaluator)
val_cfg = dict(type='MultiValLoop')
test_dataloader = _base_.odm_test_dataloader
test_evaluator = _base_.odm_test_evaluator
test_cfg = dict(type='MultiTestLoop')

train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters,
    val_interval=max_iters // 4)
param_scheduler = dict(
    type='MultiStepLR', by_epoch=False, milestones=[max_iters // 2],
    gamma=0.5)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_iters // 4, out_dir=None, max_keep_ckpts=2,
                    save_best='Set5/PSNR', rule='greater'))
