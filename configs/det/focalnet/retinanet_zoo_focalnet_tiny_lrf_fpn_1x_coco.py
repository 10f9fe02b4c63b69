# FocalNet-T (LRF) RetinaNet 1x: not reported; mmdet Swin-T RetinaNet recipe, dp 0.2.
_base_ = ['../_base_/retinanet_1x.py']
model = dict(backbone=dict(model_name='zoo_focalnet_tiny_lrf', drop_path_rate=0.2),
             neck=dict(in_channels=[192, 384, 768]))
