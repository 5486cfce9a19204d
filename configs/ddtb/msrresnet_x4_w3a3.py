_base_ = ['../odm/_base_/paper_msrresnet_x4.py', './_base_/ddtb.py']

experiment_name = 'ddtb_msrresnet_x4_w3a3'
work_dir = f'./work_dirs/{experiment_name}'

# DDTB baseline (configs/ddtb/_base_/ddtb.py, docs/baselines.md).
model = dict(quant_cfg=dict(w_bits=3, a_bits=3, method='ddtb'),
             var_loss=None)
optim_wrapper = _base_.ddtb_optim_wrapper
custom_hooks = _base_.ddtb_msrresnet_hooks
