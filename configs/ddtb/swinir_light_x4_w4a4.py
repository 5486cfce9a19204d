_base_ = ['../odm/_base_/paper_swinir_light_x4.py', './_base_/ddtb.py']

experiment_name = 'ddtb_swinir_light_x4_w4a4'
work_dir = f'./work_dirs/{experiment_name}'

# DDTB baseline on SwinIR-light x4 W4A4 (DDTB's authors ran CNNs only):
# the same placement as ODM (every RSTB), EDSR's dynamic ratio 0.3 over the
# conv and Linear inputs; the attention matmul operands keep static bounds.
model = dict(quant_cfg=dict(w_bits=4, a_bits=4, method='ddtb'),
             var_loss=None)
optim_wrapper = _base_.ddtb_optim_wrapper
custom_hooks = _base_.ddtb_edsr_hooks
