# x3 training on T91 (91 small images, 78..508 px), LR made on the fly.
#
# A random HR patch of odm_t91_patch px is cut from <root>/T91/<name>.png,
# flipped/transposed, then downscaled by mmagic's MATLABLikeResize (bicubic,
# antialiased, MATLAB imresize-like; float output without MATLAB's per-pass
# uint8 rounding) and rounded once to uint8 (odm_mm ToUint8) like the stored
# benchmark LR files. HR images smaller than the patch are skipped by
# SRFolderDataset(min_gt_size=...) and their number is logged (at 96 px: 1 of
# 91; no padding, so no artificial borders are learnt).
# Also brings in the x3 test sets (sr_test_x3.py). Use in a config as
#   train_dataloader = dict(
#       dataset=dict(_delete_=True, **_base_.odm_t91_dataset))
_base_ = ['./sr_test_x3.py']

odm_t91_patch = 96  # HR patch px; the LR patch is odm_t91_patch // 3
odm_t91_train_pipeline = [
    dict(type='LoadImageFromFile', key='gt', color_type='color',
         channel_order='rgb', imdecode_backend='cv2'),
    dict(type='Crop', keys=['gt'], crop_size=(odm_t91_patch, odm_t91_patch),
         random_crop=True),
    dict(type='Flip', keys=['gt'], flip_ratio=0.5, direction='horizontal'),
    dict(type='Flip', keys=['gt'], flip_ratio=0.5, direction='vertical'),
    dict(type='RandomTransposeHW', keys=['gt'], transpose_ratio=0.5),
    dict(type='CopyValues', src_keys=['gt'], dst_keys=['img']),
    dict(type='MATLABLikeResize', keys=['img'],
         output_shape=(odm_t91_patch // 3, odm_t91_patch // 3)),
    dict(type='ToUint8', keys=['img']),
    dict(type='SetValues',
         dictionary=dict(scale=3, img_channel_order='rgb',
                         img_color_type='color')),
    dict(type='PackInputs')
]
odm_t91_dataset = dict(
    type='SRFolderDataset',
    metainfo=dict(dataset_type='t91', task_name='sisr'),
    data_root=_base_.odm_data_root,
    data_prefix=dict(gt='T91'),
    min_gt_size=odm_t91_patch,
    pipeline=odm_t91_train_pipeline)
