_base_ = ['../_base_/paper_edsr_x4.py']

experiment_name = 'odm24_edsr_x4_w2a2_c_wcc'
work_dir = f'./work_dirs/{experiment_name}'

# Published Table 5 (c): weight clipping correction alone (no L_M, no gate).
model = dict(quant_cfg=dict(w_bits=2, a_bits=2), mismatch_loss=None)
optim_wrapper = _base_.odm24_plain_optim_wrapper
