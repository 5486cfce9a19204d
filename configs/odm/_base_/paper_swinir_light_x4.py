# ODM on SwinIR-light x4 (mmagic swinir_x4s64w8d4e60: embed 60, depths 4x6,
# heads 6, window 8, mlp ratio 2, pixelshuffledirect), the paper's recipe
# (Sec. 4.1) on DIV2K: batch 8, 60k iterations, Adam 1e-4 halved every 15k;
# test on Set5/Set14/B100/Urban100 (Y-PSNR/SSIM, crop = scale).
#
# The swap (odm_mm/swap.py PRESETS['SwinIRNet']) quantizes every RSTB whole:
# its window attentions (both matmuls take quantized q, k, v and softmax
# output, odm_mm/layers/attention.py), the Linears qkv/proj/fc1/fc2 (QuantLinear)
# and the RSTB's closing conv. conv_first, conv_after_body, the upsampler
# and LayerNorm/softmax/bias/residual adds stay FP32 (docs/swinir.md).
# The DIV2K training data keeps mmagic's SwinIR pipeline (LR sub-images,
# 64 px LR patches); the bit-width configs inherit this file and set only
# quant_cfg.
_base_ = [
    'mmagic::swinir/swinir_x4s64w8d4e60_8xb4-lr2e-4-500k_div2k.py',
    '../../_base_/datasets/sr_test_x4.py',
    './odm.py',
]

model = dict(
    type='ODMEditModel',
    quant_cfg=dict(w_bits=4, a_bits=4, method='odm'),
    # The official mmagic FP32 checkpoint (downloaded by mmengine when
    # online; Set5 32.43 dB); a local path works the same.
    fp32_checkpoint='https://download.openmmlab.com/mmediting/swinir/'
    'swinir_x4s64w8d4e60_8xb4-lr2e-4-500k_div2k-d6622d03.pth',
    var_loss=dict(type='VarianceRegLoss', loss_weight=0.0001))
optim_wrapper = _base_.odm_optim_wrapper
custom_hooks = _base_.odm_custom_hooks

train_dataloader = dict(
    batch_size=8,
    dataset=dict(data_root=_base_.odm_data_root + '/DIV2K'))
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
