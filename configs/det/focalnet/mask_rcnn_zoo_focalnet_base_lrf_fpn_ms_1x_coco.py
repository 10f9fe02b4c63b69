# FocalNet-B (LRF) Mask R-CNN 1x: 49.0/43.5 box/mask AP (microsoft/FocalNet README); Swin recipe: AdamW
# 1e-4, wd 0.05, ms crop; dp 0.3 as the authors' S configs (the B detection configs are not in the repo snapshot).
# the authors' dense-prediction focal kernels 9-11-13 (focal_windows 9; the ImageNet 3-5-7 kernels load zero-padded)
_base_ = ['../_base_/mask_rcnn_ms_1x.py']
model = dict(backbone=dict(model_name='zoo_focalnet_base_lrf', drop_path_rate=0.3,
                           model_kwargs=dict(focal_windows=(9, 9, 9, 9))),
             neck=dict(in_channels=[128, 256, 512, 1024]))
