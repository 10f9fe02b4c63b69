# MaxViT-T Mask R-CNN 3x: not reported (Cascade Mask R-CNN only); Swin recipe: AdamW 1e-4, wd 0.05, ms crop, dp 0.2.
_base_ = ['../_base_/mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_maxvit_tiny', drop_path_rate=0.2),
             neck=dict(in_channels=[64, 128, 256, 512]))
