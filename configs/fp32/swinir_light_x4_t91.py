# FP32 SwinIR-light x4 (mmagic swinir_x4s64w8d4e60: embed 60, depths 4x6,
# heads 6, window 8, mlp ratio 2, pixelshuffledirect) trained on the local T91
# set, tested on Set5/Set14/B100.
#
# Inherits mmagic's
#   swinir/swinir_x4s64w8d4e60_8xb4-lr2e-4-500k_div2k.py
# unchanged (model, loss, optimizer, runtime) and only swaps the data (T91
# with on-the-fly MATLAB-bicubic LR, configs/_base_/datasets/t91_x4.py; HR
# patches of 4 x img_size px), the evaluators (Y-channel PSNR/SSIM,
# crop_border=4, per set) and the schedule, shortened for a CPU-sized run.
# The CPU-sized teacher of the `swinir` benchmark preset (tools/benchmark.py
# --preset swinir) is this config with a smaller generator.
# Data root: $ODM_DATA_ROOT or --cfg-options odm_data_root=DIR (docs/data.md).
_base_ = [
    'mmagic::swinir/swinir_x4s64w8d4e60_8xb4-lr2e-4-500k_div2k.py',
    '../_base_/datasets/t91_x4.py',
]
custom_imports = dict(imports=['odm_mm'], allow_failed_imports=False)

experiment_name = 'swinir_light_x4_t91'
work_dir = f'./work_dirs/{experiment_name}'
max_iters = 2000
img_size = 32  # LR patch px (a multiple of the window size 8)

model = dict(generator=dict(img_size=img_size))
train_dataloader = dict(
    num_workers=2,
    batch_size=16,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(_delete_=True, **_base_.odm_t91_dataset))
train_dataloader['dataset'].update(min_gt_size=img_size * 4)
for _t in train_dataloader['dataset']['pipeline']:
    if _t['type'] == 'Crop':
        _t['crop_size'] = (img_size * 4, img_size * 4)
    elif _t['type'] == 'MATLABLikeResize':
        _t['output_shape'] = (img_size, img_size)
val_dataloader = dict(_delete_=True, **_base_.odm_val_dataloader)
val_evaluator = dict(_delete_=True, **_base_.odm_val_evaluator)
val_cfg = dict(type='MultiValLoop')
test_dataloader = _base_.odm_test_dataloader
test_evaluator = _base_.odm_test_evaluator
test_cfg = dict(type='MultiTestLoop')

train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters,
    val_interval=max_iters // 5)
param_scheduler = dict(
    type='MultiStepLR', by_epoch=False,
    milestones=[max_iters * 3 // 5, max_iters * 4 // 5], gamma=0.5)
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(
        interval=max_iters // 5,
        out_dir=None,
        max_keep_ckpts=2,
        save_best='Set5/PSNR',
        rule='greater'))
