_base_ = ['./_base_/paper_rdn_x4.py']

experiment_name = 'odm_rdn_x4_w4a4'
work_dir = f'./work_dirs/{experiment_name}'
# ODM rdn x4 W4A4 (paper Tables 1-3, S1).
model = dict(quant_cfg=dict(w_bits=4, a_bits=4))
