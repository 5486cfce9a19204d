_base_ = ['../odm/_base_/paper_swinir_light_x4.py']

experiment_name = 'pams_swinir_light_x4_w2a2'
work_dir = f'./work_dirs/{experiment_name}'

# PAMS baseline on SwinIR-light x4 W2A2, the same placement as ODM
# (every RSTB: convs, Linears, both attention matmuls): symmetric learnable
# max-scale per quantizer, L1 + SKT, no L_V, no offsets.
model = dict(quant_cfg=dict(w_bits=2, a_bits=2, method='pams'),
             var_loss=None)
optim_wrapper = _base_.odm_pams_optim_wrapper
custom_hooks = _base_.odm_calib_hooks
