_base_ = ['../_base_/paper_edsr_x4.py']

experiment_name = 'odm_edsr_x4_w2a2_c_offsets'
work_dir = f'./work_dirs/{experiment_name}'

# Table 5 (c): distribution offsets only (Eq. 6-8), no L_V.
model = dict(quant_cfg=dict(w_bits=2, a_bits=2), var_loss=None)
