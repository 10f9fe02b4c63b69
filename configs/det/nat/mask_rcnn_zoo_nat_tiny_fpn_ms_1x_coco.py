# NAT-T Mask R-CNN 3x 47.7/42.6; UPerNet 47.1 mIoU.
# Recipe: the shared Swin-style _base_ (AdamW, drop path as the base); the authors' per-family settings
# (drop path, lr, extra model options) are not checked here.
_base_ = ['../_base_/mask_rcnn_ms_1x.py']
model = dict(backbone=dict(model_name='zoo_nat_tiny', drop_path_rate=0.2),
             neck=dict(in_channels=[64, 128, 256, 512]))
