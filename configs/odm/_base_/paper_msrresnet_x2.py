# ODM on MSRResNet x2, the paper's recipe (Sec. 4.1): DIV2K (mmagic's
# sub-image layout under $ODM_DATA_ROOT/DIV2K, docs/data.md), batch 8,
# 60k iterations, Adam 1e-4 halved every 15k; test on Set5/Set14/B100/
# Urban100 (Y-PSNR/SSIM, crop = scale). The bit-width configs inherit this
# file and set only quant_cfg.
_base_ = [
    'mmagic::srgan_resnet/msrresnet_x4c64b16_1xb16-1000k_div2k.py',
    '../../_base_/datasets/sr_test_x2.py',
    './odm.py',
]

# mmagic ships MSRResNet only at x4: same network at x2 (the stock
# pipeline crops LR/GT pairs by `scale`), trained on DIV2K X2_sub.
# No official x2 checkpoint exists: train the FP32 model first
# (e.g. tools/train.py with this generator and the stock config) and
# set model.fp32_checkpoint.
scale = 2
train_pipeline = _base_.train_pipeline
train_pipeline[2] = dict(type='SetValues', dictionary=dict(scale=2))
train_dataloader = dict(dataset=dict(
    data_prefix=dict(img='DIV2K_train_LR_bicubic/X2_sub',
                     gt='DIV2K_train_HR_sub'),
    pipeline=train_pipeline))

model = dict(
    type='ODMEditModel',
    generator=dict(upscale_factor=2),
    test_cfg=dict(crop_border=2),
    quant_cfg=dict(w_bits=4, a_bits=4, method='odm'),
    # The official mmagic FP32 checkpoint (downloaded by mmengine when
    # online); a local path works the same.
    fp32_checkpoint=None,
    var_loss=dict(type='VarianceRegLoss', loss_weight=0.0001))
optim_wrapper = _base_.odm_optim_wrapper
custom_hooks = _base_.odm_custom_hooks

train_dataloader = dict(
    batch_size=8,
    dataset=dict(
        type='SRFolderDataset',
        data_root=_base_.odm_data_root + '/DIV2K',
        check_images=False))
val_dataloader = dict(_delete_=True, **_base_.odm_val_dataloader)
val_evaluator = dict(_delete_=True, **_base_.odm_val_evaluator)
val_cfg = dict(type='MultiValLoop')
test_dataloader = _base_.odm_test_dataloader_urban
test_evaluator = _base_.odm_test_evaluator_urban
test_cfg = dict(type='MultiTestLoop')

train_cfg = dict(_delete_=True, **_base_.odm_paper_train_cfg)
param_scheduler = dict(_delete_=True, **_base_.odm_paper_param_scheduler)
default_hooks = dict(
    checkpoint=dict(interval=5000, out_dir=None, save_best='Set5/PSNR',
                    rule='greater'))
