# Swin-T Mask R-CNN 1x: 43.7 box / 39.8 mask AP (Swin detection release; drop path 0.1 there for 1x).
_base_ = ['../_base_/mask_rcnn_ms_1x.py']
model = dict(backbone=dict(model_name='zoo_swin_tiny', drop_path_rate=0.1),
             neck=dict(in_channels=[96, 192, 384, 768]))
