_base_ = ['./edsr_x4_w2a2.py']

experiment_name = 'daq_std8_edsr_x4_w2a2'
work_dir = f'./work_dirs/{experiment_name}'

# DAQ with the channel sigmas quantized to 8 bits: the official EDSR-full
# setting (DAQ-pytorch src/test.sh: edsr_full w2a2qq8); its EDSR-baseline
# runs use 4 (configs/daq/edsr_x4_w2a2.py). quant_cfg.act_cfg holds the
# options of the method's activation quantizer (docs/baselines.md).
model = dict(quant_cfg=dict(act_cfg=dict(sigma_bits=8)))
