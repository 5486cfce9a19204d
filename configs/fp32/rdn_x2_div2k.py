# FP32 RDN x2 exactly as mmagic trains it (DIV2K sub-images, mmagic's
# pipeline and 1xb16 schedule), tested on Set5/Set14/B100/Urban100 with the
# paper protocol (Y-channel PSNR/SSIM, crop_border=2). For GPU users.
#
# Prepare <data root>/DIV2K with mmagic's
# tools/dataset_converters/div2k/preprocess_div2k_dataset.py (docs/data.md).
_base_ = [
    'mmagic::rdn/rdn_x2c64b16_1xb16-1000k_div2k.py',
    '../_base_/datasets/sr_test_x2.py',
]
custom_imports = dict(imports=['odm_mm'], allow_failed_imports=False)

experiment_name = 'rdn_x2_div2k'
work_dir = f'./work_dirs/{experiment_name}'

# mmagic's DIV2K train set (ann_file, X2_sub folders, pipeline) under the
# odm data root; SRFolderDataset only adds the missing-data checks.
train_dataloader = dict(
    dataset=dict(
        type='SRFolderDataset',
        data_root=_base_.odm_data_root + '/DIV2K',
        check_images=False))
val_dataloader = dict(_delete_=True, **_base_.odm_val_dataloader)
val_evaluator = dict(_delete_=True, **_base_.odm_val_evaluator)
test_dataloader = _base_.odm_test_dataloader_urban
test_evaluator = _base_.odm_test_evaluator_urban

default_hooks = dict(
    checkpoint=dict(out_dir=None, save_best='Set5/PSNR', rule='greater'))
