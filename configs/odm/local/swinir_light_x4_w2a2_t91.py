_base_ = ['../_base_/t91_swinir_x4.py']

experiment_name = 'odm_swinir_light_x4_w2a2_t91'
work_dir = f'./work_dirs/{experiment_name}'

# ODM SwinIR-light x4 W2A2 on the local T91 recipe (every RSTB quantized).
model = dict(quant_cfg=dict(w_bits=2, a_bits=2))
