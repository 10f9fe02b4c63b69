# Swin-S Mask R-CNN 1x (no published number; drop path as the authors' Swin-S 3x).
_base_ = ['../_base_/mask_rcnn_ms_1x.py']
model = dict(backbone=dict(model_name='zoo_swin_small', drop_path_rate=0.2),
             neck=dict(in_channels=[96, 192, 384, 768]))
