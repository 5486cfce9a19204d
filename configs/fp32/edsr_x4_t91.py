# FP32 EDSR-baseline x4 trained on the local T91 set, tested on
# Set5/Set14/B100.
#
# Inherits mmagic's
#   edsr/edsr_x4c64b16_1xb16-300k_div2k.py
# unchanged (model, loss, optimizer, runtime) and only
# swaps the data (T91 with on-the-fly MATLAB-bicubic LR, see
# configs/_base_/datasets/t91_x4.py), the evaluators (Y-channel PSNR/SSIM,
# crop_border=4, per set) and the schedule, shortened for a CPU-sized run.
# Data root: $ODM_DATA_ROOT or --cfg-options odm_data_root=DIR (docs/data.md).
_base_ = [
    'mmagic::edsr/edsr_x4c64b16_1xb16-300k_div2k.py',
    '../_base_/datasets/t91_x4.py',
]
custom_imports = dict(imports=['odm_mm'], allow_failed_imports=False)

experiment_name = 'edsr_x4_t91'
work_dir = f'./work_dirs/{experiment_name}'
max_iters = 2000  # CPU-sized run; s/iter measured in docs/data.md

train_dataloader = dict(
    num_workers=2,
    batch_size=16,
    dataset=dict(_delete_=True, **_base_.odm_t91_dataset))
val_dataloader = dict(_delete_=True, **_base_.odm_val_dataloader)
val_evaluator = dict(_delete_=True, **_base_.odm_val_evaluator)
test_dataloader = _base_.odm_test_dataloader
test_evaluator = _base_.odm_test_evaluator

train_cfg = dict(max_iters=max_iters, val_interval=max_iters // 5)
param_scheduler = dict(milestones=[max_iters * 3 // 5, max_iters * 4 // 5])
default_hooks = dict(
    logger=dict(interval=50),
    # out_dir=None: checkpoints go to the work dir (mmagic: ./work_dirs/).
    checkpoint=dict(
        interval=max_iters // 5,
        out_dir=None,
        max_keep_ckpts=2,
        save_best='Set5/PSNR',
        rule='greater'))
