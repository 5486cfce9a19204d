_base_ = ['../_base_/paper_edsr_x4.py']

experiment_name = 'odm_edsr_x4_w2a2_a_varreg'
work_dir = f'./work_dirs/{experiment_name}'

# Table 5 (a): variance regularisation with the plain sum of Eq. 4.
model = dict(quant_cfg=dict(w_bits=2, a_bits=2))
optim_wrapper = dict(mode='plain')
custom_hooks = _base_.odm_calib_hooks
