_base_ = ['./_base_/paper_msrresnet_x4.py']

experiment_name = 'odm24_msrresnet_x4_w4a4'
work_dir = f'./work_dirs/{experiment_name}'
# Published ODM (ECCV 2024), MSRResNet x4 W4A4, paper recipe on DIV2K.
model = dict(quant_cfg=dict(w_bits=4, a_bits=4))
