_base_ = ['../_base_/paper_edsr_x4.py']

experiment_name = 'odm_edsr_x4_w2a2_quant_only'
work_dir = f'./work_dirs/{experiment_name}'

# ODM's quantizer alone: two learnable bounds with percentile init,
# L1 + SKT; no L_V, no offsets (isolates ODM's two contributions).
model = dict(quant_cfg=dict(w_bits=2, a_bits=2), var_loss=None)
custom_hooks = _base_.odm_calib_hooks
