_base_ = ['../_base_/t91_edsr_x2.py']

experiment_name = 'odm_edsr_x2_w2a2_t91'
work_dir = f'./work_dirs/{experiment_name}'

# ODM EDSR x2 W2A2 on the local T91 recipe.
model = dict(quant_cfg=dict(w_bits=2, a_bits=2))
