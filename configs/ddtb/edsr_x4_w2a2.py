_base_ = ['../odm/_base_/paper_edsr_x4.py', './_base_/ddtb.py']

experiment_name = 'ddtb_edsr_x4_w2a2'
work_dir = f'./work_dirs/{experiment_name}'

# DDTB baseline (configs/ddtb/_base_/ddtb.py, docs/baselines.md).
model = dict(quant_cfg=dict(w_bits=2, a_bits=2, method='ddtb'),
             var_loss=None)
optim_wrapper = _base_.ddtb_optim_wrapper
custom_hooks = _base_.ddtb_edsr_hooks
