_base_ = ['../_base_/paper_edsr_x4.py']

experiment_name = 'odm24_edsr_x4_w2a2_d_wcc_naive_mr'
work_dir = f'./work_dirs/{experiment_name}'

# Published Table 5 (d): weight clipping correction + naive mismatch
# regularisation (L_R + L_M summed, no gate).
model = dict(quant_cfg=dict(w_bits=2, a_bits=2))
optim_wrapper = dict(mode='plain')
