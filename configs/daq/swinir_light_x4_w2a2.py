_base_ = ['../odm/_base_/paper_swinir_light_x4.py']

experiment_name = 'daq_swinir_light_x4_w2a2'
work_dir = f'./work_dirs/{experiment_name}'

# DAQ baseline on SwinIR-light x4 W2A2 (DAQ's authors ran CNNs only):
# the same placement as ODM (every RSTB: convs, Linears, both attention
# matmuls). A token feature is channel-wise normalised over its tokens, as
# a conv input over its pixels (odm_mm/layers/linear.py); L1 only, no L_V,
# no offsets.
model = dict(quant_cfg=dict(w_bits=2, a_bits=2, method='daq'),
             var_loss=None, skt_loss=None)
optim_wrapper = _base_.odm_pams_optim_wrapper
custom_hooks = _base_.odm_calib_hooks
