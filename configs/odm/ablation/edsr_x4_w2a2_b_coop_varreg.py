_base_ = ['../_base_/paper_edsr_x4.py']

experiment_name = 'odm_edsr_x4_w2a2_b_coop_varreg'
work_dir = f'./work_dirs/{experiment_name}'

# Table 5 (b): cooperative variance regularisation (Eq. 5), no offsets.
model = dict(quant_cfg=dict(w_bits=2, a_bits=2))
custom_hooks = _base_.odm_calib_hooks
