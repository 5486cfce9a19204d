_base_ = ['./rdn_x4_w2a2.py']

experiment_name = 'daq_official_rdn_x4_w2a2'
work_dir = f'./work_dirs/{experiment_name}'

# DAQ's official RDN placement (DAQ-pytorch src/model/rdn.py): only the
# dense-layer convs of the RDBs are quantized (input and weights); LFF and
# GFF stay FP32. configs/daq/rdn_x4_w2a2.py quantizes the framework's preset
# (dense layers, LFF, GFF) like PAMS/ODM (docs/baselines.md).
model = dict(quant_cfg=dict(patterns=[r'rdbs\.\d+\.layers\.\d+\.conv']))
