# ODM on mmagic's SRCNN x4 purely by config: no preset is needed, the
# swap pattern and the SKT feature are named here (any mmagic restorer works
# the same way: list its conv names with `print(model)`).
_base_ = [
    'mmagic::srcnn/srcnn_x4k915_1xb16-1000k_div2k.py',
    '../_base_/datasets/sr_test_x4.py',
    './_base_/odm.py',
]
experiment_name = 'odm_srcnn_x4_w4a4'
work_dir = f'./work_dirs/{experiment_name}'

model = dict(
    type='ODMEditModel',
    quant_cfg=dict(w_bits=4, a_bits=4, method='odm', patterns=[r'conv2']),
    feature_module='conv2',
    fp32_checkpoint='https://download.openmmlab.com/mmediting/restorers/'
    'srcnn/srcnn_x4k915_1x16_1000k_div2k_20200608-4186f232.pth',
    var_loss=dict(type='VarianceRegLoss', loss_weight=1e-4))
optim_wrapper = _base_.odm_optim_wrapper
# SRCNN has a single conv between head and tail: top-p of one layer.
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
default_hooks = dict(checkpoint=dict(interval=5000, out_dir=None))
