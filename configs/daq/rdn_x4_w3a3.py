_base_ = ['../odm/_base_/paper_rdn_x4.py']

experiment_name = 'daq_rdn_x4_w3a3'
work_dir = f'./work_dirs/{experiment_name}'

# DAQ baseline (Hong et al., WACV 2022) in the same framework: per-image
# channel-wise mean/std normalisation with a Gaussian-optimal step and
# quantized sigmas (odm_mm/quantizers/daq.py, docs/baselines.md). No
# learnable quantizer parameter; the official recipe trains with L1 only
# (no SKT, no teacher); no L_V, no offsets. Nothing to calibrate: the
# post-ReLU branch is decided at every call (x.min() == 0, as official), so
# `tools/test.py CONFIG FP32.pth` is DAQ without QAT (its paper's setting).
model = dict(quant_cfg=dict(w_bits=3, a_bits=3, method='daq'),
             var_loss=None, skt_loss=None)
optim_wrapper = _base_.odm_pams_optim_wrapper
custom_hooks = _base_.odm_calib_hooks
