# LITv2-S Mask R-CNN 3x: not reported; Swin recipe: AdamW 1e-4, wd 0.05, ms crop, dp 0.2.
_base_ = ['../_base_/mask_rcnn_ms_3x.py']
model = dict(backbone=dict(model_name='zoo_litv2_small', drop_path_rate=0.2),
             neck=dict(in_channels=[96, 192, 384, 768]))
