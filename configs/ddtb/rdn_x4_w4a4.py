_base_ = ['../odm/_base_/paper_rdn_x4.py', './_base_/ddtb.py']

experiment_name = 'ddtb_rdn_x4_w4a4'
work_dir = f'./work_dirs/{experiment_name}'

# DDTB baseline (configs/ddtb/_base_/ddtb.py, docs/baselines.md).
# RDN: min/max weight ranges (official quant_weight_asym).
model = dict(quant_cfg=dict(w_bits=4, a_bits=4, method='ddtb',
                             percentile_j=0.0),
             var_loss=None)
optim_wrapper = _base_.ddtb_optim_wrapper
custom_hooks = _base_.ddtb_rdn_hooks
