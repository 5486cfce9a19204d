_base_ = ['./edsr_x4_w2a2.py']

experiment_name = 'daq_clip_edsr_x4_w2a2'
work_dir = f'./work_dirs/{experiment_name}'

# DAQ with every activation held to 2^b levels: 'daq_clip' also clips the
# post-ReLU inputs, which the official code (method 'daq') leaves unclipped
# above (docs/baselines.md). The strict W2A2 comparison of the benchmark.
model = dict(quant_cfg=dict(method='daq_clip'))
