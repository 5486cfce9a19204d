_base_ = ['./_base_/paper_edsr_x2.py']

experiment_name = 'odm24_edsr_x2_w2a2'
work_dir = f'./work_dirs/{experiment_name}'
# Published ODM (ECCV 2024), EDSR x2 W2A2, paper recipe on DIV2K.
model = dict(quant_cfg=dict(w_bits=2, a_bits=2))
