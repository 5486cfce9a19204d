# The DDTB fragment (Zhong et al., ECCV 2022) in the same framework: two
# trainable bounds per layer, a 2-bit dynamic gate on the top layers by
# var(batch max) + var(batch min) (the official dynamic_ratio per network:
# EDSR 0.3, RDN 0.5, SRResNet 0.1), DDTB's percentile weight quantizer
# (odm_mm/quantizers/ddtb.py, docs/baselines.md). L1 + SKT (the official
# at_loss), no L_V, no offsets. The bounds learn at the official 1e-2
# converted to [0, 1] pixels (Adam steps are in feature units: 1e-2 / 255,
# i.e. lr_mult 100 / 255), the gate and the weights at the base lr.
# A config inherits a paper_* base and this file, then sets
#   optim_wrapper = _base_.ddtb_optim_wrapper
#   custom_hooks = _base_.ddtb_<model>_hooks
ddtb_optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='Adam', lr=1e-4, betas=(0.9, 0.999)),
    paramwise_cfg=dict(custom_keys={
        'act_quantizer': dict(lr_mult=100. / 255),
        'act_quantizer.gate': dict(lr_mult=1.),
    }))


def _hooks(ratio, percentile_j=1.0, first_stage=0.0):
    # the dynamic layers are chosen over one epoch (dynamic_batches=None),
    # as the official calibration epoch
    return [
        dict(type='BasicVisualizationHook', interval=1),
        dict(type='DDTBCalibHook', dynamic_ratio=ratio, num_batches=8,
             percentile_j=percentile_j, first_stage=first_stage),
        dict(type='NumericalGuardHook'),
    ]


ddtb_edsr_hooks = _hooks(0.3)
# RDN: official M=95 activation calibration (P_5/P_95)
ddtb_rdn_hooks = _hooks(0.5, 5.0)
ddtb_msrresnet_hooks = _hooks(0.1)

# As the authors ran it (configs/ddtb/*_official.py): the official
# placement (quantized skip / residual paths, quant_cfg.placement), the
# official first stage (epochs 2-5 of 60 after the calibration epoch: the
# gate is computed, the static bounds quantize, MSE(logits, 0) is added;
# 4 / 60 of the iterations) and the official random init of the gate's last
# layer (quant_cfg.act_cfg.gate_init).
ddtb_official_quant_cfg = dict(placement='ddtb_official',
                               act_cfg=dict(gate_init='official'))
ddtb_edsr_official_hooks = _hooks(0.3, first_stage=4 / 60)
ddtb_rdn_official_hooks = _hooks(0.5, 5.0, first_stage=4 / 60)
