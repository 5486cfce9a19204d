_base_ = ['./edsr_x4_w2a2.py']

experiment_name = 'ddtb_official_edsr_x4_w2a2'
work_dir = f'./work_dirs/{experiment_name}'

# DDTB as its authors ran it (zysxmu/DDTB model/edsr.py,
# main_limitrange_incremental.py): per ResBlock the identity path, the ReLU
# output and the residual branch quantized (48 quantizers, int(48 x 0.3) =
# 14 gates), conv1 reading the block input unquantized; the first stage and
# the official gate init (configs/ddtb/_base_/ddtb.py, docs/baselines.md).
model = dict(quant_cfg=_base_.ddtb_official_quant_cfg)
custom_hooks = _base_.ddtb_edsr_official_hooks
