# FocalNet-S (LRF) Mask R-CNN 1x: 48.3/43.1 box/mask AP (microsoft/FocalNet README); Swin recipe: AdamW 1e-4, wd 0.05, ms crop, dp 0.3.
# classification focal kernels: the authors' detection kernels (9-11-13) do not fit the ImageNet weights
_base_ = ['../_base_/mask_rcnn_ms_1x.py']
model = dict(backbone=dict(model_name='zoo_focalnet_small_lrf', drop_path_rate=0.3),
             neck=dict(in_channels=[96, 192, 384, 768]))
