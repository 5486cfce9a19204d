# x2 SR benchmark sets (paper protocol): Set5, Set14, B100 and Urban100.
#
# Layout below odm_data_root (docs/data.md): <Set>/HR/<name>.png and
# <Set>/LR_bicubic/X2/<name>x2.png; HR is cropped top-left to LR*2 (ModCrop);
# all images are loaded as 3-channel RGB ('color': Set14 bridge.png is
# grayscale). Metrics: mmagic's PSNR and SSIM on the Y channel
# (convert_to='Y'), crop_border=2, one Evaluator per set with prefix=<Set>
# (logs read 'Set5/PSNR'), run by mmagic's MultiTestLoop / MultiValLoop.
#
# Provides (use them in a config through _base_.<name>):
#   odm_test_dataloader / odm_test_evaluator             Set5, Set14, B100
#   odm_test_dataloader_urban / odm_test_evaluator_urban  + Urban100
#   odm_val_dataloader / odm_val_evaluator               Set5 only
#   odm_sr_test_loaders / odm_sr_test_evaluators         per set, by name
# A set whose folder is missing (Urban100 here) fails only when its dataset
# is built, with a message naming the path and ODM_DATA_ROOT.
_base_ = ['./data_root.py']

odm_scale = 2
odm_sr_test_sets = ['Set5', 'Set14', 'B100', 'Urban100']
odm_sr_test_pipeline = [
    dict(type='LoadImageFromFile', key='img', color_type='color',
         channel_order='rgb', imdecode_backend='cv2'),
    dict(type='LoadImageFromFile', key='gt', color_type='color',
         channel_order='rgb', imdecode_backend='cv2'),
    dict(type='SetValues', dictionary=dict(scale=odm_scale)),
    dict(type='ModCrop', key='gt'),
    dict(type='PackInputs')
]
odm_sr_test_loaders = {
    name: dict(
        num_workers=2,
        batch_size=1,
        persistent_workers=False,
        drop_last=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(
            type='SRFolderDataset',
            metainfo=dict(dataset_type=name.lower(), task_name='sisr'),
            data_root=_base_.odm_data_root,
            data_prefix=dict(
                img=f'{name}/LR_bicubic/X{odm_scale}', gt=f'{name}/HR'),
            filename_tmpl=dict(img='{}x' + str(odm_scale), gt='{}'),
            search_key='img',
            scale=odm_scale,
            pipeline=odm_sr_test_pipeline))
    for name in odm_sr_test_sets
}
odm_sr_test_evaluators = {
    name: dict(
        type='Evaluator',
        metrics=[
            dict(type=metric, crop_border=odm_scale, convert_to='Y',
                 prefix=name) for metric in ('PSNR', 'SSIM')
        ])
    for name in odm_sr_test_sets
}
odm_test_dataloader = [odm_sr_test_loaders[n] for n in odm_sr_test_sets[:3]]
odm_test_evaluator = [odm_sr_test_evaluators[n] for n in odm_sr_test_sets[:3]]
odm_test_dataloader_urban = [odm_sr_test_loaders[n] for n in odm_sr_test_sets]
odm_test_evaluator_urban = [
    odm_sr_test_evaluators[n] for n in odm_sr_test_sets
]
odm_val_dataloader = odm_sr_test_loaders['Set5']
odm_val_evaluator = odm_sr_test_evaluators['Set5']
