_base_ = ['../_base_/t91_msrresnet_x4.py']

experiment_name = 'odm24_msrresnet_x4_w4a4_t91'
work_dir = f'./work_dirs/{experiment_name}'
# Published ODM (ECCV 2024), MSRResNet x4 W4A4, local T91 recipe.
model = dict(quant_cfg=dict(w_bits=4, a_bits=4))
