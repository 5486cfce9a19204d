_base_ = ['../_base_/t91_edsr_x4.py']

experiment_name = 'odm_edsr_x4_w3a3_t91'
work_dir = f'./work_dirs/{experiment_name}'

# ODM EDSR x4 W3A3 on the local T91 recipe.
model = dict(quant_cfg=dict(w_bits=3, a_bits=3))
