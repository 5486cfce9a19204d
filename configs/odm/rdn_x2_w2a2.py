_base_ = ['./_base_/paper_rdn_x2.py']

experiment_name = 'odm_rdn_x2_w2a2'
work_dir = f'./work_dirs/{experiment_name}'
# ODM rdn x2 W2A2 (paper Tables 1-3, S1).
model = dict(quant_cfg=dict(w_bits=2, a_bits=2))
