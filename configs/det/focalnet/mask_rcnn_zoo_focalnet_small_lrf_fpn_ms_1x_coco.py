# FocalNet-S (LRF) Mask R-CNN 1x: 48.3/43.1 box/mask AP (microsoft/FocalNet README); Swin recipe: AdamW 1e-4, wd 0.05, ms crop, dp 0.3.
# the authors' dense-prediction focal kernels 9-11-13 (focal_windows 9; the ImageNet 3-5-7 kernels load zero-padded)
_base_ = ['../_base_/mask_rcnn_ms_1x.py']
model = dict(backbone=dict(model_name='zoo_focalnet_small_lrf', drop_path_rate=0.3,
                           model_kwargs=dict(focal_windows=(9, 9, 9, 9))),
             neck=dict(in_channels=[96, 192, 384, 768]))
