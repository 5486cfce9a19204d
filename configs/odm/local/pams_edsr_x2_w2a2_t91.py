_base_ = ['../_base_/t91_edsr_x2.py']

experiment_name = 'pams_edsr_x2_w2a2_t91'
work_dir = f'./work_dirs/{experiment_name}'

# PAMS EDSR W2A2 on the local T91 recipe (same data, budget, seed).
model = dict(quant_cfg=dict(w_bits=2, a_bits=2, method='pams'),
             var_loss=None)
optim_wrapper = _base_.odm_pams_optim_wrapper
custom_hooks = _base_.odm_calib_hooks
