_base_ = ['./_base_/paper_swinir_light_x4.py']

experiment_name = 'odm_swinir_light_x4_w4a4'
work_dir = f'./work_dirs/{experiment_name}'
# ODM SwinIR-light x4 W4A4: every RSTB quantized (convs, Linears, both
# attention matmuls), docs/swinir.md.
model = dict(quant_cfg=dict(w_bits=4, a_bits=4))
