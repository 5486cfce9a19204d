_base_ = ['../odm/_base_/paper_rdn_x2.py']

experiment_name = 'ddtb_rdn_x2_w2a2'
work_dir = f'./work_dirs/{experiment_name}'

# DDTB baseline (Zhong et al., ECCV 2022) in the same framework: two
# trainable bounds per layer, a 2-bit dynamic gate on the top 50% of the
# layers by var(batch max) + var(batch min) (the official dynamic_ratio
# for this network), DDTB's percentile weight quantizer
# (odm_mm/quantizers_ddtb.py, docs/baselines.md). L1 + SKT (the official
# at_loss), no L_V, no offsets. The bounds learn at the official 1e-2
# converted to [0, 1] pixels (Adam steps are in feature units: 1e-2 / 255,
# i.e. lr_mult 100 / 255), the gate and the weights at the base lr.
# RDN: official M=95 activation calibration (P_5/P_95) and min/max
# weight ranges (quant_weight_asym).
model = dict(quant_cfg=dict(w_bits=2, a_bits=2, method='ddtb',
                             percentile_j=0.0),
             var_loss=None)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='Adam', lr=1e-4, betas=(0.9, 0.999)),
    paramwise_cfg=dict(custom_keys={
        'act_quantizer': dict(lr_mult=100. / 255),
        'act_quantizer.gate': dict(lr_mult=1.),
    }))
custom_hooks = [
    dict(type='BasicVisualizationHook', interval=1),
    dict(type='DDTBCalibHook', dynamic_ratio=0.5, num_batches=8,
         percentile_j=5.0),
    dict(type='NumericalGuardHook'),
]
