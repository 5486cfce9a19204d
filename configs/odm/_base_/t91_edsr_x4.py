# ODM on EDSR-baseline x4, local CPU-sized recipe on T91 (LR made on the
# fly, configs/_base_/datasets/t91_x4.py), tested on Set5/Set14/B100.
# The FP32 teacher is the EDSR-baseline x4 trained on T91 that ships in
# ../shared/models ($ODM_MODELS_ROOT moves it); your own
# `tools/train.py configs/fp32/edsr_x4_t91.py` (work_dirs/edsr_x4_t91/
# iter_5000.pth) or any mmagic EDSR x4 64ch/16-block checkpoint works with
# --cfg-options model.fp32_checkpoint=PATH.
_base_ = [
    'mmagic::edsr/edsr_x4c64b16_1xb16-300k_div2k.py',
    '../../_base_/datasets/t91_x4.py',
    './odm.py',
]
max_iters = 2000

model = dict(
    type='ODMEditModel',
    quant_cfg=dict(w_bits=4, a_bits=4, method='odm'),
    fp32_checkpoint=_base_.odm_models_root + '/edsr_x4c64b16_t91_fp32.pth')
optim_wrapper = _base_.odm_optim_wrapper
custom_hooks = _base_.odm_custom_hooks

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
param_scheduler = dict(milestones=[max_iters // 2])
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_iters // 4, out_dir=None, max_keep_ckpts=2,
                    save_best='Set5/PSNR', rule='greater'))
