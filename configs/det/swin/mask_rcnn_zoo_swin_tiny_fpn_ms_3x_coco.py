# Swin-T Mask R-CNN 3x: 46.0 box / 41.6 mask AP (Swin detection release).
_base_ = ['../_base_/mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_swin_tiny', drop_path_rate=0.2),
             neck=dict(in_channels=[96, 192, 384, 768]))
