# DaViT-T Mask R-CNN 1x 45.0/41.1; UPerNet 46.3 mIoU.
# Recipe: the shared Swin-style _base_ (AdamW, drop path as the base); the authors' per-family settings
# (drop path, lr, extra model options) are not checked here.
_base_ = ['../_base_/mask_rcnn_ms_1x.py']
model = dict(backbone=dict(model_name='zoo_davit_tiny', drop_path_rate=0.2),
             neck=dict(in_channels=[96, 192, 384, 768]))
