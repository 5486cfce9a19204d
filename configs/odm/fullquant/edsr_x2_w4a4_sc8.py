_base_ = ['../_base_/paper_edsr_x2.py']

experiment_name = 'odm_edsr_x2_w4a4_sc8_full'
work_dir = f'./work_dirs/{experiment_name}'

# Supplement Table S2: fully quantized EDSR x2 -- every conv at W4A4 (head,
# tail and upsampler included) and 8-bit skip connections in the ResBlocks
# (odm_mm/fullquant.py; the long skip of EDSRNet.forward stays FP32).
model = dict(quant_cfg=dict(w_bits=4, a_bits=4, mode='full', skip_bits=8))
