_base_ = ['./rdn_x4_w2a2.py']

experiment_name = 'ddtb_official_rdn_x4_w2a2'
work_dir = f'./work_dirs/{experiment_name}'

# DDTB as its authors ran it (zysxmu/DDTB model/rdn.py): the RDB input
# (also the block's residual), the dense inputs after the first, the LFF
# input and the 1x1 GFF input quantized (145 quantizers, 72 gates), the 3x3
# GFF conv reading a float input; the first stage and the official gate
# init (configs/ddtb/_base_/ddtb.py, docs/baselines.md).
model = dict(quant_cfg=_base_.ddtb_official_quant_cfg)
custom_hooks = _base_.ddtb_rdn_official_hooks
