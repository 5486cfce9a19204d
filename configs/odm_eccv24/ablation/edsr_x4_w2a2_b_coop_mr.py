_base_ = ['../_base_/paper_edsr_x4.py']

experiment_name = 'odm24_edsr_x4_w2a2_b_coop_mr'
work_dir = f'./work_dirs/{experiment_name}'

# Published Table 5 (b): cooperative mismatch regularisation (similarity
# gate) on the seed's weight quantizer, no weight clipping correction.
model = dict(quant_cfg=dict(w_bits=2, a_bits=2, method='odm'))
