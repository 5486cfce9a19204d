_base_ = ['./edsr_x4_w2a2.py']

experiment_name = 'ddtb_placement_edsr_x4_w2a2'
work_dir = f'./work_dirs/{experiment_name}'

# DDTB's official placement alone (48 quantizers, 14 gates; skip and
# residual paths quantized), with this framework's start of the gate (scale
# 1, no first stage): configs/ddtb/edsr_x4_w2a2_official.py minus the first
# stage and the official gate init, to tell the placement's effect apart.
model = dict(quant_cfg=dict(placement='ddtb_official'))
