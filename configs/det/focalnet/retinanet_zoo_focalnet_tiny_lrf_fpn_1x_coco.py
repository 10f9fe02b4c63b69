# FocalNet-T (LRF) RetinaNet 1x: not reported; mmdet Swin-T RetinaNet recipe, dp 0.2.
# the authors' dense-prediction focal kernels 9-11-13 (focal_windows 9; the ImageNet 3-5-7 kernels load zero-padded)
_base_ = ['../_base_/retinanet_1x.py']
model = dict(backbone=dict(model_name='zoo_focalnet_tiny_lrf', drop_path_rate=0.2,
                           model_kwargs=dict(focal_windows=(9, 9, 9, 9))),
             neck=dict(in_channels=[192, 384, 768]))
