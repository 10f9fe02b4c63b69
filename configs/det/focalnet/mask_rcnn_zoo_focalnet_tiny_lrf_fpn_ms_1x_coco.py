# FocalNet-T (LRF) Mask R-CNN 1x 46.1/41.5; UPerNet 46.8 mIoU (the authors enlarge the focal kernels for detection; not done here).
# Recipe: the shared Swin-style _base_ (AdamW, drop path as the base); the authors' per-family settings
# (drop path, lr, extra model options) are not checked here.
_base_ = ['../_base_/mask_rcnn_ms_1x.py']
model = dict(backbone=dict(model_name='zoo_focalnet_tiny_lrf', drop_path_rate=0.2),
             neck=dict(in_channels=[96, 192, 384, 768]))
